//! The life of a stream: soft and hard deletion, truncation, retention rules, and the scavenging that
//! reclaims the space of what reads no longer show.
//!
//! Deleting, truncating and retention change what reads answer at once (they are metadata, written
//! atomically with respect to appends); the events stay in the log until a scavenge removes them.
//! `docs/guarantees.md` ("The life of a stream") says what each read answers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::stream_id::StreamId;

/// How [`EventStore::delete_stream`](crate::EventStore::delete_stream) deletes a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeleteMode {
    /// The stream reads as missing from now on, and an append with
    /// [`ExpectedVersion::NoStream`](crate::ExpectedVersion::NoStream) or `Any` starts it again at the
    /// version after its last one (versions are never reused). The log, and time travel to a moment
    /// before the deletion, still see the old events until a scavenge removes them. The stream's
    /// snapshots are deleted with it.
    Soft,
    /// A tombstone: every read and append of the stream answers
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) forever after. The log still holds the
    /// events until a scavenge removes them.
    Hard,
}

/// Which events of a stream a read shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamView {
    /// What the stream holds now: events below its truncation point (set by
    /// [`truncate_stream`](crate::EventStore::truncate_stream), a soft delete or a retention rule) are
    /// left out. What loads and commands use.
    #[default]
    Current,
    /// Every event of the stream still stored, truncated or soft-deleted ones included, until a scavenge
    /// removes them. What time travel uses. A hard-deleted stream answers
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) in both views.
    History,
}

/// One soft deletion of a stream: the stream started again at `next_version` at time `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftDeletion {
    /// The first version the stream's next life gets (its last version at the deletion, plus one).
    pub next_version: Version,
    /// When the deletion was made (the store's clock, never before the last event it recorded).
    pub at: DateTime<Utc>,
}

/// What a store knows about one stream's life: [`EventStore::stream_info`](crate::EventStore::stream_info).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The last version ever written to the stream (`None`: never written). Soft deletes, truncation
    /// and scavenging leave it as it is, so the next append continues after it.
    pub last_version: Option<Version>,
    /// Reads in [`StreamView::Current`] start here: `Version::FIRST` when nothing was truncated.
    pub truncated_before: Version,
    /// Every soft deletion, oldest first.
    pub soft_deletions: Vec<SoftDeletion>,
    /// Whether the stream is hard-deleted (a tombstone).
    pub tombstone: bool,
}

impl StreamInfo {
    /// A stream never written, truncated or deleted.
    pub fn new() -> Self {
        StreamInfo {
            last_version: None,
            truncated_before: Version::FIRST,
            soft_deletions: Vec::new(),
            tombstone: false,
        }
    }

    /// The stream's version as reads in [`StreamView::Current`] and expected-version checks see it:
    /// `None` when nothing at or past the truncation point exists (never written, soft-deleted, or
    /// truncated to its end).
    pub fn current_version(&self) -> Option<Version> {
        self.last_version.filter(|last| *last >= self.truncated_before)
    }

    /// Whether nothing of the stream would be shown by a read in [`StreamView::Current`].
    pub fn is_empty(&self) -> bool {
        self.current_version().is_none()
    }

    /// The version where the life of the stream that was current at time `at` began: time travel
    /// to `at` reads from there (the version after the last soft deletion made at or before `at`).
    pub fn life_start_at(&self, at: DateTime<Utc>) -> Version {
        self.soft_deletions.iter().filter(|d| d.at <= at).map(|d| d.next_version).max().unwrap_or(Version::FIRST)
    }

    /// The version where the life of the stream holding `version` began.
    pub fn life_start_of(&self, version: Version) -> Version {
        self.soft_deletions
            .iter()
            .filter(|d| d.next_version <= version)
            .map(|d| d.next_version)
            .max()
            .unwrap_or(Version::FIRST)
    }

    /// Whether an event of this stream at `version` may be removed by a scavenge: the stream is
    /// hard-deleted, or the version is below the truncation point.
    pub fn is_removable(&self, version: Version) -> bool {
        self.tombstone || version < self.truncated_before
    }

