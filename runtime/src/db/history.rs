//! The SQL of the decision history (`trackc_history`), shared by both
//! stores (`$n` placeholders; SQLite's are rewritten): pruning, and what
//! `trackc why` reads about one record. A row is one block's written
//! changes (docs/runtime.md, "Decision history").

use super::{Change, DecisionRow, HistoryRow};
use std::collections::HashMap;
use trackc_compiler::value::Value;

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

/// The legend of a version's history (`bundle::history_legend`).
#[derive(serde::Deserialize)]
struct Legend {
    fields: Vec<(String, String)>,
    steps: Vec<LegendStep>,
}

#[derive(serde::Deserialize)]
struct LegendStep {
    name: String,
    rules: Vec<LegendRule>,
    none: Vec<usize>,
}

#[derive(serde::Deserialize)]
struct LegendRule {
    reads: Vec<usize>,
    next: String,
    effects: Vec<String>,
}

/// A stored value as the legend's type says it is (timestamps are stored
/// in microseconds); anything else is NULL.
fn typed(ty: &str, v: &serde_json::Value) -> Value {
    match (ty, v) {
        ("int", _) | ("timestamp", _) | ("duration", _) => match (ty, v.as_i64()) {
            ("int", Some(n)) => Value::Int(n),
            ("timestamp", Some(n)) => Value::Timestamp(n),
            ("duration", Some(n)) => Value::Duration(n),
            _ => Value::Null,
        },
        ("float", _) => v.as_f64().map_or(Value::Null, Value::Float),
        ("bool", _) => v.as_bool().map_or(Value::Null, Value::Bool),
        ("text", serde_json::Value::String(t)) => Value::Text(t.clone()),
        _ => Value::Null,
    }
}

/// The decisions of record `key` in block rows (oldest first), read with
/// the legends of their versions (by version). A row that does not match
/// its legend yields what it can, never a panic.
pub fn decisions_of(
    key: &str,
    rows: Vec<BlockRow>,
    legends: &HashMap<String, String>,
) -> Vec<DecisionRow> {
    let mut parsed: HashMap<&str, Option<Legend>> = HashMap::new();
    let mut out = Vec::new();
    for (version, run_id, node, at, keys, changes, epoch) in rows {
        let (Ok(keys), Ok(changes)) = (
            serde_json::from_str::<Vec<String>>(&keys),
            serde_json::from_str::<Vec<(i64, Vec<Vec<serde_json::Value>>)>>(&changes),
        ) else {
            continue;
        };
        let Some(Some(legend)) = legends.get_key_value(&version).map(|(v, text)| {
            parsed
                .entry(v.as_str())
                .or_insert_with(|| serde_json::from_str(text).ok())
                .as_ref()
        }) else {
            continue;
        };
        for (k, (seq, decisions)) in keys.iter().zip(changes) {
            if k != key {
                continue;
            }
            // Each fired rule added one to the sequence number: count back.
            let fired = decisions
                .iter()
                .filter(|d| d.get(1).and_then(|r| r.as_i64()).is_some_and(|r| r >= 0))
                .count() as i64;
            let mut seq_now = seq - fired;
            for d in decisions {
                let Some(step) = d
                    .first()
                    .and_then(|s| s.as_u64())
                    .and_then(|s| legend.steps.get(s as usize))
                else {
                    continue;
                };
                let rule = d.get(1).and_then(|r| r.as_i64()).filter(|r| *r >= 0);
                let meaning = rule.and_then(|r| step.rules.get(r as usize));
                if rule.is_some() {
                    seq_now += 1;
                }
                let reads = meaning.map_or(&step.none, |m| &m.reads);
                let values = reads
                    .iter()
                    .zip(d.iter().skip(2))
                    .filter_map(|(&f, v)| {
                        let (name, ty) = legend.fields.get(f)?;
                        Some((name.clone(), typed(ty, v)))
                    })
                    .collect();
                out.push(DecisionRow {
                    version: version.clone(),
                    seq: seq_now,
                    step: step.name.clone(),
                    rule: rule.map(|r| r + 1),
                    next: meaning.map_or_else(|| "stay".to_string(), |m| m.next.clone()),
                    values,
                    effects: meaning.map(|m| m.effects.clone()).unwrap_or_default(),
                    run_id,
                    node,
                    epoch: epoch.map(|e| e as u64),
                    at,
                });
            }
        }
    }
    out
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
