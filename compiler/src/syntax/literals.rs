//! The values of duration and timestamp literals.

/// Microseconds in each duration unit of LANGUAGE.md.
fn unit_micros(unit: &str) -> i64 {
    match unit {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        "w" => 604_800_000_000,
        _ => unreachable!("the grammar admits no unit `{unit}`"),
    }
}

/// The value of a duration literal such as `1h30m`, in microseconds, or
/// `None` if it does not fit in 64 bits. The text must match the grammar's
/// `duration` rule.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = if rest.starts_with("ms") { 2 } else { 1 };
        let unit = unit_micros(&rest[..unit_len]);
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(unit)?)?;
    }
    Some(total)
}

/// The instant of an RFC 3339 timestamp, in microseconds since the Unix
/// epoch, or a message saying why it is not one.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("`{text}` is not a valid timestamp: {e}"))
        .map(|t| t.timestamp_micros())
}

/// Formats microseconds since the epoch as RFC 3339 in UTC.
pub fn format_timestamp(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("<timestamp {micros}µs>"),
    }
}

/// Formats a duration in the language's own notation (`1h30m`, `-2d`, `0s`).
pub fn format_duration(micros: i64) -> String {
    if micros == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if micros < 0 {
        out.push('-');
    }
    let mut rest = micros.unsigned_abs();
    for (unit, size) in [
        ("w", 604_800_000_000u64),
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest > 0 {
        out.push_str(&format!("{rest}us"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sum_their_units() {
        assert_eq!(parse_duration("500ms"), Some(500_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000));
        assert_eq!(parse_duration("2d"), Some(172_800_000_000));
        assert_eq!(parse_duration("1w"), Some(604_800_000_000));
        assert_eq!(parse_duration("99999999999999999w"), None);
        assert_eq!(format_duration(5_400_000_000), "1h30m");
        assert_eq!(format_duration(-1_000), "-1ms");
    }

    #[test]
    fn timestamps_keep_their_zone_and_fraction() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Ok(1_000_000));
        assert_eq!(
            parse_timestamp("2026-12-01T09:00:00.250+01:00"),
            parse_timestamp("2026-12-01T08:00:00.25Z")
        );
        assert!(parse_timestamp("2026-13-01T09:00:00Z").is_err());
        assert_eq!(format_timestamp(1_000_000), "1970-01-01T00:00:01Z");
    }
}
