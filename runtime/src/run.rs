//! A run of a track: gather its records (the source query, streamed in
//! blocks), find those due, decide them with the JIT step by step (records
//! that move into a step without `wait` are decided again in the same
//! run), and apply each block's state changes and effects in one
//! transaction.
//!
//! Exactly once: a record's state carries a sequence number and the id of
//! the run that last changed it. A change is written only if the sequence
//! number is still the one the decision was made on, so a block applied
//! twice changes nothing the second time; an interrupted run is resumed
//! (same instant) and skips the records it already changed.

use crate::bundle::LoadedTrack;
use crate::db::retry::Attempts;
use crate::db::{
    Applied, BlockWriter, Change, EffectRow, OutboxKind, OutboxRow, PendingEvent, RecordState,
    Rows, RunInfo, Statement, Store,
};
use crate::error::{Error, Result};
use crate::sqltext::{filter_by_key, EVENT_KEY_PARAM};
use std::sync::atomic::{AtomicBool, Ordering};
use trackc_compiler::block::{key_text, BlockBuilder};
use trackc_compiler::decision::value_json;
use trackc_compiler::interp::{eval, Env};
use trackc_compiler::ir::{Effect, Transition};
use trackc_compiler::value::Value;

/// Records per block, unless configured otherwise.
pub const BLOCK_RECORDS: usize = trackc_compiler::block::DEFAULT_BLOCK_RECORDS;

/// What runs did, summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    pub runs: u64,
    /// Records the source queries returned.
    pub records: u64,
    /// Evaluations of a record in a step.
    pub record_steps: u64,
    /// Records whose state changed.
    pub changes: u64,
    /// Changes skipped because they were already applied.
    pub stale: u64,
    pub sql: u64,
    pub outbox: u64,
    pub events: u64,
    /// Records held by a `wait`.
    pub waiting: u64,
    /// Problems with single records or blocks (the rest went on).
    pub errors: Vec<String>,
}

impl RunStats {
    pub fn add(&mut self, other: RunStats) {
        self.runs += other.runs;
        self.records += other.records;
        self.record_steps += other.record_steps;
        self.changes += other.changes;
        self.stale += other.stale;
        self.sql += other.sql;
        self.outbox += other.outbox;
        self.events += other.events;
        self.waiting += other.waiting;
        self.errors.extend(other.errors);
    }

    fn add_applied(&mut self, a: Applied) {
        self.changes += a.changes;
        self.stale += a.stale;
        self.sql += a.sql;
        self.outbox += a.outbox;
        self.events += a.events;
    }
}

/// Runs tracks against a store.
pub struct Runner<'a> {
    pub store: &'a mut dyn Store,
    pub tracks: &'a [LoadedTrack],
    pub block_records: usize,
    /// Set by SIGINT/SIGTERM: finish the current block, then stop.
    pub stop: &'a AtomicBool,
    /// Called after every block with the records done so far in the run.
    pub progress: &'a dyn Fn(&str, u64),
}

/// At most this many problems are kept per run (the count goes on).
const MAX_ERRORS: usize = 20;

impl Runner<'_> {
    /// Runs track `t` once (finishing an interrupted run of it first).
    /// With `event`, only the event's record; with `pass`, only if the pass
    /// has not run it yet.
    pub fn run_track(
        &mut self,
        t: usize,
        now: i64,
        event: Option<&PendingEvent>,
        pass: Option<i64>,
    ) -> Result<RunStats> {
        let mut total = RunStats::default();
        let name = self.tracks[t].ir.name.clone();
        // A run cut short by a transient fault (the database restarted
        // while its records streamed) stays open and is resumed: the
        // records it already changed are skipped.
        let mut attempts = Attempts::new(self.store.options());
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(run) = self.store.open_run(&name, now, event, pass)? else {
                break;
            };
            let result = self.execute(t, &run);
            if attempts.again(&result) {
                continue;
            }
            let stats = result?;
            let interrupted = self.stop.load(Ordering::SeqCst);
            if !interrupted {
                self.store.finish_run(&run, stats.records, stats.changes)?;
            }
            total.add(stats);
            total.runs += 1;
            if !run.resumed || interrupted {
                break;
            }
        }
        Ok(total)
    }

    fn execute(&mut self, t: usize, run: &RunInfo) -> Result<RunStats> {
        let track = &self.tracks[t];
        let ir = &track.ir;
        let query = source_statement(track, run)?;
        let mut stats = RunStats::default();
        let stop = self.stop;
        let progress = self.progress;
        let block_records = self.block_records;
        let result = self
            .store
            .gather(&query, &track.types, block_records, &mut |writer, rows| {
                if stop.load(Ordering::SeqCst) {
                    return Err(Error::Stopped);
                }
                let block = decide_block(track, run, rows, writer, &mut stats)?;
                apply(writer, &ir.name, &block, None, &mut stats)?;
                progress(&ir.name, stats.records);
                Ok(())
            });
        match result {
            Ok(()) | Err(Error::Stopped) => Ok(stats),
            Err(e) => Err(e),
        }
    }
}

