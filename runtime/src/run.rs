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
    typed_key, Applied, BlockWriter, Change, Dialect, EffectRow, HistoryRow, Listeners, OutboxKind,
    OutboxRow, PendingEvent, RecordState, Rows, RunInfo, Statement, Store, HISTORY_PRUNE_BATCH,
    HISTORY_PRUNE_BUDGET, HISTORY_PRUNE_EVERY,
};
use crate::error::{Error, Result};
use crate::sqltext::{event_keys, filter_by_keys, EVENT_KEYS_PARAM};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use trackc_compiler::block::{key_text, BlockBuilder};
use trackc_compiler::decision::value_json;
use trackc_compiler::interp::{eval, Env};
use trackc_compiler::ir::{Effect, Transition, Trigger};
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
    /// Events whose key is no record of the track's source (now): done,
    /// with nothing decided.
    pub unknown_keys: u64,
    /// Problems with single records or blocks (the rest went on).
    pub errors: Vec<String>,
    /// Record steps by (step index, rule index; `None`: no rule fired).
    pub fired: std::collections::BTreeMap<(usize, Option<usize>), u64>,
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
        self.unknown_keys += other.unknown_keys;
        self.errors.extend(other.errors);
        for (k, n) in other.fired {
            *self.fired.entry(k).or_default() += n;
        }
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
    /// Called when a run starts and after every block (`Progress`).
    pub progress: &'a dyn Fn(Progress<'_>),
    /// Count a scheduled run's records before deciding them, so that
    /// `progress` knows the total (one more pass over the source: for a
    /// person watching, not for a server).
    pub count_first: bool,
    /// Decisions older than this many days are pruned after runs
    /// (`prune_history`; 0: kept forever).
    pub history_days: i64,
    /// The named databases tracks' sources read (`source from NAME`).
    pub sources: &'a mut crate::db::SourceDbs,
}

/// Deletes the decision history older than `days` before `now` (none
/// when `days` is 0) and the audit log older than `AUDIT_DAYS`, in
/// batches, at most once per `HISTORY_PRUNE_EVERY` in a process and for
/// at most `HISTORY_PRUNE_BUDGET`; how many rows.
pub fn prune_history(store: &mut dyn Store, now: i64, days: i64) -> Result<u64> {
    static LAST_PRUNE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
    let last = LAST_PRUNE.load(Ordering::SeqCst);
    if last != i64::MIN && now.saturating_sub(last) < HISTORY_PRUNE_EVERY {
        return Ok(0);
    }
    LAST_PRUNE.store(now, Ordering::SeqCst);
    const DAY: i64 = 86_400_000_000;
    let started = std::time::Instant::now();
    let mut total = 0;
    let mut in_batches = |prune: &mut dyn FnMut(usize) -> Result<u64>| -> Result<()> {
        loop {
            let n = prune(HISTORY_PRUNE_BATCH)?;
            total += n;
            if n < HISTORY_PRUNE_BATCH as u64 || started.elapsed() > HISTORY_PRUNE_BUDGET {
                return Ok(());
            }
        }
    };
    if days > 0 {
        let before = now.saturating_sub(days.saturating_mul(DAY));
        in_batches(&mut |limit| store.prune_history(before, limit))?;
    }
    let before = now.saturating_sub(crate::db::audit::AUDIT_DAYS * DAY);
    in_batches(&mut |limit| store.prune_audit(before, limit))?;
    Ok(total)
}

/// Where a run is: the track, the records decided so far, and how many
/// there are when that is known (a run of events: its keys; a scheduled
/// run with `count_first`: the source's count).
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub track: &'a str,
    pub records: u64,
    pub total: Option<u64>,
}

/// At most this many problems are kept per run (the count goes on).
const MAX_ERRORS: usize = 20;

/// What a run is opened for.
#[derive(Clone, Copy, Debug)]
pub enum Opening {
    /// All the track's records (a schedule, a change, `run --once`; with a
    /// pass, only if the pass has not run the track yet).
    Records { pass: Option<i64> },
    /// A batch of the events the track listens for and has not decided.
    Events,
}

