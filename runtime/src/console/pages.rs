//! The console's pages, rendered on the server from the database (on the
//! node's API thread) with the templates of `templates/` (minijinja,
//! HTML-escaped): group, track, record, outbox, plan, and the messages
//! that answer actions.

use crate::bundle;
use crate::clock::now_micros;
use crate::db::deploys::DEPLOYS_LIST_MAX;
use crate::db::insight::{HISTORY_COUNT_ROWS_MAX, RUNS_SHOWN_MAX};
use crate::db::Store;
use crate::node::config::UserRole;
use hyper::StatusCode;
use minijinja::Environment;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use trackc_compiler::graph::{Overlay, TrackGraph};
use trackc_compiler::jit::Jit;
use trackc_compiler::span::{FileId, SourceFile};
use trackc_compiler::syntax::literals::format_timestamp;
use trackc_compiler::syntax::parser::parse_file;

/// Who looks at a page: what it may show (buttons by role) and the CSRF
/// token its forms carry.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub user: String,
    pub role: UserRole,
    pub csrf: String,
    /// How often the group page refreshes itself (the node's cycle).
    pub cycle_ms: u64,
}

/// A page that needs the database.
#[derive(Debug)]
pub enum Page {
    /// The group as this node sees it (`status`); `standalone`: `trackc
    /// serve`, one node without a group.
    Group {
        status: Json,
        standalone: bool,
    },
    Track {
        name: String,
        diff: Option<(i64, i64)>,
    },
    Record {
        track: String,
        key: String,
    },
    Outbox {
        state: Option<String>,
    },
    /// The plan form, and with `text` the plan of that track file.
    Plan {
        text: Option<String>,
        name: String,
    },
}

const TEMPLATES: [(&str, &str); 8] = [
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("group.html", include_str!("templates/group.html")),
    ("track.html", include_str!("templates/track.html")),
    ("record.html", include_str!("templates/record.html")),
    ("outbox.html", include_str!("templates/outbox.html")),
    ("plan.html", include_str!("templates/plan.html")),
    ("message.html", include_str!("templates/message.html")),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .expect("the console's templates parse (a unit test renders each)");
        }
        env
    })
}

/// Renders `template` with `values` and the viewer's part of the page.
fn render(template: &str, viewer: Option<&Viewer>, mut values: Json) -> String {
    if let Some(v) = viewer {
        values["user"] = json!(v.user);
        values["role"] = json!(v.role.name());
        values["csrf"] = json!(v.csrf);
        values["cycle_ms"] = json!(v.cycle_ms);
        values["can_operate"] = json!(v.role.allows(UserRole::Operator));
        values["can_author"] = json!(v.role.allows(UserRole::Author));
    }
    let page = template.trim_end_matches(".html");
    values["page"] = json!(page);
    environment()
        .get_template(template)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&values))))
        .unwrap_or_else(|e| {
            format!(
                "<!doctype html><title>error</title><p>the page {page} could not be drawn: {e}</p>"
            )
        })
}

/// The sign-in page, with a notice when a try failed.
pub fn signin(notice: Option<&str>) -> String {
    render(
        "signin.html",
        None,
        json!({"title": "Sign in", "notice": notice, "notice_kind": "refused"}),
    )
}

/// A page that answers an action: done, refused or failed, and a way back.
pub fn message(viewer: Option<&Viewer>, heading: &str, text: &str, ok: bool, back: &str) -> String {
    render(
        "message.html",
        viewer,
        json!({
            "title": heading,
            "heading": heading,
            "message": text,
            "kind": if ok { "ok" } else { "refused" },
            "back": back,
        }),
    )
}

/// Renders `page` from the database; an error is a page that says it.
pub fn page(
    store: &mut dyn Store,
    jit: &Jit,
    databases: &crate::node::api::Databases,
    page: Page,
    viewer: &Viewer,
) -> (StatusCode, String) {
    let result = match page {
        Page::Group { status, standalone } => group(store, status, standalone, viewer),
        Page::Track { name, diff } => track(store, jit, &name, diff, viewer),
        Page::Record { track, key } => record(store, jit, &track, &key, viewer),
        Page::Outbox { state } => outbox(store, state.as_deref(), viewer),
        Page::Plan { text, name } => plan(store, jit, databases, text, &name, viewer),
    };
    result.unwrap_or_else(|(status, text)| {
        (
            status,
            message(Some(viewer), "Not shown", &text, false, "/"),
        )
    })
}

type PageResult = Result<(StatusCode, String), (StatusCode, String)>;

