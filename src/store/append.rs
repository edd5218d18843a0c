//! Append requests and results, and the checks every backend runs the same way.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::NewEvent;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::stream_id::StreamId;

/// One stream's part of an append: the stream, its expected version and its events.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamAppend {
    /// The stream to append to.
    pub stream: StreamId,
    /// The condition on the stream's current version.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// One stream's part of an append.
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        StreamAppend { stream, expected, events }
    }
}

/// What an append to one stream stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppendResult {
    /// The stream's version after the append: the version of its last event. Pass it as
    /// `ExpectedVersion::Exact` to append again without a conflict.
    pub version: Version,
    /// The position of the first event appended.
    pub first_position: Position,
    /// The position of the last event appended; wait for this one to read your own write.
    pub last_position: Position,
    /// `true` when every event was already stored, with the same ids in the same stream and order (a
    /// retry): nothing was written, and the fields above describe the stored events.
    pub already_appended: bool,
}

/// Where an already stored event id is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredId {
    pub(crate) position: Position,
    pub(crate) stream: StreamId,
    pub(crate) version: Version,
}

/// Checks a whole request before anything is written: not empty, no stream twice, every event valid,
/// no id twice inside it.
pub(crate) fn validate_appends(appends: &[StreamAppend], max_event_size: usize) -> Result<()> {
    if appends.is_empty() {
        return Err(Error::EmptyAppend { stream: String::new() });
    }
    let mut streams = HashSet::with_capacity(appends.len());
    // Each id seen so far, with the stream and index of its event.
    let mut ids: HashMap<Uuid, (&StreamId, usize)> = HashMap::new();
    for append in appends {
        if append.events.is_empty() {
            return Err(Error::EmptyAppend { stream: append.stream.to_string() });
        }
        if !streams.insert(&append.stream) {
            return Err(Error::DuplicateStreamInAppend { stream: append.stream.clone() });
        }
        for (index, event) in append.events.iter().enumerate() {
            event.validate(&append.stream, index, max_event_size)?;
            if let Some((first_stream, first_index)) = ids.insert(event.id, (&append.stream, index)) {
                return Err(Error::DuplicateEventIdInAppend {
                    id: event.id,
                    first_stream: first_stream.clone(),
                    first_index,
                    stream: append.stream.clone(),
                    index,
                });
            }
        }
    }
    Ok(())
}

/// One stream's part of a request, as retry detection sees it: the stream and its event ids.
pub(crate) type RetryKey<'a> = (&'a StreamId, &'a [Uuid]);

/// Decides whether a request is new, a retry of a stored append, or reuses ids it must not.
///
/// `lookup` tells where an id is stored, if it is. Returns `Ok(None)` when no id is stored (a new
/// append), `Ok(Some(results))` with the stored positions when every event of every stream part is
/// stored in that stream, in the same order at consecutive versions (an earlier append, or part of
/// one, sent again), and [`Error::DuplicateEventId`] otherwise.
pub(crate) fn plan_retry(
    appends: &[RetryKey<'_>],
    mut lookup: impl FnMut(Uuid) -> Result<Option<StoredId>>,
) -> Result<Option<Vec<AppendResult>>> {
    let mut found: HashMap<Uuid, StoredId> = HashMap::new();
    let mut missing = false;
    for id in appends.iter().flat_map(|(_, ids)| ids.iter()) {
        match lookup(*id)? {
            Some(stored) => {
                found.insert(*id, stored);
            }
            None => missing = true,
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    let reused =
        |id: Uuid| Error::DuplicateEventId { id, position: found.get(&id).map_or(Position::ZERO, |s| s.position) };
    if missing {
        // Some ids are stored, others not: not a retry of one earlier append.
        let id = appends.iter().flat_map(|(_, ids)| ids.iter()).find(|id| found.contains_key(id));
        return Err(reused(id.copied().unwrap_or_default()));
    }
    let mut results = Vec::with_capacity(appends.len());
    for (stream, ids) in appends {
        let mut first: Option<&StoredId> = None;
        let mut previous: Option<&StoredId> = None;
        for id in ids.iter() {
            let stored = found.get(id).ok_or_else(|| reused(*id))?;
            let in_order = previous.is_none_or(|p| {
                stored.position.get() == p.position.get() + 1 && stored.version.get() == p.version.get() + 1
            });
            if stored.stream != **stream || !in_order {
                return Err(reused(*id));
            }
            first = first.or(Some(stored));
            previous = Some(stored);
        }
        let (Some(first), Some(last)) = (first, previous) else {
            return Err(Error::EmptyAppend { stream: stream.to_string() });
        };
        results.push(AppendResult {
            version: last.version,
            first_position: first.position,
            last_position: last.position,
            already_appended: true,
        });
    }
    Ok(Some(results))
}

/// A batch of [`EventStore::restore`](crate::EventStore::restore), checked and cut into appends.
pub(crate) struct RestorePlan {
    /// The `recorded_at` every event of the batch shares.
    pub(crate) recorded_at: chrono::DateTime<chrono::Utc>,
    /// Requests in order: each names a stream at most once, expects the version before its events,
    /// and starts at the position given with it.
    pub(crate) requests: Vec<(Position, Vec<StreamAppend>)>,
}

/// Checks that recorded events form one restorable batch (consecutive positions, one `recorded_at`,
/// versions consecutive within each stream) and turns them into appends.
pub(crate) fn plan_restore(events: Vec<crate::envelope::RecordedEvent>) -> Result<RestorePlan> {
    let restore_error = |position, problem| Error::Restore { position, problem };
    let Some(first) = events.first() else { return Err(Error::EmptyAppend { stream: String::new() }) };
    let recorded_at = first.recorded_at;
    let mut next_position = first.position;
    let mut requests: Vec<(Position, Vec<StreamAppend>)> = Vec::new();
    let mut in_request: HashSet<StreamId> = HashSet::new();
    for event in events {
        if event.position != next_position || event.position == Position::ZERO {
            return Err(restore_error(event.position, "positions of a restored batch must be consecutive"));
        }
        if event.recorded_at != recorded_at {
            return Err(restore_error(event.position, "a restored batch must share one recorded_at"));
        }
        next_position = Position::new(event.position.get() + 1);
        let continues = requests
            .last_mut()
            .and_then(|(_, appends)| appends.last_mut())
            .filter(|append| append.stream == event.stream);
        let new_event = restored_event(&event);
        match continues {
            Some(append) => append.events.push(new_event),
            None => {
                if requests.is_empty() || in_request.contains(&event.stream) {
                    requests.push((event.position, Vec::new()));
                    in_request.clear();
                }
                in_request.insert(event.stream.clone());
                let previous = event
                    .version
                    .get()
                    .checked_sub(1)
                    .ok_or(Error::Restore { position: event.position, problem: "versions start at 1" })?;
                let expected = ExpectedVersion::Exact(Version::new(previous));
                if let Some((_, appends)) = requests.last_mut() {
                    appends.push(StreamAppend::new(event.stream.clone(), expected, vec![new_event]));
                }
            }
        }
    }
    Ok(RestorePlan { recorded_at, requests })
}

/// The event to append for a recorded one: same id, type, schema version, occurred time, metadata
/// and payload.
fn restored_event(event: &crate::envelope::RecordedEvent) -> NewEvent {
    NewEvent::raw(event.event_type.clone(), event.payload.clone())
        .with_id(event.id)
        .with_schema_version(event.schema_version)
        .with_occurred_at(event.occurred_at)
        .with_metadata(event.metadata.clone())
}
