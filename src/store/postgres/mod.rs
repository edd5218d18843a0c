//! [`PostgresStore`]: the event store on PostgreSQL, shared by several processes and machines.
//!
//! The log is one table; a head row, locked inside every append transaction, serializes writers of
//! every process, so positions are assigned gap-free and follow commit order, and a reader never sees
//! position N+1 before N. A scavenge later removes events and leaves gaps, recorded in a table of
//! their own, that reads skip (a gap not recorded there is damage). Inside one process, one writer task commits concurrent appends together in one
//! transaction (group commit). Writers `NOTIFY` the store's channel in the same transaction, so other
//! processes' [`watch_head`](crate::EventStore::watch_head) wakes as soon as the commit is done.
//! [`guide::design`](crate::guide::design) discusses the trade-offs, and
//! [`guide::storage_format`](crate::guide::storage_format) every table.

mod config;
mod fault;
mod lease;
mod lifecycle;
mod listen;
mod read;
mod scavenge;
mod schema;
mod writer;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{NoTls, Row};
use tracing::Instrument;

pub use self::config::{PostgresConfig, MAX_SCHEMA_NAME_LEN, POSTGRES_MAX_EVENT_SIZE_LIMIT};
use self::fault::{corrupt, count, micros, pg_error, pool_error, ConnectError};
pub use self::schema::SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION;
use self::writer::{Job, Request, Writer};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::observe::{AppendObserver, StoreKind};
use crate::store::{
    plan_restore, validate_appends, validate_checkpoint_name, validate_checkpoint_writes, AppendResult, Checkpoint,
    CheckpointWrite, Direction, EventStore, HeadWatch, LogChunk, LogFilter, Snapshot, SnapshotRetention, StreamAppend,
};
use crate::stream_id::StreamId;

/// The event store on PostgreSQL. Cloning gives another handle to the same store; every process
/// that opens the same database and schema shares one log.
///
/// Open it with [`PostgresStore::open`] or a [`PostgresConfig`], inside a tokio runtime: the store
/// runs two tasks on it (the writer and the head listener), which end when the last handle is dropped.
///
/// ```no_run
/// use annals::{EventStore, ExpectedVersion, NewEvent, PostgresStore, StreamId};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::open("postgres://shop@127.0.0.1/shop").await?;
/// let order = StreamId::new("order-1")?;
/// let placed = NewEvent::json("OrderPlaced", &serde_json::json!({ "total": 1250 }))?;
/// store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// The quoted schema name, for SQL.
    schema_sql: String,
    schema_name: String,
    max_event_size: usize,
    snapshot_retention: SnapshotRetention,
    queue: mpsc::UnboundedSender<Request>,
    head: watch::Sender<Position>,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema_name)
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The writer ends by itself once the queue closes, after the appends already queued.
        self.listener.abort();
    }
}

impl PostgresConfig {
    /// Connects, creates the schema and its tables when missing (or migrates them forward), and
    /// starts the writer and the head listener on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConnectionString`] when the string does not parse, [`Error::Config`] for
    /// out-of-range settings or when called outside a tokio runtime, [`Error::Unreachable`] when the server refuses or does not answer (or
    /// the credentials or database are wrong), [`Error::UnsupportedSchema`] when the schema was
    /// written by a newer version, [`Error::Storage`] for other database errors.
    pub async fn open(self) -> Result<PostgresStore> {
        PostgresStore::open_with(self).await
    }
}

impl PostgresStore {
    /// Opens the store in the schema `annals` of the database `url` names, with the defaults of
    /// [`PostgresConfig::new`].
    ///
    /// # Errors
    /// As [`PostgresConfig::open`].
    pub async fn open(url: &str) -> Result<PostgresStore> {
        PostgresConfig::new(url).open().await
    }

