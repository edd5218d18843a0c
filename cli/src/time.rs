//! Parsing the command line's times and positions.

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
}
