//! The read path of a [`SledStore`](super::SledStore): stream pages, log pages (scanned, or through
//! the event-type index), stream listing and the search by recorded time. Every read is bounded by the
//! durable head it is given, so it shows acknowledged events only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sled::IVec;
use tokio::sync::watch;

use super::codec::Record;
use super::files::Files;
use super::recovery::{guarded, DATA_FILE_DAMAGE};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::{BlockingLogReads, Direction, LogChunk, LogFilter, StreamInfo, StreamView};
use crate::stream_id::StreamId;

/// How many events a filtered log read looks at before it returns a page.
const SCAN_BUDGET: u64 = 16 * 1024;

/// The lifecycle of the stream a read is reading, read again once when the read meets a removed
/// event (a hole) or a gap in the index that the lifecycle it started with does not explain: a
/// truncation and a scavenge may have run since.
struct Life<'a> {
    files: &'a Files,
    stream: &'a str,
    info: StreamInfo,
    fresh: bool,
}

impl Life<'_> {
    /// Whether `version` may have been removed by a scavenge.
    fn removable(&mut self, version: u64) -> Result<bool> {
        if self.info.is_removable(Version::new(version)) {
            return Ok(true);
        }
        if !self.fresh {
            self.info = self.files.lifecycle(self.stream)?;
            self.fresh = true;
        }
        Ok(self.info.is_removable(Version::new(version)))
    }
}

/// Up to `max` events of `stream` from version `from` on, in `direction`, up to the durable `head`,
/// as `view` shows them: in [`StreamView::Current`] nothing below the truncation point, in
/// [`StreamView::History`] every event still stored. Versions a scavenge removed (holes, or index
/// entries deleted) are skipped when the stream's lifecycle says they may go, and are damage
/// otherwise.
pub(super) fn stream_chunk(
    files: &Files,
    head: u64,
    stream: &StreamId,
    from: Version,
    direction: Direction,
    max: usize,
    view: StreamView,
) -> Result<Vec<RecordedEvent>> {
    files.check_stream_index(stream.as_str())?;
    let info = files.lifecycle(stream.as_str())?;
    if info.tombstone {
        return Err(Error::StreamDeleted { stream: stream.clone() });
    }
    let floor = match view {
        StreamView::Current => info.truncated_before.get(),
        StreamView::History => 1,
    };
    let mut life = Life { files, stream: stream.as_str(), info, fresh: false };
    let mut cache = None;
    let mut events = Vec::new();
    let from = match direction {
        Direction::Forward => from.get().max(floor),
        Direction::Backward if from.get() < floor => return Ok(events),
        Direction::Backward => from.get(),
    };
    // The version the next event must have: the index must not skip one (unless a scavenge removed
    // it), and every event it points at must be this stream's at that version.
    let mut expected = match direction {
        Direction::Forward => Some(from),
        // Going backward from a version below the stream's last, that version must be there: an
        // entry above it says the stream reaches past it.
        Direction::Backward => files.stream_has_entry_after(stream.as_str(), from)?.then_some(from),
    };
    // Later versions were appended later: once an entry is past the head (not acknowledged yet),
    // every later one is too, and before one that is, every earlier one is.
    let mut unacknowledged = false;
    let mut acknowledged = false;
    for entry in files.stream_entries(stream.as_str(), from, direction) {
        let entry = entry?;
        if entry.first_position > head {
            if entry.first_position > files.applied() {
                return answer(events, index_damage(entry.first_position, "it lies past the end of the log"));
            }
            if direction == Direction::Backward && acknowledged {
                return answer(events, index_damage(entry.first_position, "it lies past the head"));
            }
            unacknowledged = true;
            continue;
        }
        if direction == Direction::Forward && unacknowledged {
            return answer(events, index_damage(entry.first_position, "it follows an entry past the head"));
        }
        if direction == Direction::Backward && entry.last_version() < floor {
            break;
        }
        acknowledged = true;
        let (low, high) = match direction {
            Direction::Forward => (from.max(entry.first_version), entry.last_version()),
            Direction::Backward => (entry.first_version.max(floor), from.min(entry.last_version())),
        };
        let wanted = expected.unwrap_or(high);
        // The versions the index skips here, if any, must be ones a scavenge may have removed.
        let skipped = match direction {
            Direction::Forward if low > wanted => Some(low - 1),
            Direction::Backward if high < wanted => Some(wanted),
            _ => None,
        };
        let next = match direction {
            Direction::Forward => low,
            Direction::Backward => high,
        };
        let explained = match skipped {
            Some(version) => life.removable(version)?,
            None => next == wanted,
        };
        if !explained {
            return answer(events, index_damage(entry.first_position, "the stream's versions skip or repeat"));
        }
        let versions: Box<dyn Iterator<Item = u64>> = match direction {
            Direction::Forward => Box::new(low..=high),
            Direction::Backward => Box::new((low..=high).rev()),
        };
        for version in versions {
            if events.len() >= max {
                return Ok(events);
            }
            let position = entry.first_position + (version - entry.first_version);
            let event = files.event_at(position, &mut cache).and_then(|event| match event {
                Some(event) if event.stream != *stream || event.version.get() != version => {
                    Err(index_damage(position, "it points at another event"))
                }
                None if !life.removable(version)? => Err(index_damage(position, "it points at a removed event")),
                other => Ok(other),
            });
            match event {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(error) => return answer(events, error),
            }
            expected = match direction {
                Direction::Forward => Some(version + 1),
                Direction::Backward => Some(version - 1),
            };
        }
    }
    // Going backward, the versions run down to the floor (a page ends early only when it is full),
    // or to versions a scavenge may have removed with their index entries.
    if let (Direction::Backward, Some(version)) = (direction, expected) {
        if version >= floor && !life.removable(version)? {
            return answer(events, index_damage(0, "the stream's first versions have no entry"));
        }
    }
    Ok(events)
}