    async fn open_with(config: PostgresConfig) -> Result<PostgresStore> {
        config.validate()?;
        crate::store::observe::describe();
        if tokio::runtime::Handle::try_current().is_err() {
            // The writer and the listener are tokio tasks: without a runtime, spawning them would panic.
            return Err(Error::Config { setting: "runtime", expected: "opened inside a tokio runtime" });
        }
        let pg = connection_config(&config)?;
        let server = server_name(&pg);
        let unreachable = |error: ConnectError| {
            let source: Box<dyn std::error::Error + Send + Sync> = match error {
                ConnectError::Failed(error) => Box::new(error),
                timed_out => Box::new(timed_out),
            };
            Error::Unreachable { server: server.clone(), source }
        };
        let (mut client, driver) = fault::connect(&pg).await.map_err(unreachable)?;
        let driver = tokio::spawn(driver);
        let schema = schema::quoted(&config.schema);
        let migrated = schema::migrate(&mut client, &config.schema, config.stop_at_schema).await;
        let head = match migrated {
            Ok(_) => read_head(&client, &schema).await,
            Err(error) => Err(error),
        };
        drop(client);
        driver.abort();
        let head = head?;
        let manager =
            Manager::from_config(pg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .wait_timeout(Some(config.statement_timeout))
            .build()
            .map_err(Error::storage)?;
        let channel = format!("{}.head", config.schema);
        let (head_tx, _) = watch::channel(head);
        let listener = tokio::spawn(listen::run(pg.clone(), schema.clone(), channel.clone(), head_tx.clone()));
        let (queue, requests) = mpsc::unbounded_channel();
        let writer =
            Writer { config: pg, schema: schema.clone(), channel, head: head_tx.clone(), max_group: config.max_group };
        tokio::spawn(writer.run(requests));
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                pool,
                schema_sql: schema,
                schema_name: config.schema,
                max_event_size: config.max_event_size,
                snapshot_retention: config.snapshot_retention,
                queue,
                head: head_tx,
                listener,
            }),
        })
    }

    /// The schema (namespace) the store's tables are in.
    pub fn schema(&self) -> &str {
        &self.shared.schema_name
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.shared.pool.get().await.map_err(pool_error)
    }

    /// Validates `appends` and hands them to the writer as `job` makes them, observed as one append
    /// (`annals.append` span and metrics), a restored batch too.
    async fn append_observed(
        &self,
        appends: Vec<StreamAppend>,
        job: impl FnOnce(Vec<StreamAppend>) -> Job,
    ) -> Result<Vec<AppendResult>> {
        let observer = AppendObserver::start(StoreKind::Postgres, &appends);
        let submitted = async {
            validate_appends(&appends, self.shared.max_event_size)?;
            self.submit(job(appends)).await
        };
        let result = submitted.instrument(observer.span().clone()).await;
        observer.finish(&result);
        result
    }

    async fn submit(&self, job: Job) -> Result<Vec<AppendResult>> {
        let (reply, answer) = oneshot::channel();
        self.shared.queue.send(Request { job, reply }).map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Applies checkpoint writes inside the transaction `tx`.
    async fn write_checkpoints(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        writes: &[CheckpointWrite],
    ) -> Result<()> {
        let upsert = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {s}.checkpoints (name, position, state, updated_us) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, state = excluded.state, \
                 updated_us = excluded.updated_us",
            ))
            .await
            .map_err(pg_error)?;
        let delete =
            tx.prepare_cached(&self.sql("DELETE FROM {s}.checkpoints WHERE name = $1")).await.map_err(pg_error)?;
        for write in writes {
            match write {
                CheckpointWrite::Save(c) => {
                    let position = sql_i64(c.position.get());
                    tx.execute(&upsert, &[&c.name, &position, &c.state, &c.updated_at.timestamp_micros()])
                        .await
                        .map_err(pg_error)?;
                }
                CheckpointWrite::Delete(name) => {
                    tx.execute(&delete, &[name]).await.map_err(pg_error)?;
                }
            }
        }
        Ok(())
    }

    /// The SQL text of a statement on the store's schema: `{s}` stands for the schema.
    pub(crate) fn sql(&self, template: &str) -> String {
        template.replace("{s}", &self.shared.schema_sql)
    }
}

