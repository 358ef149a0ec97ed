//! Diagnostics: the stable codes of LANGUAGE.md, and their two renderings —
//! ariadne reports for people, one JSON object per line for tools.

use crate::span::{FileId, SourceFile, Span};
use serde_json::json;
use std::fmt;

/// Every diagnostic code the compiler can report. The `E0xx`/`W00x` codes of
/// LANGUAGE.md keep their meaning forever; additions get new numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// Syntax error.
    E001,
    /// Duplicate name.
    E002,
    /// `goto` to a step that does not exist.
    E003,
    /// Unknown field (or column).
    E004,
    /// Type mismatch.
    E005,
    /// SQL syntax error.
    E006,
    /// Wrong kind of SQL statement.
    E007,
    /// `key` column not among the source's columns.
    E008,
    /// Invalid duration, timestamp, cron expression or time zone.
    E009,
    /// A cycle of `goto`s through steps without `wait`.
    E010,
    /// Unknown `:parameter` in SQL.
    E011,
    /// Unknown function or wrong number of arguments.
    E012,
    /// A field whose type cannot be known.
    E013,
    /// Missing source or step, or a rule with two transitions.
    E014,
    /// Unknown table in SQL (an addition to LANGUAGE.md's table).
    E015,
    /// A test names no track, an unknown track or an unknown step.
    E016,
    /// A test's record: unknown, repeated or missing field, value of the wrong type.
    E017,
    /// A test's expectations: none, repeated, a rule that does not exist,
    /// a `now` missing where the step reads `now()`.
    E018,
    /// `source from NAME` names no declared source database.
    E019,
    /// `sql on NAME`: action SQL cannot write to a source database.
    E020,
    /// Unreachable rule.
    W001,
    /// Unreachable step.
    W002,
    /// Rule with effects but no transition.
    W003,
    /// `= null` / `!= null`.
    W004,
    /// A file without any track (an addition to LANGUAGE.md's table).
    W005,
}

impl Code {
    pub fn severity(self) -> Severity {
        match self {
            Code::W001 | Code::W002 | Code::W003 | Code::W004 | Code::W005 => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A secondary span with a message ("first defined here").
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub file: FileId,
    /// What the diagnostic is about.
    pub span: Span,
    /// Shown under the primary span.
    pub span_label: Option<String>,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, file: FileId, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            file,
            span,
            span_label: None,
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    pub fn with_span_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.span_label = Some(label.into());
        self
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// In-place forms of the `with_*` builders, for a diagnostic already
    /// pushed onto a list.
    pub fn set_span_label(&mut self, label: impl Into<String>) -> &mut Diagnostic {
        self.span_label = Some(label.into());
        self
    }

    pub fn add_label(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn set_help(&mut self, help: impl Into<String>) -> &mut Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

/// "did you mean `x`?" for the closest candidate, if any is close enough.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `name` by edit distance, if it is plausibly a typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= limit || c.eq_ignore_ascii_case(name))
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Renders diagnostics for people, with ariadne. `color` should be true only
/// when writing to a terminal.
pub fn render_human(diagnostic: &Diagnostic, files: &[SourceFile], color: bool) -> String {
    use ariadne::{Color, Config, IndexType, Label as ALabel, Report, ReportKind};

    let file = &files[diagnostic.file.0 as usize];
    let name = file.name.clone();
    let kind = match diagnostic.severity() {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
    };
    let config = Config::default()
        .with_color(color)
        .with_index_type(IndexType::Byte);
    let primary_color = match diagnostic.severity() {
        Severity::Error => Color::Red,
        Severity::Warning => Color::Yellow,
    };
    let clamp = |span: Span| {
        let end = span.end.min(file.text.len());
        span.start.min(end)..end
    };
    let mut primary = ALabel::new((name.clone(), clamp(diagnostic.span))).with_color(primary_color);
    if let Some(text) = &diagnostic.span_label {
        primary = primary.with_message(text);
    }
    let mut report = Report::build(kind, (name.clone(), clamp(diagnostic.span)))
        .with_config(config)
        .with_code(diagnostic.code)
        .with_message(&diagnostic.message)
        .with_label(primary.with_order(0));
    for (i, label) in diagnostic.labels.iter().enumerate() {
        report = report.with_label(
            ALabel::new((name.clone(), clamp(label.span)))
                .with_message(&label.message)
                .with_color(Color::Blue)
                .with_order(i as i32 + 1),
        );
    }
    if let Some(help) = &diagnostic.help {
        report = report.with_help(help);
    }
    let mut out = Vec::new();
    report
        .finish()
        .write(
            ariadne::sources([(name.clone(), file.text.as_str())]),
            &mut out,
        )
        .expect("writing to a Vec cannot fail");
    String::from_utf8_lossy(&out).into_owned()
}

/// Renders one diagnostic as one line of JSON (DESIGN.md's format).
pub fn render_json(diagnostic: &Diagnostic, files: &[SourceFile]) -> String {
    let file = &files[diagnostic.file.0 as usize];
    let span = |span: Span| {
        let start = file.line_col(span.start);
        let end = file.line_col(span.end);
        json!({
            "start": {"line": start.line, "col": start.col, "offset": span.start},
            "end": {"line": end.line, "col": end.col, "offset": span.end},
        })
    };
    let labels: Vec<_> = diagnostic
        .span_label
        .iter()
        .map(|m| json!({"span": span(diagnostic.span), "message": m}))
        .chain(
            diagnostic
                .labels
                .iter()
                .map(|l| json!({"span": span(l.span), "message": l.message})),
        )
        .collect();
    json!({
        "severity": diagnostic.severity().as_str(),
        "code": diagnostic.code.to_string(),
        "message": diagnostic.message,
        "file": file.name,
        "span": span(diagnostic.span),
        "labels": labels,
        "help": diagnostic.help,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_ignores_far_names() {
        let names = ["welcome", "nurture", "qualify"];
        assert_eq!(closest("nurtur", names), Some("nurture"));
        assert_eq!(closest("qualfy", names), Some("qualify"));
        assert_eq!(closest("zzz", names), None);
        assert_eq!(closest("welcome", names), None);
    }
}
