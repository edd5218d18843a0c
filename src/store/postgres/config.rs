//! [`PostgresConfig`]: where the store lives (server, database, schema) and its limits.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::{SnapshotRetention, DEFAULT_MAX_EVENT_SIZE};

/// The largest event size a [`PostgresConfig`] accepts: 1 MiB, as for the embedded store.
pub const POSTGRES_MAX_EVENT_SIZE_LIMIT: usize = 1024 * 1024;

/// The longest schema name: PostgreSQL's identifier limit (63 bytes) less room for the notification
/// channel's suffix.
pub const MAX_SCHEMA_NAME_LEN: usize = 48;

/// How to open a [`PostgresStore`](super::PostgresStore): the connection string, the schema, and
/// limits. Every setting has a default but the connection string.
///
/// ```no_run
/// use annals::PostgresConfig;
///
/// # async fn open() -> Result<(), annals::Error> {
/// let store = PostgresConfig::new("postgres://shop@db.internal/shop")
///     .schema("orders")
///     .pool_size(16)
///     .open()
///     .await?;
/// # drop(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    pub(super) url: String,
    pub(super) schema: String,
    pub(super) pool_size: usize,
    pub(super) max_event_size: usize,
    pub(super) connect_timeout: Duration,
    pub(super) statement_timeout: Duration,
    pub(super) max_group: usize,
    pub(super) snapshot_retention: SnapshotRetention,
    pub(super) stop_at_schema: u32,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: show only the settings.
        f.debug_struct("PostgresConfig")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("max_event_size", &self.max_event_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_group", &self.max_group)
            .field("snapshot_retention", &self.snapshot_retention)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// A store in the database `url` names (`postgres://user:password@host:port/database`, or
    /// the `key=value` form), in the schema `annals`, with 8 pooled connections, 64 KiB events, a 5 s
    /// connect timeout and a 30 s statement timeout.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: "annals".to_owned(),
            pool_size: 8,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            max_group: 1024,
            snapshot_retention: SnapshotRetention::All,
            stop_at_schema: u32::MAX,
        }
    }

    /// The schema (namespace) that holds the store's tables, created on first open: several
    /// applications can share a database, each in its own schema. Lower-case ASCII letters, digits
    /// and `_`, starting with a letter or `_`, at most [`MAX_SCHEMA_NAME_LEN`] bytes.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How many connections readers and checkpoint writes share (at least 1). The writer and the
    /// head listener hold one more connection each.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// The largest event accepted, in bytes (payload, type name and metadata), up to
    /// [`POSTGRES_MAX_EVENT_SIZE_LIMIT`].
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// How long opening a connection may take before the server counts as unreachable.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one statement may run before the server cancels it (PostgreSQL's
    /// `statement_timeout`); it bounds how long an append waits for another process's lock.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The most appends committed together in one transaction (group commit), at least 1.
    pub fn max_group(mut self, appends: usize) -> Self {
        self.max_group = appends;
        self
    }

    /// How many snapshots per stream this process keeps when it saves one (default
    /// [`SnapshotRetention::All`], what time travel needs to start near any point of the past). With
    /// [`SnapshotRetention::Last`], each save deletes the stream's older snapshots in the same
    /// transaction. The setting is per process: each process trims with its own, at its saves.
    pub fn snapshot_retention(mut self, retention: SnapshotRetention) -> Self {
        self.snapshot_retention = retention;
        self
    }

    /// Migrates a new schema only up to `version`, as an older release would have created it. For the
    /// tests of schema migration; not part of the API.
    #[doc(hidden)]
    pub fn stop_at_schema_version_for_tests(mut self, version: u32) -> Self {
        self.stop_at_schema = version;
        self
    }

    /// The schema name this config uses.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    pub(super) fn validate(&self) -> Result<()> {
        let schema_ok = !self.schema.is_empty()
            && self.schema.len() <= MAX_SCHEMA_NAME_LEN
            && self.schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !self.schema.starts_with(|c: char| c.is_ascii_digit())
            && !self.schema.starts_with("pg_");
        if !schema_ok {
            return Err(Error::Config {
                setting: "schema",
                expected: "1 to 48 lower-case ASCII letters, digits or '_', not starting with a digit or 'pg_'",
            });
        }
        if self.pool_size == 0 {
            return Err(Error::Config { setting: "pool_size", expected: "at least 1" });
        }
        if self.max_group == 0 {
            return Err(Error::Config { setting: "max_group", expected: "at least 1" });
        }
        if self.max_event_size == 0 || self.max_event_size > POSTGRES_MAX_EVENT_SIZE_LIMIT {
            return Err(Error::Config { setting: "max_event_size", expected: "between 1 byte and 1 MiB" });
        }
        if self.connect_timeout.is_zero() || self.statement_timeout.is_zero() {
            return Err(Error::Config { setting: "timeouts", expected: "longer than zero" });
        }
        Ok(())
    }
}