impl Runner<'_> {
    /// Runs track `t` once (finishing an interrupted run of it first).
    pub fn run_track(&mut self, t: usize, now: i64, opening: Opening) -> Result<RunStats> {
        let mut total = RunStats::default();
        let name = self.tracks[t].ir.name.clone();
        let key = self.tracks[t].ir.fields[self.tracks[t].ir.key].ty;
        let listeners = listeners(self.tracks);
        // A run cut short by a transient fault (the database restarted
        // while its records streamed) stays open and is resumed: the
        // records it already changed are skipped.
        let mut attempts = Attempts::new(self.store.options());
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let opened = match opening {
                Opening::Records { pass } => self.store.open_run(&name, now, pass)?,
                Opening::Events => self.store.open_event_run(&name, &listeners, key, now)?,
            };
            let Some(run) = opened else {
                break;
            };
            let result = self.execute(t, &run);
            if attempts.again(&result) {
                continue;
            }
            let stats = result?;
            let interrupted = self.stop.load(Ordering::SeqCst);
            if !interrupted {
                self.store
                    .finish_run(&run, stats.records, stats.changes, &listeners)?;
                prune_history(self.store, now, self.history_days)?;
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
        let state = &mut *self.store;
        // A source in a named database is read there, in its dialect;
        // states, outbox and events stay in the state database.
        let mut source_db = crate::db::source_of(self.sources, track)?;
        let source = RunSource::of_in(track, run, state, &source_db)?;
        let mut stats = RunStats::default();
        let stop = self.stop;
        let progress = self.progress;
        let block_records = self.block_records;
        let mut found = 0u64;
        let total = match (&source.keys, &source.statement) {
            (Some(keys), _) => Some(keys.len() as u64),
            (None, Some(query)) if self.count_first => Some(match source_db.as_mut() {
                Some(db) => db.count_rows(query)?,
                None => state.count_rows(query)?,
            }),
            (None, _) => None,
        };
        progress(Progress {
            track: &ir.name,
            records: 0,
            total,
        });
        let mut block = |writer: &mut dyn BlockWriter, rows: Rows| -> Result<()> {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::Stopped);
            }
            found += source.found(&rows, ir.key);
            let block = decide_block(track, run, rows, writer, &mut stats)?;
            apply(writer, &ir.name, &block, None, &mut stats)?;
            progress(Progress {
                track: &ir.name,
                records: stats.records,
                total,
            });
            Ok(())
        };
        let result = match &source.statement {
            None => Ok(()),
            Some(query) => crate::db::source::gather_from(
                state,
                source_db,
                query,
                &track.types,
                block_records,
                &mut block,
            ),
        };
        match result {
            Ok(()) => {
                stats.unknown_keys += source.unknown(found);
                Ok(stats)
            }
            Err(Error::Stopped) => Ok(stats),
            Err(e) => Err(e),
        }
    }
}

/// Who listens for which event among `tracks`.
pub fn listeners(tracks: &[LoadedTrack]) -> Listeners {
    let mut map: std::collections::HashMap<String, Vec<String>> = Default::default();
    for t in tracks {
        for name in listens(&t.ir) {
            map.entry(name).or_default().push(t.ir.name.clone());
        }
    }
    Listeners(map)
}