/// The source query of a run: by key for a run started by an event.
pub fn source_statement(track: &LoadedTrack, run: &RunInfo) -> Result<Statement> {
    let ir = &track.ir;
    let key_name = &ir.fields[ir.key].name;
    let mut params = vec![
        ("now".to_string(), Value::Timestamp(run.now)),
        ("last_run".to_string(), Value::Timestamp(run.last_run)),
    ];
    let sql = match run.event.as_ref().and_then(|e| e.key.clone()) {
        Some(key) => {
            params.push((EVENT_KEY_PARAM.to_string(), Value::Text(key)));
            filter_by_key(&ir.source.text, key_name)?
        }
        None => ir.source.text.clone(),
    };
    Ok(Statement { sql, params })
}

/// Decides and applies one block of a run cut by another node (the
/// track's owner in a group), under the owner's epoch: if the track has
/// moved to another owner since, nothing is written (`Error::Fenced`).
pub fn execute_block(
    track: &LoadedTrack,
    run: &RunInfo,
    rows: Rows,
    writer: &mut dyn BlockWriter,
    epoch: u64,
) -> Result<RunStats> {
    let mut stats = RunStats::default();
    let block = decide_block(track, run, rows, writer, &mut stats)?;
    apply(writer, &track.ir.name, &block, Some(epoch), &mut stats)?;
    Ok(stats)
}