    /// The state after truncating before `before`, as every backend applies it: the point only moves
    /// forward, and not past the version after the last one.
    ///
    /// # Errors
    /// [`Error::StreamDeleted`] for a hard-deleted stream, [`Error::InvalidTruncation`] when `before`
    /// is past the version after the last one.
    pub(crate) fn truncate(&mut self, stream: &StreamId, before: Version) -> Result<bool> {
        if self.tombstone {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        let end = self.last_version.unwrap_or(Version::ZERO).next();
        if before > end {
            return Err(Error::InvalidTruncation { stream: stream.clone(), before, last: self.last_version });
        }
        if before <= self.truncated_before {
            return Ok(false);
        }
        self.truncated_before = before;
        Ok(true)
    }

    /// The state after a deletion at time `at` (`now` clamped by the backend). Returns whether
    /// anything changed (a soft delete of an already empty stream changes nothing).
    pub(crate) fn delete(&mut self, stream: &StreamId, mode: DeleteMode, at: DateTime<Utc>) -> Result<bool> {
        if self.tombstone {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        match mode {
            DeleteMode::Hard => {
                self.tombstone = true;
                Ok(true)
            }
            DeleteMode::Soft => {
                let Some(last) = self.current_version() else { return Ok(false) };
                self.truncated_before = last.next();
                self.soft_deletions.push(SoftDeletion { next_version: last.next(), at });
                Ok(true)
            }
        }
    }

    /// Encodes the lifecycle part (truncation point, deletions, tombstone) as JSON, as the backends
    /// store it. `last_version` is not part of it: the backends know it from the stream's events.
    pub(crate) fn encode_meta(&self) -> String {
        let meta = StoredMeta {
            truncated_before: self.truncated_before,
            soft_deletions: self.soft_deletions.clone(),
            tombstone: self.tombstone,
            last_version: self.last_version,
        };
        serde_json::to_string(&meta).unwrap_or_default()
    }

    /// Decodes what [`encode_meta`](Self::encode_meta) wrote; `None` when it does not decode.
    pub(crate) fn decode_meta(text: &str) -> Option<StreamInfo> {
        let meta: StoredMeta = serde_json::from_str(text).ok()?;
        Some(StreamInfo {
            last_version: meta.last_version,
            truncated_before: meta.truncated_before,
            soft_deletions: meta.soft_deletions,
            tombstone: meta.tombstone,
        })
    }
}

impl Default for StreamInfo {
    fn default() -> Self {
        StreamInfo::new()
    }
}

/// The stored shape of a stream's lifecycle metadata.
#[derive(Serialize, Deserialize)]
struct StoredMeta {
    #[serde(rename = "tb")]
    truncated_before: Version,
    #[serde(rename = "sd", default)]
    soft_deletions: Vec<SoftDeletion>,
    #[serde(rename = "hd", default)]
    tombstone: bool,
    /// The last version when the metadata was written: kept so that versions are never reused
    /// even after every event of the stream was scavenged.
    #[serde(rename = "lv", default)]
    last_version: Option<Version>,
}

/// One step of a scavenge: [`EventStore::scavenge_chunk`](crate::EventStore::scavenge_chunk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScavengeChunk {
    /// The first position not looked at yet: where the next step starts.
    pub next: Position,
    /// How many stored events the step looked at.
    pub examined: u64,
    /// How many of them it removed.
    pub removed: u64,
    /// The bytes of event data removed (payloads, types, metadata), before the storage engine's own
    /// overhead.
    pub bytes_removed: u64,
    /// Whether `next` is past the head: the scavenge has reached the end of the log.
    pub end: bool,
}

/// Which streams a [`RetentionRule`] covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetentionScope {
    /// One stream.
    Stream(StreamId),
    /// Every stream whose name starts with the prefix (a category, e.g. `reading-`).
    Prefix(String),
}

impl RetentionScope {
    /// Whether `stream` is covered.
    pub fn covers(&self, stream: &StreamId) -> bool {
        match self {
            RetentionScope::Stream(s) => s == stream,
            RetentionScope::Prefix(p) => stream.as_str().starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for RetentionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionScope::Stream(s) => write!(f, "stream {s}"),
            RetentionScope::Prefix(p) => write!(f, "prefix {p:?}"),
        }
    }
}

