//! How PostgreSQL's errors become [`Error`]s, and what the store checks in the rows it reads.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls, Socket};

use crate::error::Error;
use crate::position::Position;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The client library's error: refused, authentication, a missing database, ...
    #[error(transparent)]
    Failed(#[from] tokio_postgres::Error),
    /// The server took the TCP connection but did not complete the startup in time.
    #[error("the server did not answer within {0:?}")]
    TimedOut(Duration),
}

/// Opens a connection within the config's connect timeout (per host). The client library's own
/// `connect_timeout` bounds only the TCP connect, so a server that accepts the connection and never
/// answers (a stuck server or proxy) would otherwise hold the caller forever.
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
) -> Result<(Client, Connection<Socket, NoTlsStream>), ConnectError> {
    let per_host = pg.get_connect_timeout().copied().unwrap_or(Duration::from_secs(5));
    let limit = per_host.saturating_mul(u32::try_from(pg.get_hosts().len().max(1)).unwrap_or(u32::MAX));
    match tokio::time::timeout(limit, pg.connect(NoTls)).await {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(ConnectError::TimedOut(limit)),
    }
}

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
