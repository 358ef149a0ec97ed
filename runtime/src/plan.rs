//! `trackc plan`: what deploying tracks now would do, with no write. Per
//! track the difference from the deployed version (steps and rules), per
//! step the records in it now and those due, per rule how many of the due
//! records would fire it (decided by the JIT over the live source, as a run
//! would), and the records left in steps the new version removes.

use crate::bundle::LoadedTrack;
use crate::db::{RunInfo, Store};
use crate::error::{Error, Result};
use crate::run::RunSource;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use trackc_compiler::block::{key_text, BlockBuilder};
use trackc_compiler::interp::Env;
use trackc_compiler::span::{FileId, SourceFile};
use trackc_compiler::syntax::parser::parse_file;

/// Records per block while the source is read (as a run reads it).
const PLAN_BLOCK_RECORDS: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub tracks: Vec<TrackPlan>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TrackPlan {
    pub name: String,
    /// `new`, `changed` or `unchanged`.
    pub change: String,
    pub diff: Vec<String>,
    pub steps: Vec<StepPlan>,
    pub stranded: Vec<Stranded>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StepPlan {
    pub name: String,
    /// Records in the step now (with the deployed version).
    pub records: i64,
    /// Records that would be decided in it if the run were now (new
    /// records enter the first step).
    pub due: u64,
    pub rules: Vec<RulePlan>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RulePlan {
    /// From 1.
    pub rule: usize,
    pub fire: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Stranded {
    pub step: String,
    pub records: i64,
}

/// Each step's rules as written (condition and actions, whitespace
/// collapsed), by step name, from a track's source.
fn rule_texts(source: &str, track: &str) -> Vec<(String, Vec<String>)> {
    let (ast, _) = parse_file(FileId(0), source);
    let file = SourceFile::new("", source);
    trackc_compiler::rules_as_written(&ast, &file, track)
        .into_iter()
        .map(|(step, rules)| (step, rules.into_iter().map(|r| r.whole).collect()))
        .collect()
}

/// The differences between two versions of a track, one line each.
fn diff(old: &[(String, Vec<String>)], new: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    let old_map: HashMap<&str, &Vec<String>> = old.iter().map(|(s, r)| (s.as_str(), r)).collect();
    let new_map: HashMap<&str, &Vec<String>> = new.iter().map(|(s, r)| (s.as_str(), r)).collect();
    for (step, _) in old
        .iter()
        .filter(|(s, _)| !new_map.contains_key(s.as_str()))
    {
        out.push(format!("step `{step}` removed"));
    }
    for (step, rules) in new {
        let Some(before) = old_map.get(step.as_str()) else {
            out.push(format!("step `{step}` added"));
            continue;
        };
        for i in 0..rules.len().max(before.len()) {
            match (before.get(i), rules.get(i)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => {
                    out.push(format!("step `{step}` rule {}: `{a}` → `{b}`", i + 1))
                }
                (None, Some(b)) => out.push(format!("step `{step}` rule {} added: `{b}`", i + 1)),
                (Some(a), None) => out.push(format!("step `{step}` rule {} removed: `{a}`", i + 1)),
                (None, None) => {}
            }
        }
    }
    out
}

/// The plan of deploying `tracks` at `now`. Reads only: the source in a
/// read-only snapshot (`gather`), the states, the deployed versions.
pub fn plan(
    store: &mut dyn Store,
    sources: &mut crate::db::SourceDbs,
    tracks: &[LoadedTrack],
    now: i64,
) -> Result<Plan> {
    let deployed: HashMap<String, crate::db::DeployedTrack> = store
        .deployed()?
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    let mut out = Vec::new();
    for track in tracks {
        let ir = &track.ir;
        let new_rules = rule_texts(&track.deployed.source, &ir.name);
        let (change, diff) = match deployed.get(&ir.name) {
            None => ("new", Vec::new()),
            Some(d) if d.hash == track.deployed.hash => ("unchanged", Vec::new()),
            Some(d) => (
                "changed",
                diff(&rule_texts(&d.source, &ir.name), &new_rules),
            ),
        };
        let counts: HashMap<String, i64> = store
            .step_counts(&ir.name)?
            .into_iter()
            .filter_map(|(s, n)| Some((s?, n)))
            .collect();
        let mut due = vec![0u64; ir.steps.len()];
        let mut fire: Vec<Vec<u64>> = ir.steps.iter().map(|s| vec![0; s.rules.len()]).collect();
        let run = RunInfo {
            id: 0,
            track: ir.name.clone(),
            now,
            last_run: store.last_run(&ir.name)?.unwrap_or(0),
            resumed: false,
            event: None,
        };
        let mut source_db = crate::db::source_of(sources, track)?;
        let source = RunSource::of_in(track, &run, store, &source_db)?;
        if let Some(query) = &source.statement {
            let env = Env { now };
            crate::db::source::gather_from(
                store,
                source_db.take(),
                query,
                &track.types,
                PLAN_BLOCK_RECORDS,
                &mut |writer, rows| {
                    let keys: Vec<Option<String>> =
                        rows.iter().map(|r| key_text(&r[ir.key])).collect();
                    let present: Vec<String> = keys.iter().flatten().cloned().collect();
                    let states = writer.load_states(&ir.name, &present)?;
                    let mut by_step: Vec<Vec<usize>> = vec![Vec::new(); ir.steps.len()];
                    for (i, key) in keys.iter().enumerate() {
                        let Some(key) = key else { continue };
                        let step = match states.get(key) {
                            None => Some(0),
                            Some(s) if s.wake_at.is_some_and(|w| w > now) => None,
                            Some(s) => s.step.as_deref().and_then(|name| ir.step(name)),
                        };
                        if let Some(step) = step {
                            by_step[step].push(i);
                        }
                    }
                    for (step, members) in by_step.iter().enumerate() {
                        if members.is_empty() {
                            continue;
                        }
                        let mut builder = BlockBuilder::new(&track.types);
                        for &i in members {
                            let key = keys[i].as_deref().unwrap_or_default();
                            builder
                                .push(key, &rows[i])
                                .map_err(|e| Error::Data(format!("track {}: {}", ir.name, e.0)))?;
                        }
                        let fired = track.steps[step]
                            .eval(&builder.finish(), env)
                            .map_err(|e| Error::Data(format!("track {}: {e}", ir.name)))?;
                        due[step] += members.len() as u64;
                        for r in fired.into_iter().flatten() {
                            fire[step][r] += 1;
                        }
                    }
                    Ok(())
                },
            )?;
        }
        let steps = ir
            .steps
            .iter()
            .enumerate()
            .map(|(s, step)| StepPlan {
                name: step.name.clone(),
                records: counts.get(&step.name).copied().unwrap_or(0),
                due: due[s],
                rules: fire[s]
                    .iter()
                    .enumerate()
                    .map(|(r, &n)| RulePlan {
                        rule: r + 1,
                        fire: n,
                    })
                    .collect(),
            })
            .collect();
        let mut stranded: Vec<Stranded> = counts
            .iter()
            .filter(|(s, n)| **n > 0 && ir.step(s).is_none())
            .map(|(s, n)| Stranded {
                step: s.clone(),
                records: *n,
            })
            .collect();
        stranded.sort_by(|a, b| a.step.cmp(&b.step));
        out.push(TrackPlan {
            name: ir.name.clone(),
            change: change.to_string(),
            diff,
            steps,
            stranded,
        });
    }
    Ok(Plan { tracks: out })
}
