//! `trackc why TRACK KEY --db URL`: a record's path through a track, from
//! the decision history (docs/runtime.md, "Decision history"): per
//! decision the step, the rule as the deciding version wrote it (file and
//! line), the values its conditions read, the effects with their delivery
//! state, and where the record waits now.

use crate::operate::{failed, open};
use crate::{Format, UsageError};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::process::ExitCode;
use trackc_compiler::decision::value_json;
use trackc_compiler::span::{FileId, SourceFile};
use trackc_compiler::syntax::literals::format_timestamp;
use trackc_compiler::syntax::parser::parse_file;
use trackc_runtime::db::RecordHistory;

#[derive(clap::Args)]
pub struct WhyArgs {
    /// `sqlite:PATH` or `postgres://USER@HOST/DB`: the database of a node.
    #[arg(long, value_name = "URL", default_value = "sqlite:trackc.db")]
    db: String,
    /// `human` for people, `json` for tools (one object).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    track: String,
    key: String,
}

/// A rule as its version wrote it: `when …` (or `else`), and where.
struct RuleSource {
    text: String,
    at: String,
}

/// The rules of `track` in a deployed source, by (step, rule number).
fn rules_of(file: &str, source: &str, track: &str) -> HashMap<(String, i64), RuleSource> {
    let (ast, _) = parse_file(FileId(0), source);
    let text = SourceFile::new(file, source);
    let mut out = HashMap::new();
    for (step, rules) in trackc_compiler::rules_as_written(&ast, &text, track) {
        for (i, rule) in rules.into_iter().enumerate() {
            let at = format!("{file}:{}", rule.line);
            out.insert(
                (step.clone(), i as i64 + 1),
                RuleSource {
                    text: rule.condition,
                    at,
                },
            );
        }
    }
    out
}

