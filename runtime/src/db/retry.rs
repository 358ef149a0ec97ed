//! Database work through the faults of an ordinary week: a connection
//! terminated by a restart or a failover, a serialization failure, a
//! deadlock, a lock or statement timeout, a busy SQLite file.
//!
//! Written once for both stores. A store classifies its driver's errors
//! (`Error::Transient` with a `Fault`), implements `Reconnect`, and runs
//! each operation through `retrying`: the operation is tried again on a
//! fresh connection, after a capped exponential backoff with jitter, until
//! it succeeds, fails for good, or the policy's window is spent.
//!
//! Trying again is safe because every operation is one transaction that
//! either did nothing or is a no-op the second time: block writes are
//! conditional on each record's sequence number, outbox and event rows
//! have unique ids, a claim recognises its own win. So a COMMIT whose
//! answer was lost (it may or may not have happened) is simply decided
//! again.
//!
//! `Health` is what the rest of the process sees of it: whether the
//! database is reachable, since when not, and one log line when it is lost
//! and one when it is back (not one per try, nor one per connection).

use crate::error::{Error, Fault, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first wait after a transient error: a lost race or a terminated
/// connection usually succeeds at once on a new try.
pub const RETRY_FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two tries: bounds how late work resumes after
/// the database is back (a PostgreSQL restart takes a second or two).
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);
/// How long one operation keeps trying before its caller is told the
/// database is unavailable: long enough for a restart or a failover, short
/// enough that a run yields and the caller decides what to do.
pub const RETRY_WINDOW: Duration = Duration::from_secs(60);

/// How an operation is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub delay_max: Duration,
    /// No new try starts after this long since the first.
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            first_delay: RETRY_FIRST_DELAY,
            delay_max: RETRY_DELAY_MAX,
            window: RETRY_WINDOW,
        }
    }
}

/// Capped exponential backoff with jitter: the n-th wait is drawn from
/// [d/2, d] with d = min(first · 2ⁿ, max), so that the connections of a
/// group that lost the database together do not come back in lockstep.
pub struct Backoff {
    ceiling: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy) -> Backoff {
        static SALT: AtomicU64 = AtomicU64::new(0);
        let salt = SALT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Backoff {
            ceiling: policy.first_delay,
            max: policy.delay_max.max(policy.first_delay),
            rng: (crate::clock::now_micros() as u64) ^ salt | 1,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter needs spread, not quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ceiling = self.ceiling.as_micros() as u64;
        let delay = ceiling / 2 + self.rng % (ceiling / 2 + 1);
        self.ceiling = (self.ceiling * 2).min(self.max);
        Duration::from_micros(delay)
    }
}

/// Whether the database is reachable, as this process last found it.
/// Shared by every connection of a process (a node has several), so a
/// loss is logged once.
pub struct Health {
    /// Put before log lines ("node 2").
    label: String,
    state: Mutex<HealthState>,
    /// Shutdown: operations stop trying again.
    giving_up: AtomicBool,
    /// Operations tried again after a transient error, since the start.
    retries: AtomicU64,
}

/// After an outage ends, a loss noticed this soon is the same outage seen
/// late by another connection of the process (a node has several, each
/// finds out when it is next used): it is not logged again.
const OUTAGE_LOG_QUIET: Duration = Duration::from_secs(10);

#[derive(Default)]
struct HealthState {
    down_since: Option<Instant>,
    last_error: Option<String>,
    /// When the last outage ended.
    back_at: Option<Instant>,
    /// Whether the current outage was logged (its end is logged too).
    logged: bool,
}

impl Health {
    pub fn new(label: &str) -> Arc<Health> {
        Arc::new(Health {
            label: label.to_string(),
            state: Mutex::new(HealthState::default()),
            giving_up: AtomicBool::new(false),
            retries: AtomicU64::new(0),
        })
    }

    // A poisoned lock only means a thread panicked while holding it; the
    // state (an instant and a message) is still whole.
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_reachable(&self) -> bool {
        self.state().down_since.is_none()
    }

    /// How long the database has been unreachable (`None`: it is not).
    pub fn unreachable_for(&self) -> Option<Duration> {
        self.state().down_since.map(|t| t.elapsed())
    }

    /// The error that made it unreachable, while it is.
    pub fn last_error(&self) -> Option<String> {
        let state = self.state();
        state.down_since.and(state.last_error.clone())
    }