fn failed(e: crate::Error) -> (StatusCode, String) {
    match e {
        crate::Error::Config(m) => (StatusCode::NOT_FOUND, m),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn group(store: &mut dyn Store, status: Json, standalone: bool, viewer: &Viewer) -> PageResult {
    let mut tracks: Vec<Json> = status["tracks"].as_array().cloned().unwrap_or_default();
    if standalone {
        tracks = store
            .deployed()
            .map_err(failed)?
            .iter()
            .map(|d| json!({"name": d.name}))
            .collect();
    }
    for t in &mut tracks {
        let name = t["name"].as_str().unwrap_or("").to_string();
        let last = store.last_run(&name).map_err(failed)?;
        t["last_run"] = json!(last.map(format_timestamp).unwrap_or_else(|| "never".into()));
    }
    let week = now_micros() - 7 * 86_400_000_000;
    let recent: Vec<Json> = store
        .audit_log(week, 200)
        .map_err(failed)?
        .into_iter()
        .rev()
        .filter(|e| {
            matches!(
                e.action.as_str(),
                "deploy" | "rollback" | "drain" | "claim" | "move"
            )
        })
        .take(10)
        .map(|e| {
            json!({"at": format_timestamp(e.at), "who": e.who, "role": e.role,
                   "action": e.action, "target": e.target, "result": e.result})
        })
        .collect();
    let hour = now_micros() - 3_600_000_000;
    let per_node: HashMap<Option<i64>, i64> = store
        .blocks_by_node(hour)
        .map_err(failed)?
        .into_iter()
        .collect();
    let mut nodes: Vec<Json> = status["nodes"].as_array().cloned().unwrap_or_default();
    for n in &mut nodes {
        n["executed_hour"] = json!(per_node.get(&n["id"].as_i64()).copied().unwrap_or(0));
    }
    let m = &status["metrics"];
    let executed: u64 = m["blocks_executed"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(Json::as_u64).sum());
    Ok((
        StatusCode::OK,
        render(
            "group.html",
            Some(viewer),
            json!({
                "title": "Group",
                "standalone": standalone,
                "node": status["node"],
                "db_up": status["database"]["reachable"] == true,
                "nodes": nodes,
                "tracks": tracks,
                "recent": recent,
                "executed": executed,
                "outstanding": m["blocks_outstanding"],
                "refused": m["blocks_refused"],
            }),
        ),
    ))
}

/// Track text as HTML with its words coloured: keywords, types, strings,
/// numbers and durations, comments (the editors' grammar's classes).
pub fn highlight(source: &str) -> String {
    const KEYWORDS: [&str; 36] = [
        "when", "then", "else", "goto", "stay", "end", "wait", "track", "version", "source", "key",
        "fields", "on", "every", "cron", "tz", "at", "event", "change", "step", "sql", "email",
        "to", "webhook", "emit", "and", "or", "not", "in", "between", "is", "like", "null", "true",
        "false", "from",
    ];
    const TYPES: [&str; 5] = ["int", "float", "bool", "text", "timestamp"];
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::new();
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let mut i = 0;
    let at = |i: usize| chars.get(i).map_or(source.len(), |c| c.0);
    while i < chars.len() {
        let (start, c) = chars[i];
        let span = |class: &str, end: usize, out: &mut String| {
            out.push_str(&format!(
                "<span class=\"{class}\">{}</span>",
                escape(&source[start..end])
            ));
        };
        if c == '/' && chars.get(i + 1).is_some_and(|n| n.1 == '/') {
            let mut j = i;
            while j < chars.len() && chars[j].1 != '\n' {
                j += 1;
            }
            span("com", at(j), &mut out);
            i = j;
        } else if c == '\'' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].1 != '\'' {
                j += 1;
            }
            j = (j + 1).min(chars.len());
            span("str", at(j), &mut out);
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len()
                && (chars[j].1.is_ascii_alphanumeric() || matches!(chars[j].1, '.' | ':' | '-'))
            {
                j += 1;
            }
            span("num", at(j), &mut out);
            i = j;
        } else if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].1.is_alphanumeric() || chars[j].1 == '_') {
                j += 1;
            }
            let word = &source[start..at(j)];
            if KEYWORDS.contains(&word) {
                span("kw", at(j), &mut out);
            } else if TYPES.contains(&word) {
                span("ty", at(j), &mut out);
            } else {
                out.push_str(&escape(word));
            }
            i = j;
        } else {
            out.push_str(&escape(&source[start..at(i + 1)]));
            i += 1;
        }
    }
    out
}

