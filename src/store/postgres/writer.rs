//! The writer of a [`PostgresStore`](super::PostgresStore): one task per process that drains the
//! queue of appends and commits each group in one transaction, under the head row's lock (group
//! commit). The lock serializes writers of every process, so positions are gap-free and in commit
//! order; grouping keeps one process from paying one commit per event.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use tracing::Instrument;
use uuid::Uuid;

use super::fault::{count, pg_error};
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::observe::{self, GroupObserver, StoreKind};
use crate::store::{plan_retry, AppendResult, StoredId, StreamAppend, StreamInfo};
use crate::stream_id::StreamId;

/// What a request asks the writer to do.
#[derive(Debug)]
pub(super) enum Job {
    /// A new append, recorded now.
    Append(Vec<StreamAppend>),
    /// Events as another store recorded them: they start at `first_position`, recorded at `recorded_at`.
    Restore { first_position: Position, recorded_at: DateTime<Utc>, appends: Vec<StreamAppend> },
}

/// One queued request and where its answer goes.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) job: Job,
    pub(super) reply: oneshot::Sender<Result<Vec<AppendResult>>>,
}

/// The writer's own connection and its prepared statements.
///
/// The two lookups are not prepared: they run as unnamed statements, which PostgreSQL plans with
/// their arguments and the table's current size each time. A prepared statement switches to a
/// generic plan after five runs and keeps it until the table is next analyzed; prepared while
/// the table was small, that plan is a sequential scan, and every group paid a scan of the whole
/// log until autovacuum analyzed it.
struct Connection {
    client: Client,
    lock_head: Statement,
    find_ids: String,
    find_streams: String,
    insert_events: Statement,
    upsert_streams: Statement,
    update_head: Statement,
    notify: Statement,
}

/// What the writer needs to connect and where it announces the head.
pub(super) struct Writer {
    pub(super) config: tokio_postgres::Config,
    /// The quoted schema name.
    pub(super) schema: String,
    pub(super) channel: String,
    pub(super) head: watch::Sender<Position>,
    pub(super) max_group: usize,
}

impl Writer {
    /// Runs until every handle of the store is gone and the queue is drained.
    pub(super) async fn run(self, mut queue: mpsc::UnboundedReceiver<Request>) {
        let mut connection: Option<Connection> = None;
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while group.len() < self.max_group {
                match queue.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            if connection.as_ref().is_none_or(|c| c.client.is_closed()) {
                connection = match self.connect().await {
                    Ok(c) => Some(c),
                    Err(error) => {
                        answer_all(group.into_iter().map(|r| r.reply), error);
                        continue;
                    }
                };
            }
            let Some(conn) = connection.as_mut() else { continue };
            if self.commit_group(conn, group).await.is_err() {
                // The connection is in an unknown state: start afresh with the next group.
                connection = None;
            }
        }
    }

    async fn connect(&self) -> Result<Connection> {
        let (client, driver) = super::fault::connect(&self.config).await.map_err(Error::storage)?;
        tokio::spawn(driver);
        let s = &self.schema;
        let prepare = |sql: String| {
            let client = &client;
            async move { client.prepare(&sql).await.map_err(pg_error) }
        };
        Ok(Connection {
            lock_head: prepare(format!("SELECT position, recorded_us FROM {s}.head WHERE id = 1 FOR UPDATE")).await?,
            find_ids: format!("SELECT id, position, stream, version FROM {s}.events WHERE id = ANY($1)"),
            find_streams: format!(
                "SELECT stream, version, truncated_before, tombstone FROM {s}.streams WHERE stream = ANY($1)"
            ),
            insert_events: prepare(format!(
                "INSERT INTO {s}.events (position, id, stream, version, event_type, schema_version, recorded_us, \
                 occurred_us, metadata, payload) \
                 SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int4[], \
                 $7::bigint[], $8::bigint[], $9::text[], $10::text[])"
            ))
            .await?,
            upsert_streams: prepare(format!(
                "INSERT INTO {s}.streams (stream, version) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version"
            ))
            .await?,
            update_head: prepare(format!("UPDATE {s}.head SET position = $1, recorded_us = $2 WHERE id = 1")).await?,
            notify: prepare("SELECT pg_notify($1, $2)".to_owned()).await?,
            client,
        })
    }

