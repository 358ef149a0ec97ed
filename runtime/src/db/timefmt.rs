//! Timestamps in SQLite, which has no type for them.
//!
//! The runtime binds them as text in SQLite's own format with microseconds,
//! `2026-11-23 09:00:00.000000` (UTC), so that they compare as text with
//! values written by SQLite's `datetime()` and `strftime()`. Reading, it
//! takes that form with or without fractions, RFC 3339 (`T`, a zone), and
//! numbers as Unix seconds.

use chrono::{DateTime, NaiveDateTime};

pub fn format_sqlite_timestamp(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => micros.to_string(),
    }
}

/// Microseconds since the epoch, or `None` if `text` is no timestamp.
pub fn parse_sqlite_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_other_forms() {
        let t = 1_780_315_200_123_456;
        let text = format_sqlite_timestamp(t);
        assert_eq!(text, "2026-06-01 12:00:00.123456");
        assert_eq!(parse_sqlite_timestamp(&text), Some(t));
        let whole = 1_780_315_200_000_000;
        for form in [
            "2026-06-01 12:00:00",
            "2026-06-01T12:00:00Z",
            "2026-06-01T14:00:00+02:00",
            "2026-06-01 12:00",
        ] {
            assert_eq!(parse_sqlite_timestamp(form), Some(whole), "{form}");
        }
        assert_eq!(
            parse_sqlite_timestamp("2026-06-01"),
            Some(whole - 12 * 3_600_000_000)
        );
        assert_eq!(parse_sqlite_timestamp("soon"), None);
    }
}