fn track(
    store: &mut dyn Store,
    jit: &Jit,
    name: &str,
    diff: Option<(i64, i64)>,
    viewer: &Viewer,
) -> PageResult {
    let deployed = store.deployed().map_err(failed)?;
    let Some(d) = deployed.iter().find(|d| d.name == name) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no track `{name}` is deployed"),
        ));
    };
    let t = bundle::load_deployed(store, jit, d).map_err(failed)?;
    let ir = &t.ir;
    let (ast, _) = parse_file(FileId(0), &d.source);
    let text = SourceFile::new(&d.file, &d.source);
    let written: HashMap<String, Vec<String>> =
        trackc_compiler::rules_as_written(&ast, &text, name)
            .into_iter()
            .map(|(step, rules)| (step, rules.into_iter().map(|r| r.condition).collect()))
            .collect();
    let rule_texts = ir
        .steps
        .iter()
        .map(|s| written.get(&s.name).cloned().unwrap_or_default())
        .collect();
    let counts: HashMap<Option<String>, i64> = store
        .step_counts(name)
        .map_err(failed)?
        .into_iter()
        .collect();
    let now = now_micros();
    let (hour, day) = (now - 3_600_000_000, now - 86_400_000_000);
    let rows = store
        .history_since(name, day, HISTORY_COUNT_ROWS_MAX)
        .map_err(failed)?;
    let mut fired: Vec<Vec<(u64, u64)>> = ir
        .steps
        .iter()
        .map(|s| vec![(0, 0); s.rules.len()])
        .collect();
    let mut blocks: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for row in &rows {
        for (step, rule) in row.decisions() {
            let slot = usize::try_from(step)
                .ok()
                .zip(usize::try_from(rule).ok())
                .and_then(|(s, r)| fired.get_mut(s)?.get_mut(r));
            if let Some(slot) = slot {
                slot.1 += 1;
                if row.at >= hour {
                    slot.0 += 1;
                }
            }
        }
        let node = row
            .node
            .map_or_else(|| "this".to_string(), |n| format!("node {n}"));
        *blocks
            .entry(row.run_id)
            .or_default()
            .entry(node)
            .or_default() += 1;
    }
    let overlay = Overlay {
        records: ir
            .steps
            .iter()
            .map(|s| counts.get(&Some(s.name.clone())).copied().unwrap_or(0))
            .collect(),
        fired,
    };
    let graph = trackc_compiler::graph::svg(
        &TrackGraph {
            track: ir,
            rule_texts,
        },
        Some(&overlay),
    );
    let steps: Vec<Json> = ir
        .steps
        .iter()
        .zip(&overlay.records)
        .map(|(s, n)| json!({"name": s.name, "records": n}))
        .collect();
    let all = store.deploys(DEPLOYS_LIST_MAX).map_err(failed)?;
    let mine: Vec<_> = all
        .iter()
        .filter(|v| v.changed.iter().any(|c| c == name))
        .collect();
    let versions: Vec<Json> = mine
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"number": v.number, "at": format_timestamp(v.at), "by": v.by, "role": v.role,
                   "changed": v.changed, "rollback_of": v.rollback_of,
                   "previous": mine.get(i + 1).map(|p| p.number)})
        })
        .collect();
    let mut diff_lines = Vec::new();
    if let Some((from, to)) = diff {
        let text_of = |store: &mut dyn Store, n: i64| -> Result<String, (StatusCode, String)> {
            let shipped = store
                .shipped(n)
                .map_err(failed)?
                .ok_or((StatusCode::NOT_FOUND, format!("there is no deploy {n}")))?;
            Ok(shipped
                .files
                .iter()
                .map(|(f, t)| format!("// {f}\n{t}"))
                .collect())
        };
        let (a, b) = (text_of(store, from)?, text_of(store, to)?);
        for change in similar::TextDiff::from_lines(&a, &b).iter_all_changes() {
            let (kind, sign) = match change.tag() {
                similar::ChangeTag::Delete => ("del", "-"),
                similar::ChangeTag::Insert => ("add", "+"),
                similar::ChangeTag::Equal => ("same", " "),
            };
            diff_lines.push(json!({"kind": kind, "text": format!("{sign} {}", change.value().trim_end_matches('\n'))}));
        }
    }
    let runs: Vec<Json> = store
        .recent_runs(name, RUNS_SHOWN_MAX)
        .map_err(failed)?
        .iter()
        .map(|r| {
            let duration = r
                .finished_at
                .map(|f| format!("{:.2} s", (f - r.started_at) as f64 / 1e6))
                .unwrap_or_else(|| "running".into());
            let per_node = blocks
                .get(&r.id)
                .map(|b| {
                    b.iter()
                        .map(|(n, c)| format!("{n}: {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            json!({"id": r.id, "at": format_timestamp(r.run_at), "duration": duration,
                   "records": r.records, "failed": r.failed_blocks, "blocks": per_node})
        })
        .collect();
    Ok((
        StatusCode::OK,
        render(
            "track.html",
            Some(viewer),
            json!({
                "title": format!("Track {name}"),
                "name": name,
                "graph": graph,
                "counts_partial": rows.len() >= HISTORY_COUNT_ROWS_MAX,
                "counted_rows": rows.len(),
                "steps": steps,
                "ended": counts.get(&None).copied().unwrap_or(0),
                "source": highlight(&d.source),
                "versions": versions,
                "diff": diff_lines,
                "diff_from": diff.map(|d| d.0),
                "diff_to": diff.map(|d| d.1),
                "runs": runs,
            }),
        ),
    ))
}

fn record(store: &mut dyn Store, jit: &Jit, track: &str, key: &str, viewer: &Viewer) -> PageResult {
    let report = crate::why::report(store, jit, track, key).map_err(failed)?;
    let decisions: Vec<Json> = report["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let mut d = d.clone();
            d["read"] = json!(crate::why::read_as_written(&d["values"]));
            d
        })
        .collect();
    Ok((
        StatusCode::OK,
        render(
            "record.html",
            Some(viewer),
            json!({
                "title": format!("{track} {key}"),
                "track": track,
                "key": key,
                "never_entered": report["never_entered"],
                "now_step": report["now"]["step"],
                "since": report["now"]["since"],
                "wake_at": report["now"]["wake_at"],
                "decisions": decisions,
            }),
        ),
    ))
}