pub fn why(args: &WhyArgs) -> Result<ExitCode, UsageError> {
    let (_, mut store) = open(&args.db)?;
    let history = store
        .record_history(&args.track, &args.key)
        .map_err(failed)?;
    let known = store.deployed().map_err(failed)?;
    let Some(deployed) = known.iter().find(|d| d.name == args.track) else {
        let names: Vec<&str> = known.iter().map(|d| d.name.as_str()).collect();
        return Err(crate::usage(format!(
            "no track `{}` is deployed in this database (tracks: {})",
            args.track,
            names.join(", ")
        )));
    };
    let last_run = store.last_run(&args.track).map_err(failed)?;
    // The rules of every version that decided, by its hash.
    let mut rules: HashMap<&str, HashMap<(String, i64), RuleSource>> = HashMap::new();
    for (hash, source) in &history.sources {
        rules.insert(hash, rules_of(&deployed.file, source, &args.track));
    }
    let outbox: HashMap<&str, (&str, Option<&str>)> = history
        .outbox
        .iter()
        .map(|(id, state, error)| (id.as_str(), (state.as_str(), error.as_deref())))
        .collect();
    let decisions: Vec<Json> = history
        .decisions
        .iter()
        .map(|d| {
            let rule = d
                .rule
                .and_then(|r| rules.get(d.version.as_str())?.get(&(d.step.clone(), r)));
            let effects: Vec<Json> = d
                .effects
                .iter()
                .enumerate()
                .map(|(n, kind)| {
                    // An effect's row is named by the record's sequence
                    // number after the decision and the effect's place.
                    let id = format!("{}/{}/{}/{n}", args.track, args.key, d.seq);
                    let (id, state, error) = match kind.as_str() {
                        "sql" => (None, "applied", None),
                        "emit" => (Some(id), "raised", None),
                        _ => {
                            let (state, error) =
                                outbox.get(id.as_str()).copied().unwrap_or(("pruned", None));
                            (Some(id), state, error)
                        }
                    };
                    json!({"kind": kind, "id": id, "state": state, "error": error})
                })
                .collect();
            json!({
                "at": format_timestamp(d.at),
                "version": d.version,
                "step": d.step,
                "rule": d.rule,
                "condition": rule.map(|r| r.text.as_str()),
                "source": rule.map(|r| r.at.as_str()),
                "values": d
                    .values
                    .iter()
                    .map(|(name, v)| (name.clone(), value_json(v)))
                    .collect::<serde_json::Map<_, _>>(),
                "next": d.next,
                "effects": effects,
                "run": d.run_id,
                "node": d.node,
                "epoch": d.epoch,
            })
        })
        .collect();
    let now = history.state.as_ref().map(|s| {
        json!({
            "step": s.step.as_deref().unwrap_or("end"),
            "since": format_timestamp(s.entered_at),
            "wake_at": s.wake_at.map(format_timestamp),
        })
    });
    let report = json!({
        "track": args.track,
        "key": args.key,
        "now": now,
        "decisions": decisions,
        "never_entered": never_entered(&history, last_run),
    });
    match args.format {
        Format::Json => println!("{report}"),
        Format::Human => {
            // What each decision read, as the track language writes values.
            let read: Vec<String> = history
                .decisions
                .iter()
                .map(|d| {
                    let read: Vec<String> =
                        d.values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    read.join(", ")
                })
                .collect();
            print!("{}", human(&report, &read))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a record has no state, if it has none.
fn never_entered(history: &RecordHistory, last_run: Option<i64>) -> Option<String> {
    if history.state.is_some() || !history.decisions.is_empty() {
        return None;
    }
    Some(match last_run {
        None => "the track has not run yet".to_string(),
        Some(at) => format!(
            "the track's source has not selected this key in any run (the last at {})",
            format_timestamp(at)
        ),
    })
}

/// The report for people; `read` is what each decision read, in order.
fn human(report: &Json, read: &[String]) -> String {
    let text = |v: &Json| v.as_str().unwrap_or("").to_string();
    let mut out = format!("{} `{}`", text(&report["track"]), text(&report["key"]));
    if let Some(reason) = report["never_entered"].as_str() {
        return format!("{out}: never entered: {reason}\n");
    }
    let now = &report["now"];
    out += &match now["step"].as_str() {
        Some("end") => {
            let at = report["decisions"]
                .as_array()
                .and_then(|d| d.last())
                .map_or_else(|| text(&now["since"]), |d| text(&d["at"]));
            format!(": ended at {at}\n")
        }
        Some(step) => match now["wake_at"].as_str() {
            Some(wake) => format!(
                ": in step `{step}` since {}, waits until {wake}\n",
                text(&now["since"])
            ),
            None => format!(
                ": in step `{step}` since {}, due at the next run\n",
                text(&now["since"])
            ),
        },
        None => ": no state (its history was kept, the state is gone)\n".to_string(),
    };
    let decisions = report["decisions"].as_array().cloned().unwrap_or_default();
    if decisions.is_empty() {
        out += "no decision recorded (history off, or pruned)\n";
    }
    for (n, d) in decisions.iter().enumerate() {
        let rule = match (d["rule"].as_i64(), d["condition"].as_str()) {
            (Some(n), Some(c)) => format!("rule {n}: {c}  ({})", text(&d["source"])),
            (Some(n), None) => format!("rule {n}"),
            (None, _) => "no rule fired".to_string(),
        };
        out += &format!(
            "\n{}  step `{}`  {rule}\n",
            text(&d["at"]),
            text(&d["step"])
        );
        if let Some(read) = read.get(n).filter(|r| !r.is_empty()) {
            out += &format!("    read:    {read}\n");
        }
        for e in d["effects"].as_array().into_iter().flatten() {
            let id = e["id"]
                .as_str()
                .map(|i| format!(" {i}"))
                .unwrap_or_default();
            let error = e["error"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            out += &format!(
                "    effect:  {}{id} ({}{error})\n",
                text(&e["kind"]),
                text(&e["state"])
            );
        }
        out += &format!("    next:    {}\n", text(&d["next"]));
    }
    out
}