/// The events `track` is declared `on`, in order, each once.
pub fn listens(track: &trackc_compiler::ir::Track) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for trigger in &track.triggers {
        if let Trigger::Event(name) = trigger {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// The source query of a run, and for a run of events the keys it asked
/// for (to count the keys that are no record of the source).
pub struct RunSource {
    /// `None` when the run's events name no key that can be a record (an
    /// integer key given as `abc`): nothing to read.
    pub statement: Option<Statement>,
    /// The distinct keys asked for, as `key_text` writes them.
    keys: Option<HashSet<String>>,
    /// Events whose key cannot be one of the key field's type.
    unparsed: u64,
}

impl RunSource {
    /// The source of `run`: all records, or those of its events.
    pub fn of(track: &LoadedTrack, run: &RunInfo, store: &mut dyn Store) -> Result<RunSource> {
        RunSource::of_in(track, run, store, &None)
    }

    /// The source of `run` read from `source_db` (the track's named
    /// database, in its dialect), else from the state database `store`,
    /// which holds the run's events either way.
    pub fn of_in(
        track: &LoadedTrack,
        run: &RunInfo,
        store: &mut dyn Store,
        source_db: &Option<&mut Box<dyn crate::db::SourceDb>>,
    ) -> Result<RunSource> {
        let dialect = source_db
            .as_ref()
            .map_or_else(|| store.dialect(), |s| s.dialect());
        let events = match &run.event {
            Some(_) => store.run_events(run.id)?,
            None => Vec::new(),
        };
        RunSource::for_events(track, run, &events, dialect)
    }

    /// The source of `run` narrowed to one key (`trackc why` asks whether
    /// the source selects a record now); no statement when `key` cannot
    /// be a value of the key field's type.
    pub fn for_key(
        track: &LoadedTrack,
        run: &RunInfo,
        key: &str,
        dialect: Dialect,
    ) -> Result<RunSource> {
        let event = PendingEvent {
            seq: 0,
            name: String::new(),
            key: Some(key.to_string()),
        };
        RunSource::for_events(track, run, &[event], dialect)
    }

    fn for_events(
        track: &LoadedTrack,
        run: &RunInfo,
        events: &[PendingEvent],
        dialect: Dialect,
    ) -> Result<RunSource> {
        let ir = &track.ir;
        let field = &ir.fields[ir.key];
        let mut params = vec![
            ("now".to_string(), Value::Timestamp(run.now)),
            ("last_run".to_string(), Value::Timestamp(run.last_run)),
        ];
        // No events, or one without a key: every record.
        if events.is_empty() || events.iter().any(|e| e.key.is_none()) {
            return Ok(RunSource {
                statement: Some(Statement {
                    sql: ir.source.text.clone(),
                    params,
                }),
                keys: None,
                unparsed: 0,
            });
        }
        let mut keys = Vec::with_capacity(events.len());
        let mut texts = HashSet::with_capacity(events.len());
        let mut unparsed = 0;
        for e in events {
            match e.key.as_deref().and_then(|k| typed_key(k, field.ty)) {
                Some(v) => {
                    if let Some(text) = key_text(&v) {
                        if texts.insert(text) {
                            keys.push(v);
                        }
                    }
                }
                None => unparsed += 1,
            }
        }
        let statement = if keys.is_empty() {
            None
        } else {
            params.push((EVENT_KEYS_PARAM.to_string(), Value::Text(event_keys(&keys))));
            Some(Statement {
                sql: filter_by_keys(&ir.source.text, &field.name, field.ty, dialect)?,
                params,
            })
        };
        Ok(RunSource {
            statement,
            keys: Some(texts),
            unparsed,
        })
    }

    /// How many of `rows` are records the run's events asked for.
    pub fn found(&self, rows: &Rows, key: usize) -> u64 {
        match &self.keys {
            None => 0,
            Some(keys) => rows
                .iter()
                .filter(|r| key_text(&r[key]).is_some_and(|k| keys.contains(&k)))
                .count() as u64,
        }
    }

    /// The run's events whose key is no record of the source, once `found`
    /// of the keys asked for were.
    pub fn unknown(&self, found: u64) -> u64 {
        match &self.keys {
            None => 0,
            Some(keys) => (keys.len() as u64).saturating_sub(found) + self.unparsed,
        }
    }
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
    /// The decisions so far, a JSON array being written (empty: none).
    decisions: String,
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
                decisions: String::new(),
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
                    decisions: String::new(),
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
            for (&p, fired) in members.iter().zip(fired) {
                *stats.fired.entry((step, fired)).or_default() += 1;
                let record = &rows[pending[p].row];
                let pe = &mut pending[p];
                let Some(index) = fired else {
                    if track.history {
                        append_decision(&mut pe.decisions, track, step, None, record);
                    }
                    continue;
                };
                let rule = &ir.steps[step].rules[index];
                pe.state.seq += 1;
                pe.state.run_id = run.id;
                pe.changed = true;
                for (n, effect) in rule.effects.iter().enumerate() {
                    let id = format!("{}/{}/{}/{n}", ir.name, pe.key, pe.state.seq);
                    pe.effects
                        .push(effect_row(track, run, record, &pe.key, id, effect, env));
                }
                if track.history {
                    append_decision(&mut pe.decisions, track, step, Some(index), record);
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
            history: (track.history && !p.decisions.is_empty()).then(|| HistoryRow {
                version: track.deployed.hash.clone(),
                legend: track.legend.clone(),
                run_id: run.id,
                node: track.node,
                at: run.now,
                decisions: p.decisions + "]",
            }),
        })
        .collect())
}

/// Appends one decision to `out`, a JSON array being written, by
/// position: `[step, rule, values…]` (`rule` from 0, -1 when none fired;
/// the values of the fields the conditions tried read, in the order
/// `history_legend` lists them; timestamps in microseconds). The legend
/// names them; next step, effects and sequence numbers follow from it.
/// Written by hand: it is done for every decision of every run.
fn append_decision(
    out: &mut String,
    track: &LoadedTrack,
    step: usize,
    fired: Option<usize>,
    record: &[Value],
) {
    use std::fmt::Write;
    out.push(if out.is_empty() { '[' } else { ',' });
    let rule = fired.map_or(-1, |r| r as i64);
    let _ = write!(out, "[{step},{rule}");
    let s = &track.reads[step];
    for &f in &s[fired.unwrap_or(s.len() - 1)] {
        out.push(',');
        match &record[f] {
            Value::Null => out.push_str("null"),
            Value::Int(v) | Value::Timestamp(v) | Value::Duration(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(v) => {
                let _ = write!(out, "{}", serde_json::Value::from(*v));
            }
            Value::Bool(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Text(v) => {
                let _ = write!(out, "{}", serde_json::Value::from(v.as_str()));
            }
        }
    }
    out.push(']');
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
