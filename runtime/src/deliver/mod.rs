//! Delivery of the outbox after commit: webhooks over HTTP and e-mail over
//! SMTP.
//!
//! A round claims the rows due now (a lease, see `db::outbox`), attempts
//! them concurrently, and settles each: delivered, retried later with
//! exponential backoff, or parked when the failure is permanent (a 4xx
//! answer, a missing template, no recipient) or the attempts are used up.
//! Nothing is dropped: a parked row stays, with its last error, until an
//! operator re-queues it (`trackc outbox retry`).
//!
//! Delivery is at least once on the wire, exactly once for a receiver that
//! honours the row's id: a deliverer that dies after the receiver accepted
//! but before the row was settled sends it again when its lease ends. So
//! every webhook carries `Idempotency-Key: <id>` and every e-mail a
//! `Message-ID` made from it.

mod email;
mod webhook;

use crate::clock::now_micros;
use crate::db::{Kinds, OutboxItem, OutboxKind, Outcome, Settled, Store};
use crate::error::{Error, Result};
use futures_util::stream::{self, StreamExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use email::Templates;

/// How deliveries are made.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// `smtp://HOST:PORT` (plain), `smtp://HOST?tls=required` or
    /// `smtps://USER:PASS@HOST` (lettre's URL forms). Without it e-mail
    /// rows wait in the outbox.
    pub smtp: Option<String>,
    /// The `From` of every e-mail.
    pub from: String,
    /// The folder of e-mail templates (`NAME.txt`, optional `NAME.html`).
    pub templates: Option<PathBuf>,
    /// The limit of one attempt (an HTTP request, an SMTP exchange).
    pub timeout: Duration,
    /// Attempts before a row is parked.
    pub max_attempts: i64,
    /// The wait before the first retry; it doubles with each attempt.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            smtp: None,
            from: "trackc <trackc@localhost>".into(),
            templates: None,
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            concurrency: 16,
        }
    }
}

/// What delivery rounds did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub retried: u64,
    pub parked: u64,
    /// One line per failed attempt, for the operator.
    pub failures: Vec<String>,
    /// The time budget ran out with rows perhaps still due.
    pub more: bool,
}

impl DeliveryStats {
    pub fn add(&mut self, other: DeliveryStats) {
        self.delivered += other.delivered;
        self.retried += other.retried;
        self.parked += other.parked;
        self.failures.extend(other.failures);
        self.more |= other.more;
    }
}

/// Rows claimed per round, per attempt in flight: few enough that a
/// deliverer killed mid-round has little to send again, enough to keep
/// the attempts in flight busy.
const CLAIM_PER_SLOT: usize = 4;

/// Why one attempt failed, and whether trying again can help.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt (connection refused, time-out, 5xx); an
    /// answer's `Retry-After` may ask for a longer wait.
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Will fail again the same way (4xx, no template, no recipient).
    Permanent(String),
}

pub struct Deliverer {
    rt: tokio::runtime::Runtime,
    config: DeliveryConfig,
    http: reqwest::Client,
    mail: Option<email::Mailer>,
}

impl Deliverer {
    pub fn new(config: DeliveryConfig) -> Result<Deliverer> {
        if config.concurrency == 0 || config.max_attempts < 1 {
            return Err(Error::Config(
                "delivery needs a concurrency and a number of attempts of at least 1".into(),
            ));
        }
        // reqwest is built without a default TLS provider: use ring, as
        // lettre does. An error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the delivery runtime: {e}")))?;
        let http = webhook::client(config.timeout)?;
        // lettre's connection pool spawns its tasks on the current runtime.
        let _inside = rt.enter();
        let mail = match &config.smtp {
            Some(url) => Some(email::Mailer::new(url, &config)?),
            None => None,
        };
        drop(_inside);
        Ok(Deliverer {
            rt,
            config,
            http,
            mail,
        })
    }

    /// The kinds this deliverer can deliver: e-mail needs an SMTP server.
    pub fn kinds(&self) -> Kinds {
        Kinds {
            email: self.mail.is_some(),
            webhook: true,
        }
    }

