//! The SQL of the decision history (`trackc_history`), shared by both
//! stores (`$n` placeholders; SQLite's are rewritten): pruning, and what
//! `trackc why` reads about one record.

/// $1 before, $2 limit: changes made before an instant. No index on the
/// instant (one more tree to write for every change): pruning scans, and
/// runs at most once per `HISTORY_PRUNE_EVERY`.
pub const PRUNE: &str = "DELETE FROM trackc_history WHERE (track, key, seq) IN
    (SELECT track, key, seq FROM trackc_history WHERE at < $1 LIMIT $2)";

/// $1 track, $2 key, $3 limit: the newest changes of a record, oldest first.
pub const DECISIONS: &str = "SELECT version, run_id, node, at, decisions, epoch, seq FROM
    (SELECT * FROM trackc_history WHERE track = $1 AND key = $2 ORDER BY seq DESC LIMIT $3)
    AS h ORDER BY h.seq";

/// $1 track, $2 key.
pub const STATE: &str = "SELECT step, entered_at, wake_at, seq, run_id FROM trackc_state
    WHERE track = $1 AND key = $2";

/// $1 track, $2 key, $3 limit: the record's outbox rows.
pub const OUTBOX: &str = "SELECT id, state, last_error FROM trackc_outbox
    WHERE track = $1 AND key = $2 ORDER BY created_at DESC, id LIMIT $3";

/// $1 track: every source deployed for it, by hash.
pub const SOURCES: &str = "SELECT hash, min(source) FROM trackc_deployments WHERE track = $1
    GROUP BY hash";

/// $1 track: the legend of each version of the track's history.
pub const LEGENDS: &str = "SELECT version, legend FROM trackc_history_legends WHERE track = $1";

/// $1 track, $2 version, $3 legend: kept once per version.
pub const ADD_LEGEND: &str = "INSERT INTO trackc_history_legends (track, version, legend)
    VALUES ($1, $2, $3) ON CONFLICT (track, version) DO NOTHING";
