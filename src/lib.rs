//! Annals is an event-sourcing framework for Rust: an embedded, crash-safe event store on
//! [sled](https://docs.rs/sled), with the same API ready for other backends.
//!
//! # Overview
//!
//! In event sourcing, the state of the system is the sequence of things that happened to it. Your
//! domain types are *aggregates*: they handle *commands* by deciding which *events* happen, and their
//! state is the fold of those events. Annals stores the events in an append-only log organised in
//! *streams* (one per aggregate instance, such as `account-42`), loads aggregates back from them, and
//! gives the events back in order: one stream, the whole log, a filtered part of it, or everything up
//! to a point in time.
//!
//! ```
//! use annals::{Aggregate, CommandContext, Event, Repository, SledStore};
//!
//! #[derive(Event, Debug, PartialEq)]
//! enum AccountEvent {
//!     Opened { owner: String },
//!     Deposited { amount_cents: u64 },
//! }
//!
//! #[derive(Clone, Debug)]
//! enum AccountCommand {
//!     Open { owner: String },
//!     Deposit { amount_cents: u64 },
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! enum AccountError {
//!     #[error("the account is not open")]
//!     NotOpen,
//! }
//!
//! #[derive(Aggregate, Default)]
//! #[aggregate(command = AccountCommand, event = AccountEvent, error = AccountError)]
//! struct Account {
//!     open: bool,
//!     balance_cents: u64,
//! }
//!
//! impl Account {
//!     fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
//!         match command {
//!             AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened { owner }]),
//!             AccountCommand::Deposit { .. } if !self.open => Err(AccountError::NotOpen),
//!             AccountCommand::Deposit { amount_cents } => Ok(vec![AccountEvent::Deposited { amount_cents }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Opened { .. } => self.open = true,
//!             AccountEvent::Deposited { amount_cents } => self.balance_cents += amount_cents,
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let accounts = Repository::<Account, _>::new(SledStore::open(dir.path())?);
//! let context = CommandContext::new().correlation_id("request-1");
//!
//! accounts.execute("42", AccountCommand::Open { owner: "Ada".into() }, &context).await?;
//! let committed = accounts.execute("42", AccountCommand::Deposit { amount_cents: 250 }, &context).await?;
//! assert_eq!(committed.stream.as_str(), "account-42");
//! assert_eq!(committed.version.get(), 2);
//!
//! let account = accounts.load("42").await?;
//! assert_eq!(account.state.balance_cents, 250);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Below the aggregates, the [`EventStore`] can be used directly:
//!
//! ```
//! use annals::{EventStore, ExpectedVersion, NewEvent, ReadLog, ReadStream, SledStore, StreamId};
//! use futures_util::TryStreamExt;
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path())?;
//! let order = StreamId::new("order-42")?;
//!
//! // Append with optimistic concurrency: the stream must not exist yet.
//! let placed = NewEvent::json("OrderPlaced", &serde_json::json!({ "item": "book", "quantity": 2 }))?;
//! let result = store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(result.version.get(), 1);
//!
//! // The same expectation fails now: the stream exists.
//! let again = NewEvent::json("OrderPlaced", &serde_json::json!({ "item": "pen" }))?;
//! assert!(store.append(&order, ExpectedVersion::NoStream, vec![again]).await.is_err());
//!
//! // Read the stream, or the whole log from any position.
//! let events: Vec<_> = store.read_stream(&order, ReadStream::forward()).try_collect().await?;
//! assert_eq!(events[0].event_type, "OrderPlaced");
//! let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
//! assert_eq!(log.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Core concepts
//!
//! - **Events.** A [`NewEvent`] is what you append: a type name, a schema version, a JSON payload,
//!   an optional business time (`occurred_at`) and [`Metadata`] (correlation and causation ids,
//!   headers). The store turns it into a [`RecordedEvent`] with its [`StreamId`], [`Version`] in the
//!   stream, global [`Position`] in the log and `recorded_at` time.
//! - **Streams and versions.** Each stream's versions run 1, 2, 3, ... without gaps. An append names
//!   the [`ExpectedVersion`] of its stream; if another writer got there first, the append fails with
//!   [`Error::WrongExpectedVersion`] and writes nothing.
//! - **The log and positions.** Every event also has a position in the whole log: 1, 2, 3, ... in
//!   commit order, without gaps, across all streams. Positions are what projections and subscriptions
//!   checkpoint.
//! - **Two clocks.** `recorded_at` is when the store committed the event and never decreases along
//!   the log, so [`EventStore::seek_recorded`] finds a time in O(log n). `occurred_at` is when it
//!   happened in the business domain, which may be long before (imported history). Reads can stop at
//!   a position, a recorded time or an occurred time ([`Until`]).
//! - **Stores.** [`EventStore`] is the trait; [`SledStore`] is the embedded default (one directory,
//!   no server, one process at a time) and [`MemoryStore`] the in-memory one for tests.
//!   `PostgresStore` (feature `postgres`) keeps the log in PostgreSQL, shared by any number of
//!   processes and machines: positions stay gap-free in commit order with many writers, and
//!   `watch_head` wakes on other processes' commits. All three pass one conformance suite.
//! - **Aggregates.** An [`Aggregate`] decides (`handle`: command in, events or a business error out)
//!   and evolves (`apply`: pure, synchronous, infallible). Its events implement [`Event`]: a stable
//!   type name and schema version per variant. `#[derive(Event)]` and `#[derive(Aggregate)]` write
//!   the glue.
//! - **Repository.** A [`Repository`] loads an aggregate (from the newest usable [`Snapshot`] and the
//!   events after it, or from its cache), runs a command, appends the events with the version it
//!   loaded, and retries on conflicts. [`CommandContext`] metadata lands on every event;
//!   [`Repository::execute_atomic`] commits several aggregates of one type in one append, and a
//!   [`UnitOfWork`] several aggregates of different types ("lend book X to member Y"): one
//!   decision over all of them, one append with each stream's expected version, retried as a whole
//!   on a conflict. [`CommandContext::occurred_at`] back-dates what a command records (history
//!   entered late).
//! - **Upcasting.** [`Upcasters`] turn events stored in an old shape into the current one;
//!   [`Upcasting`] applies them to every read, and [`Upcasters::check`] finds broken chains at
//!   start-up.
//! - **Testing.** [`testing::given`] runs given / when / then tests on an aggregate, without a store.
//! - **Projections.** A [`Projection`] is a read model: it asks for some events (a [`LogFilter`] by
//!   type or stream category) and handles them in log order. A [`Projector`] runs it from its
//!   [`Checkpoint`] and keeps it live; [`Projector::persisted`] saves its state with its position in
//!   one atomic write (exactly-once), [`Projector::checkpointed`] saves the position only (outside
//!   effects, at-least-once, each delivery marked [`Phase::CatchUp`] or [`Phase::Live`]). A version
//!   bump or [`ProjectionHandle::rebuild`] replays into a shadow copy that is swapped in once it has
//!   caught up. [`replay`] rebuilds a fresh instance between any two points ([`Start`], [`Until`]).
//! - **Import.** [`import::CsvImport`] turns a tabular event log (CSV: case, activity, time,
//!   attributes) into events, one stream per case, in atomic batches; re-running it stores nothing
//!   twice.
//! - **Subscriptions.** A [`Subscription`] is a named, durable consumer, like a Kafka consumer group:
//!   it catches up from its checkpoint, then goes live; it retries failing events as its
//!   [`RetryPolicy`] says, then parks them ([`Parked`]) or stops ([`OnFailure`]). A
//!   [`SubscriptionGroup`] shares a subscription's partitions among several workers.
//!   [`SubscriptionHandle::wait_for`] gives read-your-writes; `lag()` says how far behind it is.
//!   On PostgreSQL, a group's workers may run in several processes: they share the partitions
//!   through leases in the database, and a worker that dies hands its partitions over when its
//!   lease expires ([`SubscriptionConfig::lease_ttl`]).
//! - **Workflows.** A [`Workflow`] (a process manager) reacts to events per instance (a loan, an
//!   order), keeps its state, issues commands or appends to other streams, and schedules durable
//!   deadlines that fire once at a business time on a [`Clock`] (cancellable by a later event).
//!   Each reaction is one append with ids derived from its trigger, so a crash never issues a
//!   command twice. [`Workflows::deadlines`] lists what is pending.
//! - **The life of a stream.** [`EventStore::delete_stream`] deletes a stream softly (it reads as
//!   missing and can start again, its history still there for time travel) or for good (a
//!   tombstone: [`Error::StreamDeleted`]); [`EventStore::truncate_stream`] hides the versions below a
//!   point; [`RetentionRule`]s keep a stream or a category by age or count. [`scavenge`] then
//!   removes what reads no longer show, step by step and resumable; positions never change and log
//!   readers skip the gaps.
//! - **Personal data.** Fields marked `#[event(personal)]` are stored encrypted with a key per
//!   subject; [`personal::PersonalStore::forget`] destroys the key, and every read shows them erased
//!   while the rest of the event stays (crypto-shredding); [`guide::personal_data`] says what is
//!   stored and what the guarantee is.
//! - **SQL read models.** An `SqlProjection` (feature `postgres`) writes its read model into
//!   PostgreSQL tables in the same transaction as its checkpoint: exactly once, and any process can
//!   query it with SQL.
//! - **Brokers.** `relay::Relay` (features `kafka`, `pulsar`) publishes the log, or part of it, to a
//!   Kafka or Pulsar topic, keyed by stream, with the envelope in headers; its checkpoint moves only
//!   after the broker acknowledged. `relay::KafkaInbound` consumes a Kafka topic into a store as a
//!   consumer group member, committing offsets after the append, with ids that make re-consumption a
//!   no-op. This is how one service's events reach another service's store.
//!
//! # Guarantees
//!
//! With the default [`Durability::Fsync`], an append to a [`SledStore`] is acknowledged only once it
//! is on disk (`fdatasync`ed): it survives `kill -9` and power loss. On PostgreSQL it is acknowledged
//! once committed, which with the server's defaults means on disk too. An append is atomic, also over several
//! streams ([`EventStore::append_multi`]). A retry of an append whose event ids are stored answers with
//! the original result instead of storing the events twice, also after a restart. Reads and
//! [`HeadWatch`] only ever show acknowledged events. The full list, each backed by a test, is in
//! [`guide::guarantees`]; the semantics of reads into the past are in [`guide::time_travel`], the
//! decisions behind the design and the map of the source in [`guide::design`], the bytes on disk in
//! [`guide::storage_format`], and every benchmark figure in [`guide::performance`].
//!
//! # Errors
//!
//! Every fallible operation returns [`Error`]; each variant's documentation says whether to retry,
//! fix the input or treat it as a bug. Library code never panics on input or disk contents, and never
//! prints.
//!
//! # Features
//!
//! - `derive` (default): the derive macros of the `annals-derive` crate.
//! - `csv` (default): [`import`], CSV event logs into events.
//! - `postgres`: `PostgresStore` and `PostgresConfig`, the event store on PostgreSQL
//!   (`tokio-postgres` with a `deadpool-postgres` pool), and `SqlProjection`, read models in
//!   PostgreSQL tables. Durability there is PostgreSQL's: an append is acknowledged after its
//!   commit, which with the server's defaults (`fsync`, `synchronous_commit`) is on disk.
//! - `kafka`: `annals::relay` with `KafkaSink` (the relay out to a topic) and `KafkaInbound` (the relay in
//!   from a consumer group), through `rdkafka` and the librdkafka it builds from source (needs a C
//!   compiler).
//! - `pulsar`: `annals::relay` with `PulsarSink`, the relay out to a Pulsar topic (the `pulsar` crate; its
//!   build needs `protoc`, Debian package `protobuf-compiler`).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 for the library, the derive crate and the `annals` command line (`rust-version` in
//! `Cargo.toml`; CI checks them with that toolchain). The tests and benchmarks need Rust 1.88, which
//! their dev-dependencies (proptest, trybuild) require.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
mod consumer;
mod envelope;
mod error;
mod event;
#[cfg(feature = "csv")]
#[cfg_attr(docsrs, doc(cfg(feature = "csv")))]
pub mod import;
mod name;
pub mod personal;
mod position;
#[cfg(any(feature = "kafka", feature = "pulsar"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "kafka", feature = "pulsar"))))]
pub mod relay;
#[cfg(feature = "postgres")]
mod sql_projection;
mod store;
mod stream_id;
pub mod testing;
mod transfer;
mod upcast;

