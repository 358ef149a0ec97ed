//! E-mail: a template from the templates folder, rendered with minijinja
//! over the record's fields, sent over SMTP with lettre.
//!
//! Template `welcome` is `welcome.txt`, whose first line is `Subject: …`,
//! then an empty line, then the text; `welcome.html`, if present, is sent
//! as the HTML alternative (its values HTML-escaped). Both see the record's
//! fields by name, and `track`, `key` and `recipient`. A name the record
//! does not have is an error (strict undefined), not an empty string.

use super::{DeliveryConfig, Failure};
use crate::db::OutboxItem;
use crate::error::redact_url;
use crate::error::{Error, Result};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{Environment, UndefinedBehavior};
use std::collections::BTreeSet;
use std::path::Path;

/// The e-mail templates of a folder, parsed once.
pub struct Templates {
    env: Environment<'static>,
    /// Names with a `.txt` template.
    names: BTreeSet<String>,
    dir: String,
}

/// A rendered e-mail.
#[derive(Debug, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

impl Templates {
    /// Reads `NAME.txt` and `NAME.html` files of `dir` (none without one).
    /// A template that does not parse is an error naming its file and line.
    pub fn load(dir: Option<&Path>) -> Result<Templates> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Text mail keeps its last newline, and a line holding only a
        // `{% … %}` tag leaves no empty line behind.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .trim_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        let mut names = BTreeSet::new();
        let Some(dir) = dir else {
            return Ok(Templates {
                env,
                names,
                dir: "(no --templates folder)".into(),
            });
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::Config(format!(
                "cannot read the templates folder {}: {e}",
                dir.display()
            ))
        })?;
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for path in files {
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if ext != "txt" && ext != "html" {
                continue;
            }
            let source = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
            env.add_template_owned(format!("{stem}.{ext}"), source)
                .map_err(|e| Error::Config(format!("{}: {}", path.display(), describe(&e))))?;
            if ext == "txt" {
                names.insert(stem.to_string());
            }
        }
        Ok(Templates {
            env,
            names,
            dir: dir.display().to_string(),
        })
    }

    /// The names in `wanted` that have no `.txt` template, each with the
    /// folder looked in.
    pub fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a str>) -> Vec<(String, String)> {
        wanted
            .into_iter()
            .filter(|w| !self.names.contains(*w))
            .map(|w| (w.to_string(), self.dir.clone()))
            .collect()
    }

    /// Renders template `name` for a record (`payload`: its fields as a
    /// JSON object).
    pub fn render(&self, name: &str, item: &OutboxItem) -> std::result::Result<Rendered, String> {
        if !self.names.contains(name) {
            return Err(format!("no template `{name}.txt` in {}", self.dir));
        }
        let mut ctx: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&item.row.payload)
                .map_err(|e| format!("the outbox row's record is not a JSON object: {e}"))?;
        ctx.insert("track".into(), item.row.track.clone().into());
        ctx.insert("key".into(), item.row.key.clone().into());
        ctx.insert(
            "recipient".into(),
            item.row
                .recipient
                .clone()
                .map_or(serde_json::Value::Null, Into::into),
        );
        let ctx = minijinja::Value::from(minijinja::value::Serde(&ctx));
        let render = |file: &str| -> std::result::Result<String, String> {
            self.env
                .get_template(file)
                .and_then(|t| t.render(ctx.clone()))
                .map_err(|e| format!("{}/{file}: {}", self.dir, describe(&e)))
        };
        let text = render(&format!("{name}.txt"))?;
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let subject = first
            .strip_prefix("Subject:")
            .map(str::trim)
            .ok_or_else(|| format!("{}/{name}.txt must start with a `Subject:` line", self.dir))?
            .to_string();
        let html_file = format!("{name}.html");
        let html = match self.env.get_template(&html_file) {
            Ok(_) => Some(render(&html_file)?),
            Err(_) => None,
        };
        Ok(Rendered {
            subject,
            text: rest.strip_prefix('\n').unwrap_or(rest).to_string(),
            html,
        })
    }
}

/// A minijinja error with its line and the reason, on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.line() {
        Some(line) => format!("line {line}: {e}"),
        None => e.to_string(),
    };
    if let Some(detail) = e.detail() {
        if !text.contains(detail) {
            text.push_str(": ");
            text.push_str(detail);
        }
    }
    text
}

pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    pub templates: Templates,
}