/// Applies a block's changes in one transaction; if that fails, each
/// change alone, so that one bad record does not hold up the others.
fn apply(
    writer: &mut dyn BlockWriter,
    track: &str,
    changes: &[Change],
    fence: Option<u64>,
    stats: &mut RunStats,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    match writer.apply(track, changes, fence) {
        Ok(a) => stats.add_applied(a),
        Err(Error::Db { .. }) | Err(Error::Data(_)) if changes.len() > 1 => {
            for c in changes {
                match writer.apply(track, std::slice::from_ref(c), fence) {
                    Ok(a) => stats.add_applied(a),
                    Err(e) => note(
                        stats,
                        format!(
                            "track {track}, record `{}`: {e}; its state is unchanged",
                            c.key
                        ),
                    ),
                }
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn note(stats: &mut RunStats, message: String) {
    if stats.errors.len() < MAX_ERRORS {
        stats.errors.push(message);
    }
}

/// A record being decided in this run.
struct Pending {
    row: usize,
    key: String,
    expected_seq: Option<i64>,
    state: RecordState,
    /// Index of the current step.
    step: usize,
    changed: bool,
    effects: Vec<EffectRow>,
}

/// Decides the records of one block: the changes to apply.
fn decide_block(
    track: &LoadedTrack,
    run: &RunInfo,
    rows: Rows,
    writer: &mut dyn BlockWriter,
    stats: &mut RunStats,
) -> Result<Vec<Change>> {
    let ir = &track.ir;
    stats.records += rows.len() as u64;
    let mut keys = Vec::with_capacity(rows.len());
    let mut rows_with_keys = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match key_text(&row[ir.key]) {
            Some(k) => {
                keys.push(k);
                rows_with_keys.push(i);
            }
            None => note(
                stats,
                format!(
                    "track {}: a record's key `{}` is NULL; it was skipped",
                    ir.name, ir.fields[ir.key].name
                ),
            ),
        }
    }
    let states = writer.load_states(&ir.name, &keys)?;
    let wake = |step: usize| ir.steps[step].wait.map(|w| run.now.saturating_add(w));
    let mut pending: Vec<Pending> = Vec::new();
    let mut due: Vec<usize> = Vec::new();
    for (key, &row) in keys.into_iter().zip(&rows_with_keys) {
        let p = match states.get(&key) {
            None => Pending {
                row,
                key,
                expected_seq: None,
                state: RecordState {
                    step: Some(ir.steps[0].name.clone()),
                    entered_at: run.now,
                    wake_at: wake(0),
                    seq: 0,
                    run_id: run.id,
                },
                step: 0,
                changed: true,
                effects: Vec::new(),
            },
            Some(s) => {
                let Some(step_name) = &s.step else { continue };
                if s.run_id == run.id {
                    continue;
                }
                let Some(step) = ir.step(step_name) else {
                    note(
                        stats,
                        format!(
                            "track {}: record `{key}` is in step `{step_name}`, which the \
                             deployed version does not have; it was skipped",
                            ir.name
                        ),
                    );
                    continue;
                };
                Pending {
                    row,
                    key,
                    expected_seq: Some(s.seq),
                    state: s.clone(),
                    step,
                    changed: false,
                    effects: Vec::new(),
                }
            }
        };
        if p.state.wake_at.is_some_and(|w| w > run.now) {
            stats.waiting += 1;
        } else {
            due.push(pending.len());
        }
        pending.push(p);
    }
    let env = Env { now: run.now };
    // Steps without `wait` chain in the same run; E010 rules out cycles, the
    // bound is a second guard.
    for _ in 0..=ir.steps.len() {
        if due.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for (step, members) in group_by_step(&pending, &due) {
            let mut builder = BlockBuilder::new(&track.types);
            for &p in &members {
                let p = &pending[p];
                builder
                    .push(&p.key, &rows[p.row])
                    .map_err(|e| Error::Data(format!("track {}: {}", ir.name, e.0)))?;
            }
            let block = builder.finish();
            let fired = track.steps[step].eval(&block, env).map_err(|e| {
                Error::Data(format!(
                    "track {}, step {}: {e}",
                    ir.name, ir.steps[step].name
                ))
            })?;
            stats.record_steps += members.len() as u64;
            for (&p, rule) in members.iter().zip(fired) {
                let Some(rule) = rule else { continue };
                let rule = &ir.steps[step].rules[rule];
                let record = &rows[pending[p].row];
                let pe = &mut pending[p];
                pe.state.seq += 1;
                pe.state.run_id = run.id;
                pe.changed = true;
                for (n, effect) in rule.effects.iter().enumerate() {
                    let id = format!("{}/{}/{}/{n}", ir.name, pe.key, pe.state.seq);
                    pe.effects
                        .push(effect_row(track, run, record, &pe.key, id, effect, env));
                }
                match rule.transition {
                    Transition::Stay => {}
                    Transition::End => pe.state.step = None,
                    Transition::Goto(s) => {
                        pe.state.step = Some(ir.steps[s].name.clone());
                        pe.state.entered_at = run.now;
                        pe.state.wake_at = wake(s);
                        pe.step = s;
                        if ir.steps[s].wait.is_none() {
                            next.push(p);
                        }
                    }
                }
            }
        }
        due = next;
    }
    Ok(pending
        .into_iter()
        .filter(|p| p.changed)
        .map(|p| Change {
            key: p.key,
            expected_seq: p.expected_seq,
            state: p.state,
            effects: p.effects,
        })
        .collect())
}

/// The due records by step, steps in order.
fn group_by_step(pending: &[Pending], due: &[usize]) -> Vec<(usize, Vec<usize>)> {
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &p in due {
        groups.entry(pending[p].step).or_default().push(p);
    }
    groups.into_iter().collect()
}

fn effect_row(
    track: &LoadedTrack,
    run: &RunInfo,
    record: &[Value],
    key: &str,
    id: String,
    effect: &Effect,
    env: Env,
) -> EffectRow {
    let ir = &track.ir;
    let payload = || {
        let object: serde_json::Map<String, serde_json::Value> = ir
            .fields
            .iter()
            .zip(record)
            .map(|(f, v)| (f.name.clone(), value_json(v)))
            .collect();
        serde_json::Value::Object(object).to_string()
    };
    match effect {
        Effect::Sql(sql) => EffectRow::Sql(Statement {
            sql: sql.text.clone(),
            params: sql
                .params
                .iter()
                .map(|p| {
                    let v = match p.as_str() {
                        "now" => Value::Timestamp(run.now),
                        "last_run" => Value::Timestamp(run.last_run),
                        name => ir
                            .field(name)
                            .map(|f| record[f].clone())
                            .unwrap_or(Value::Null),
                    };
                    (p.clone(), v)
                })
                .collect(),
        }),
        Effect::Email { template, to } => EffectRow::Outbox(OutboxRow {
            id,
            kind: OutboxKind::Email,
            track: ir.name.clone(),
            key: key.to_string(),
            target: template.clone(),
            recipient: match eval(to, record, env) {
                Value::Null => None,
                Value::Text(s) => Some(s),
                other => Some(other.to_string()),
            },
            payload: payload(),
            at: run.now,
        }),
        Effect::Webhook { url } => EffectRow::Outbox(OutboxRow {
            id,
            kind: OutboxKind::Webhook,
            track: ir.name.clone(),
            key: key.to_string(),
            target: url.clone(),
            recipient: None,
            payload: payload(),
            at: run.now,
        }),
        Effect::Emit { event } => EffectRow::Event {
            id,
            name: event.clone(),
            key: key.to_string(),
            at: run.now,
        },
    }
}