#[doc(hidden)]
pub mod __private;

/// The long documents of the repository's `docs/` folder, rendered here with the API.
pub mod guide {
    #[doc = include_str!("../docs/guarantees.md")]
    pub mod guarantees {}
    #[doc = include_str!("../docs/time-travel.md")]
    pub mod time_travel {}
    #[doc = include_str!("../docs/DESIGN.md")]
    pub mod design {}
    #[doc = include_str!("../docs/storage-format.md")]
    pub mod storage_format {}
    #[doc = include_str!("../docs/PERFORMANCE.md")]
    pub mod performance {}
    #[doc = include_str!("../docs/observability.md")]
    pub mod observability {}
    #[doc = include_str!("../docs/personal-data.md")]
    pub mod personal_data {}
}

pub use crate::aggregate::repository::{
    CommandContext, CommandError, Committed, CommittedEvent, Loaded, Repository, DEFAULT_MAX_RETRIES,
};
pub use crate::aggregate::snapshot_policy::SnapshotPolicy;
pub use crate::aggregate::time_travel::AsOf;
pub use crate::aggregate::unit_of_work::{CommittedWork, Part, Parts, Staged, Target, UnitOfWork};
pub use crate::aggregate::Aggregate;
pub use crate::consumer::follow::{follow, Delivery, DeliveryStream, Phase};
pub use crate::consumer::projection::{replay, Projection, ProjectionHandle, Projector};
pub use crate::consumer::subscription::{
    handler_fn, FnHandler, Handler, OnFailure, Parked, ParkedReplay, RetryPolicy, SavedSubscription, Subscription,
    SubscriptionConfig, SubscriptionGroup, SubscriptionHandle,
};
pub use crate::consumer::workflow::{
    Actions, Clock, Deadline, ManualClock, SavedInstance, SavedWorkflow, SystemClock, Trigger, Workflow,
    WorkflowConfig, WorkflowError, WorkflowHandle, Workflows, WORKFLOW_STEP_EVENT_TYPE,
};
pub use crate::consumer::{HandlerError, Start};
pub use crate::envelope::{Metadata, NewEvent, PersonalData, RecordedEvent, MAX_EVENT_TYPE_LEN};
pub use crate::error::{ConsumerProblem, Error, Result};
pub use crate::event::{DecodeError, Event};
pub use crate::name::InvalidName;
pub use crate::position::{ExpectedVersion, Position, Version};
#[cfg(feature = "postgres")]
pub use crate::sql_projection::{SqlProjection, SqlProjectionHandle, SqlProjector};
pub use crate::store::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use crate::store::postgres::{
    PostgresConfig, PostgresStore, MAX_SCHEMA_NAME_LEN, POSTGRES_MAX_EVENT_SIZE_LIMIT, POSTGRES_SCHEMA_VERSION,
};
pub use crate::store::sled::{
    CompactReport, Durability, SledConfig, SledStore, VerifyProblem, VerifyReport, MAX_EVENT_SIZE_LIMIT,
};
#[doc(hidden)]
pub use crate::store::BlockingLogReads;
pub use crate::store::SnapshotRetention;
pub use crate::store::{
    scavenge, DeleteMode, RetentionPolicy, RetentionRule, RetentionScope, ScavengeChunk, ScavengeOptions,
    ScavengePhase, ScavengeProgress, ScavengeReport, SoftDeletion, StreamInfo, StreamView, SCAVENGE_CHECKPOINT,
};
pub use crate::store::{
    AppendResult, Checkpoint, CheckpointWrite, Direction, EventStore, EventStream, HeadWatch, LogChunk, LogFilter,
    PartitionLeases, ReadLog, ReadStream, Snapshot, StreamAppend, Until, DEFAULT_MAX_EVENT_SIZE,
    MAX_CHECKPOINT_NAME_LEN,
};
pub use crate::stream_id::StreamId;
pub use crate::transfer::export_jsonl_with_snapshots;
pub use crate::transfer::{copy_store, export_jsonl, import_jsonl, CopyReport, Transfer};
pub use crate::upcast::EventSet;
pub use crate::upcast::{StoredShape, Upcasters, Upcasting};
/// The PostgreSQL client [`SqlProjection`]s write with (its [`Transaction`](tokio_postgres::Transaction)),
/// at the version Annals uses.
#[cfg(feature = "postgres")]
pub use tokio_postgres;

/// `#[derive(Aggregate)]`: see [`Aggregate`](trait@Aggregate).
#[cfg(feature = "derive")]
pub use annals_derive::Aggregate;
/// `#[derive(Event)]`: see [`Event`](trait@Event).
#[cfg(feature = "derive")]
pub use annals_derive::Event;

/// The README's code, compiled as a doctest so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
