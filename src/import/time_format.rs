//! How the time column of an import is written, and parsing it.

use std::fmt;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

use crate::error::{Error, Result};

/// How the time column is written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeFormat {
    /// RFC 3339 with an offset, e.g. `2012-10-09T14:50:17+00:00` or `2012-10-09T16:50:17.5+02:00`.
    Rfc3339,
    /// A chrono `strftime` format without an offset (e.g. `"%Y-%m-%d %H:%M:%S"`), the time taken as
    /// UTC. A format with a date only (`"%d/%m/%Y"`) gives midnight.
    NaiveUtc(String),
    /// A chrono `strftime` format with an offset (`%z` or `%:z`), e.g. `"%d/%m/%Y %H:%M %z"`.
    WithOffset(String),
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeFormat::Rfc3339 => f.write_str("RFC 3339"),
            TimeFormat::NaiveUtc(format) => write!(f, "{format:?} (UTC)"),
            TimeFormat::WithOffset(format) => write!(f, "{format:?}"),
        }
    }
}

impl TimeFormat {
    /// Parses `value` (surrounding spaces ignored), or `None` when it does not fit the format.
    pub(super) fn parse(&self, value: &str) -> Option<DateTime<Utc>> {
        let value = value.trim();
        match self {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(value).ok().map(|t| t.to_utc()),
            TimeFormat::NaiveUtc(format) => NaiveDateTime::parse_from_str(value, format)
                .ok()
                .or_else(|| NaiveDate::parse_from_str(value, format).ok().map(|day| day.and_time(NaiveTime::MIN)))
                .map(|t| t.and_utc()),
            TimeFormat::WithOffset(format) => DateTime::parse_from_str(value, format).ok().map(|t| t.to_utc()),
        }
    }

    /// Whether a `strftime` format is well formed.
    pub(super) fn check(&self) -> Result<()> {
        let format = match self {
            TimeFormat::Rfc3339 => return Ok(()),
            TimeFormat::NaiveUtc(format) | TimeFormat::WithOffset(format) => format,
        };
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(Error::Config { setting: "time_format", expected: "a valid strftime format" });
        }
        Ok(())
    }
}
