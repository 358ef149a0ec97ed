//! Failed authentications are limited per address: after
//! `AUTH_FAILURES_MAX` within `AUTH_FAILURE_WINDOW`, the address is refused
//! (429 with `Retry-After`) until the window ends, before its token is even
//! looked at. A person who mistypes a token gets several tries; a script
//! guessing gets ten a minute per address, against 2^256 tokens. Other
//! addresses are not slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make in a window.
pub const AUTH_FAILURES_MAX: u32 = 10;
/// The window, counted from an address's first failure in it.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once: many addresses cannot grow the table past
/// this; when it is full, the window that started first is forgotten.
const AUTH_ADDRESSES_MAX: usize = 10_000;

#[derive(Default)]
pub struct AuthLimiter {
    /// Per address: when its window started, and its failures in it.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// What a failure did.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The first in its window: worth a log line.
    First,
    /// Counted.
    Counted,
    /// The one that reached the limit: the address is refused from now on
    /// (worth a log line).
    Limited,
}

impl AuthLimiter {
    /// How long `ip` must wait, if it is refused now.
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().expect("auth failures");
        let &(start, count) = failures.get(&ip)?;
        let end = start + AUTH_FAILURE_WINDOW;
        (count >= AUTH_FAILURES_MAX && now < end).then(|| end - now)
    }

    /// Counts a failed authentication of `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Failure {
        let mut failures = self.failures.lock().expect("auth failures");
        if failures.len() >= AUTH_ADDRESSES_MAX && !failures.contains_key(&ip) {
            failures.retain(|_, (start, _)| now < *start + AUTH_FAILURE_WINDOW);
            if failures.len() >= AUTH_ADDRESSES_MAX {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now >= entry.0 + AUTH_FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        match entry.1 {
            1 => Failure::First,
            n if n == AUTH_FAILURES_MAX => Failure::Limited,
            _ => Failure::Counted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let limiter = AuthLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(limiter.failed(a, t0), Failure::First);
        for n in 2..AUTH_FAILURES_MAX {
            assert_eq!(limiter.failed(a, t0), Failure::Counted, "failure {n}");
            assert_eq!(limiter.retry_after(a, t0), None);
        }
        assert_eq!(limiter.failed(a, t0), Failure::Limited);
        let later = t0 + Duration::from_secs(15);
        assert_eq!(limiter.retry_after(a, later), Some(Duration::from_secs(45)));
        // Another address is not touched.
        assert_eq!(limiter.retry_after(b, later), None);
        // The window ends: a new one starts with the next failure.
        let after = t0 + AUTH_FAILURE_WINDOW;
        assert_eq!(limiter.retry_after(a, after), None);
        assert_eq!(limiter.failed(a, after), Failure::First);
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let limiter = AuthLimiter::default();
        let t0 = Instant::now();
        for i in 0..(AUTH_ADDRESSES_MAX as u32 + 50) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            limiter.failed(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(limiter.failures.lock().unwrap().len(), AUTH_ADDRESSES_MAX);
    }
}