impl Mailer {
    pub fn new(url: &str, config: &DeliveryConfig) -> Result<Mailer> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| Error::Config(format!("--smtp `{}`: {e}", redact_url(url))))?
            .timeout(Some(config.timeout))
            .build();
        let from = config
            .from
            .parse()
            .map_err(|e| Error::Config(format!("--smtp-from `{}`: {e}", config.from)))?;
        Ok(Mailer {
            transport,
            from,
            templates: Templates::load(config.templates.as_deref())?,
        })
    }

    pub async fn send(&self, item: &OutboxItem) -> std::result::Result<(), Failure> {
        let message = self.message(item).map_err(Failure::Permanent)?;
        self.transport.send(message).await.map(drop).map_err(|e| {
            let error = format!("SMTP: {e}");
            if e.is_permanent() {
                Failure::Permanent(error)
            } else {
                Failure::Transient {
                    error,
                    retry_after: None,
                }
            }
        })
    }

    fn message(&self, item: &OutboxItem) -> std::result::Result<Message, String> {
        let recipient = item
            .row
            .recipient
            .as_deref()
            .ok_or("the record has no recipient (its e-mail field is NULL)")?;
        let to: Mailbox = recipient
            .parse()
            .map_err(|e| format!("recipient `{recipient}`: {e}"))?;
        let rendered = self.templates.render(&item.row.target, item)?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(message_id(&item.row.id)));
        match rendered.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(rendered.text, html)),
            None => builder.singlepart(SinglePart::plain(rendered.text)),
        }
        .map_err(|e| format!("cannot build the message: {e}"))
    }
}

/// A `Message-ID` unique to the outbox row: its id with characters a
/// message id cannot hold replaced, and a hash of the exact id so that two
/// ids that differ only there still differ.
pub fn message_id(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("<{safe}.{}@trackc>", crate::db::content_hash(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{OutboxKind, OutboxRow};

    fn item(payload: &str, template: &str) -> OutboxItem {
        OutboxItem {
            row: OutboxRow {
                id: "onboarding/42/1/0".into(),
                kind: OutboxKind::Email,
                track: "onboarding".into(),
                key: "42".into(),
                target: template.into(),
                recipient: Some("ada@example.com".into()),
                payload: payload.into(),
                at: 0,
            },
            attempt: 1,
        }
    }

    fn folder(tag: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("trackc-templates-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn renders_subject_text_and_html() {
        let dir = folder("welcome", &[
            (
                "welcome.txt",
                "Subject: Welcome, {{ name }}\n\nHello {{ name }} ({{ plan }}), key {{ key }}.\n",
            ),
            ("welcome.html", "<p>Hello {{ name }}</p>"),
        ]);
        let t = Templates::load(Some(&dir)).unwrap();
        let r = t
            .render(
                "welcome",
                &item(r#"{"name":"Ada <&>","plan":"trial"}"#, "welcome"),
            )
            .unwrap();
        assert_eq!(r.subject, "Welcome, Ada <&>");
        assert_eq!(r.text, "Hello Ada <&> (trial), key 42.\n");
        assert_eq!(r.html.as_deref(), Some("<p>Hello Ada &lt;&amp;&gt;</p>"));
        let missing = t.missing(["welcome", "nope"]);
        assert_eq!(missing, [("nope".to_string(), dir.display().to_string())]);
    }

    #[test]
    fn mistakes_are_named() {
        let dir = folder(
            "mistakes",
            &[
                ("a.txt", "Subject: x\n\n{{ nosuchfield }}"),
                ("b.txt", "no subject line"),
            ],
        );
        let t = Templates::load(Some(&dir)).unwrap();
        let e = t.render("a", &item("{}", "a")).unwrap_err();
        assert!(e.contains("a.txt") && e.contains("undefined"), "{e}");
        let e = t.render("b", &item("{}", "b")).unwrap_err();
        assert!(e.contains("Subject:"), "{e}");
        let e = t.render("c", &item("{}", "c")).unwrap_err();
        assert!(e.contains("no template `c.txt`"), "{e}");
        let bad = folder("syntax", &[("x.txt", "{% if %}")]);
        let e = Templates::load(Some(&bad)).err().unwrap().to_string();
        assert!(e.contains("x.txt") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn message_ids_are_safe_and_distinct() {
        let a = message_id("t/a b/1/0");
        let b = message_id("t/a-b/1/0");
        assert!(
            a.starts_with("<t/a-b/1/0.") && a.ends_with("@trackc>"),
            "{a}"
        );
        assert_ne!(a, b);
    }
}
