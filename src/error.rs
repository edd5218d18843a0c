//! The one error type of the crate.

use std::path::PathBuf;

use uuid::Uuid;

use crate::name::InvalidName;
use crate::position::{ExpectedVersion, Position, Version};
use crate::stream_id::StreamId;

/// `Result` with [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Annals.
///
/// Each variant's documentation says how to handle it. Variants carry the data needed to act on them;
/// their messages are meant for a human.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the version the append expected. Nothing was written.
    ///
    /// Handle by reloading the stream and deciding again (the repository does this for you), or by
    /// reporting a concurrent modification to the user.
    #[error("stream {stream:?} is at {}, expected {expected}", match actual { Some(v) => format!("version {v}"), None => "no stream".to_owned() })]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's actual version (`None`: the stream has no events).
        actual: Option<Version>,
    },

    /// The stream is hard-deleted ([`DeleteMode::Hard`](crate::DeleteMode::Hard)): it can never be
    /// read or appended to again. Nothing was written. A caller or user error: the stream is gone.
    #[error("stream {stream:?} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: StreamId,
    },

    /// A truncation asked for a point past the version after the stream's last one. Nothing was
    /// changed. A caller error.
    #[error("cannot truncate stream {stream:?} before version {before}: its last version is {}", match last { Some(v) => v.to_string(), None => "none".to_owned() })]
    InvalidTruncation {
        /// The stream.
        stream: StreamId,
        /// The truncation point asked for.
        before: Version,
        /// The stream's last version.
        last: Option<Version>,
    },

    /// An event declares personal fields ([`NewEvent::with_personal_data`](crate::NewEvent::with_personal_data),
    /// or `#[event(personal)]` in the derive) but reached a store unencrypted. Nothing was written.
    /// Append through [`PersonalStore`](crate::personal::PersonalStore), which encrypts them.
    #[error("event {event_type:?} has personal fields of subject {subject:?}: append it through a PersonalStore, which encrypts them")]
    PersonalDataNotProtected {
        /// The event's type.
        event_type: String,
        /// The subject its personal fields belong to.
        subject: String,
    },

    /// Personal data could not be protected or read as declared: the payload of an event with
    /// personal fields is not a JSON object, lacks a declared field or holds it twice, the subject
    /// is empty or does not fit in a stream name, an append names a `$personal-` key stream (they are
    /// written by [`PersonalStore`](crate::personal::PersonalStore) only), or an event carries one of
    /// the reserved `annals-personal-*` or `annals-erased` headers. Nothing was written. A caller
    /// error: fix the event, or its `#[event(personal)]` declaration.
    #[error("personal data of subject {subject:?} in event {event_type:?}: {problem}{}", match field { Some(f) => format!(" {f:?}"), None => String::new() })]
    PersonalData {
        /// The event's type.
        event_type: String,
        /// The subject the personal data belongs to.
        subject: String,
        /// The field, header or stream the problem is about, when there is one.
        field: Option<String>,
        /// What is wrong.
        problem: &'static str,
    },

    /// An append held no events, or a multi-stream append held no streams. A caller bug.
    #[error("append to {stream:?} has no events")]
    EmptyAppend {
        /// The stream (empty for a multi-stream append with no streams).
        stream: String,
    },

    /// A multi-stream append named the same stream twice. A caller bug: put the events in one entry.
    #[error("stream {stream:?} appears more than once in one multi-stream append")]
    DuplicateStreamInAppend {
        /// The repeated stream.
        stream: StreamId,
    },

    /// A stream name breaks the name rule (see [`InvalidName`]): empty, too long, or holding a control or
    /// bidirectional control character. A user or caller error.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamId {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: InvalidName,
    },

    /// An event type name breaks the name rule (see [`InvalidName`]): empty, too long, or holding a control or
    /// bidirectional control character. A caller error.
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidEventType {
        /// The rejected name.
        event_type: String,
        /// What is wrong with it.
        reason: InvalidName,
    },

    /// An event is larger than the store's maximum event size. Nothing was written. Split the event,
    /// keep large data elsewhere and store a reference, or raise the limit in the store's config.
    #[error("event {index} of the append to {stream:?} is {size} bytes, over the maximum of {max}")]
    EventTooLarge {
        /// The stream.
        stream: StreamId,
        /// The event's place in its append, from 0.
        index: usize,
        /// Its size (payload, type name and metadata bytes).
        size: usize,
        /// The store's maximum.
        max: usize,
    },

    /// An event's payload is not valid JSON, or is JSON that `serde_json` does not read back: a string
    /// with a lone surrogate escape (`"\ud800"`), arrays and objects nested more than 127 deep (its
    /// recursion limit), a number out of range (`1e400`). Nothing was written. A caller bug.
    #[error("event {index} of the append to {stream:?} has a payload that does not read back as JSON")]
    InvalidPayload {
        /// The stream.
        stream: StreamId,
        /// The event's place in its append, from 0.
        index: usize,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },

    /// An event id is already stored, but the append is not a retry: some of its ids are new, or the
    /// stored ones are in another stream or another order. Nothing was written. Use fresh ids for new
    /// events.
    #[error("event id {id} is already stored at position {position}, and this append is not a retry")]
    DuplicateEventId {
        /// The reused id.
        id: Uuid,
        /// Where the stored event with that id is.
        position: Position,
    },

    /// Two events of one append (or of one multi-stream append) have the same id. Nothing was
    /// written. A caller bug: give every event its own id.
    #[error("event id {id} repeats inside the append: {}", repeated_id_places(first_stream, *first_index, stream, *index))]
    DuplicateEventIdInAppend {
        /// The repeated id.
        id: Uuid,
        /// The stream of the event that has it first.
        first_stream: StreamId,
        /// That event's place in its stream's part of the append, from 0.
        first_index: usize,
        /// The stream of the event that has it again.
        stream: StreamId,
        /// That event's place in its stream's part of the append, from 0.
        index: usize,
    },

    /// A value could not be serialized to JSON. A bug in the value's `Serialize` implementation.
    #[error("cannot serialize a payload of event type {event_type:?}")]
    Serialize {
        /// The event type.
        event_type: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// A stored payload does not deserialize into the requested type (written by a newer version of
    /// the program, or an event type that needs an upcaster). The stored data is untouched.
    #[error("event {event_type:?} at version {version} of stream {stream:?} does not deserialize")]
    Deserialize {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: Version,
        /// The event type.
        event_type: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event's type name is not one of the event type's, and no upcaster maps it: data of a
    /// newer program, or a missing upcaster. The stored data is untouched.
    #[error("event at version {version} of stream {stream:?} has unknown type {event_type:?}")]
    UnknownEventType {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: Version,
        /// The unknown type name.
        event_type: String,
    },

    /// A stored event has another schema version than the current one of its type, after upcasting:
    /// written by a newer program, or an upcaster is missing. The stored data is untouched.
    #[error("event {event_type:?} at version {version} of stream {stream:?} has schema version {found}, expected {expected}")]
    SchemaVersion {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: Version,
        /// The event type.
        event_type: String,
        /// The stored schema version.
        found: u32,
        /// The current schema version of the type.
        expected: u32,
    },

    /// An upcaster failed on a stored event (its payload does not have the shape the upcaster
    /// expects). The stored data is untouched; fix the upcaster.
    #[error("upcasting {event_type:?} v{schema_version} at version {version} of stream {stream:?} failed: {reason}")]
    Upcast {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: Version,
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// What the upcaster said.
        reason: String,
    },

    /// The registered upcasters do not form complete chains to the current event types. Found at
    /// start-up by `Upcasters::check`; fix the registration.
    #[error("upcaster chain: {event_type:?} v{schema_version} {problem}")]
    UpcasterChain {
        /// The event type where the chain breaks.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
        /// What is wrong.
        problem: &'static str,
    },

    /// A checkpoint (consumer) name breaks the name rule (see [`InvalidName`]): empty, too long, or holding a control or
    /// bidirectional control character. A caller bug.
    #[error("invalid checkpoint name {name:?}: {reason}")]
    InvalidCheckpointName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: InvalidName,
    },

    /// A projection or subscription handler failed on an event, after every retry its policy allows.
    /// The consumer stopped before the event; its checkpoint is before it, so a restart handles it
    /// again. Fix the cause (or park the event) and restart.
    #[error("consumer {consumer:?} failed on the event at position {position} after {attempts} attempt(s)")]
    Handler {
        /// The projection or subscription.
        consumer: String,
        /// The event it failed on.
        position: Position,
        /// How many times it was tried.
        attempts: u32,
        /// The handler's last error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A wait for a consumer to reach a position ran out of time. Nothing is wrong with the store;
    /// wait again, or report the consumer as lagging.
    #[error("consumer {consumer:?} reached position {reached}, not {wanted}, within {waited:?}")]
    Timeout {
        /// The projection or subscription waited on.
        consumer: String,
        /// The position waited for.
        wanted: Position,
        /// The position it had processed when the time ran out.
        reached: Position,
        /// How long the wait lasted.
        waited: std::time::Duration,
    },

    /// A consumer's saved state or configuration does not match the code that reads it (a different
    /// partition count, an undecodable saved state), or it was asked for something after it stopped.
    /// `problem` says which; each [`ConsumerProblem`] variant says how to handle it.
    #[error("consumer {consumer:?}: {problem}")]
    Consumer {
        /// The projection or subscription.
        consumer: String,
        /// What does not match, or that it stopped.
        problem: ConsumerProblem,
    },

    /// A projection or subscription handler panicked. The consumer stopped at once, without
    /// committing the event it was handling, so a restart handles that event again. A bug in the
    /// handler: fix it, then restart the consumer.
    #[error("consumer {consumer:?} stopped: its handler panicked{}", match message { Some(m) => format!(" with {m:?}"), None => String::new() })]
    HandlerPanicked {
        /// The projection or subscription.
        consumer: String,
        /// The panic's message, when it was a string.
        message: Option<String>,
    },

    /// Events given to [`EventStore::restore`](crate::EventStore::restore) do not continue the log:
    /// a position that is not the next one, a version that is not the next in its stream, a
    /// `recorded_at` before the last event's, or a batch mixing times. Nothing of the batch's request
    /// was written. Restore into an empty store, in log order, one `recorded_at` per batch.
    #[error("cannot restore the event at position {position}: {problem}")]
    Restore {
        /// The position of the offending event.
        position: Position,
        /// What does not fit.
        problem: &'static str,
    },

    /// A line given to [`import_jsonl`](crate::import_jsonl) is not a line of an export: it is not
    /// UTF-8 (`source` is a [`std::str::Utf8Error`]) or does not parse (`source` is a
    /// [`serde_json::Error`]). No checkpoint was saved; events of earlier lines may have been
    /// imported. Fix the input and run the import again (it skips what is stored).
    #[error("line {line} of the export is not an export line")]
    InvalidExport {
        /// The 1-based line number in the input.
        line: u64,
        /// What is wrong with it: a [`std::str::Utf8Error`] or a [`serde_json::Error`].
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A checkpoint line given to [`import_jsonl`](crate::import_jsonl) is at a position past the
    /// last event of the imported log: restored, it would make its consumer skip the events later
    /// appended there. No checkpoint was saved; events of earlier lines may have been imported. Fix
    /// the input (an export lists checkpoints after the events they count).
    #[error("line {line} of the export saves checkpoint {name:?} at position {position}, past the last imported position {head}")]
    ExportCheckpointPastHead {
        /// The 1-based line number in the input.
        line: u64,
        /// The checkpoint's name.
        name: String,
        /// Its position.
        position: Position,
        /// The last position of the store and of the events before the line.
        head: Position,
    },

    /// A checkpoint line given to [`import_jsonl`](crate::import_jsonl) has a state that is not JSON
    /// (a consumer could not read it back). No checkpoint was saved; events of earlier lines may have
    /// been imported. Fix the input.
    #[error("line {line} of the export saves checkpoint {name:?} with a state that is not JSON")]
    ExportCheckpointState {
        /// The 1-based line number in the input.
        line: u64,
        /// The checkpoint's name.
        name: String,
        /// What the JSON parser said about the state.
        #[source]
        source: serde_json::Error,
    },

    /// Another process has the database open. Close it there, or wait.
    #[error("the database at {path:?} is locked by another process")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },

    /// The database is already open in this process, through another handle. A caller bug: clone
    /// that handle (it is cheap, and every clone is the same store) instead of opening it again.
    #[error("the database at {path:?} is already open in this process: clone its handle instead of opening it again")]
    AlreadyOpen {
        /// The database directory.
        path: PathBuf,
    },

    /// The database directory cannot be opened: the path is a regular file, or is not readable or
    /// writable by this process, or the directory cannot be created. Fix the path or its permissions.
    #[error("cannot open the database at {path:?}")]
    CannotOpen {
        /// The database directory.
        path: PathBuf,
        /// What the operating system or the storage engine said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// There is no database at the path and the config said not to create one.
    #[error("no database at {path:?}")]
    NotFound {
        /// The database directory.
        path: PathBuf,
    },

    /// The database was written in a storage format this version cannot read (a newer one, or not an
    /// Annals store at all). Use a matching version of Annals.
    #[error("the database at {path:?} has storage format {found}, this version reads format {supported}")]
    UnsupportedFormat {
        /// The database directory.
        path: PathBuf,
        /// The format found (0: none, the directory holds a database that is not an Annals store).
        found: u32,
        /// The format this version reads and writes.
        supported: u32,
    },

    /// Bytes on disk do not decode: the database is damaged. Nothing was changed. Restore from a
    /// backup or export what still reads; this is never retried.
    #[error("corrupt {what} at position {position}: {reason}")]
    Corrupt {
        /// The kind of record ("log record", "stream index entry", ...).
        what: &'static str,
        /// The position of the record, or of the first event it covers (`Position::ZERO` when unknown).
        position: Position,
        /// What check failed.
        reason: &'static str,
    },

    /// The log ends before the last position the store had acknowledged (kept in its head file,
    /// outside sled): acknowledged events were lost, for example because the data file was truncated
    /// or sled's recovery cut off a damaged tail. Nothing was changed, and the store does not open, so
    /// that the lost positions are not given to new events. Restore from a backup, or export what
    /// still reads.
    #[error("the database at {path:?} ends at position {found}, but it had acknowledged position {acknowledged}")]
    LogTruncated {
        /// The database directory.
        path: PathBuf,
        /// The last position the store had acknowledged.
        acknowledged: Position,
        /// Where the log now ends.
        found: Position,
    },

    /// A configuration value is out of range. A caller bug.
    #[error("invalid configuration: {setting} must be {expected}")]
    Config {
        /// The setting (a builder method's name, or what it limits).
        setting: &'static str,
        /// What it must be.
        expected: &'static str,
    },

    /// An earlier write failed in a way that leaves its outcome unknown, so the store refuses further
    /// appends until it is reopened (reopening recovers the last durable state).
    #[error("the store stopped accepting appends after a storage failure; reopen it")]
    Poisoned,

    /// The store was closed (dropped, or its writer stopped) while the operation waited on it.
    #[error("the store is closed")]
    Closed,

    /// The database server could not be reached (refused, timed out, authentication failed) when
    /// the store was opened. Start it, fix the address or credentials, and open again.
    #[error("cannot reach the database server {server}")]
    Unreachable {
        /// The server, as host and port (never the password).
        server: String,
        /// What the client library said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A database connection string does not parse. A caller bug: fix the string.
    #[error("the connection string does not parse")]
    InvalidConnectionString {
        /// What the client library said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The database schema was written by a newer version of Annals (or is not an Annals schema).
    /// Nothing was changed. Use a matching version of Annals, or another schema.
    #[error("the database schema {schema:?} is at version {found}, this version knows versions up to {supported}")]
    UnsupportedSchema {
        /// The schema (namespace) in the database.
        schema: String,
        /// The version found.
        found: u32,
        /// The newest version this code knows.
        supported: u32,
    },

    /// The storage engine failed (I/O error, full disk, ...). The operation may be retried; an append
    /// that fails this way was not acknowledged and may or may not be in the log after a crash.
    #[error("storage failure")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Where [`Error::DuplicateEventIdInAppend`] found an id twice, in words.
fn repeated_id_places(first_stream: &StreamId, first_index: usize, stream: &StreamId, index: usize) -> String {
    if first_stream == stream {
        format!("events {first_index} and {index} of the append to {stream:?}")
    } else {
        format!("event {first_index} of the append to {first_stream:?} and event {index} of the append to {stream:?}")
    }
}

/// What is wrong with a projection or subscription: the `problem` of [`Error::Consumer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerProblem {
    /// It has stopped (asked to, or on an error that its own `stop()` returns); the request could
    /// not be served. Restart it if it should be running.
    #[error("it has stopped")]
    Stopped,
    /// It stopped before its state was complete (a projection that never caught up once). See its
    /// `stop()` for why.
    #[error("it stopped before its state was complete")]
    StoppedBeforeComplete,
    /// It stopped before the rebuild it was asked for finished; the previous state stays saved.
    #[error("it stopped before the rebuild finished")]
    StoppedBeforeRebuilt,
    /// It stopped before it reached a position it was waited on for.
    #[error("it stopped before reaching position {wanted}")]
    StoppedBeforePosition {
        /// The position waited for.
        wanted: Position,
    },
    /// Its saved state does not decode into the projection at the same version: the projection's
    /// type changed without a version bump. Bump its version (it is then rebuilt) or restore the
    /// old type.
    #[error("its saved state does not decode")]
    SavedStateUndecodable,
    /// It was saved without a state but is now run as a persisted projection at the same version.
    /// Bump its version to rebuild it.
    #[error("it was saved without its state, but is kept with its state")]
    SavedWithoutState,
    /// Its state does not serialize to JSON: a bug in its `Serialize` implementation.
    #[error("its state does not encode")]
    StateDoesNotEncode(#[source] serde_json::Error),
    /// A checkpoint under its name was not written by a consumer of this kind (another program
    /// uses the same name, or the data is damaged). Use another name, or delete the checkpoint.
    #[error("a saved checkpoint is not a {kind}'s")]
    ForeignCheckpoint {
        /// `"projection"` or `"subscription"`.
        kind: &'static str,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A subscription's checkpoints were saved with another partition count than it is configured
    /// with. Configure the saved count, or start under a new name.
    #[error("saved with {saved} partitions, configured with {configured}")]
    PartitionCount {
        /// The partition count of the saved checkpoints.
        saved: u32,
        /// The configured partition count.
        configured: u32,
    },
}

impl Error {
    /// Whether the error is an optimistic-concurrency conflict ([`Error::WrongExpectedVersion`]):
    /// another writer appended first. Reload and decide again (the repository does this itself).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::WrongExpectedVersion { .. })
    }

    /// Whether the same call may succeed if made again later, unchanged: a storage failure, a lock
    /// held by another process, or a wait that ran out of time. Conflicts are not counted here (they
    /// need a new decision, see [`is_conflict`](Self::is_conflict)), nor is anything the caller or
    /// the data must fix first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::Locked { .. } | Error::Timeout { .. } | Error::Unreachable { .. })
    }

    /// Whether the error reports damaged or unreadable stored data ([`Error::Corrupt`],
    /// [`Error::LogTruncated`], or a format this version cannot read): never retried; restore from a backup or export what still reads.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::LogTruncated { .. }
                | Error::UnsupportedFormat { .. }
                | Error::UnsupportedSchema { .. }
        )
    }

    /// Whether the error was caused by the caller's input (a name, an event, an append's shape, a
    /// configuration value): fix the input; retrying it unchanged fails the same way.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::EmptyAppend { .. }
                | Error::DuplicateStreamInAppend { .. }
                | Error::InvalidStreamId { .. }
                | Error::InvalidEventType { .. }
                | Error::InvalidCheckpointName { .. }
                | Error::EventTooLarge { .. }
                | Error::InvalidPayload { .. }
                | Error::DuplicateEventId { .. }
                | Error::DuplicateEventIdInAppend { .. }
                | Error::PersonalDataNotProtected { .. }
                | Error::PersonalData { .. }
                | Error::InvalidTruncation { .. }
                | Error::Config { .. }
                | Error::InvalidConnectionString { .. }
        )
    }

    /// The variant's name (`Storage`, `Handler`, ...): a bounded value for telemetry's `error.type`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::WrongExpectedVersion { .. } => "WrongExpectedVersion",
            Error::StreamDeleted { .. } => "StreamDeleted",
            Error::InvalidTruncation { .. } => "InvalidTruncation",
            Error::PersonalDataNotProtected { .. } => "PersonalDataNotProtected",
            Error::PersonalData { .. } => "PersonalData",
            Error::EmptyAppend { .. } => "EmptyAppend",
            Error::DuplicateStreamInAppend { .. } => "DuplicateStreamInAppend",
            Error::InvalidStreamId { .. } => "InvalidStreamId",
            Error::InvalidEventType { .. } => "InvalidEventType",
            Error::EventTooLarge { .. } => "EventTooLarge",
            Error::InvalidPayload { .. } => "InvalidPayload",
            Error::DuplicateEventId { .. } => "DuplicateEventId",
            Error::DuplicateEventIdInAppend { .. } => "DuplicateEventIdInAppend",
            Error::Serialize { .. } => "Serialize",
            Error::Deserialize { .. } => "Deserialize",
            Error::UnknownEventType { .. } => "UnknownEventType",
            Error::SchemaVersion { .. } => "SchemaVersion",
            Error::Upcast { .. } => "Upcast",
            Error::UpcasterChain { .. } => "UpcasterChain",
            Error::InvalidCheckpointName { .. } => "InvalidCheckpointName",
            Error::Handler { .. } => "Handler",
            Error::Timeout { .. } => "Timeout",
            Error::Consumer { .. } => "Consumer",
            Error::HandlerPanicked { .. } => "HandlerPanicked",
            Error::Restore { .. } => "Restore",
            Error::InvalidExport { .. } => "InvalidExport",
            Error::ExportCheckpointPastHead { .. } => "ExportCheckpointPastHead",
            Error::ExportCheckpointState { .. } => "ExportCheckpointState",
            Error::Locked { .. } => "Locked",
            Error::AlreadyOpen { .. } => "AlreadyOpen",
            Error::CannotOpen { .. } => "CannotOpen",
            Error::NotFound { .. } => "NotFound",
            Error::UnsupportedFormat { .. } => "UnsupportedFormat",
            Error::Corrupt { .. } => "Corrupt",
            Error::LogTruncated { .. } => "LogTruncated",
            Error::Config { .. } => "Config",
            Error::Poisoned => "Poisoned",
            Error::Closed => "Closed",
            Error::Unreachable { .. } => "Unreachable",
            Error::InvalidConnectionString { .. } => "InvalidConnectionString",
            Error::UnsupportedSchema { .. } => "UnsupportedSchema",
            Error::Storage(_) => "Storage",
        }
    }

    /// Wraps a storage engine's error without naming its type in the public API.
    pub(crate) fn storage(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage(Box::new(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_message_names_the_stream_and_both_versions() -> Result<()> {
        let err = Error::WrongExpectedVersion {
            stream: StreamId::new("order-7")?,
            expected: ExpectedVersion::Exact(Version::new(3)),
            actual: Some(Version::new(4)),
        };
        assert_eq!(err.to_string(), r#"stream "order-7" is at version 4, expected version 3"#);
        assert!(err.is_conflict());
        assert!(!err.is_retryable() && !err.is_corruption() && !err.is_invalid_input());
        Ok(())
    }

    #[test]
    fn the_helpers_sort_errors_by_what_to_do() {
        let storage = Error::storage(std::io::Error::other("disk full"));
        assert!(storage.is_retryable() && !storage.is_conflict());
        assert!(Error::Locked { path: PathBuf::from("db") }.is_retryable());
        let corrupt = Error::Corrupt { what: "log record", position: Position::new(3), reason: "bad checksum" };
        assert!(corrupt.is_corruption() && !corrupt.is_retryable());
        let empty = Error::EmptyAppend { stream: "a".into() };
        assert!(empty.is_invalid_input() && !empty.is_retryable() && !empty.is_conflict());
        assert!(!Error::Closed.is_retryable() && !Error::Closed.is_invalid_input());
    }

    #[test]
    fn a_store_open_twice_in_one_process_is_not_blamed_on_another_process() {
        let locked = Error::Locked { path: PathBuf::from("data/events") };
        assert_eq!(locked.to_string(), r#"the database at "data/events" is locked by another process"#);
        let twice = Error::AlreadyOpen { path: PathBuf::from("data/events") };
        assert!(twice.to_string().contains("already open in this process"), "{twice}");
        assert!(!twice.is_retryable() && !twice.is_corruption());
    }

    #[test]
    fn consumer_problems_are_typed_and_named_in_the_message() {
        let err = Error::Consumer {
            consumer: "emails".into(),
            problem: ConsumerProblem::PartitionCount { saved: 4, configured: 8 },
        };
        assert_eq!(err.to_string(), r#"consumer "emails": saved with 4 partitions, configured with 8"#);
        let panicked = Error::HandlerPanicked { consumer: "emails".into(), message: Some("boom".into()) };
        assert_eq!(panicked.to_string(), r#"consumer "emails" stopped: its handler panicked with "boom""#);
    }
}