/// The events before a damaged place, if any (the next page starts at it and fails), or the error.
fn answer(events: Vec<RecordedEvent>, error: Error) -> Result<Vec<RecordedEvent>> {
    if events.is_empty() {
        Err(error)
    } else {
        Ok(events)
    }
}

fn index_damage(position: u64, reason: &'static str) -> Error {
    Error::Corrupt { what: "stream index entry", position: Position::new(position), reason }
}

/// A page of the log from `from`: the events `filter` admits, up to `max`, up to the durable `head`.
/// The events are decoded into the storage of `reuse`'s (events a consumer handed back), as far as
/// there are some. Once `stop` is set, the read ends early with what it has: a read whose answer
/// nobody waits for any more.
pub(super) fn log_chunk(
    files: &Files,
    head: u64,
    from: Position,
    max: usize,
    filter: &LogFilter,
    reuse: Vec<RecordedEvent>,
    stop: Option<&AtomicBool>,
) -> Result<LogChunk> {
    let start = from.get().max(1);
    if !filter.event_types.is_empty() {
        return log_indexed(files, start, max.max(1), filter, head);
    }
    // Every position up to the head holds an event or a hole: an unfiltered page has at most this many.
    let expected =
        if filter.is_all() { max.min(usize::try_from(head.saturating_sub(start) + 1).unwrap_or(max)) } else { 0 };
    let mut events = Page::new(reuse, expected);
    let mut next = start;
    let mut first = true;
    for record in files.records_from(start) {
        let record = match record {
            Ok(record) => record,
            Err(error) => return partial(events.finish(), next, error),
        };
        // Records follow each other without a gap or an overlap up to the head; the first one may
        // start before `start`.
        if next <= head && (record.first > next || (!first && record.first < next)) {
            return partial(events.finish(), next, missing_record(next, record.first > next));
        }
        first = false;
        if record.first > head {
            break;
        }
        if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Ok(LogChunk { events: events.finish(), next: Position::new(next), end: false });
        }
        for position in next.max(record.first)..=record.last() {
            if events.len() >= max || position - start >= SCAN_BUDGET {
                return Ok(LogChunk { events: events.finish(), next: Position::new(next), end: next > head });
            }
            // A hole (an event a scavenge removed) reads as nothing, like an event the filter leaves out.
            if let Err(error) = events.read(&record, position, filter) {
                return partial(events.finish(), next, error);
            }
            next = position + 1;
        }
    }
    if next <= head {
        // The records ended before the head.
        return partial(events.finish(), next, missing_record(next, true));
    }
    let next = next.max(head + 1).max(start);
    Ok(LogChunk { events: events.finish(), next: Position::new(next), end: true })
}

/// The log reads of a [`SledStore`](super::SledStore) as a handle that outlives a borrow of it: what
/// a cursor runs on a blocking thread to read a page ahead.
pub(super) struct LogReads {
    pub(super) files: Arc<Files>,
    /// The durable head, which bounds every read.
    pub(super) head: watch::Receiver<Position>,
}

impl BlockingLogReads for LogReads {
    fn read_log_chunk_blocking(
        &self,
        from: Position,
        max: usize,
        filter: &LogFilter,
        reuse: Vec<RecordedEvent>,
        stop: &AtomicBool,
    ) -> Result<LogChunk> {
        let head = self.head.borrow().get();
        guarded(DATA_FILE_DAMAGE, || log_chunk(&self.files, head, from, max, filter, reuse, Some(stop)))
    }
}

/// The events of a log page as it is read: decoded into the storage of events handed back while
/// there are some, then into new ones.
struct Page {
    events: Vec<RecordedEvent>,
    /// How many of `events` belong to the page; the others are storage not used yet.
    len: usize,
}

