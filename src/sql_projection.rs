//! SQL read models: projections that write their state into PostgreSQL tables in the same
//! transaction as their checkpoint, so that every event is applied exactly once and any process can
//! query the result with SQL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Transaction;
use tracing::Instrument;

use crate::consumer::follow::{Batch, Follower};
use crate::consumer::telemetry::{self, PROJECTION};
use crate::consumer::{HandlerError, Progress, ProgressWatch, Running};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::store::postgres::PostgresStore;
use crate::store::{validate_checkpoint_name, EventStore, HeadWatch, LogFilter};

/// Where SQL projections save their checkpoints (in the store's checkpoints table).
const PREFIX: &str = "sql-projection/";

/// How many times a batch whose [`apply`](SqlProjection::apply) fails is tried before the projector
/// stops with [`Error::Handler`].
const ATTEMPTS: u32 = 5;

/// A read model kept in PostgreSQL tables. [`SqlProjector::start`] runs it: for each page of the log
/// it opens a transaction, calls [`apply`](Self::apply) for each event in it, moves the projection's
/// checkpoint in the same transaction, and commits. The tables and the checkpoint therefore always
/// agree: after a crash or a restart, nothing is applied twice and nothing is skipped. Two projectors
/// of the same name (in two processes) never both apply an event: each batch locks the checkpoint row
/// and goes on only from where it is.
///
/// Keep the read model's state in the tables, not in `self`: a failed batch is rolled back and tried
/// again, and what `apply` changed in memory is not.
///
/// ```no_run
/// use annals::tokio_postgres::Transaction;
/// use annals::{HandlerError, LogFilter, PostgresStore, RecordedEvent, SqlProjection, SqlProjector};
///
/// struct OrderCount;
///
/// #[async_trait::async_trait]
/// impl SqlProjection for OrderCount {
///     fn name(&self) -> &str {
///         "order-count"
///     }
///
///     fn filter(&self) -> LogFilter {
///         LogFilter::all().event_types(["OrderPlaced"])
///     }
///
///     async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
///         tx.batch_execute("CREATE TABLE IF NOT EXISTS order_count (n bigint NOT NULL)").await?;
///         tx.batch_execute("INSERT INTO order_count SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM order_count)").await?;
///         Ok(())
///     }
///
///     async fn apply(&mut self, tx: &Transaction<'_>, _event: &RecordedEvent) -> Result<(), HandlerError> {
///         tx.execute("UPDATE order_count SET n = n + 1", &[]).await?;
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::open("postgres://shop@127.0.0.1/shop").await?;
/// let projector = SqlProjector::start(store, OrderCount).await?;
/// projector.caught_up().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait SqlProjection: Send + 'static {
    /// The projection's name: its checkpoint is saved as `sql-projection/<name>`.
    fn name(&self) -> &str;

    /// The events it reads (default: all).
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    /// Creates or migrates its tables. Runs once when the projector starts, in a transaction of its
    /// own, before any event.
    async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        let _ = tx;
        Ok(())
    }

    /// Applies one event to the tables, inside the batch's transaction.
    async fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError>;
}

/// Starts [`SqlProjection`]s.
#[derive(Debug)]
pub struct SqlProjector;

impl SqlProjector {
    /// Runs `setup`, then catches the projection up from its checkpoint and follows the log live, on a
    /// tokio task.
    ///
    /// # Errors
    /// [`Error::InvalidCheckpointName`] for a bad name; [`Error::Handler`] when `setup` fails; store
    /// errors.
    pub async fn start<P: SqlProjection>(store: PostgresStore, mut projection: P) -> Result<SqlProjectionHandle> {
        telemetry::describe();
        let name = projection.name().to_owned();
        let key = format!("{PREFIX}{name}");
        validate_checkpoint_name(&key)?;
        let at = prepare(&store, &key, &mut projection).await?;
        let head = store.watch_head();
        telemetry::progress(&name, PROJECTION, at, at, head.current());
        let progress = Progress { processed: at, checkpoint: at, caught_up: None };
        let (report, watched) = watch::channel(progress);
        let watch = ProgressWatch { name: name.clone(), progress: watched, head: store.watch_head() };
        let (commands, stop) = mpsc::channel(1);
        let runner = Runner { store: Arc::new(store), key, name: name.clone(), at, report, head };
        let task = tokio::spawn(runner.run(projection, stop));
        Ok(SqlProjectionHandle { watch, commands, running: Running::new(name, task) })
    }
}