/// The most outbox rows the page lists (the oldest first).
const OUTBOX_SHOWN_MAX: usize = 500;

fn outbox(store: &mut dyn Store, state: Option<&str>, viewer: &Viewer) -> PageResult {
    let states = ["pending", "sending", "delivered", "parked"];
    let state = state.filter(|s| states.contains(s));
    let rows: Vec<Json> = store
        .list_outbox(state, OUTBOX_SHOWN_MAX)
        .map_err(failed)?
        .into_iter()
        .map(|r| {
            json!({"id": r.id, "kind": r.kind, "target": r.recipient.unwrap_or(r.target),
                   "state": r.state, "attempts": r.attempts, "last_error": r.last_error})
        })
        .collect();
    let any_parked = rows.iter().any(|r| r["state"] == "parked");
    Ok((
        StatusCode::OK,
        render(
            "outbox.html",
            Some(viewer),
            json!({"title": "Outbox", "rows": rows, "states": states, "any_parked": any_parked}),
        ),
    ))
}

fn plan(
    store: &mut dyn Store,
    jit: &Jit,
    databases: &crate::node::api::Databases,
    text: Option<String>,
    name: &str,
    viewer: &Viewer,
) -> PageResult {
    let name = if name.trim().is_empty() {
        "pasted.dt"
    } else {
        name
    };
    let mut values = json!({"title": "Plan", "text": text, "file_name": name});
    if let Some(text) = &text {
        let files = [(name.to_string(), text.clone())];
        let tracks = bundle::load_with(
            jit,
            &files,
            store.schema().map_err(failed)?,
            store.dialect(),
            store.source_schemas().map_err(failed)?,
        )
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let mut sources = crate::db::source::open_for(&tracks, databases)
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let plan = crate::plan::plan(store, &mut sources, &tracks, now_micros()).map_err(failed)?;
        values["plan"] = serde_json::to_value(&plan).unwrap_or(Json::Null);
    }
    Ok((StatusCode::OK, render("plan.html", Some(viewer), values)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let viewer = Viewer {
            user: "<ada>".into(),
            role: UserRole::Operator,
            csrf: "c".into(),
            cycle_ms: 1000,
        };
        let page = message(Some(&viewer), "Done", "<script>x</script>", true, "/");
        assert!(page.contains("&lt;script&gt;x&lt;"), "{page}");
        assert!(!page.contains("<script>x"), "{page}");
        assert!(page.contains("&lt;ada&gt;"), "{page}");
        assert!(!page.contains("could not be drawn"), "{page}");
        assert!(signin(Some("no")).contains("Sign in"));
        for (name, _) in TEMPLATES {
            let out = render(name, Some(&viewer), json!({"title": "t"}));
            assert!(!out.contains("could not be drawn"), "{name}: {out}");
        }
    }

    #[test]
    fn track_text_is_coloured_and_escaped() {
        let html = highlight("step a { when n < 3 and e = 'x<y' then end } // done");
        assert!(html.contains("<span class=\"kw\">step</span>"), "{html}");
        assert!(
            html.contains("<span class=\"str\">'x&lt;y'</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"num\">3</span>"), "{html}");
        assert!(html.contains("n &lt; "), "{html}");
        assert!(
            html.contains("<span class=\"com\">// done</span>"),
            "{html}"
        );
    }
}
