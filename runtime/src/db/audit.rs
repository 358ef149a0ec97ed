//! The audit log (`trackc_audit`) as both stores keep it: who did what to
//! the group, with which role, on what, and how it ended: deploys,
//! rollbacks, drains, emits, outbox retries and refused requests, and the
//! nodes' claims of tracks (who owns what since when). `$n`
//! placeholders as in PostgreSQL (SQLite's are rewritten).

use serde::{Deserialize, Serialize};

/// The most entries `trackc audit` reads at once (the newest).
pub const AUDIT_LIST_MAX: usize = 10_000;
/// The longest target or result kept (characters): a refused deploy's
/// diagnostics can be long, and the log keeps what it was about, not every
/// line of it.
pub const AUDIT_TEXT_MAX: usize = 1_000;
/// Entries are kept this many days. The log grows by people's actions and
/// by refused requests (at most `AUTH_FAILURES_MAX` per address per
/// minute), and a year answers "who did this" for any incident review.
pub const AUDIT_DAYS: i64 = 366;

/// $1 entry … $8 address. `entry` is made once per entry, so a statement
/// tried again after a lost answer adds no second row.
pub const INSERT: &str = "INSERT INTO trackc_audit (entry, at, who, role, action, target, result,
    address) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (entry) DO NOTHING";

/// $1 since, $2 limit: the newest entries at or after an instant, oldest
/// first.
pub const LIST: &str = "SELECT at, who, role, action, target, result, address FROM
    (SELECT * FROM trackc_audit WHERE at >= $1 ORDER BY id DESC LIMIT $2) AS a ORDER BY a.id";

/// $1 before, $2 limit: entries older than the retention.
pub const PRUNE: &str = "DELETE FROM trackc_audit WHERE id IN
    (SELECT id FROM trackc_audit WHERE at < $1 ORDER BY id LIMIT $2)";

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    Deploy,
    Rollback,
    Drain,
    Emit,
    OutboxRetry,
    /// A request without a valid token, or whose role may not do it.
    Refused,
    /// A node became a track's owner (first, or taking it over).
    Claim,
    /// An operator moved a track to a node (`trackc move`).
    Move,
}

impl AuditAction {
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::Deploy => "deploy",
            AuditAction::Rollback => "rollback",
            AuditAction::Drain => "drain",
            AuditAction::Emit => "emit",
            AuditAction::OutboxRetry => "outbox retry",
            AuditAction::Refused => "refused request",
            AuditAction::Claim => "claim",
            AuditAction::Move => "move",
        }
    }
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Microseconds since the epoch.
    pub at: i64,
    /// The token's user, `local` for a command on the database itself, or
    /// `unknown` for a request without a valid token.
    pub who: String,
    pub role: String,
    pub action: String,
    /// What it was done to: tracks, a deploy, a node, an event, a row.
    pub target: String,
    /// `ok …`, `refused …` or `failed …`, with why.
    pub result: String,
    /// The client's address, for requests over the API.
    pub address: Option<String>,
}

impl AuditEntry {
    /// An entry at `at`, its texts cut to `AUDIT_TEXT_MAX`.
    pub fn new(
        at: i64,
        by: &super::Actor,
        action: AuditAction,
        target: &str,
        result: &str,
    ) -> AuditEntry {
        AuditEntry {
            at,
            who: by.name.clone(),
            role: by.role.clone(),
            action: action.name().to_string(),
            target: cut(target),
            result: cut(result),
            address: None,
        }
    }
}

/// How an action ended, for its entry: `ok`, `refused: why` (the action
/// was not allowed or not valid: nothing changed) or `failed: why`.
pub fn outcome<T>(result: &crate::Result<T>) -> String {
    use crate::Error;
    match result {
        Ok(_) => "ok".into(),
        Err(e @ (Error::Deploy(_) | Error::Config(_))) => format!("refused: {e}"),
        Err(e) => format!("failed: {e}"),
    }
}

/// Appends `entry`; a log that cannot be written is said on standard
/// error and does not undo the action it records.
pub fn write(store: &mut dyn super::Store, entry: &AuditEntry) {
    if let Err(e) = store.audit(entry) {
        eprintln!(
            "the audit log: could not write `{} {}` by {}: {e}",
            entry.action, entry.target, entry.who
        );
    }
}

/// `text` up to `AUDIT_TEXT_MAX` characters, with `…` when cut.
fn cut(text: &str) -> String {
    match text.char_indices().nth(AUDIT_TEXT_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(AUDIT_TEXT_MAX + 5);
        let entry = AuditEntry::new(
            0,
            &super::super::Actor::local(),
            AuditAction::Deploy,
            &long,
            "ok",
        );
        assert_eq!(entry.target.chars().count(), AUDIT_TEXT_MAX + 1);
        assert!(entry.target.ends_with('…'));
        assert_eq!(entry.result, "ok");
    }
}
