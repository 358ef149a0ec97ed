//! The run history as both stores read and write it: the queries of
//! `open_run` and `last_run`, and the `RunInfo` they make. The reads walk
//! one index from its newest end, not a pass over every run of
//! the track (each event runs its tracks once, so runs add up; a scan per
//! event made handling N events quadratic). `$n` as in PostgreSQL;
//! SQLite's `?n` means the same.

use super::{PendingEvent, RunInfo};

/// $1 track: its unfinished run, if any (to be resumed).
pub const UNFINISHED: &str = "SELECT id, run_at, last_run, event_seq, event_key FROM trackc_runs
    WHERE track = $1 AND finished_at IS NULL ORDER BY id LIMIT 1";

/// $1 track, $2 event seq, $3 pass id: 1 if either already ran it.
pub const ALREADY_RAN: &str = "SELECT CAST(CASE WHEN
    EXISTS (SELECT 1 FROM trackc_runs WHERE event_seq = $2 AND track = $1)
    OR EXISTS (SELECT 1 FROM trackc_runs WHERE pass_id = $3 AND track = $1)
    THEN 1 ELSE 0 END AS BIGINT)";

/// $1 track: the instant of its latest finished run, of any kind.
pub const LATEST_FINISHED: &str = "SELECT run_at FROM trackc_runs
    WHERE track = $1 AND finished_at IS NOT NULL ORDER BY run_at DESC LIMIT 1";

/// $1 track: the instant of its latest finished run not started by an
/// event (what schedules count from).
pub const LATEST_SCHEDULED: &str = "SELECT run_at FROM trackc_runs
    WHERE track = $1 AND event_seq IS NULL AND finished_at IS NOT NULL
    ORDER BY run_at DESC LIMIT 1";

/// $1 track, $2 event seq, $3 event key, $4 run_at, $5 last_run,
/// $6 started_at, $7 pass id: a new run, returning its id.
pub const INSERT: &str = "INSERT INTO trackc_runs
    (track, event_seq, event_key, run_at, last_run, started_at, pass_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

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