impl Page {
    fn new(mut reuse: Vec<RecordedEvent>, expected: usize) -> Self {
        reuse.reserve(expected.saturating_sub(reuse.len()));
        Page { events: reuse, len: 0 }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Adds the event at `position` when it is not a hole and `filter` admits it.
    fn read(&mut self, record: &Record<IVec>, position: u64, filter: &LogFilter) -> Result<()> {
        let wanted = |stream: &str, event_type: &str| filter.admits(stream, event_type);
        let read = match self.events.get_mut(self.len) {
            Some(slot) if filter.is_all() => record.event_into(position, slot)?,
            Some(slot) => record.event_if_into(position, wanted, slot)?,
            None => {
                let event =
                    if filter.is_all() { record.event(position)? } else { record.event_if(position, wanted)? };
                event.map(|event| self.events.push(event)).is_some()
            }
        };
        self.len += usize::from(read);
        Ok(())
    }

    fn finish(mut self) -> Vec<RecordedEvent> {
        self.events.truncate(self.len);
        self.events
    }
}

fn missing_record(position: u64, missing: bool) -> Error {
    let reason = if missing { "missing below the head" } else { "it overlaps the record before it" };
    Error::Corrupt { what: "log record", position: Position::new(position), reason }
}

/// A filtered log read through the event-type index: only the records holding wanted events are
/// read, so its cost follows the matching events, not the log's length.
fn log_indexed(files: &Files, start: u64, max: usize, filter: &LogFilter, head: u64) -> Result<LogChunk> {
    let mut positions = Vec::new();
    // One more than a page per type tells whether anything is left after the page.
    for event_type in &filter.event_types {
        positions.extend(files.type_positions(event_type, start, head, max + 1)?);
    }
    positions.sort_unstable();
    positions.dedup();
    let complete = positions.len() <= max;
    positions.truncate(max);
    let mut events = Vec::with_capacity(positions.len());
    let mut cache = None;
    let mut next = start;
    for position in positions {
        // The event-type index keeps pointing at events a scavenge removed: they are skipped.
        match files.event_at(position, &mut cache) {
            Ok(Some(event)) => {
                if filter.admits(event.stream.as_str(), &event.event_type) {
                    events.push(event);
                }
            }
            Ok(None) => {}
            Err(error) => return partial(events, next, error),
        }
        next = position + 1;
    }
    if complete {
        // Every wanted event up to the head was found: the read has looked at everything.
        next = next.max(head + 1);
    }
    Ok(LogChunk { events, next: Position::new(next.max(start)), end: complete })
}

/// Every stream whose name starts with `prefix` and that has acknowledged events a
/// [`StreamView::Current`] read shows, with its version; hard-deleted streams are left out.
pub(super) fn list_streams(files: &Files, head: u64, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
    let mut streams = Vec::new();
    for name in files.stream_names(prefix) {
        let name = name?;
        // A stream whose first events are not acknowledged yet does not exist yet.
        let info = files.stream_info(&name, head)?;
        if info.tombstone {
            continue;
        }
        if let Some(version) = info.current_version() {
            let stream = StreamId::stored(&name).ok_or(Error::Corrupt {
                what: "stream index entry",
                position: Position::ZERO,
                reason: "its stream name is not valid",
            })?;
            streams.push((stream, version));
        }
    }
    Ok(streams)
}

/// The first position recorded at or after `at` that holds an event (a scavenge may have removed
/// some), up to the durable `head`.
pub(super) fn seek_recorded(files: &Files, head: u64, at: DateTime<Utc>) -> Result<Option<Position>> {
    // Binary search over positions; every probe lands in a record whose events share one time (a
    // record keeps its header when a scavenge removes its events).
    let (mut low, mut high) = (1, head + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let record = files.record_at(middle)?.ok_or(Error::Corrupt {
            what: "log record",
            position: Position::new(middle),
            reason: "missing below the head",
        })?;
        if record.recorded_at >= at {
            high = record.first.min(middle);
        } else {
            low = record.last() + 1;
        }
    }
    // Then the first event still stored from there on.
    for record in files.records_from(low) {
        let record = record?;
        if record.first > head {
            break;
        }
        for position in low.max(record.first)..=record.last().min(head) {
            if !record.is_hole(position)? {
                return Ok(Some(Position::new(position)));
            }
        }
    }
    Ok(None)
}

/// The answer of a log read that met a damaged event at `next`: the events before it, if any (the
/// next page starts at the damaged one and fails), or the error.
fn partial(events: Vec<RecordedEvent>, next: u64, error: Error) -> Result<LogChunk> {
    if events.is_empty() {
        Err(error)
    } else {
        Ok(LogChunk { events, next: Position::new(next), end: false })
    }
}