/// A running [`SqlProjection`]. Dropping every clone stops it after the batch it is in.
#[derive(Clone, Debug)]
pub struct SqlProjectionHandle {
    watch: ProgressWatch,
    commands: mpsc::Sender<()>,
    running: Running,
}

impl SqlProjectionHandle {
    /// Waits until it has caught up with the head once, and returns that head.
    ///
    /// # Errors
    /// [`Error::Consumer`] when it stopped first.
    pub async fn caught_up(&self) -> Result<Position> {
        self.watch.caught_up().await
    }

    /// Waits until every event up to `position` is committed in the tables, for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Consumer`] when it stopped first.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<()> {
        self.watch.wait_for(position, timeout).await
    }

    /// Every event up to here is in the tables.
    pub fn position(&self) -> Position {
        self.watch.now().processed
    }

    /// How many events it is behind the head.
    pub fn lag(&self) -> u64 {
        self.watch.lag()
    }

    /// Stops it after the batch it is in, and returns how it ended.
    ///
    /// # Errors
    /// The error that stopped it earlier ([`Error::Handler`], store errors), or
    /// [`Error::HandlerPanicked`].
    pub async fn stop(self) -> Result<()> {
        self.running.stop(&self.commands, ()).await
    }
}

/// Runs `setup` and reads the checkpoint, creating its row at 0, in one transaction; returns it.
async fn prepare<P: SqlProjection>(store: &PostgresStore, key: &str, projection: &mut P) -> Result<Position> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(Error::storage)?;
    // Projectors of one name starting at once set up one at a time.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1::text))", &[&key]).await.map_err(Error::storage)?;
    let at = lock_checkpoint(store, &tx, key).await?;
    projection.setup(&tx).await.map_err(|source| Error::Handler {
        consumer: projection.name().to_owned(),
        position: at,
        attempts: 1,
        source,
    })?;
    tx.commit().await.map_err(Error::storage)?;
    Ok(at)
}

/// The checkpoint's position, its row created at 0 when missing and locked until `tx` ends.
async fn lock_checkpoint(store: &PostgresStore, tx: &Transaction<'_>, key: &str) -> Result<Position> {
    let now = Utc::now().timestamp_micros();
    tx.execute(
        &store.sql(
            "INSERT INTO {s}.checkpoints (name, position, state, updated_us) VALUES ($1, 0, NULL, $2) \
             ON CONFLICT (name) DO NOTHING",
        ),
        &[&key, &now],
    )
    .await
    .map_err(Error::storage)?;
    let row = tx
        .query_one(&store.sql("SELECT position FROM {s}.checkpoints WHERE name = $1 FOR UPDATE"), &[&key])
        .await
        .map_err(Error::storage)?;
    let position: i64 = row.try_get(0).map_err(Error::storage)?;
    Ok(Position::new(u64::try_from(position).unwrap_or(0)))
}

/// What committing a batch came to.
enum Outcome {
    /// The batch is in the tables; the checkpoint is at its end.
    Committed,
    /// The batch had no event to apply: the checkpoint moves with a later batch.
    Skipped,
    /// Another projector of the same name moved the checkpoint here: nothing was applied.
    Moved(Position),
    /// `apply` failed on the event at this position; nothing was applied.
    Failed(Position, HandlerError),
}

struct Runner {
    store: Arc<PostgresStore>,
    key: String,
    name: String,
    /// The committed checkpoint.
    at: Position,
    report: watch::Sender<Progress>,
    /// The store's head, for the lag gauge.
    head: HeadWatch,
}

impl Runner {
    /// Runs the projector until it is stopped or fails; reports the error (or panic) that stopped it.
    async fn run<P: SqlProjection>(self, projection: P, stop: mpsc::Receiver<()>) -> Result<()> {
        let name = self.name.clone();
        let progress = self.report.subscribe();
        let position = || progress.borrow().processed;
        telemetry::reporting_stop(&name, position, self.work(projection, stop)).await
    }

