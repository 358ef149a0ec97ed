//! The run history as both stores read and write it: the queries of
//! `open_run`, `open_event_run`, `finish_run` and `last_run`, the
//! `RunInfo` they make, and how a batch of events is cut and closed. The
//! reads of the latest run walk one index from its newest end, not a pass
//! over every run of the track (runs add up). `$n` as in PostgreSQL;
//! SQLite's `?n` means the same.

use super::{PendingEvent, RunInfo};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use trackc_compiler::types::Type;
use trackc_compiler::value::Value;

/// The most events one run of a track decides. A run binds their keys as
/// one array (PostgreSQL) or one JSON text (SQLite), so the number is not
/// limited by the databases' parameter counts. Fifty thousand keys are
/// under half a megabyte of text and a few megabytes in memory; fewer,
/// larger batches write each page of the state table's key index fewer
/// times (the keys of events are spread over it): 100,000 events in
/// batches of 10,000 took 1.17 s on SQLite, in batches of 50,000 0.88 s
/// (bench/events.sh).
pub const EVENT_BATCH_MAX: usize = 50_000;

/// $1 track: its unfinished run, if any (to be resumed).
pub const UNFINISHED: &str = "SELECT id, run_at, last_run, event_seq, event_key FROM trackc_runs
    WHERE track = $1 AND finished_at IS NULL ORDER BY id LIMIT 1";

/// $1 track, $2 pass id: 1 if the pass already ran the track (a NULL pass
/// matches nothing).
pub const RAN_IN_PASS: &str = "SELECT CAST(CASE WHEN
    EXISTS (SELECT 1 FROM trackc_runs WHERE pass_id = $2 AND track = $1)
    THEN 1 ELSE 0 END AS BIGINT)";

/// `listens` as $1…$n (and the track as $n+1 when `waiting_uses_track`):
/// the events the track listens for and has not taken yet, oldest first.
/// An event of a name only this track listens for is not taken as long as
/// it is not done (a track has one unfinished run at a time, and it is
/// resumed before a new batch is taken); one of a name other tracks listen
/// for too is taken when `trackc_event_runs` says so.
pub fn waiting_events(listens: &[String], sole: &[bool]) -> String {
    let param = |i: usize| format!("${}", i + 1);
    let all: Vec<String> = (0..listens.len()).map(param).collect();
    let shared: Vec<String> = (0..listens.len())
        .filter(|&i| !sole[i])
        .map(param)
        .collect();
    let untaken = if shared.is_empty() {
        String::new()
    } else {
        format!(
            "AND (e.name NOT IN ({}) OR NOT EXISTS (SELECT 1 FROM trackc_event_runs t
             WHERE t.seq = e.seq AND t.track = ${}))",
            shared.join(", "),
            listens.len() + 1
        )
    };
    format!(
        "SELECT e.seq, e.name, e.key FROM trackc_events e
         WHERE e.done_at IS NULL AND e.name IN ({}) {untaken}
         ORDER BY e.seq LIMIT {EVENT_BATCH_MAX}",
        all.join(", ")
    )
}

/// $1 seq, $2 track, $3 run: the run took the event (of a name more than
/// one track listens for).
pub const TAKE_EVENT: &str =
    "INSERT INTO trackc_event_runs (seq, track, run_id) VALUES ($1, $2, $3)";

/// Whether `waiting_events` binds the track after the names (some name
/// has other listeners).
pub fn waiting_uses_track(sole: &[bool]) -> bool {
    sole.iter().any(|s| !s)
}

/// The seqs of a batch as `trackc_runs.event_seqs` keeps them.
pub fn seqs_text(events: &[PendingEvent]) -> String {
    let seqs: Vec<String> = events.iter().map(|e| e.seq.to_string()).collect();
    format!("[{}]", seqs.join(","))
}

/// `trackc_runs.event_seqs` read back.
pub fn parse_seqs(text: &str) -> Result<Vec<i64>> {
    serde_json::from_str(text)
        .map_err(|e| Error::Data(format!("a run's list of events is unreadable: {e}")))
}

/// $1 run: its list of events (`seqs_text`), if it is a run of events.
pub const RUN_SEQS: &str = "SELECT event_seqs FROM trackc_runs WHERE id = $1";

/// $1 run, finished: its list of events is not needed any more (a run's
/// row stays, as history; the list would be up to half a megabyte).
pub const FORGET_RUN_SEQS: &str = "UPDATE trackc_runs SET event_seqs = NULL WHERE id = $1";

/// $1 seq, $2 instant: the event is done.
pub const EVENT_DONE: &str = "UPDATE trackc_events SET done_at = $2 WHERE seq = $1";

