//! `trackc why TRACK KEY`: a record's path through a track, from the
//! decision history (docs/runtime.md, "Decision history"): per decision
//! the step, the rule as the deciding version wrote it (file and line),
//! the values its conditions read, the effects with their delivery state,
//! and where the record waits now. For a record that never entered, why:
//! the track has not run, or its source does not select the key (asked
//! again now, for that key alone). The same report for `--db` and over a
//! group's API (`GET /why`).

use crate::bundle;
use crate::clock::now_micros;
use crate::db::{RecordHistory, RunInfo, Store};
use crate::error::{Error, Result};
use crate::run::RunSource;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use trackc_compiler::decision::value_json;
use trackc_compiler::jit::Jit;
use trackc_compiler::span::{FileId, SourceFile};
use trackc_compiler::syntax::literals::format_timestamp;
use trackc_compiler::syntax::parser::parse_file;

/// The values a decision read (its `values` object), as the track
/// language writes them: `n = 3, email = 'a@example.com'`.
pub fn read_as_written(values: &Json) -> String {
    let written = |value: &Json| match value {
        Json::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    };
    let read: Vec<String> = values
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, v)| format!("{name} = {}", written(v)))
        .collect();
    read.join(", ")
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

/// The report of record `key` of `track`: `{"track", "key", "now",
/// "decisions", "never_entered"}` (docs/runtime.md gives each member). An
/// unknown track is `Error::Config`, naming the deployed ones.
pub fn report(store: &mut dyn Store, jit: &Jit, track: &str, key: &str) -> Result<Json> {
    let history = store.record_history(track, key)?;
    let known = store.deployed()?;
    let Some(deployed) = known.iter().find(|d| d.name == track) else {
        let names: Vec<&str> = known.iter().map(|d| d.name.as_str()).collect();
        return Err(Error::Config(format!(
            "no track `{track}` is deployed in this database (tracks: {})",
            names.join(", ")
        )));
    };
    // The rules of every version that decided, by its hash.
    let mut rules: HashMap<&str, HashMap<(String, i64), RuleSource>> = HashMap::new();
    for (hash, source) in &history.sources {
        rules.insert(hash, rules_of(&deployed.file, source, track));
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
                    let id = format!("{track}/{key}/{}/{n}", d.seq);
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
    let never_entered = match left_no_trace(&history) {
        false => None,
        true => Some(why_never_entered(store, jit, deployed, key)?),
    };
    Ok(json!({
        "track": track,
        "key": key,
        "now": now,
        "decisions": decisions,
        "never_entered": never_entered,
    }))
}

/// Whether the record has neither a state nor a decision.
fn left_no_trace(history: &RecordHistory) -> bool {
    history.state.is_none() && history.decisions.is_empty()
}

/// Why a record that has no state never entered: the track has not run,
/// or its source, asked again now for this key alone, does not select it
/// (or does, and it enters at the next run).
fn why_never_entered(
    store: &mut dyn Store,
    jit: &Jit,
    deployed: &crate::db::DeployedTrack,
    key: &str,
) -> Result<String> {
    let Some(last_run) = store.last_run(&deployed.name)? else {
        return Ok("the track has not run yet".to_string());
    };
    let last = format_timestamp(last_run);
    let track = &bundle::load_deployed(store, jit, deployed)?;
    let run = RunInfo {
        id: 0,
        track: deployed.name.clone(),
        now: now_micros(),
        last_run,
        resumed: false,
        event: None,
    };
    if let Some(name) = &track.ir.source_database {
        // Asking the state database would be asking the wrong one.
        return Ok(format!(
            "the track reads its records from database `{name}`, which `why` does not open: \
             whether the source selects this key now is not known; the last run was at {last}"
        ));
    }
    let field = &track.ir.fields[track.ir.key];
    let source = RunSource::for_key(track, &run, key, store.dialect())?;
    let Some(statement) = source.statement else {
        return Ok(format!(
            "`{key}` cannot be a key of this track: its key field `{}` is {}",
            field.name,
            field.ty.name()
        ));
    };
    Ok(if store.count_rows(&statement)? > 0 {
        format!(
            "the track's source selects this key now (asked again just now) but did not at \
             the last run ({last}): it enters at the next run"
        )
    } else {
        format!(
            "the track's source does not select this key (asked again just now, for this key \
             alone); the last run was at {last}"
        )
    })
}