    async fn work<P: SqlProjection>(mut self, mut projection: P, mut stop: mpsc::Receiver<()>) -> Result<()> {
        let filter = projection.filter();
        let mut follower = Follower::new(Arc::clone(&self.store), self.at.next(), filter.clone());
        let mut failures = 0u32;
        loop {
            let batch = tokio::select! {
                _ = stop.recv() => return Ok(()),
                batch = follower.next_batch() => batch,
            };
            let outcome = match batch {
                Ok(batch) => {
                    let span = telemetry::batch_span(&self.name, PROJECTION, &batch);
                    let started = std::time::Instant::now();
                    let outcome = self.commit(&mut projection, &batch).instrument(span).await;
                    telemetry::batch_done(&self.name, PROJECTION, started);
                    outcome.map(|outcome| (batch, outcome))
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok((batch, done @ (Outcome::Committed | Outcome::Skipped))) => {
                    failures = 0;
                    if let Outcome::Committed = done {
                        self.at = self.at.max(batch.through);
                    }
                    telemetry::progress(&self.name, PROJECTION, batch.through, self.at, self.head.current());
                    self.report.send_modify(|progress| {
                        progress.processed = batch.through;
                        progress.checkpoint = self.at;
                        if batch.caught_up {
                            progress.caught_up.get_or_insert(batch.through);
                        }
                    });
                    continue;
                }
                Ok((_, Outcome::Moved(to))) => self.at = to,
                Ok((_, Outcome::Failed(position, source))) => {
                    failures += 1;
                    telemetry::handler_failed(&self.name, PROJECTION);
                    if failures < ATTEMPTS {
                        tracing::warn!(
                            annals.consumer = self.name.as_str(),
                            annals.position = position.get(),
                            annals.attempt = failures,
                            "error.message" = %source,
                            "sql projection batch failed, will retry"
                        );
                    }
                    if failures >= ATTEMPTS {
                        return Err(Error::Handler {
                            consumer: self.name.clone(),
                            position,
                            attempts: failures,
                            source,
                        });
                    }
                }
                // The database restarting, a dropped connection: wait, then go on from the checkpoint.
                Err(error) if error.is_retryable() => {
                    telemetry::recovering(&self.name, &error);
                    failures = failures.saturating_add(1).min(ATTEMPTS - 1);
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(Duration::from_millis(50) * failures.max(1)).await;
            follower = Follower::new(Arc::clone(&self.store), self.at.next(), filter.clone());
        }
    }

    /// Applies a batch's events and moves the checkpoint in one transaction.
    async fn commit<P: SqlProjection>(&self, projection: &mut P, batch: &Batch) -> Result<Outcome> {
        if batch.events.is_empty() && !batch.caught_up && batch.through.get() < self.at.get() + 10_000 {
            // Nothing to apply: the checkpoint moves with the next batch that has events.
            return Ok(Outcome::Skipped);
        }
        let mut client = self.store.client().await?;
        let tx = client.transaction().await.map_err(Error::storage)?;
        let stored = lock_checkpoint(&self.store, &tx, &self.key).await?;
        if stored != self.at {
            return Ok(Outcome::Moved(stored));
        }
        for event in batch.events.iter().filter(|e| e.position > self.at) {
            if let Err(source) = projection.apply(&tx, event).await {
                return Ok(Outcome::Failed(event.position, source));
            }
        }
        let through = i64::try_from(batch.through.get()).unwrap_or(i64::MAX);
        let started = std::time::Instant::now();
        async {
            tx.execute(
                &self.store.sql("UPDATE {s}.checkpoints SET position = $2, updated_us = $3 WHERE name = $1"),
                &[&self.key, &through, &Utc::now().timestamp_micros()],
            )
            .await
            .map_err(Error::storage)?;
            tx.commit().await.map_err(Error::storage)
        }
        .instrument(telemetry::checkpoint_span(&self.name, batch.through))
        .await?;
        telemetry::checkpoint_done(&self.name, PROJECTION, started);
        Ok(Outcome::Committed)
    }
}