/// $1 seq: forget which tracks took the event (it is done).
pub const FORGET_EVENT: &str = "DELETE FROM trackc_event_runs WHERE seq = $1";

/// $1 seq: the tracks whose run that took the event has finished.
pub const EVENT_FINISHED_BY: &str = "SELECT o.track FROM trackc_event_runs o
    JOIN trackc_runs f ON f.id = o.run_id WHERE o.seq = $1 AND f.finished_at IS NOT NULL";

/// $1 instant, then `heard` from $2: marks done a bounded number of
/// waiting events that no track listens for.
pub fn retire_unheard(heard: &[String]) -> String {
    let unheard = if heard.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = (1..=heard.len()).map(|i| format!("${}", i + 1)).collect();
        format!("AND name NOT IN ({})", names.join(", "))
    };
    format!(
        "UPDATE trackc_events SET done_at = $1 WHERE seq IN (SELECT seq FROM trackc_events
         WHERE done_at IS NULL {unheard} ORDER BY seq LIMIT {EVENT_BATCH_MAX})"
    )
}

/// Who listens for which event: event name → the tracks `on event` it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners(pub HashMap<String, Vec<String>>);

impl Listeners {
    /// The names listened for, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.keys().cloned().collect();
        names.sort();
        names
    }

    /// The names `track` listens for, sorted, each with whether it is the
    /// only track that does.
    pub fn of(&self, track: &str) -> (Vec<String>, Vec<bool>) {
        let mut names: Vec<(String, bool)> = self
            .0
            .iter()
            .filter(|(_, tracks)| tracks.iter().any(|t| t == track))
            .map(|(name, tracks)| (name.clone(), tracks.len() == 1))
            .collect();
        names.sort();
        names.into_iter().unzip()
    }

    /// Whether `track` is the only one listening for `name`.
    pub fn sole(&self, name: &str, track: &str) -> bool {
        self.0
            .get(name)
            .is_some_and(|tracks| tracks.len() == 1 && tracks[0] == track)
    }
}

/// Which of a finished run's `events` are now done: those of a name only
/// `track` listens for (or nobody any more), and the others once every
/// track listening for them has finished a run that took them
/// (`finished_by(seq)`). Also whether all of them are.
pub fn done_events(
    events: &[PendingEvent],
    track: &str,
    listeners: &Listeners,
    mut finished_by: impl FnMut(i64) -> Result<Vec<String>>,
) -> Result<(Vec<i64>, bool)> {
    let mut done = Vec::with_capacity(events.len());
    for e in events {
        let complete = match listeners.0.get(&e.name) {
            None => true,
            Some(_) if listeners.sole(&e.name, track) => true,
            Some(all) => {
                let finished = finished_by(e.seq)?;
                all.iter().all(|t| finished.contains(t))
            }
        };
        if complete {
            done.push(e.seq);
        }
    }
    let all = done.len() == events.len();
    Ok((done, all))
}

/// How many of `waiting` (oldest first) one run decides: up to the first
/// event whose record is already in the batch (two events for one key are
/// decided one run after the other, in the order they were raised), and an
/// event without a key (it runs over every record) alone.
pub fn batch_len(waiting: &[PendingEvent], key: Type) -> usize {
    let mut seen: HashSet<String> = HashSet::new();
    for (i, e) in waiting.iter().enumerate() {
        let Some(k) = &e.key else {
            return if i == 0 { 1 } else { i };
        };
        if !seen.insert(canonical_key(k, key)) {
            return i;
        }
    }
    waiting.len()
}

/// Cuts `waiting` to the batch one run decides (`batch_len`) and gives the
/// event its run row names (the last; with its key when it is alone) and
/// the batch's list (`seqs_text`); `None` when nothing waits.
pub fn cut_batch(waiting: &mut Vec<PendingEvent>, key: Type) -> Option<(PendingEvent, String)> {
    waiting.truncate(batch_len(waiting, key));
    let last = waiting.last()?;
    let event = PendingEvent {
        key: if waiting.len() == 1 {
            last.key.clone()
        } else {
            None
        },
        ..last.clone()
    };
    Some((event, seqs_text(waiting)))
}

/// An event's key as the key field's value: `None` when it cannot be one
/// (`abc` for an integer key), and then no record has it.
pub fn typed_key(text: &str, key: Type) -> Option<Value> {
    match key {
        Type::Int => text.trim().parse().ok().map(Value::Int),
        _ => Some(Value::Text(text.to_string())),
    }
}

/// The text two events' keys are the same record by.
fn canonical_key(text: &str, key: Type) -> String {
    match typed_key(text, key) {
        Some(Value::Int(i)) => i.to_string(),
        _ => text.to_string(),
    }
}

