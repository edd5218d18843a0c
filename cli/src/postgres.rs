//! A store in PostgreSQL as the command line names it (a URL and a schema), and what the tool reads
//! from the database's catalog with a connection of its own: whether the schema holds a store, and
//! how much space its tables take. The library's store has no API for either, nor needs one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use annals::PostgresConfig;
use tokio_postgres::NoTls;

use crate::failure::Failure;

/// How many pooled connections the tool's store keeps: a command reads with one or two at a time,
/// and the server is shared with the applications.
const POOL_SIZE: usize = 2;

/// A schema of a PostgreSQL database, where a store is or goes.
#[derive(Clone)]
pub(crate) struct Database {
    /// The connection string; it may hold a password, so it is never printed.
    url: String,
    schema: String,
    connect_timeout: Duration,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database").field("schema", &self.schema).finish_non_exhaustive()
    }
}

/// Whether `text` is a PostgreSQL URL rather than a directory.
pub(crate) fn is_url(text: &str) -> bool {
    let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl Database {
    /// The store in `schema` of the database `url` names; connections wait `connect_timeout` at most.
    pub(crate) fn new(url: &str, schema: &str, connect_timeout: Duration) -> Self {
        Database { url: url.to_owned(), schema: schema.to_owned(), connect_timeout }
    }

    /// The schema's name.
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// The library's config for the store in this schema.
    pub(crate) fn config(&self) -> PostgresConfig {
        PostgresConfig::new(&self.url).schema(&self.schema).connect_timeout(self.connect_timeout).pool_size(POOL_SIZE)
    }

    /// `schema "annals" at db.internal:5432`, for messages (never the password).
    pub(crate) fn describe(&self) -> String {
        match self.client_config() {
            Ok(config) => format!("schema {:?} at {}", self.schema, server_name(&config)),
            Err(_) => format!("schema {:?}", self.schema),
        }
    }

    /// Whether the schema holds a store (its head table), without creating anything.
    pub(crate) async fn has_store(&self) -> Result<bool, Failure> {
        let client = self.connect().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'head')",
                &[&self.schema],
            )
            .await
            .map_err(storage)?;
        row.try_get(0).map_err(storage)
    }

    /// The bytes the schema's tables take, with their indexes and TOAST data
    /// (`pg_total_relation_size`).
    pub(crate) async fn size(&self) -> Result<u64, Failure> {
        let client = self.connect().await?;
        let row = client
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
                &[&self.schema],
            )
            .await
            .map_err(storage)?;
        let size: i64 = row.try_get(0).map_err(storage)?;
        Ok(u64::try_from(size).unwrap_or(0))
    }

    /// The client library's config: the connection string with the connect timeout.
    fn client_config(&self) -> Result<tokio_postgres::Config, Failure> {
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|source| annals::Error::InvalidConnectionString { source: Box::new(source) })?;
        config.connect_timeout(self.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("annals-cli");
        }
        Ok(config)
    }

    /// A connection of the tool's own; its driver runs on the current runtime until it is dropped.
    async fn connect(&self) -> Result<tokio_postgres::Client, Failure> {
        let config = self.client_config()?;
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|source| annals::Error::Unreachable { server: server_name(&config), source: Box::new(source) })?;
        tokio::spawn(async move {
            // Ends when the client is dropped; an error then shows on the client's next query.
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// A failed query on the tool's own connection.
fn storage(error: tokio_postgres::Error) -> Failure {
    Failure::Store(annals::Error::Storage(Box::new(error)))
}

/// The server as host and port, as the library names it in its errors.
fn server_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_directories() {
        for url in ["postgres://u@h/db", "postgresql://h/db", "POSTGRES://h", "PostgreSQL://h/db"] {
            assert!(is_url(url), "{url}");
        }
        for dir in ["data/events", "postgres", "./postgres://x", "postgres:/h/db", ""] {
            assert!(!is_url(dir), "{dir}");
        }
    }

    #[test]
    fn descriptions_name_the_server_and_never_the_password() {
        let database = Database::new("postgres://ada:s3cret@db.internal:6543/shop", "orders", Duration::from_secs(1));
        assert_eq!(database.describe(), "schema \"orders\" at db.internal:6543");
        assert!(!format!("{database:?}").contains("s3cret"));
    }
}
