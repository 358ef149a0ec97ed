//! What the web console reads besides the history of one record: a
//! track's recent runs, and its recent history rows (to count how often
//! each rule fired, and the blocks each node decided per run). `$n`
//! placeholders as in PostgreSQL (SQLite's are rewritten).

use serde::Serialize;

/// The most runs a track page shows.
pub const RUNS_SHOWN_MAX: usize = 20;
/// The most history rows (blocks) read to count a track's firings over a
/// day: a track deciding a million records a day in blocks of 1,024 has
/// about a thousand; past this the counts are of the newest rows, and the
/// page says so.
pub const HISTORY_COUNT_ROWS_MAX: usize = 20_000;

/// $1 track, $2 limit: the newest runs.
pub const RUNS: &str = "SELECT id, run_at, started_at, finished_at, records, changes,
    failed_blocks FROM trackc_runs WHERE track = $1 ORDER BY id DESC LIMIT $2";

/// $1 since: blocks decided since an instant, per node (the history's rows;
/// blocks of tracks without history are not among them).
pub const BLOCKS_BY_NODE: &str = "SELECT node, count(*) FROM trackc_history WHERE at >= $1
    GROUP BY node ORDER BY node";

/// $1 run, $2 failed blocks.
pub const SET_FAILED_BLOCKS: &str = "UPDATE trackc_runs SET failed_blocks = $2 WHERE id = $1";

/// $1 track, $2 since, $3 limit: the newest history rows since an instant.
pub const HISTORY_SINCE: &str = "SELECT at, node, run_id, changes FROM trackc_history
    WHERE track = $1 AND at >= $2 ORDER BY id DESC LIMIT $3";

/// One run of a track as the console lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRow {
    pub id: i64,
    /// The run's instant, when it started, when it finished (microseconds).
    pub run_at: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub records: i64,
    pub changes: i64,
    /// Tries of its blocks that failed (a group's runs; a block is tried
    /// up to four times).
    pub failed_blocks: i64,
}

/// One history row (a block) as the console reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRow {
    pub at: i64,
    pub node: Option<i64>,
    pub run_id: i64,
    /// `[[seq, [[step, rule, values…]…]]…]` (docs/runtime.md).
    pub changes: String,
}

impl BlockRow {
    /// Each decision's (step index, rule index; -1: none fired).
    pub fn decisions(&self) -> Vec<(i64, i64)> {
        let Ok(changes) =
            serde_json::from_str::<Vec<(i64, Vec<Vec<serde_json::Value>>)>>(&self.changes)
        else {
            return Vec::new();
        };
        changes
            .iter()
            .flat_map(|(_, decisions)| decisions)
            .filter_map(|d| Some((d.first()?.as_i64()?, d.get(1)?.as_i64()?)))
            .collect()
    }
}
