//! One node's work loop: which tracks are due (their triggers), events,
//! and `trackc run --once`.

use crate::bundle::LoadedTrack;
use crate::clock::now_micros;
use crate::db::EVENT_BATCH_MAX;
use crate::db::{Statement, Store};
use crate::error::{Error, Result};
use crate::run::{listeners, listens, Opening, RunStats, Runner};
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::time::Duration;
use trackc_compiler::ir::Trigger;
use trackc_compiler::value::Value;

/// A bound on rounds of event runs per call (each round runs one batch of
/// up to `EVENT_BATCH_MAX` events per listening track): a thousand rounds
/// are ten million events, and events that raise events in a loop end the
/// call instead of holding it forever.
const MAX_EVENT_ROUNDS: usize = 1_000;

/// Runs every track once now, with all chained steps, then the events
/// raised (and the events those raise). A track that only listens for
/// events runs for its events, not over all its records. An interrupted
/// pass is finished, not repeated: tracks it already ran are not run again.
pub fn run_once(runner: &mut Runner<'_>) -> Result<RunStats> {
    let (pass, now) = runner.store.open_pass(now_micros())?;
    let mut stats = RunStats::default();
    for t in 0..runner.tracks.len() {
        if runner.stop.load(Ordering::SeqCst) {
            return Ok(stats);
        }
        let triggers = &runner.tracks[t].ir.triggers;
        let events_only =
            !triggers.is_empty() && triggers.iter().all(|tr| matches!(tr, Trigger::Event(_)));
        if events_only {
            continue;
        }
        run_guarded(
            runner,
            t,
            now,
            Opening::Records { pass: Some(pass) },
            &mut stats,
        );
    }
    stats.add(process_events(runner, now)?);
    if !runner.stop.load(Ordering::SeqCst) {
        runner.store.finish_pass(pass)?;
    }
    Ok(stats)
}

/// Runs one track; a failure of the track (its source query fails, a
/// table is missing) is noted and the other tracks go on.
fn run_guarded(
    runner: &mut Runner<'_>,
    t: usize,
    now: i64,
    opening: Opening,
    stats: &mut RunStats,
) {
    match runner.run_track(t, now, opening) {
        Ok(s) => stats.add(s),
        Err(e) => stats
            .errors
            .push(format!("track {}: {e}", runner.tracks[t].ir.name)),
    }
}

/// Decides pending events: each track declared `on event NAME` runs over
/// the records its events name, a batch of events per run, until none is
/// left (or `MAX_EVENT_ROUNDS`). Events no deployed track listens for are
/// marked done first.
pub fn process_events(runner: &mut Runner<'_>, now: i64) -> Result<RunStats> {
    let mut stats = RunStats::default();
    let heard = listeners(runner.tracks).names();
    while runner.store.retire_unheard_events(&heard, now)? == EVENT_BATCH_MAX as u64 {}
    let listening: Vec<usize> = (0..runner.tracks.len())
        .filter(|&t| !listens(&runner.tracks[t].ir).is_empty())
        .collect();
    for _ in 0..MAX_EVENT_ROUNDS {
        let mut ran = false;
        for &t in &listening {
            if runner.stop.load(Ordering::SeqCst) {
                return Ok(stats);
            }
            let mut round = RunStats::default();
            run_guarded(runner, t, now, Opening::Events, &mut round);
            ran |= round.runs > 0;
            stats.add(round);
        }
        if !ran {
            break;
        }
    }
    Ok(stats)
}

/// Runs tracks by their triggers until `runner.stop` is set, checking
/// every `tick`. `between` is called after each round with the store and
/// the round's work (outbox delivery, reports); it returns true when it
/// has more to do, and the next round then starts without waiting.
pub fn serve(
    runner: &mut Runner<'_>,
    tick: Duration,
    between: &mut dyn FnMut(&mut dyn Store, &RunStats) -> Result<bool>,
) -> Result<()> {
    let started = now_micros();
    while !runner.stop.load(Ordering::SeqCst) {
        let busy = match serve_round(runner, started, between) {
            Ok(busy) => busy,
            // The database stayed away longer than an operation retries:
            // the next round tries again (the store logs the outage).
            Err(e) if e.fault().is_some() => false,
            Err(e) => return Err(e),
        };
        let mut slept = Duration::ZERO;
        while !busy && slept < tick && !runner.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
    }
    Ok(())
}