/// How long a stream's events are kept: by age, by count, or both (an event goes when either says
/// so), like Kafka's `retention.ms` or KurrentDB's `$maxAge` and `$maxCount`.
///
/// Retention is applied by [`scavenge`](crate::scavenge): each run first truncates every covered
/// stream before the first event it keeps, then removes what reads no longer show. Between runs,
/// expired events are still read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Events recorded longer ago than this go.
    pub max_age: Option<Duration>,
    /// Only the newest `max_count` events of each stream stay.
    pub max_count: Option<u64>,
}

impl RetentionPolicy {
    /// Keep events recorded within `max_age`.
    pub fn max_age(max_age: Duration) -> Self {
        RetentionPolicy { max_age: Some(max_age), max_count: None }
    }

    /// Keep the newest `max_count` events of each stream.
    pub fn max_count(max_count: u64) -> Self {
        RetentionPolicy { max_age: None, max_count: Some(max_count) }
    }

    /// Also keep only the newest `max_count` events.
    pub fn and_max_count(mut self, max_count: u64) -> Self {
        self.max_count = Some(max_count);
        self
    }

    /// Also keep only events recorded within `max_age`.
    pub fn and_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }
}

/// A retention policy for a stream or a prefix of streams. When several rules cover a stream, each
/// applies (the stream keeps what every one of them keeps).
///
/// ```
/// use std::time::Duration;
/// use annals::{RetentionPolicy, RetentionRule, RetentionScope};
///
/// // Sensor readings matter for 30 days, and only the last 10,000 per sensor.
/// let rule = RetentionRule::new(
///     RetentionScope::Prefix("reading-".into()),
///     RetentionPolicy::max_age(Duration::from_secs(30 * 86_400)).and_max_count(10_000),
/// );
/// assert!(rule.scope.covers(&annals::StreamId::new("reading-7")?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    /// The streams covered.
    pub scope: RetentionScope,
    /// What they keep.
    pub policy: RetentionPolicy,
}

impl RetentionRule {
    /// A rule.
    pub fn new(scope: RetentionScope, policy: RetentionPolicy) -> Self {
        RetentionRule { scope, policy }
    }

    /// The first version of a stream this rule keeps, given the stream's last version and the version
    /// of its first event recorded at or after `now - max_age` (`None`: every event is older).
    pub(crate) fn keep_from(&self, last: Version, first_young: Option<Version>) -> Version {
        let by_count = self.policy.max_count.map(|n| Version::new(last.get().saturating_sub(n) + 1));
        let by_age = self.policy.max_age.map(|_| first_young.unwrap_or(last.next()));
        by_count.into_iter().chain(by_age).max().unwrap_or(Version::FIRST)
    }
}

/// The checkpoint names retention rules are kept under: rules are configuration, stored with the
/// store's checkpoints so that every backend keeps them durably without a table of its own.
pub(crate) const RETENTION_STREAM_PREFIX: &str = "retention/stream/";
/// See [`RETENTION_STREAM_PREFIX`].
pub(crate) const RETENTION_PREFIX_PREFIX: &str = "retention/prefix/";

impl RetentionRule {
    /// The checkpoint name this rule's scope is stored under.
    pub(crate) fn checkpoint_name(scope: &RetentionScope) -> String {
        match scope {
            RetentionScope::Stream(s) => format!("{RETENTION_STREAM_PREFIX}{s}"),
            RetentionScope::Prefix(p) => format!("{RETENTION_PREFIX_PREFIX}{p}"),
        }
    }

    /// The rule a checkpoint holds, or `None` when its name is not a rule's.
    pub(crate) fn from_checkpoint(name: &str, state: Option<&str>) -> Option<Result<RetentionRule>> {
        let scope = if let Some(stream) = name.strip_prefix(RETENTION_STREAM_PREFIX) {
            match StreamId::new(stream) {
                Ok(s) => RetentionScope::Stream(s),
                Err(e) => return Some(Err(e)),
            }
        } else if let Some(prefix) = name.strip_prefix(RETENTION_PREFIX_PREFIX) {
            RetentionScope::Prefix(prefix.to_owned())
        } else {
            return None;
        };
        let policy = state.and_then(|s| serde_json::from_str::<RetentionPolicy>(s).ok());
        Some(policy.map(|policy| RetentionRule { scope, policy }).ok_or(Error::Corrupt {
            what: "retention rule",
            position: Position::ZERO,
            reason: "its saved state does not decode",
        }))
    }
}