/// The client library's config for `config`: the connection string, the timeouts, and the
/// server-side guard rails.
fn connection_config(config: &PostgresConfig) -> Result<tokio_postgres::Config> {
    let mut pg = tokio_postgres::Config::from_str(&config.url)
        .map_err(|source| Error::InvalidConnectionString { source: Box::new(source) })?;
    let mut options = pg.get_options().map(str::to_owned).unwrap_or_default();
    options.push_str(&format!(
        " -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        config.statement_timeout.as_millis(),
        config.statement_timeout.as_millis().saturating_mul(2)
    ));
    pg.options(options.trim());
    pg.connect_timeout(config.connect_timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("annals");
    }
    Ok(pg)
}

/// The server as host and port, for messages (never the password).
fn server_name(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

async fn read_head(client: &tokio_postgres::Client, schema: &str) -> Result<Position> {
    let row =
        client.query_one(&format!("SELECT position FROM {schema}.head WHERE id = 1"), &[]).await.map_err(pg_error)?;
    Ok(Position::new(count(row.try_get(0).map_err(pg_error)?, "head row", 0)?))
}

/// A `u64` count as PostgreSQL's `bigint`, saturating.
fn sql_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn decode_snapshot(row: &Row) -> Result<Snapshot> {
    let stream: &str = row.try_get(0).map_err(pg_error)?;
    let version: i64 = row.try_get(1).map_err(pg_error)?;
    let stream = StreamId::stored(stream).ok_or_else(|| corrupt("snapshot row", 0, "invalid stream name"))?;
    Ok(Snapshot {
        stream,
        version: Version::new(count(version, "snapshot row", 0)?),
        schema_version: row.try_get::<_, i32>(2).map_err(pg_error)? as u32,
        state: row.try_get(3).map_err(pg_error)?,
        taken_at: micros(row.try_get(4).map_err(pg_error)?, "snapshot row", 0)?,
    })
}

fn decode_checkpoint(row: &Row) -> Result<Checkpoint> {
    let name: String = row.try_get(0).map_err(pg_error)?;
    let position: i64 = row.try_get(1).map_err(pg_error)?;
    Ok(Checkpoint {
        name,
        position: Position::new(count(position, "checkpoint row", position)?),
        state: row.try_get(2).map_err(pg_error)?,
        updated_at: micros(row.try_get(3).map_err(pg_error)?, "checkpoint row", position)?,
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_observed(appends, Job::Append).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: crate::store::StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        let client = self.client().await?;
        read::stream_chunk(&client, &self.shared.schema_sql, stream, from, direction, max, view).await
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        let client = self.client().await?;
        read::log_chunk(&client, &self.shared.schema_sql, from, max, filter).await
    }

    async fn head(&self) -> Result<Position> {
        let client = self.client().await?;
        read::head(&client, &self.shared.schema_sql).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql("SELECT version, truncated_before, tombstone FROM {s}.streams WHERE stream = $1"))
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&stream.as_str()]).await.map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let life = writer::stream_life(&row, 0)?;
        if life.tombstone {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Ok(life.current_version())
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql(
                "SELECT stream, version FROM {s}.streams WHERE stream LIKE $1 AND NOT tombstone \
                 AND version >= truncated_before ORDER BY stream",
            ))
            .await
            .map_err(pg_error)?;
        let rows = client.query(&statement, &[&read::like_prefix(prefix)]).await.map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                let stream: &str = row.try_get(0).map_err(pg_error)?;
                let stream = StreamId::stored(stream).ok_or_else(|| corrupt("stream row", 0, "invalid stream name"))?;
                Ok((stream, Version::new(count(row.try_get(1).map_err(pg_error)?, "stream row", 0)?)))
            })
            .collect()
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        // The first microsecond at or after `at`.
        let mut at_us = at.timestamp_micros();
        if at.timestamp_subsec_nanos() % 1000 != 0 {
            at_us = at_us.saturating_add(1);
        }
        let client = self.client().await?;
        let statement =
            client
                .prepare_cached(&self.sql(
                    "SELECT position FROM {s}.events WHERE recorded_us >= $1 ORDER BY recorded_us, position LIMIT 1",
                ))
                .await
                .map_err(pg_error)?;
        match client.query_opt(&statement, &[&at_us]).await.map_err(pg_error)? {
            None => Ok(None),
            Some(row) => Ok(Some(Position::new(count(row.try_get(0).map_err(pg_error)?, "event row", 0)?))),
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut client = self.client().await?;
        let stream = snapshot.stream.as_str();
        let version = sql_i64(snapshot.version.get());
        let schema_version = snapshot.schema_version as i32;
        let taken_us = snapshot.taken_at.timestamp_micros();
        let upsert = self.sql(
            "INSERT INTO {s}.snapshots (stream, version, schema_version, state, taken_us) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream, version) DO UPDATE SET schema_version = excluded.schema_version, \
             state = excluded.state, taken_us = excluded.taken_us",
        );
        let values: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&stream, &version, &schema_version, &snapshot.state, &taken_us];
        let Some(kept) = self.shared.snapshot_retention.kept() else {
            let statement = client.prepare_cached(&upsert).await.map_err(pg_error)?;
            client.execute(&statement, &values).await.map_err(pg_error)?;
            return Ok(());
        };
        // One transaction: readers, concurrent saves and a crash see the snapshots of before it or
        // of after it.
        let tx = client.transaction().await.map_err(pg_error)?;
        let statement = tx.prepare_cached(&upsert).await.map_err(pg_error)?;
        tx.execute(&statement, &values).await.map_err(pg_error)?;
        // Every version at or below the first one not kept (none when there are `kept` or fewer).
        // Rows committed by concurrent saves count too (read committed), and a row is deleted only
        // below `kept` newer ones, so the newest is never deleted.
        let statement = tx
            .prepare_cached(&self.sql(
                "DELETE FROM {s}.snapshots WHERE stream = $1 AND version <= \
                 (SELECT version FROM {s}.snapshots WHERE stream = $1 ORDER BY version DESC OFFSET $2 LIMIT 1)",
            ))
            .await
            .map_err(pg_error)?;
        let offset = i64::try_from(kept).unwrap_or(i64::MAX);
        tx.execute(&statement, &[&stream, &offset]).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql(
                "SELECT stream, version, schema_version, state, taken_us FROM {s}.snapshots \
                 WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT 1",
            ))
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&stream.as_str(), &sql_i64(at.get())]).await.map_err(pg_error)?;
        row.as_ref().map(decode_snapshot).transpose()
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        validate_checkpoint_name(name)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql("SELECT name, position, state, updated_us FROM {s}.checkpoints WHERE name = $1"))
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&name]).await.map_err(pg_error)?;
        row.as_ref().map(decode_checkpoint).transpose()
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        validate_checkpoint_writes(&writes)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        self.write_checkpoints(&tx, &writes).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        let client = self.client().await?;
        let statement =
            client
                .prepare_cached(&self.sql(
                    "SELECT name, position, state, updated_us FROM {s}.checkpoints WHERE name LIKE $1 ORDER BY name",
                ))
                .await
                .map_err(pg_error)?;
        let rows = client.query(&statement, &[&read::like_prefix(prefix)]).await.map_err(pg_error)?;
        rows.iter().map(decode_checkpoint).collect()
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        let plan = plan_restore(events)?;
        for (first_position, appends) in plan.requests {
            let recorded_at = plan.recorded_at;
            self.append_observed(appends, |appends| Job::Restore { first_position, recorded_at, appends }).await?;
        }
        Ok(())
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: crate::position::ExpectedVersion,
        mode: crate::store::DeleteMode,
    ) -> Result<()> {
        self.delete(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        self.truncate(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<crate::store::StreamInfo> {
        self.life(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<crate::store::ScavengeChunk> {
        self.scavenge_positions(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        self.scavenge_one_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        HeadWatch::new(self.shared.head.subscribe())
    }

    fn partition_leases(&self) -> Option<&dyn crate::store::PartitionLeases> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_outside_a_tokio_runtime_is_an_error_not_a_panic() {
        let opened = futures_executor_block_on(PostgresConfig::new("postgres://nobody@127.0.0.1:1/none").open());
        assert!(
            matches!(&opened, Err(Error::Config { setting: "runtime", .. })),
            "{:?}",
            opened.as_ref().map(|_| "a store")
        );
    }

    /// Polls a future to completion on this thread, without any runtime.
    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
            std::thread::yield_now();
        }
    }
}