    /// The names in `wanted` without a template, each with the folder
    /// looked in (none without an SMTP server: no e-mail is sent then).
    pub fn missing_templates<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, String)> {
        match &self.mail {
            Some(mail) => mail.templates.missing(wanted),
            None => Vec::new(),
        }
    }

    /// Attempts every row due now, round after round until none is left
    /// (rows retried later are not waited for), `stop` is set, or rounds
    /// have taken `budget` (then `more` is set: there may be rows left).
    pub fn deliver_due(
        &self,
        store: &mut dyn Store,
        stop: &AtomicBool,
        budget: Option<Duration>,
    ) -> Result<DeliveryStats> {
        let started = std::time::Instant::now();
        let mut stats = DeliveryStats::default();
        while !stop.load(Ordering::SeqCst) {
            if budget.is_some_and(|b| started.elapsed() >= b) {
                stats.more = true;
                break;
            }
            let now = now_micros();
            // An attempt ends within `timeout` + 1 s (see `attempt`).
            let lease = self.config.timeout + Duration::from_secs(2);
            let items = store.claim_outbox(
                self.kinds(),
                now,
                now.saturating_add(micros(lease)),
                self.config.concurrency * CLAIM_PER_SLOT,
            )?;
            if items.is_empty() {
                break;
            }
            // Unordered, so that one slow receiver does not hold back the
            // attempts queued behind it.
            let mut results = self.rt.block_on(
                stream::iter(items.iter().enumerate())
                    .map(|(i, item)| async move { (i, self.attempt(item).await) })
                    .buffer_unordered(self.config.concurrency)
                    .collect::<Vec<_>>(),
            );
            results.sort_by_key(|(i, _)| *i);
            let settled_at = now_micros();
            let settled: Vec<Settled> = items
                .iter()
                .zip(results)
                .map(|(item, (_, result))| {
                    let outcome = self.outcome(item, result, settled_at);
                    match &outcome {
                        Outcome::Delivered => stats.delivered += 1,
                        Outcome::Retry { error, .. } => {
                            stats.retried += 1;
                            stats.failures.push(format!(
                                "{} {} ({}): {error}; attempt {} of {}, will retry",
                                item.row.kind.name(),
                                item.row.id,
                                item.row.target,
                                item.attempt,
                                self.config.max_attempts
                            ));
                        }
                        Outcome::Parked { error } => {
                            stats.parked += 1;
                            stats.failures.push(format!(
                                "{} {} ({}): parked: {error}",
                                item.row.kind.name(),
                                item.row.id,
                                item.row.target
                            ));
                        }
                    }
                    Settled {
                        id: item.row.id.clone(),
                        attempt: item.attempt,
                        outcome,
                    }
                })
                .collect();
            store.settle_outbox(&settled, settled_at)?;
        }
        Ok(stats)
    }

    async fn attempt(&self, item: &OutboxItem) -> std::result::Result<(), Failure> {
        let limit = self.config.timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, self.attempt_unbounded(item)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Transient {
                error: format!("no answer within {limit:?}"),
                retry_after: None,
            }),
        }
    }

    async fn attempt_unbounded(&self, item: &OutboxItem) -> std::result::Result<(), Failure> {
        match item.row.kind {
            OutboxKind::Webhook => webhook::post(&self.http, item).await,
            OutboxKind::Email => match &self.mail {
                Some(mail) => mail.send(item).await,
                None => Err(Failure::Transient {
                    error: "no SMTP server is configured".into(),
                    retry_after: None,
                }),
            },
        }
    }

    /// What to record for an attempt's result.
    fn outcome(
        &self,
        item: &OutboxItem,
        result: std::result::Result<(), Failure>,
        now: i64,
    ) -> Outcome {
        match result {
            Ok(()) => Outcome::Delivered,
            Err(Failure::Permanent(error)) => Outcome::Parked { error },
            Err(Failure::Transient { error, .. }) if item.attempt >= self.config.max_attempts => {
                Outcome::Parked {
                    error: format!("gave up after {} attempts: {error}", item.attempt),
                }
            }
            Err(Failure::Transient { error, retry_after }) => {
                let wait = backoff(&self.config, item.attempt).max(retry_after.unwrap_or_default());
                Outcome::Retry {
                    at: now.saturating_add(micros(wait.min(self.config.max_backoff))),
                    error,
                }
            }
        }
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        // The pool closes its connections on tasks of the runtime.
        let _inside = self.rt.enter();
        self.mail = None;
    }
}

/// The wait after failed attempt number `attempt` (from 1): `backoff`,
/// doubled per attempt, at most `max_backoff`.
pub fn backoff(config: &DeliveryConfig, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    config
        .backoff
        .saturating_mul(1u32 << doublings)
        .min(config.max_backoff)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = DeliveryConfig {
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            ..DeliveryConfig::default()
        };
        let waits: Vec<u128> = (1..=6).map(|a| backoff(&config, a).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff(&config, 1000), Duration::from_secs(5));
    }
}