    /// Commits one group and answers its requests. An error means the connection must be replaced;
    /// the requests were answered with it.
    async fn commit_group(&self, conn: &mut Connection, group: Vec<Request>) -> Result<(), ()> {
        let (replies, jobs): (Vec<_>, Vec<_>) = group.into_iter().map(|r| (r.reply, r.job)).unzip();
        let observer = GroupObserver::start(StoreKind::Postgres, jobs.len());
        let started = Instant::now();
        match self.try_group(conn, &jobs).instrument(observer.span().clone()).await {
            Ok((answers, head)) => {
                if let Some(head) = head {
                    observer.wrote(answers.iter().filter_map(|a| a.as_deref().ok()).map(observe::events_stored).sum());
                    observer.committed(started.elapsed());
                    self.head.send_if_modified(|current| {
                        let moved = head > *current;
                        *current = (*current).max(head);
                        moved
                    });
                    observe::head(StoreKind::Postgres, self.head.borrow().get());
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
                Ok(())
            }
            Err(error) => {
                let _ = conn.client.batch_execute("ROLLBACK").await;
                answer_all(replies, error);
                Err(())
            }
        }
    }

    /// One transaction: lock the head, look up ids and stream versions, decide each request in
    /// memory, write what was accepted. Returns each request's answer and the new head (`None` when
    /// nothing was written).
    async fn try_group(
        &self,
        conn: &Connection,
        jobs: &[Job],
    ) -> Result<(Vec<Result<Vec<AppendResult>>>, Option<Position>)> {
        let c = &conn.client;
        let ids: Vec<Uuid> =
            jobs.iter().flat_map(|j| appends(j).iter().flat_map(|a| a.events.iter().map(|e| e.id))).collect();
        let names: Vec<&str> = jobs.iter().flat_map(|j| appends(j).iter().map(|a| a.stream.as_str())).collect();
        // One round trip: the server runs the statements in order, so the lookups run once the head
        // is locked and see every group committed before (each statement takes a fresh snapshot).
        let (_, head_row, id_rows, stream_rows) = futures_util::future::try_join4(
            c.batch_execute("BEGIN"),
            c.query_one(&conn.lock_head, &[]),
            c.query_typed(&conn.find_ids, &[(&ids, Type::UUID_ARRAY)]),
            c.query_typed(&conn.find_streams, &[(&names, Type::TEXT_ARRAY)]),
        )
        .await
        .map_err(pg_error)?;
        let head = count(head_row.try_get(0).map_err(pg_error)?, "head row", 0)?;
        let last_recorded: i64 = head_row.try_get(1).map_err(pg_error)?;
        let mut state = GroupState::new(head, last_recorded);
        for row in &id_rows {
            let id: Uuid = row.try_get(0).map_err(pg_error)?;
            let position: i64 = row.try_get(1).map_err(pg_error)?;
            let stream: &str = row.try_get(2).map_err(pg_error)?;
            let version: i64 = row.try_get(3).map_err(pg_error)?;
            let stream = StreamId::stored(stream)
                .ok_or_else(|| super::fault::corrupt("event row", position, "invalid stream name"))?;
            state.ids.insert(
                id,
                StoredId {
                    position: Position::new(count(position, "event row", position)?),
                    stream,
                    version: Version::new(count(version, "event row", position)?),
                },
            );
        }
        for row in &stream_rows {
            let stream: &str = row.try_get(0).map_err(pg_error)?;
            if let Some(stream) = StreamId::stored(stream) {
                state.streams.insert(stream, stream_life(row, 1)?);
            }
        }
        let answers: Vec<_> = jobs.iter().map(|job| state.decide(job)).collect();
        if state.rows.positions.is_empty() {
            c.batch_execute("ROLLBACK").await.map_err(pg_error)?;
            return Ok((answers, None));
        }
        let new_head = state.next_position - 1;
        let r = &state.rows;
        let (streams, versions): (Vec<&str>, Vec<i64>) =
            state.touched.iter().map(|(s, v)| (s.as_str(), *v as i64)).unzip();
        let head_sql = new_head as i64;
        let head_text = new_head.to_string();
        // One round trip, COMMIT included: after a failed statement the transaction is aborted and
        // the server answers COMMIT with a rollback, so an error anywhere writes nothing.
        futures_util::future::try_join5(
            c.execute(
                &conn.insert_events,
                &[
                    &r.positions,
                    &r.ids,
                    &r.streams,
                    &r.versions,
                    &r.types,
                    &r.schema_versions,
                    &r.recorded,
                    &r.occurred,
                    &r.metadata,
                    &r.payloads,
                ],
            ),
            c.execute(&conn.upsert_streams, &[&streams, &versions]),
            c.execute(&conn.update_head, &[&head_sql, &state.last_recorded]),
            c.execute(&conn.notify, &[&self.channel, &head_text]),
            c.batch_execute("COMMIT"),
        )
        .await
        .map_err(pg_error)?;
        Ok((answers, Some(Position::new(new_head))))
    }
}

/// The stream parts of a job.
fn appends(job: &Job) -> &[StreamAppend] {
    match job {
        Job::Append(appends) | Job::Restore { appends, .. } => appends,
    }
}

/// Answers every request of a failed group with the one `error`, each as its own [`Error::Storage`].
fn answer_all(replies: impl IntoIterator<Item = oneshot::Sender<Result<Vec<AppendResult>>>>, error: Error) {
    let shared = std::sync::Arc::new(error);
    for reply in replies {
        let _ = reply.send(Err(Error::storage(Shared(std::sync::Arc::clone(&shared)))));
    }
}

/// One failure shared by every request of a group, each answered with its own [`Error::Storage`].
#[derive(Debug)]
struct Shared(std::sync::Arc<Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// The columns of the rows a group inserts.
#[derive(Default)]
struct Rows {
    positions: Vec<i64>,
    ids: Vec<Uuid>,
    streams: Vec<String>,
    versions: Vec<i64>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    recorded: Vec<i64>,
    occurred: Vec<i64>,
    metadata: Vec<String>,
    payloads: Vec<String>,
}

/// What a group knows while it decides its requests in order: the stored ids and the streams' lives
/// (last version, truncation point, tombstone) it looked up, plus what the requests before it added.
struct GroupState {
    ids: HashMap<Uuid, StoredId>,
    streams: HashMap<StreamId, StreamInfo>,
    /// Each stream's version after the group, for the streams table.
    touched: HashMap<StreamId, u64>,
    next_position: u64,
    last_recorded: i64,
    now: i64,
    rows: Rows,
}

impl GroupState {
    fn new(head: u64, last_recorded: i64) -> Self {
        GroupState {
            ids: HashMap::new(),
            streams: HashMap::new(),
            touched: HashMap::new(),
            next_position: head + 1,
            last_recorded,
            now: Utc::now().timestamp_micros(),
            rows: Rows::default(),
        }
    }

    /// Decides one request: a retry, a rejection, or new rows.
    fn decide(&mut self, job: &Job) -> Result<Vec<AppendResult>> {
        let parts = appends(job);
        let ids: Vec<Vec<Uuid>> = parts.iter().map(|a| a.events.iter().map(|e| e.id).collect()).collect();
        let keys: Vec<_> = parts.iter().zip(&ids).map(|(a, ids)| (&a.stream, ids.as_slice())).collect();
        if let Some(results) = plan_retry(&keys, |id| Ok(self.ids.get(&id).cloned()))? {
            return Ok(results);
        }
        let recorded = match job {
            Job::Append(_) => self.now.max(self.last_recorded),
            Job::Restore { first_position, recorded_at, .. } => {
                if first_position.get() != self.next_position {
                    return Err(Error::Restore { position: *first_position, problem: "it is not the next position" });
                }
                let at = recorded_at.timestamp_micros();
                if at < self.last_recorded {
                    return Err(Error::Restore {
                        position: *first_position,
                        problem: "recorded before the last event",
                    });
                }
                at
            }
        };
        // Every part is checked before anything is written: a tombstone or a failed expectation in
        // one part fails the whole request.
        for part in parts {
            let life = self.streams.get(&part.stream);
            if life.is_some_and(|life| life.tombstone) {
                return Err(Error::StreamDeleted { stream: part.stream.clone() });
            }
            let actual = life.and_then(StreamInfo::current_version);
            if !part.expected.accepts(actual) {
                return Err(Error::WrongExpectedVersion {
                    stream: part.stream.clone(),
                    expected: part.expected,
                    actual,
                });
            }
        }
        let metadata: Vec<String> = parts
            .iter()
            .flat_map(|part| part.events.iter().map(|e| serde_json::to_string(e.metadata())))
            .collect::<Result<_, _>>()
            .map_err(Error::storage)?;
        let mut metadata = metadata.into_iter();
        self.last_recorded = recorded;
        let mut results = Vec::with_capacity(parts.len());
        for part in parts {
            let first_position = Position::new(self.next_position);
            // Versions continue after the last one ever written, whatever was deleted or truncated.
            let mut version = self.streams.get(&part.stream).and_then(|l| l.last_version).map_or(0, |v| v.get());
            for event in &part.events {
                version += 1;
                let position = self.next_position;
                self.next_position += 1;
                let r = &mut self.rows;
                r.positions.push(position as i64);
                r.ids.push(event.id());
                r.streams.push(part.stream.as_str().to_owned());
                r.versions.push(version as i64);
                r.types.push(event.event_type().to_owned());
                // Stored as the same 32 bits: PostgreSQL has no unsigned integers.
                r.schema_versions.push(event.schema_version() as i32);
                r.recorded.push(recorded);
                r.occurred.push(event.occurred_at().map_or(recorded, |t| t.timestamp_micros()));
                r.metadata.push(metadata.next().unwrap_or_default());
                r.payloads.push(event.payload().to_owned());
                self.ids.insert(
                    event.id(),
                    StoredId {
                        position: Position::new(position),
                        stream: part.stream.clone(),
                        version: Version::new(version),
                    },
                );
            }
            self.streams.entry(part.stream.clone()).or_default().last_version = Some(Version::new(version));
            self.touched.insert(part.stream.clone(), version);
            results.push(AppendResult {
                version: Version::new(version),
                first_position,
                last_position: Position::new(self.next_position - 1),
                already_appended: false,
            });
        }
        Ok(results)
    }
}

/// The life of a stream from a row of `<schema>.streams` whose columns from `at` on are `version,
/// truncated_before, tombstone` (soft deletions are not read: appends do not need them).
pub(super) fn stream_life(row: &tokio_postgres::Row, at: usize) -> Result<StreamInfo> {
    let last: Option<i64> = row.try_get(at).map_err(pg_error)?;
    let truncated_before: i64 = row.try_get(at + 1).map_err(pg_error)?;
    let tombstone: bool = row.try_get(at + 2).map_err(pg_error)?;
    let mut life = StreamInfo::new();
    life.last_version = last.map(|v| count(v, "stream row", 0).map(Version::new)).transpose()?;
    life.truncated_before = Version::new(count(truncated_before, "stream row", 0)?);
    life.tombstone = tombstone;
    if life.truncated_before == Version::ZERO {
        return Err(super::fault::corrupt("stream row", 0, "truncation point below 1"));
    }
    Ok(life)
}
