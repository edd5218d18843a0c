//! How PostgreSQL's errors become [`Error`]s, and what the store checks in the rows it reads.

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::position::Position;

/// A failed statement, transaction or connection: [`Error::Storage`], retryable. An append that
/// fails this way was not acknowledged; if its commit was under way when the connection broke, it
/// may be in the log, and a retry with the same event ids answers with its stored positions.
pub(crate) fn pg_error(error: tokio_postgres::Error) -> Error {
    Error::storage(error)
}

/// A failed pool checkout: the server is gone or the pool timed out.
pub(crate) fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(error) => pg_error(error),
        other => Error::storage(other),
    }
}

/// A row that breaks the store's own rules: damage, or a foreign write into the tables.
pub(crate) fn corrupt(what: &'static str, position: i64, reason: &'static str) -> Error {
    Error::Corrupt { what, position: Position::new(u64::try_from(position).unwrap_or(0)), reason }
}

/// Microseconds since the epoch back to a time, checked.
pub(crate) fn micros(value: i64, what: &'static str, position: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt(what, position, "time out of range"))
}

/// A column that must hold a non-negative count (a position, a version) as `u64`.
pub(crate) fn count(value: i64, what: &'static str, position: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| corrupt(what, position, "negative number"))
}
