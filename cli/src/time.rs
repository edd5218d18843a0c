//! Parsing the command line's times and positions.

use std::time::Duration;

use annals::Position;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

/// A `--until` bound: a position or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UntilArg {
    /// Only events at or before this position.
    Position(Position),
    /// Only events at or before this time (on the axis the command says).
    Time(DateTime<Utc>),
}

/// An RFC 3339 time (`2013-01-01T00:00:00Z`, `2013-01-01T01:00:00+01:00`) or a date (`2013-01-01`,
/// midnight UTC).
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(NaiveTime::MIN).and_utc());
    }
    Err(format!("{text:?} is not a time: use RFC 3339 (2013-01-01T00:00:00Z) or a date (2013-01-01)"))
}

/// A log position: a whole number.
pub(crate) fn parse_position(text: &str) -> Result<Position, String> {
    text.trim().parse::<u64>().map(Position::new).map_err(|_| format!("{text:?} is not a position (a whole number)"))
}

/// A position (a whole number) or a time.
pub(crate) fn parse_until(text: &str) -> Result<UntilArg, String> {
    if text.trim().bytes().all(|b| b.is_ascii_digit()) && !text.trim().is_empty() {
        return parse_position(text).map(UntilArg::Position);
    }
    parse_time(text)
        .map(UntilArg::Time)
        .map_err(|_| format!("{text:?} is neither a position (a whole number) nor a time (RFC 3339 or a date)"))
}

/// The units of a duration, largest first: weeks, days, hours, minutes, seconds.
const UNITS: [(char, u64); 5] = [('w', 604_800), ('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// A duration as numbers with units, chained: `30d`, `12h`, `90m`, `45s`, `2w`, `1d12h`. At least
/// a second.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: a number and a unit (s, m, h, d, w), e.g. 30d, 12h, 90m, 1d12h");
    let mut seconds: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (_, unit) = UNITS.iter().find(|(name, _)| *name == c).ok_or_else(bad)?;
        let n: u64 = number.parse().map_err(|_| bad())?;
        seconds = n.checked_mul(*unit).and_then(|s| seconds.checked_add(s)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || text.trim().is_empty() {
        return Err(bad());
    }
    if seconds == 0 {
        return Err(format!("{text:?} is no time at all: a duration is at least 1s"));
    }
    Ok(Duration::from_secs(seconds))
}

/// A duration as [`parse_duration`] reads it, in whole days, hours, minutes and seconds where they
/// fit (never weeks: `30d` reads better than `4w2d`): `30d`, `1d12h`, `90s`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut left = duration.as_secs();
    if left == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let mut text = String::new();
    for (name, unit) in UNITS.into_iter().skip(1) {
        if left >= unit {
            text.push_str(&format!("{}{name}", left / unit));
            left %= unit;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates_at_midnight_utc() {
        let midnight = parse_time("2013-01-01").map(|t| t.to_rfc3339());
        assert_eq!(midnight, Ok("2013-01-01T00:00:00+00:00".to_owned()));
        let offset = parse_time("2013-01-01T01:30:00+01:00").map(|t| t.to_rfc3339());
        assert_eq!(offset, Ok("2013-01-01T00:30:00+00:00".to_owned()));
        assert!(parse_time("2013-01-01 00:00").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn until_is_a_position_or_a_time() {
        assert_eq!(parse_until("42"), Ok(UntilArg::Position(Position::new(42))));
        assert!(matches!(parse_until("2013-01-01"), Ok(UntilArg::Time(_))));
        assert!(parse_until("-3").is_err());
    }

    #[test]
    fn durations_are_numbers_with_units() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(86_400 + 12 * 3_600)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "30", "d", "30x", "-3d", "0d", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400 + 12 * 3_600)), "1d12h");
        assert_eq!(format_duration(Duration::from_secs(14 * 86_400)), "14d");
    }
}
