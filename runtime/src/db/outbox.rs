//! The outbox as delivery sees it: rows claimed for an attempt, and what
//! came of it.
//!
//! A row's life: `pending` → (claimed) `sending` → `delivered`, or back to
//! `pending` with a later `next_attempt_at` (a retry), or `parked` (given
//! up: visible in `trackc outbox list`, re-queued by `trackc outbox
//! retry`). A claim is a lease: `next_attempt_at` of a `sending` row is
//! when the lease ends, and a row whose deliverer died is claimed again
//! after it. Settling is conditional on the attempt number, so a deliverer
//! whose lease was taken over cannot overwrite what the new one recorded.

use super::{OutboxKind, OutboxRow};

/// A row claimed for one delivery attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxItem {
    /// The row as the run wrote it (`at`: when).
    pub row: OutboxRow,
    /// This attempt's number, from 1.
    pub attempt: i64,
}

/// The columns `CLAIM` returns, in order, as both stores read them.
pub(crate) struct Claimed {
    pub id: String,
    pub kind: String,
    pub track: String,
    pub key: String,
    pub target: String,
    pub recipient: Option<String>,
    pub payload: String,
    pub at: i64,
    pub attempt: i64,
}

impl Claimed {
    pub fn item(self) -> super::Result<OutboxItem> {
        Ok(OutboxItem {
            row: OutboxRow {
                id: self.id,
                kind: kind_of(&self.kind)?,
                track: self.track,
                key: self.key,
                target: self.target,
                recipient: self.recipient,
                payload: self.payload,
                at: self.at,
            },
            attempt: self.attempt,
        })
    }
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Failed; try again at `at` (µs).
    Retry {
        at: i64,
        error: String,
    },
    /// Failed for good (or too often): kept, not tried again.
    Parked {
        error: String,
    },
}

/// The settled result of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub id: String,
    pub attempt: i64,
    pub outcome: Outcome,
}

/// A row as `trackc outbox list` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxListing {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub recipient: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Which kinds a deliverer handles (e-mail only with an SMTP server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds {
    pub email: bool,
    pub webhook: bool,
}

// The statements both stores run, with PostgreSQL's `$n` placeholders
// (SQLite's `?n` means the same: `sqlite_placeholders`).

/// $1 limit, $2 now, $3 lease end, $4 e-mail?, $5 webhooks?; `/*lock*/`
/// is where PostgreSQL locks the rows it picks (`FOR UPDATE SKIP LOCKED`).
pub(crate) const CLAIM: &str = "UPDATE trackc_outbox
    SET state = 'sending', attempts = attempts + 1, next_attempt_at = $3
    WHERE id IN (SELECT id FROM trackc_outbox
        WHERE state IN ('pending', 'sending') AND next_attempt_at <= $2
          AND ((kind = 'email' AND $4) OR (kind = 'webhook' AND $5))
        ORDER BY next_attempt_at, id LIMIT $1 /*lock*/)
    RETURNING id, kind, track, key, target, recipient, payload, created_at,
        CAST(attempts AS BIGINT)";

/// $1 id, $2 attempt, $3 now, $4 state, $5 next_attempt_at, $6 last_error.
pub(crate) const SETTLE: &str = "UPDATE trackc_outbox
    SET state = $4, next_attempt_at = $5, last_error = $6,
        delivered_at = CASE WHEN $4 = 'delivered' THEN $3 ELSE delivered_at END
    WHERE id = $1 AND state = 'sending' AND attempts = CAST($2 AS BIGINT)";

/// $1 state ('' for all), $2 limit.
pub(crate) const LIST: &str = "SELECT id, kind, target, recipient, state, CAST(attempts AS BIGINT),
        next_attempt_at, last_error
    FROM trackc_outbox WHERE $1 = '' OR state = $1
    ORDER BY created_at, id LIMIT $2";

/// $1 now, $2 id ('' for every parked row).
pub(crate) const RETRY_PARKED: &str = "UPDATE trackc_outbox
    SET state = 'pending', next_attempt_at = $1, attempts = 0
    WHERE state = 'parked' AND ($2 = '' OR id = $2)";

/// The `state`, `next_attempt_at` and `last_error` a settled attempt writes.
pub(crate) fn settle_columns(outcome: &Outcome) -> (&'static str, i64, Option<&str>) {
    match outcome {
        Outcome::Delivered => ("delivered", 0, None),
        Outcome::Retry { at, error } => ("pending", *at, Some(error)),
        Outcome::Parked { error } => ("parked", 0, Some(error)),
    }
}

fn kind_of(name: &str) -> super::Result<OutboxKind> {
    match name {
        "email" => Ok(OutboxKind::Email),
        "webhook" => Ok(OutboxKind::Webhook),
        other => Err(super::Error::Data(format!(
            "the outbox holds a row of unknown kind `{other}`"
        ))),
    }
}