/// One round of `serve`: the due tracks, the events, then `between`.
fn serve_round(
    runner: &mut Runner<'_>,
    started: i64,
    between: &mut dyn FnMut(&mut dyn Store, &RunStats) -> Result<bool>,
) -> Result<bool> {
    let now = now_micros();
    let mut stats = RunStats::default();
    for t in 0..runner.tracks.len() {
        match due(runner.store, runner.sources, runner.tracks, t, now, started) {
            Ok(Due::No) => {}
            Ok(Due::Yes { mark }) => {
                let before = stats.errors.len();
                run_guarded(runner, t, now, Opening::Records { pass: None }, &mut stats);
                if let (Some(mark), true) = (mark, stats.errors.len() == before) {
                    runner.store.set_mark(&runner.tracks[t].ir.name, &mark)?;
                }
            }
            Err(e) => stats
                .errors
                .push(format!("track {}: {e}", runner.tracks[t].ir.name)),
        }
    }
    stats.add(process_events(runner, now)?);
    between(runner.store, &stats)
}

pub(crate) enum Due {
    No,
    /// Run now; after a clean run, remember `mark` (the `on change` result).
    Yes {
        mark: Option<String>,
    },
}

/// Whether a trigger of track `t` calls for a run at `now`. A schedule
/// missed while nothing ran is due once: the next tick after the last run.
pub(crate) fn due(
    store: &mut dyn Store,
    sources: &mut crate::db::SourceDbs,
    tracks: &[LoadedTrack],
    t: usize,
    now: i64,
    started: i64,
) -> Result<Due> {
    let ir = &tracks[t].ir;
    let last = store.last_run(&ir.name)?;
    for trigger in &ir.triggers {
        let yes = match trigger {
            Trigger::Every(d) => last.is_none_or(|l| now >= l.saturating_add(*d)),
            Trigger::Cron { expr, tz } => {
                let next = next_cron(expr, tz.as_deref(), last.unwrap_or(started))?;
                next <= now
            }
            Trigger::At(at) => now >= *at && last.is_none_or(|l| l < *at),
            Trigger::Event(_) => false,
            Trigger::Change(sql) => {
                let statement = Statement {
                    sql: sql.text.clone(),
                    params: vec![
                        ("now".into(), Value::Timestamp(now)),
                        ("last_run".into(), Value::Timestamp(last.unwrap_or(0))),
                    ],
                };
                // A `change` query reads the track's source database.
                let mark = match crate::db::source_of(sources, &tracks[t])? {
                    Some(db) => db.query_fingerprint(&statement)?,
                    None => store.query_fingerprint(&statement)?,
                };
                if store.get_mark(&ir.name)?.as_deref() != Some(mark.as_str()) {
                    return Ok(Due::Yes { mark: Some(mark) });
                }
                false
            }
        };
        if yes {
            return Ok(Due::Yes { mark: None });
        }
    }
    Ok(Due::No)
}

/// The first instant after `after` (µs) that `expr` matches in `tz`.
pub fn next_cron(expr: &str, tz: Option<&str>, after: i64) -> Result<i64> {
    let cron = croner::parser::CronParser::new()
        .parse(expr)
        .map_err(|e| Error::Config(format!("cron '{expr}': {e}")))?;
    let tz: chrono_tz::Tz = tz
        .unwrap_or("UTC")
        .parse()
        .map_err(|e| Error::Config(format!("time zone: {e}")))?;
    let start: DateTime<Utc> = DateTime::from_timestamp_micros(after)
        .ok_or_else(|| Error::Config(format!("instant {after} out of range")))?;
    let next = cron
        .find_next_occurrence(&start.with_timezone(&tz), false)
        .map_err(|e| Error::Config(format!("cron '{expr}': {e}")))?;
    Ok(next.with_timezone(&Utc).timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn cron_in_a_time_zone() {
        // 09:00 on weekdays in Berlin (UTC+1 in winter): Monday 08:00 UTC.
        let next = next_cron(
            "0 9 * * 1-5",
            Some("Europe/Berlin"),
            at("2026-11-21T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(next, at("2026-11-23T08:00:00Z"));
        let next = next_cron("*/15 * * * *", None, at("2026-11-23T10:07:00Z")).unwrap();
        assert_eq!(next, at("2026-11-23T10:15:00Z"));
    }
}
