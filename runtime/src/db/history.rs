//! The SQL of the decision history (`trackc_history`), shared by both
//! stores (`$n` placeholders; SQLite's are rewritten): pruning, and what
//! `trackc why` reads about one record. A row is one block's written
//! changes (docs/runtime.md, "Decision history").

use super::{Change, HistoryRow};

/// $1 before, $2 limit: blocks decided before an instant.
pub const PRUNE: &str = "DELETE FROM trackc_history WHERE id IN
    (SELECT id FROM trackc_history WHERE at < $1 ORDER BY at LIMIT $2)";

/// $1 track, $2 the key as a LIKE pattern (`like_key`), $3 limit: the
/// newest blocks that changed a record, oldest first. No index leads to a
/// key (it would cost every change a write): the track's blocks are
/// searched, newest first.
pub const DECISIONS: &str = "SELECT version, run_id, node, at, keys, changes, epoch FROM
    (SELECT * FROM trackc_history WHERE track = $1 AND keys LIKE $2 ESCAPE '!'
     ORDER BY id DESC LIMIT $3) AS h ORDER BY h.id";

/// $1 track, $2 run, $3 at, $4 node, $5 epoch, $6 version, $7 keys, $8 changes.
pub const INSERT: &str = "INSERT INTO trackc_history (track, run_id, at, node, epoch, version,
    keys, changes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The LIKE pattern that finds `key` in a block's `keys` (a JSON array of
/// strings): its JSON form, with `!`, `%` and `_` escaped by `!`.
pub fn like_key(key: &str) -> String {
    let json = serde_json::Value::from(key).to_string();
    let mut out = String::from("%");
    for c in json.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One block's history row: the written changes that keep history.
pub struct BlockHistory<'a> {
    pub first: &'a HistoryRow,
    /// A JSON array of the keys.
    pub keys: String,
    /// A JSON array of `[seq, decisions]`, aligned with `keys`.
    pub changes: String,
}

impl<'a> BlockHistory<'a> {
    /// The row of `changes` (those written), or `None` when none keeps
    /// history.
    pub fn of(changes: impl Iterator<Item = &'a Change>) -> Option<BlockHistory<'a>> {
        let mut row: Option<BlockHistory<'a>> = None;
        for c in changes {
            let Some(h) = &c.history else { continue };
            let r = row.get_or_insert_with(|| BlockHistory {
                first: h,
                keys: String::from("["),
                changes: String::from("["),
            });
            if r.keys.len() > 1 {
                r.keys.push(',');
                r.changes.push(',');
            }
            r.keys
                .push_str(&serde_json::Value::from(c.key.as_str()).to_string());
            r.changes.push('[');
            r.changes.push_str(&c.state.seq.to_string());
            r.changes.push(',');
            r.changes.push_str(&h.decisions);
            r.changes.push(']');
        }
        row.map(|mut r| {
            r.keys.push(']');
            r.changes.push(']');
            r
        })
    }
}

/// A block's history row as `DECISIONS` reads it: version, run, node, at,
/// keys, changes, epoch.
pub type BlockRow = (String, i64, Option<i64>, i64, String, String, Option<i64>);

/// The history of `key` among block rows: (row, epoch, seq) per change of
/// the record, oldest first.
pub fn changes_of(key: &str, rows: Vec<BlockRow>) -> Vec<(HistoryRow, Option<u64>, i64)> {
    let mut out = Vec::new();
    for (version, run_id, node, at, keys, changes, epoch) in rows {
        let (Ok(keys), Ok(changes)) = (
            serde_json::from_str::<Vec<String>>(&keys),
            serde_json::from_str::<Vec<(i64, serde_json::Value)>>(&changes),
        ) else {
            continue;
        };
        for (k, (seq, decisions)) in keys.iter().zip(changes) {
            if k == key {
                let row = HistoryRow {
                    version: version.clone(),
                    legend: Default::default(),
                    run_id,
                    node,
                    at,
                    decisions: decisions.to_string(),
                };
                out.push((row, epoch.map(|e| e as u64), seq));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_json_form_and_like_characters_are_escaped() {
        assert_eq!(like_key("1"), "%\"1\"%");
        assert_eq!(like_key("a_b%c!"), "%\"a!_b!%c!!\"%");
        assert_eq!(like_key("say \"hi\""), "%\"say \\\"hi\\\"\"%");
    }
}

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