    /// A connection failed: logged when the database was reachable.
    pub fn lost(&self, error: &Error) {
        let mut state = self.state();
        state.last_error = Some(error.to_string());
        if state.down_since.is_none() {
            state.down_since = Some(Instant::now());
            state.logged = state.back_at.is_none_or(|t| t.elapsed() > OUTAGE_LOG_QUIET);
            if state.logged {
                eprintln!(
                    "{}the database is unreachable ({error}); reconnecting with backoff",
                    self.prefix()
                );
            }
        }
    }

    /// An operation reached the database: logged when it was unreachable.
    pub fn reached(&self) {
        let mut state = self.state();
        if let Some(since) = state.down_since.take() {
            state.back_at = Some(Instant::now());
            if !state.logged {
                return;
            }
            eprintln!(
                "{}the database is reachable again (after {:.1} s)",
                self.prefix(),
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// What a try found: an answer from the database (a success, or a
    /// final error it gave) means it is reachable; a connection fault, that
    /// it is not; anything else says nothing about it.
    fn note<T>(&self, result: &Result<T>) {
        match result {
            Err(e) if e.fault() == Some(Fault::Connection) => self.lost(e),
            Ok(_) | Err(Error::Db { .. } | Error::Fenced { .. }) => self.reached(),
            Err(_) => {}
        }
    }

    /// How many times an operation was tried again (all faults).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Shutdown: operations in a retry loop give up at their next wait.
    pub fn give_up(&self) {
        self.giving_up.store(true, Ordering::SeqCst);
    }

    fn prefix(&self) -> String {
        if self.label.is_empty() {
            "trackc: ".to_string()
        } else {
            format!("{}: ", self.label)
        }
    }
}

/// What a store is opened with.
#[derive(Clone)]
pub struct DbOptions {
    pub retry: RetryPolicy,
    pub health: Arc<Health>,
}

impl Default for DbOptions {
    fn default() -> DbOptions {
        DbOptions {
            retry: RetryPolicy::default(),
            health: Health::new(""),
        }
    }
}

/// The tries of one operation.
pub(crate) struct Attempts {
    options: DbOptions,
    started: Instant,
    backoff: Backoff,
}

impl Attempts {
    pub fn new(options: &DbOptions) -> Attempts {
        Attempts {
            options: options.clone(),
            started: Instant::now(),
            backoff: Backoff::new(&options.retry),
        }
    }

    /// Looks at the result of a try: true when the operation should be
    /// tried again (the wait is done), false when `result` is the answer.
    pub fn again<T>(&mut self, result: &Result<T>) -> bool {
        let health = &self.options.health;
        health.note(result);
        let Err(error) = result else {
            return false;
        };
        if error.fault().is_none() {
            return false;
        }
        let delay = self.backoff.next_delay();
        if health.giving_up.load(Ordering::SeqCst)
            || self.started.elapsed() + delay > self.options.retry.window
        {
            return false;
        }
        std::thread::sleep(delay);
        health.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// A connection that can be brought back.
pub(crate) trait Reconnect {
    fn options(&self) -> &DbOptions;
    /// Connects again if the connection was lost (cheap when it was not).
    fn ensure_connected(&mut self) -> Result<()>;
}

/// Runs `op` until it succeeds, fails for good, or the window is spent;
/// before each try the connection is brought back if it was lost.
pub(crate) fn retrying<C: Reconnect + ?Sized, T>(
    conn: &mut C,
    mut op: impl FnMut(&mut C) -> Result<T>,
) -> Result<T> {
    let mut attempts = Attempts::new(conn.options());
    loop {
        let result = conn.ensure_connected().and_then(|()| op(conn));
        if !attempts.again(&result) {
            return result;
        }
    }
}

/// Runs `op` once, on a connection brought back if it was lost, and
/// tells `Health` what it found: for work whose caller decides what a
/// failure means (a claim, a health probe).
pub(crate) fn once<C: Reconnect + ?Sized, T>(
    conn: &mut C,
    op: impl FnOnce(&mut C) -> Result<T>,
) -> Result<T> {
    let result = conn.ensure_connected().and_then(|()| op(conn));
    conn.options().health.note(&result);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(fault: Fault) -> Error {
        Error::Transient {
            context: "test".into(),
            message: "connection closed".into(),
            fault,
        }
    }

    struct Flaky {
        options: DbOptions,
        /// Tries that fail before one succeeds.
        failures: u32,
        tries: u32,
        reconnects: u32,
    }

    impl Reconnect for Flaky {
        fn options(&self) -> &DbOptions {
            &self.options
        }
        fn ensure_connected(&mut self) -> Result<()> {
            self.reconnects += 1;
            Ok(())
        }
    }

    fn fast(window: Duration) -> DbOptions {
        DbOptions {
            retry: RetryPolicy {
                first_delay: Duration::from_millis(1),
                delay_max: Duration::from_millis(4),
                window,
            },
            health: Health::new("test"),
        }
    }

    fn flaky(failures: u32, window: Duration) -> Flaky {
        Flaky {
            options: fast(window),
            failures,
            tries: 0,
            reconnects: 0,
        }
    }

    fn try_once(f: &mut Flaky, fault: Fault) -> Result<u32> {
        f.tries += 1;
        if f.tries <= f.failures {
            Err(transient(fault))
        } else {
            Ok(f.tries)
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy {
            first_delay: Duration::from_millis(100),
            delay_max: Duration::from_millis(800),
            window: RETRY_WINDOW,
        };
        let mut b = Backoff::new(&policy);
        let ceilings = [100u64, 200, 400, 800, 800, 800];
        for ceiling in ceilings {
            let d = b.next_delay().as_micros() as u64;
            assert!(
                d >= ceiling * 500 && d <= ceiling * 1000,
                "{d} µs outside [{}, {}] ms",
                ceiling / 2,
                ceiling
            );
        }
    }

    #[test]
    fn two_backoffs_started_together_do_not_wait_in_lockstep() {
        let policy = RetryPolicy::default();
        let (mut a, mut b) = (Backoff::new(&policy), Backoff::new(&policy));
        let same = (0..8).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 8, "jitter drew the same delays");
    }

    #[test]
    fn a_transient_error_is_tried_again_on_a_checked_connection() {
        let mut f = flaky(3, Duration::from_secs(5));
        let r = retrying(&mut f, |f| try_once(f, Fault::Connection));
        assert_eq!(r.unwrap(), 4);
        assert_eq!(f.reconnects, 4, "the connection is checked before each try");
        assert!(
            f.options.health.is_reachable(),
            "success makes it reachable"
        );
    }

    #[test]
    fn a_final_error_is_not_tried_again() {
        let mut f = flaky(0, Duration::from_secs(5));
        let r: Result<()> = retrying(&mut f, |f| {
            f.tries += 1;
            Err(Error::db("inserting", "duplicate key"))
        });
        assert!(r.is_err());
        assert_eq!(f.tries, 1);
    }

    #[test]
    fn the_window_bounds_the_tries() {
        let mut f = flaky(u32::MAX, Duration::from_millis(60));
        let started = Instant::now();
        let r = retrying(&mut f, |f| try_once(f, Fault::Connection));
        assert_eq!(r.unwrap_err().fault(), Some(Fault::Connection));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(f.tries > 3, "tried {} times in the window", f.tries);
        assert!(!f.options.health.is_reachable());
        assert!(f.options.health.last_error().is_some());
    }

    #[test]
    fn conflicts_are_retried_without_marking_the_database_unreachable() {
        let mut f = flaky(2, Duration::from_secs(5));
        let r = retrying(&mut f, |f| {
            let r = try_once(f, Fault::Conflict);
            assert!(f.options.health.is_reachable());
            r
        });
        assert_eq!(r.unwrap(), 3);
    }

    #[test]
    fn giving_up_ends_the_tries_at_the_next_wait() {
        let mut f = flaky(u32::MAX, Duration::from_secs(60));
        f.options.health.give_up();
        let r = retrying(&mut f, |f| try_once(f, Fault::Connection));
        assert!(r.is_err());
        assert_eq!(f.tries, 1);
    }

    #[test]
    fn health_reports_the_outage_and_its_end() {
        let h = Health::new("node 1");
        assert!(h.is_reachable() && h.unreachable_for().is_none());
        h.lost(&transient(Fault::Connection));
        h.lost(&transient(Fault::Connection));
        assert!(!h.is_reachable());
        assert!(h.unreachable_for().is_some());
        assert_eq!(
            h.last_error().as_deref(),
            Some("test: connection closed"),
            "the cause is kept for the status"
        );
        h.reached();
        assert!(h.is_reachable() && h.last_error().is_none());
    }
}