/// $1 track: the instant of its latest finished run, of any kind.
pub const LATEST_FINISHED: &str = "SELECT run_at FROM trackc_runs
    WHERE track = $1 AND finished_at IS NOT NULL ORDER BY run_at DESC LIMIT 1";

/// $1 track: the instant of its latest finished run not started by an
/// event (what schedules count from).
pub const LATEST_SCHEDULED: &str = "SELECT run_at FROM trackc_runs
    WHERE track = $1 AND event_seq IS NULL AND finished_at IS NOT NULL
    ORDER BY run_at DESC LIMIT 1";

/// $1 track, $2 event seq (the last of its batch), $3 event key (of a
/// batch of one), $4 run_at, $5 last_run, $6 started_at, $7 pass id, $8
/// the seqs of its batch (`seqs_text`): a new run, returning its id.
pub const INSERT: &str = "INSERT INTO trackc_runs
    (track, event_seq, event_key, run_at, last_run, started_at, pass_id, event_seqs)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";

impl RunInfo {
    /// The run `UNFINISHED` found, resumed at its own instant.
    pub(crate) fn resumed(
        track: &str,
        id: i64,
        run_at: i64,
        last_run: i64,
        event_seq: Option<i64>,
        event_key: Option<String>,
    ) -> RunInfo {
        RunInfo {
            id,
            track: track.to_string(),
            now: run_at,
            last_run,
            resumed: true,
            event: event_seq.map(|seq| PendingEvent {
                seq,
                name: String::new(),
                key: event_key,
            }),
        }
    }

    /// A run just inserted (`INSERT`).
    pub(crate) fn started(
        track: &str,
        id: i64,
        now: i64,
        last_run: i64,
        event: Option<&PendingEvent>,
    ) -> RunInfo {
        RunInfo {
            id,
            track: track.to_string(),
            now,
            last_run,
            resumed: false,
            event: event.cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, key: Option<&str>) -> PendingEvent {
        PendingEvent {
            seq,
            name: "e".into(),
            key: key.map(str::to_string),
        }
    }

    #[test]
    fn a_batch_ends_before_a_repeated_key_or_a_keyless_event() {
        let waiting = [
            event(1, Some("7")),
            event(2, Some("8")),
            event(3, Some("007")),
            event(4, Some("9")),
        ];
        // `007` is record 7 for an integer key, another record for text.
        assert_eq!(batch_len(&waiting, Type::Int), 2);
        assert_eq!(batch_len(&waiting, Type::Text), 4);
        let keyless = [event(1, Some("7")), event(2, None), event(3, Some("8"))];
        assert_eq!(batch_len(&keyless, Type::Int), 1);
        assert_eq!(batch_len(&keyless[1..], Type::Int), 1);
        assert_eq!(batch_len(&[], Type::Int), 0);
    }

    #[test]
    fn a_cut_batch_names_its_last_event_and_lists_its_seqs() {
        let mut waiting = vec![
            event(4, Some("1")),
            event(9, Some("2")),
            event(12, Some("1")),
        ];
        let (last, seqs) = cut_batch(&mut waiting, Type::Int).unwrap();
        assert_eq!((last.seq, last.key), (9, None));
        assert_eq!(seqs, "[4,9]");
        assert_eq!(parse_seqs(&seqs).unwrap(), [4, 9]);
        let mut one = vec![event(5, Some("3"))];
        let (last, _) = cut_batch(&mut one, Type::Int).unwrap();
        assert_eq!(last.key.as_deref(), Some("3"));
        assert!(cut_batch(&mut Vec::new(), Type::Int).is_none());
    }

    #[test]
    fn an_event_is_done_when_every_listener_has_finished_it() {
        let listeners = Listeners(
            [
                ("solo".to_string(), vec!["a".to_string()]),
                ("both".to_string(), vec!["a".to_string(), "b".to_string()]),
            ]
            .into(),
        );
        let events = [
            PendingEvent {
                seq: 1,
                name: "solo".into(),
                key: None,
            },
            PendingEvent {
                seq: 2,
                name: "both".into(),
                key: None,
            },
            PendingEvent {
                seq: 3,
                name: "both".into(),
                key: None,
            },
            PendingEvent {
                seq: 4,
                name: "gone".into(),
                key: None,
            },
        ];
        let finished = |seq: i64| -> Result<Vec<String>> {
            Ok(match seq {
                2 => vec!["a".into(), "b".into()],
                _ => vec!["a".into()],
            })
        };
        let (done, all) = done_events(&events, "a", &listeners, finished).unwrap();
        assert_eq!(done, [1, 2, 4]);
        assert!(!all);
        assert!(waiting_uses_track(&[true, false]) && !waiting_uses_track(&[true]));
    }
}
