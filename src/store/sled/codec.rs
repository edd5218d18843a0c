//! The bytes of the sled store: keys, log records, stream index entries. `docs/storage-format.md`
//! describes the same layout for humans; the two must agree.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::{Checkpoint, Snapshot};
use crate::stream_id::StreamId;

/// The storage format this version writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 4;

/// Key of the format version (value: u32 big-endian).
pub(crate) const FORMAT_KEY: &[u8] = b"M\x00format";
/// Prefix of log records: `L` + first position (u64 big-endian).
pub(crate) const LOG: u8 = b'L';
/// Prefix of stream index entries: `S` + stream name + `0x00` + first version (u64 big-endian).
pub(crate) const STREAM: u8 = b'S';
/// Prefix of event-type index entries: `T` + event type + `0x00` + first position (u64 big-endian),
/// one per type per group commit (see `index.rs`).
pub(crate) const TYPE: u8 = b'T';
/// Present once the event-type index covers the whole log (stores written before it had none, and
/// get it built at open).
pub(crate) const TYPE_INDEX_KEY: &[u8] = b"M\x00type-index";
/// The key of the store's id (16 bytes), which its head file repeats.
pub(crate) const STORE_ID_KEY: &[u8] = b"M\x00store-id";

/// The most bytes a record holds, unless it holds a single larger event: a sled leaf holds up to 17
/// keys before it splits, and 17 records of this size stay under sled's 128 KiB blob threshold, so a
/// leaf of the log is never written as a blob (a separate file, synced on its own). A commit group's
/// events are split into as few records as this allows, of about equal size.
pub(crate) const RECORD_LIMIT: usize = 7 * 1024;

/// The magic byte of a record written by storage format 1: its header checksum does not cover its
/// position.
const RECORD_MAGIC_1: u8 = 0xA1;
/// The magic byte of a record of format 2: its header checksum covers the position it starts at, so
/// that a record stored under another record's key is damage.
const RECORD_MAGIC: u8 = 0xA2;
/// magic, count, recorded_at, header crc.
const RECORD_HEADER: usize = 1 + 4 + 8 + 4;
/// Format 3: the top bit of an entry's offset marks an event a scavenge removed (a hole). Its entry is
/// empty: it starts where the next one does (the last one at the end of the record). The offsets
/// table is covered by the header checksum, so damage never makes a hole.
const REMOVED: u32 = 1 << 31;
/// crc, version.
const ENTRY_HEADER: usize = 4 + 8;

const HAS_OCCURRED: u8 = 1;
const HAS_CORRELATION: u8 = 2;
const HAS_CAUSATION: u8 = 4;

pub(crate) fn log_key(position: u64) -> [u8; 9] {
    let mut key = [LOG; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

pub(crate) fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(STREAM);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

pub(crate) fn stream_key(stream: &str, first_version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

/// Key of a snapshot in the snapshot tree: stream name + `0x00` + version (u64 big-endian).
pub(crate) fn snapshot_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// A snapshot value: schema version (u32 LE) | taken at (i64 LE, µs) | crc32 of the state (u32 LE) |
/// the state's JSON text.
pub(crate) fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut value = Vec::with_capacity(16 + snapshot.state.len());
    value.extend_from_slice(&snapshot.schema_version.to_le_bytes());
    value.extend_from_slice(&snapshot.taken_at.timestamp_micros().to_le_bytes());
    value.extend_from_slice(&crc32fast::hash(snapshot.state.as_bytes()).to_le_bytes());
    value.extend_from_slice(snapshot.state.as_bytes());
    value
}

/// Decodes a snapshot value; `None` when it is damaged (a damaged snapshot is skipped, never fatal).
pub(crate) fn decode_snapshot(stream: &StreamId, version: u64, value: &[u8]) -> Option<Snapshot> {
    let schema_version = le_u32(value, 0)?;
    let taken_at = DateTime::from_timestamp_micros(le_i64(value, 4)?)?;
    let state = value.get(16..)?;
    if le_u32(value, 12)? != crc32fast::hash(state) {
        return None;
    }
    let state = std::str::from_utf8(state).ok()?.to_owned();
    let mut snapshot = Snapshot::new(stream.clone(), Version::new(version), schema_version, state);
    snapshot.taken_at = taken_at;
    Some(snapshot)
}

/// A checkpoint value: crc32 of the rest (u32 LE) | position (u64 LE) | updated at (i64 LE, µs) |
/// 1 and the state's JSON text, or 0 when there is no state. The key is the checkpoint's name.
pub(crate) fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let state = checkpoint.state.as_deref().unwrap_or_default();
    let mut value = Vec::with_capacity(21 + state.len());
    value.extend_from_slice(&[0; 4]);
    value.extend_from_slice(&checkpoint.position.get().to_le_bytes());
    value.extend_from_slice(&checkpoint.updated_at.timestamp_micros().to_le_bytes());
    value.push(u8::from(checkpoint.state.is_some()));
    value.extend_from_slice(state.as_bytes());
    let crc = checkpoint_checksum(&checkpoint.name, &value[4..]);
    value[..4].copy_from_slice(&crc.to_le_bytes());
    value
}

/// Decodes a checkpoint value; `None` when it is damaged.
pub(crate) fn decode_checkpoint(name: &str, value: &[u8]) -> Option<Checkpoint> {
    if le_u32(value, 0)? != checkpoint_checksum(name, value.get(4..)?) {
        return None;
    }
    decode_checkpoint_body(name, value)
}

/// A checkpoint's checksum covers its name (format 2), so a value copied under another name is
/// damage.
fn checkpoint_checksum(name: &str, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(name.as_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// The key, in the checkpoint tree, of the list of checkpoint names (names hold no control character,
/// so no checkpoint has it).
pub(crate) const CHECKPOINT_NAMES_KEY: &[u8] = b"\x00names";

/// The list of checkpoint names: count (u32 LE), each name as str16, then a crc32 of all that.
pub(crate) fn encode_checkpoint_names(names: &std::collections::BTreeSet<String>) -> Vec<u8> {
    let mut value = u32::try_from(names.len()).unwrap_or(u32::MAX).to_le_bytes().to_vec();
    for name in names {
        value.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_le_bytes());
        value.extend_from_slice(name.as_bytes());
    }
    let crc = crc32fast::hash(&value);
    value.extend_from_slice(&crc.to_le_bytes());
    value
}

/// Decodes the list of checkpoint names; `None` when it is damaged.
pub(crate) fn decode_checkpoint_names(value: &[u8]) -> Option<std::collections::BTreeSet<String>> {
    let body = value.get(..value.len().checked_sub(4)?)?;
    if le_u32(value, body.len())? != crc32fast::hash(body) {
        return None;
    }
    let mut reader = Reader { data: body, at: 4 };
    let count = le_u32(body, 0)?;
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..count {
        names.insert(reader.str16()?.to_owned());
    }
    (reader.at == body.len()).then_some(names)
}

/// Decodes a format-1 checkpoint value, whose checksum covers the value only; `None` when damaged.
pub(crate) fn decode_checkpoint_format_1(name: &str, value: &[u8]) -> Option<Checkpoint> {
    if le_u32(value, 0)? != crc32fast::hash(value.get(4..)?) {
        return None;
    }
    decode_checkpoint_body(name, value)
}

fn decode_checkpoint_body(name: &str, value: &[u8]) -> Option<Checkpoint> {
    let position = Position::new(u64::from_le_bytes(value.get(4..12)?.try_into().ok()?));
    let updated_at = DateTime::from_timestamp_micros(le_i64(value, 12)?)?;
    let state = match value.get(20)? {
        0 => None,
        1 => Some(std::str::from_utf8(value.get(21..)?).ok()?.to_owned()),
        _ => return None,
    };
    let mut checkpoint = Checkpoint::new(name, position);
    checkpoint.state = state;
    checkpoint.updated_at = updated_at;
    Some(checkpoint)
}

pub(crate) fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Encodes what the caller knows of an event (everything but version, position and recorded time),
/// so that the writer thread only copies bytes.
pub(crate) fn encode_body(stream: &StreamId, event: &NewEvent) -> Vec<u8> {
    let meta = &event.metadata;
    let mut out = Vec::with_capacity(64 + stream.as_str().len() + event.size());
    out.extend_from_slice(event.id.as_bytes());
    put_str16(&mut out, stream.as_str());
    put_str16(&mut out, &event.event_type);
    out.extend_from_slice(&event.schema_version.to_le_bytes());
    let flag = |set: bool, bit: u8| if set { bit } else { 0 };
    let flags = flag(event.occurred_at.is_some(), HAS_OCCURRED)
        | flag(meta.correlation_id.is_some(), HAS_CORRELATION)
        | flag(meta.causation_id.is_some(), HAS_CAUSATION);
    out.push(flags);
    if let Some(occurred) = event.occurred_at {
        out.extend_from_slice(&occurred.timestamp_micros().to_le_bytes());
    }
    for text in [&meta.correlation_id, &meta.causation_id].into_iter().flatten() {
        put_str32(&mut out, text);
    }
    put_len32(&mut out, meta.headers.len());
    for (key, value) in &meta.headers {
        put_str32(&mut out, key);
        put_str32(&mut out, value);
    }
    put_str32(&mut out, &event.payload);
    out
}

// Names are at most 256 bytes and event sizes are capped far below 4 GiB by the store's checks, so the
// length prefixes below always fit; saturating keeps this panic-free regardless.
fn put_str16(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u16::try_from(text.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_len32(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str32(out: &mut Vec<u8>, text: &str) {
    put_len32(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// Builds the log records of one commit group.
pub(crate) struct RecordBuilder {
    recorded_at: i64,
    first: u64,
    /// Where each entry starts in `entries`.
    starts: Vec<usize>,
    entries: Vec<u8>,
}

impl RecordBuilder {
    pub(crate) fn new(first: u64, recorded_at: DateTime<Utc>) -> Self {
        RecordBuilder { recorded_at: recorded_at.timestamp_micros(), first, starts: Vec::new(), entries: Vec::new() }
    }

    /// Adds the event at the next position.
    pub(crate) fn push(&mut self, version: u64, body: &[u8]) {
        self.starts.push(self.entries.len());
        self.entries.reserve(ENTRY_HEADER + body.len());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&version.to_le_bytes());
        crc.update(body);
        self.entries.extend_from_slice(&crc.finalize().to_le_bytes());
        self.entries.extend_from_slice(&version.to_le_bytes());
        self.entries.extend_from_slice(body);
    }

    /// The finished records, keyed by their first position: as few as [`RECORD_LIMIT`] allows, of
    /// about equal size.
    pub(crate) fn finish(self) -> Vec<(u64, Vec<u8>)> {
        let total = self.entries.len();
        // What an entry adds to a record: its bytes and its offset.
        let cost = |i: usize| self.starts.get(i + 1).copied().unwrap_or(total) - self.starts[i] + 4;
        let room = RECORD_LIMIT - RECORD_HEADER;
        let all = total + 4 * self.starts.len();
        let share = all.div_ceil(all.div_ceil(room).max(1));
        let mut records = Vec::with_capacity(all.div_ceil(room));
        let (mut first, mut from, mut held) = (self.first, 0, 0);
        let mut offsets = Vec::new();
        for (i, &start) in self.starts.iter().enumerate() {
            // An entry goes to the next record when the current one is not empty and the entry
            // would pass the limit, or end more than half past the group's share.
            let adds = cost(i);
            if !offsets.is_empty() && (held + adds > room || held + adds / 2 > share) {
                records.push((first, assemble(first, self.recorded_at, &offsets, &self.entries[from..start])));
                first += offsets.len() as u64;
                offsets.clear();
                (from, held) = (start, 0);
            }
            offsets.push(u32::try_from(start - from).unwrap_or(u32::MAX));
            held += adds;
        }
        if !offsets.is_empty() {
            records.push((first, assemble(first, self.recorded_at, &offsets, &self.entries[from..])));
        }
        records
    }
}

/// A record of the current format: header, offsets table, entries.
fn assemble(first: u64, recorded_at: i64, offsets: &[u32], entries: &[u8]) -> Vec<u8> {
    let count = offsets.len();
    let mut record = Vec::with_capacity(RECORD_HEADER + 4 * count + entries.len());
    record.push(RECORD_MAGIC);
    record.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    record.extend_from_slice(&recorded_at.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    for offset in offsets {
        record.extend_from_slice(&offset.to_le_bytes());
    }
    let crc = header_crc(&record, Some(first));
    record[13..17].copy_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(entries);
    record
}

/// The header crc covers the record's first position (format 2: `Some`), then the magic byte, count,
/// time and offsets table, with the crc field as zeros.
fn header_crc(header: &[u8], first: Option<u64>) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    if let Some(first) = first {
        crc.update(&first.to_le_bytes());
    }
    crc.update(header.get(..13).unwrap_or_default());
    crc.update(&[0; 4]);
    crc.update(header.get(RECORD_HEADER..).unwrap_or_default());
    crc.finalize()
}

/// A log record read back: a view over its bytes that decodes events one at a time.
#[derive(Clone)]
pub(crate) struct Record<B> {
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) recorded_at: DateTime<Utc>,
    bytes: B,
}

impl<B: AsRef<[u8]>> Record<B> {
    /// Checks the header of the record stored under `first`.
    pub(crate) fn parse(first: u64, bytes: B) -> Result<Self> {
        let corrupt = |reason| Error::Corrupt { what: "log record", position: Position::new(first), reason };
        let data = bytes.as_ref();
        let placed = match data.first() {
            _ if data.len() < RECORD_HEADER => return Err(corrupt("bad record header")),
            Some(&RECORD_MAGIC) => Some(first),
            Some(&RECORD_MAGIC_1) => None,
            _ => return Err(corrupt("bad record header")),
        };
        let count = le_u32(data, 1).ok_or_else(|| corrupt("bad record header"))?;
        let table_end = RECORD_HEADER + 4 * count as usize;
        let stored_crc = le_u32(data, 13).ok_or_else(|| corrupt("bad record header"))?;
        let header = data.get(..table_end).ok_or_else(|| corrupt("offset table is cut short"))?;
        if count == 0 || header_crc(header, placed) != stored_crc {
            return Err(corrupt("record header checksum mismatch"));
        }
        let micros = le_i64(data, 5).ok_or_else(|| corrupt("bad record header"))?;
        let recorded_at =
            DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("recorded time out of range"))?;
        Ok(Record { first, count, recorded_at, bytes })
    }

    pub(crate) fn last(&self) -> u64 {
        self.first + u64::from(self.count) - 1
    }

    pub(crate) fn contains(&self, position: u64) -> bool {
        (self.first..=self.last()).contains(&position)
    }

    fn corrupt(&self, position: u64, reason: &'static str) -> Error {
        Error::Corrupt { what: "log record", position: Position::new(position), reason }
    }

    /// The offset of entry `index` (from the end of the offsets table) and whether it is a hole.
    fn offset(&self, index: usize) -> Option<(usize, bool)> {
        let raw = le_u32(self.bytes.as_ref(), RECORD_HEADER + 4 * index)?;
        Some(((raw & !REMOVED) as usize, raw & REMOVED != 0))
    }

    /// The checked bytes (crc + version + body) of the event at `position`, or `None` for a hole.
    fn slot(&self, position: u64) -> Result<Option<&[u8]>> {
        let data = self.bytes.as_ref();
        let index = position
            .checked_sub(self.first)
            .filter(|i| *i < u64::from(self.count))
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| self.corrupt(position, "position out of range"))?;
        let entries_start = RECORD_HEADER + 4 * self.count as usize;
        let cut = || self.corrupt(position, "offset table is cut short");
        let (start, removed) = self.offset(index).ok_or_else(cut)?;
        let start = entries_start + start;
        let end = if index + 1 < self.count as usize {
            entries_start + self.offset(index + 1).ok_or_else(cut)?.0
        } else {
            data.len()
        };
        if removed {
            return if start == end {
                Ok(None)
            } else {
                Err(self.corrupt(position, "a removed event's entry is not empty"))
            };
        }
        let entry = data.get(start..end).ok_or_else(|| self.corrupt(position, "event offset out of range"))?;
        let (crc, rest) = entry.split_at_checked(4).ok_or_else(|| self.corrupt(position, "event is cut short"))?;
        if rest.len() < 8 || le_u32(crc, 0) != Some(crc32fast::hash(rest)) {
            return Err(self.corrupt(position, "event checksum mismatch"));
        }
        Ok(Some(entry))
    }

    /// The checked bytes (version + body) of the event at `position`, or `None` for a hole.
    fn entry(&self, position: u64) -> Result<Option<&[u8]>> {
        Ok(self.slot(position)?.and_then(|entry| entry.get(4..)))
    }

    /// Whether the event at `position` was removed by a scavenge (a hole).
    pub(crate) fn is_hole(&self, position: u64) -> Result<bool> {
        Ok(self.slot(position)?.is_none())
    }

    /// The id, stream and version of the event at `position`, without decoding the rest; `None` for a
    /// hole.
    pub(crate) fn identity(&self, position: u64) -> Result<Option<(Uuid, &str, u64)>> {
        let Some(entry) = self.entry(position)? else { return Ok(None) };
        let short = || self.corrupt(position, "event is cut short");
        let version = u64::from_le_bytes(entry.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(short)?);
        let id = entry.get(8..24).and_then(|b| Uuid::from_slice(b).ok()).ok_or_else(short)?;
        let (stream, _) = self.peek_entry(entry, position)?;
        Ok(Some((id, stream, version)))
    }

    /// The stream and type of the event at `position`, without decoding the rest: enough to filter;
    /// `None` for a hole.
    pub(crate) fn peek(&self, position: u64) -> Result<Option<(&str, &str)>> {
        match self.entry(position)? {
            Some(entry) => self.peek_entry(entry, position).map(Some),
            None => Ok(None),
        }
    }

    fn peek_entry<'e>(&self, entry: &'e [u8], position: u64) -> Result<(&'e str, &'e str)> {
        let mut reader = Reader { data: entry, at: 8 + 16 };
        let stream = reader.str16().ok_or_else(|| self.corrupt(position, "bad stream name"))?;
        let event_type = reader.str16().ok_or_else(|| self.corrupt(position, "bad event type"))?;
        Ok((stream, event_type))
    }

    /// Decodes the event at `position`; `None` for a hole.
    pub(crate) fn event(&self, position: u64) -> Result<Option<RecordedEvent>> {
        match self.entry(position)? {
            Some(entry) => self.decode(entry, position).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes the event at `position` if `wanted(stream, event type)` says so: the entry's checksum
    /// is checked once for both. `None` for a hole or an event not wanted.
    pub(crate) fn event_if(
        &self,
        position: u64,
        wanted: impl FnOnce(&str, &str) -> bool,
    ) -> Result<Option<RecordedEvent>> {
        let Some(entry) = self.entry(position)? else { return Ok(None) };
        let (stream, event_type) = self.peek_entry(entry, position)?;
        if !wanted(stream, event_type) {
            return Ok(None);
        }
        self.decode(entry, position).map(Some)
    }

    /// The record with the events at `removed` turned into holes (format 3), as a scavenge writes it:
    /// the same first position, count and time, the kept entries byte for byte. Fails when an event of
    /// the record is damaged, so that a rewrite never hides damage.
    pub(crate) fn without(&self, removed: &std::collections::BTreeSet<u64>) -> Result<Vec<u8>> {
        let count = self.count as usize;
        let mut offsets = Vec::with_capacity(count);
        let mut entries = Vec::new();
        for position in self.first..=self.last() {
            let offset = u32::try_from(entries.len()).map_err(|_| self.corrupt(position, "record too large"))?;
            match self.slot(position)? {
                Some(entry) if !removed.contains(&position) => {
                    offsets.push(offset);
                    entries.extend_from_slice(entry);
                }
                _ => offsets.push(offset | REMOVED),
            }
        }
        Ok(assemble(self.first, self.recorded_at.timestamp_micros(), &offsets, &entries))
    }

    fn decode(&self, entry: &[u8], position: u64) -> Result<RecordedEvent> {
        decode_entry(entry, Position::new(position), self.recorded_at)
            .ok_or_else(|| self.corrupt(position, "event does not decode"))
    }

    /// Decodes the event at `position` into `slot`, an event read before whose strings it reuses.
    /// `Ok(false)` for a hole, and `slot` is then unchanged; on an error, `slot` may hold part of
    /// the event.
    pub(crate) fn event_into(&self, position: u64, slot: &mut RecordedEvent) -> Result<bool> {
        match self.entry(position)? {
            Some(entry) => self.decode_into(entry, position, slot).map(|()| true),
            None => Ok(false),
        }
    }

    /// [`Record::event_into`] for an event that `wanted(stream, event type)` admits; `Ok(false)`
    /// (and `slot` unchanged) for a hole or an event not wanted.
    pub(crate) fn event_if_into(
        &self,
        position: u64,
        wanted: impl FnOnce(&str, &str) -> bool,
        slot: &mut RecordedEvent,
    ) -> Result<bool> {
        let Some(entry) = self.entry(position)? else { return Ok(false) };
        let (stream, event_type) = self.peek_entry(entry, position)?;
        if !wanted(stream, event_type) {
            return Ok(false);
        }
        self.decode_into(entry, position, slot).map(|()| true)
    }

    fn decode_into(&self, entry: &[u8], position: u64, slot: &mut RecordedEvent) -> Result<()> {
        Fields::parse(entry)
            .and_then(|fields| fields.write_into(Position::new(position), self.recorded_at, slot))
            .ok_or_else(|| self.corrupt(position, "event does not decode"))
    }
}

fn decode_entry(entry: &[u8], position: Position, recorded_at: DateTime<Utc>) -> Option<RecordedEvent> {
    Fields::parse(entry)?.to_event(position, recorded_at)
}

/// The fields of an event entry (version and body), checked and borrowed from its bytes: what the
/// decoders copy into a [`RecordedEvent`].
struct Fields<'a> {
    version: u64,
    id: Uuid,
    stream: &'a str,
    event_type: &'a str,
    schema_version: u32,
    occurred_at: Option<DateTime<Utc>>,
    correlation_id: Option<&'a str>,
    causation_id: Option<&'a str>,
    /// The headers, `count` pairs of str32, checked.
    headers: &'a [u8],
    header_count: u32,
    payload: &'a str,
}

impl<'a> Fields<'a> {
    /// Reads and checks every field; `None` when the entry does not decode (a stream name that no
    /// version accepted, bytes cut short or left over, text that is not UTF-8).
    fn parse(entry: &'a [u8]) -> Option<Self> {
        let mut r = Reader { data: entry, at: 0 };
        let version = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let id = Uuid::from_slice(r.take(16)?).ok()?;
        let stream = r.str16().filter(|name| StreamId::is_stored(name))?;
        let event_type = r.str16()?;
        let schema_version = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let flags = r.take(1)?.first().copied()?;
        let occurred_at = if flags & HAS_OCCURRED != 0 {
            Some(DateTime::from_timestamp_micros(i64::from_le_bytes(r.take(8)?.try_into().ok()?))?)
        } else {
            None
        };
        let correlation_id = if flags & HAS_CORRELATION != 0 { Some(r.str32()?) } else { None };
        let causation_id = if flags & HAS_CAUSATION != 0 { Some(r.str32()?) } else { None };
        let header_count = r.u32()?;
        let headers_start = r.at;
        for _ in 0..header_count {
            r.str32()?;
            r.str32()?;
        }
        let headers = entry.get(headers_start..r.at)?;
        let payload = r.str32()?;
        if r.at != entry.len() {
            return None;
        }
        Some(Fields {
            version,
            id,
            stream,
            event_type,
            schema_version,
            occurred_at,
            correlation_id,
            causation_id,
            headers,
            header_count,
            payload,
        })
    }

    /// The headers, in their stored order (checked by `parse`).
    fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut r = Reader { data: self.headers, at: 0 };
        (0..self.header_count).map_while(move |_| Some((r.str32()?, r.str32()?)))
    }

    fn to_event(&self, position: Position, recorded_at: DateTime<Utc>) -> Option<RecordedEvent> {
        Some(RecordedEvent {
            id: self.id,
            stream: StreamId::stored(self.stream)?,
            version: Version::new(self.version),
            position,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            recorded_at,
            occurred_at: self.occurred_at.unwrap_or(recorded_at),
            metadata: Metadata {
                correlation_id: self.correlation_id.map(str::to_owned),
                causation_id: self.causation_id.map(str::to_owned),
                headers: self.headers().map(|(key, value)| (key.to_owned(), value.to_owned())).collect(),
            },
            payload: self.payload.to_owned(),
        })
    }

    /// Overwrites every field of `event` with this event's, reusing the buffers of its strings: a
    /// replay that hands pages back decodes without allocating when the strings fit.
    fn write_into(&self, position: Position, recorded_at: DateTime<Utc>, event: &mut RecordedEvent) -> Option<()> {
        event.stream.assign_stored(self.stream).then_some(())?;
        event.id = self.id;
        event.version = Version::new(self.version);
        event.position = position;
        assign(&mut event.event_type, self.event_type);
        event.schema_version = self.schema_version;
        event.recorded_at = recorded_at;
        event.occurred_at = self.occurred_at.unwrap_or(recorded_at);
        assign_option(&mut event.metadata.correlation_id, self.correlation_id);
        assign_option(&mut event.metadata.causation_id, self.causation_id);
        event.metadata.headers.clear();
        for (key, value) in self.headers() {
            event.metadata.headers.insert(key.to_owned(), value.to_owned());
        }
        assign(&mut event.payload, self.payload);
        Some(())
    }
}

/// Replaces the text of `target` with `text`, in its buffer when it is large enough.
fn assign(target: &mut String, text: &str) {
    target.clear();
    target.push_str(text);
}

fn assign_option(target: &mut Option<String>, text: Option<&str>) {
    match (target.as_mut(), text) {
        (Some(buffer), Some(text)) => assign(buffer, text),
        (_, text) => *target = text.map(str::to_owned),
    }
}

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn le_i64(data: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// A bounds-checked cursor: every read returns `None` instead of running past the end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let bytes = self.data.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn str16(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        std::str::from_utf8(self.take(usize::from(len))?).ok()
    }

    fn str32(&mut self) -> Option<&'a str> {
        let len = self.u32()?;
        std::str::from_utf8(self.take(usize::try_from(len).ok()?)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use chrono::SubsecRound;

    use super::*;

    fn sample(i: u64) -> Result<(StreamId, NewEvent)> {
        let stream = StreamId::new(format!("order-{i}"))?;
        let mut event = NewEvent::raw("OrderPlaced", format!("{{\"n\":{i}}}")).with_header("k", "v");
        if i % 2 == 0 {
            event = event.with_occurred_at(DateTime::from_timestamp_micros(1_000_000 * i as i64).unwrap_or_default());
            event = event.with_correlation_id("corr").with_causation_id("cause");
        }
        Ok((stream, event))
    }

    #[test]
    fn records_stay_within_the_limit_offsets_included_and_a_larger_event_stands_alone() -> Result<()> {
        let stream = StreamId::new("s")?;
        let mut builder = RecordBuilder::new(1, Utc::now());
        for version in 1..=3000 {
            builder.push(version, &encode_body(&stream, &NewEvent::raw("T", "1")));
        }
        let big = encode_body(&stream, &NewEvent::raw("T", format!("\"{}\"", "x".repeat(RECORD_LIMIT))));
        builder.push(3001, &big);
        builder.push(3002, &encode_body(&stream, &NewEvent::raw("T", "2")));
        let records = builder.finish();
        let (last, rest) = records.split_last().ok_or(Error::Closed)?;
        let (large, small) = rest.split_last().ok_or(Error::Closed)?;
        for (_, bytes) in small {
            assert!(bytes.len() <= RECORD_LIMIT, "a record of {} bytes", bytes.len());
        }
        assert_eq!(Record::parse(large.0, large.1.clone())?.count, 1, "the large event in a record of its own");
        assert_eq!((large.0, last.0), (3001, 3002));
        Ok(())
    }

    #[test]
    fn records_round_trip_and_split_at_the_target_size() -> Result<()> {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let mut builder = RecordBuilder::new(10, at);
        let mut expected = Vec::new();
        let mut entry_bytes = 0;
        for i in 0..100 {
            let (stream, event) = sample(i)?;
            let event = event.with_header("padding", "x".repeat(200));
            let body = encode_body(&stream, &event);
            entry_bytes += ENTRY_HEADER + body.len();
            builder.push(i + 1, &body);
            expected.push((stream, event));
        }
        let records = builder.finish();
        let sizes: Vec<_> = records.iter().map(|(_, bytes)| bytes.len()).collect();
        let needed = (entry_bytes + 4 * 100).div_ceil(RECORD_LIMIT - RECORD_HEADER);
        assert!(needed > 4, "a group that needs several records: {entry_bytes} bytes");
        assert_eq!(records.len(), needed, "as few records as the limit allows: {sizes:?}");
        let (smallest, largest) = (sizes.iter().min().copied(), sizes.iter().max().copied());
        assert!(largest.unwrap_or_default() - smallest.unwrap_or_default() < 1024, "about equal: {sizes:?}");
        let mut position = 10;
        for (first, bytes) in records {
            assert!(bytes.len() <= RECORD_LIMIT, "record of {} bytes", bytes.len());
            let record = Record::parse(first, bytes)?;
            assert_eq!(record.first, position);
            for p in record.first..=record.last() {
                let event = record.event(p)?.ok_or(Error::Closed)?;
                let (stream, new) = &expected[(p - 10) as usize];
                assert_eq!((&event.stream, event.version.get(), event.position.get()), (stream, p - 9, p));
                assert_eq!((event.id, &event.payload, &event.metadata), (new.id, &new.payload, &new.metadata));
                assert_eq!(event.occurred_at, new.occurred_at.unwrap_or(at));
                assert_eq!(event.recorded_at, at);
                assert_eq!(record.peek(p)?, Some((stream.as_str(), "OrderPlaced")));
            }
            position = record.last() + 1;
        }
        assert_eq!(position, 110);
        Ok(())
    }

    #[test]
    fn a_record_read_under_another_position_is_damage_unless_it_is_of_format_1() -> Result<()> {
        let (stream, event) = sample(1)?;
        let mut builder = RecordBuilder::new(7, Utc::now());
        builder.push(1, &encode_body(&stream, &event));
        let (first, bytes) = builder.finish().remove(0);
        assert_eq!(first, 7);
        assert!(Record::parse(7, bytes.clone()).is_ok());
        assert!(Record::parse(8, bytes.clone()).is_err(), "a format-2 record names its position");
        // Format 1: magic 0xA1, the header crc without the position; still read, under any key.
        let mut old = bytes;
        old[0] = RECORD_MAGIC_1;
        let crc = header_crc(&old[..RECORD_HEADER + 4], None);
        old[13..17].copy_from_slice(&crc.to_le_bytes());
        assert!(Record::parse(7, old.clone()).is_ok() && Record::parse(8, old).is_ok());
        Ok(())
    }

    #[test]
    fn every_flipped_byte_is_reported_as_corruption() -> Result<()> {
        let (stream, event) = sample(2)?;
        let mut builder = RecordBuilder::new(1, Utc::now());
        builder.push(1, &encode_body(&stream, &event));
        let (_, bytes) = builder.finish().pop().ok_or(Error::Closed)?;
        // Decoded into a new event, and into the storage of one read before.
        let slot = Record::parse(1, bytes.as_slice())?.event(1)?.ok_or(Error::Closed)?;
        let into = |record: Record<&[u8]>| record.event_into(1, &mut slot.clone());
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x5a;
            let outcome = Record::parse(1, damaged.as_slice()).and_then(|r| r.event(1));
            assert!(matches!(outcome, Err(Error::Corrupt { .. })), "byte {i}: {outcome:?}");
            let outcome = Record::parse(1, damaged.as_slice()).and_then(into);
            assert!(matches!(outcome, Err(Error::Corrupt { .. })), "byte {i}, into a slot: {outcome:?}");
        }
        for len in 0..bytes.len() {
            let outcome = Record::parse(1, &bytes[..len]).and_then(|r| r.event(1));
            assert!(matches!(outcome, Err(Error::Corrupt { .. })), "cut at {len}: {outcome:?}");
            let outcome = Record::parse(1, &bytes[..len]).and_then(into);
            assert!(matches!(outcome, Err(Error::Corrupt { .. })), "cut at {len}, into a slot: {outcome:?}");
        }
        Ok(())
    }

    /// A record's bytes and the events in it.
    type Sampled = (Vec<u8>, Vec<(StreamId, NewEvent)>);

    /// A record of `n` events at positions 1..=n, with the events themselves.
    fn record_of(n: u64) -> Result<Sampled> {
        let mut builder = RecordBuilder::new(1, Utc::now().trunc_subsecs(6));
        let mut events = Vec::new();
        for i in 1..=n {
            let (stream, event) = sample(i)?;
            builder.push(i, &encode_body(&stream, &event));
            events.push((stream, event));
        }
        let mut records = builder.finish();
        assert_eq!(records.len(), 1);
        Ok((records.remove(0).1, events))
    }

    #[test]
    fn an_event_decoded_into_another_events_storage_is_that_event_field_for_field() -> Result<()> {
        let (bytes, _) = record_of(6)?;
        let record = Record::parse(1, bytes)?;
        // Odd and even events differ in occurred time, correlation and causation ids.
        for (from, into) in [(1, 2), (2, 1), (2, 4), (3, 6), (6, 5)] {
            let mut slot = record.event(from)?.ok_or(Error::Closed)?;
            slot.metadata.headers.insert("only-in-the-old-one".into(), "x".into());
            assert!(record.event_into(into, &mut slot)?);
            assert_eq!(Some(&slot), record.event(into)?.as_ref(), "{from} into {into}");
            let before = slot.clone();
            assert!(!record.event_if_into(from, |_, _| false, &mut slot)?);
            assert_eq!(slot, before, "an event not wanted leaves the slot as it was");
            assert!(record.event_if_into(from, |_, event_type| event_type == "OrderPlaced", &mut slot)?);
            assert_eq!(Some(&slot), record.event(from)?.as_ref());
        }
        let holed = Record::parse(1, record.without(&[3].into())?)?;
        let mut slot = record.event(1)?.ok_or(Error::Closed)?;
        assert!(!holed.event_into(3, &mut slot)?);
        assert_eq!(Some(slot), record.event(1)?, "a hole leaves the slot as it was");
        Ok(())
    }

    #[test]
    fn a_rewrite_leaves_holes_that_read_as_none_and_keeps_the_rest_byte_for_byte() -> Result<()> {
        let (bytes, events) = record_of(5)?;
        let record = Record::parse(1, bytes)?;
        let removed: std::collections::BTreeSet<u64> = [2, 5].into();
        let rewritten = Record::parse(1, record.without(&removed)?)?;
        assert_eq!((rewritten.first, rewritten.count, rewritten.recorded_at), (1, 5, record.recorded_at));
        for p in 1..=5 {
            if removed.contains(&p) {
                assert!(rewritten.is_hole(p)?);
                assert_eq!(rewritten.event(p)?, None);
                assert_eq!(rewritten.identity(p)?, None);
                assert_eq!(rewritten.peek(p)?, None);
                assert_eq!(rewritten.event_if(p, |_, _| true)?, None);
            } else {
                assert!(!rewritten.is_hole(p)?);
                let event = rewritten.event(p)?.ok_or(Error::Closed)?;
                assert_eq!(Some(event), record.event(p)?, "position {p}");
                let identity = rewritten.identity(p)?.map(|(id, _, v)| (id, v));
                assert_eq!(identity, Some((events[p as usize - 1].1.id, p)));
            }
        }
        // Rewriting again with more holes keeps the old ones; the kept entries are the same bytes.
        let again = Record::parse(1, rewritten.without(&[3].into())?)?;
        assert!(again.is_hole(2)? && again.is_hole(3)? && again.is_hole(5)? && !again.is_hole(1)?);
        assert_eq!(again.event(4)?, record.event(4)?);
        let kept: usize = [1, 4].iter().map(|&p| record.slot(p).map_or(0, |e| e.map_or(0, <[u8]>::len))).sum();
        assert_eq!(again.bytes.len(), RECORD_HEADER + 4 * 5 + kept);
        Ok(())
    }

    #[test]
    fn a_record_whose_events_are_all_removed_shrinks_to_its_header() -> Result<()> {
        let (bytes, _) = record_of(3)?;
        let record = Record::parse(1, bytes)?;
        let empty = record.without(&[1, 2, 3].into())?;
        assert_eq!(empty.len(), RECORD_HEADER + 4 * 3);
        let empty = Record::parse(1, empty)?;
        assert_eq!((empty.last(), empty.recorded_at), (3, record.recorded_at));
        for p in 1..=3 {
            assert_eq!(empty.event(p)?, None);
        }
        Ok(())
    }

    #[test]
    fn damage_to_a_record_with_holes_is_never_a_hole() -> Result<()> {
        let (bytes, _) = record_of(3)?;
        let record = Record::parse(1, bytes)?;
        for removed in [vec![2], vec![3], vec![1, 2], vec![1, 2, 3]] {
            let removed: std::collections::BTreeSet<u64> = removed.into_iter().collect();
            let holed = record.without(&removed)?;
            let read_all = |bytes: &[u8]| -> Vec<Result<bool>> {
                (1..=3).map(|p| Record::parse(1, bytes).and_then(|r| r.event(p)).map(|e| e.is_some())).collect()
            };
            for i in 0..holed.len() {
                let mut damaged = holed.clone();
                damaged[i] ^= 0x5a;
                let outcomes = read_all(&damaged);
                assert!(outcomes.iter().any(|o| matches!(o, Err(Error::Corrupt { .. }))), "{removed:?} byte {i}");
            }
            // Cut anywhere, the record reports damage for some event: a cut never reads as holes.
            for len in 0..holed.len() {
                let outcomes = read_all(&holed[..len]);
                assert!(outcomes.iter().any(|o| matches!(o, Err(Error::Corrupt { .. }))), "{removed:?} cut at {len}");
            }
            // A rewritten record names its position too.
            assert!(Record::parse(2, holed).is_err());
        }
        Ok(())
    }

    #[test]
    fn a_cut_exactly_between_entries_is_damage_not_a_hole() -> Result<()> {
        let (bytes, _) = record_of(2)?;
        let record = Record::parse(1, bytes.clone())?;
        let second = record.offset(1).map(|(o, _)| RECORD_HEADER + 4 * 2 + o).ok_or(Error::Closed)?;
        let cut = Record::parse(1, &bytes[..second])?;
        assert!(cut.event(1)?.is_some());
        assert!(matches!(cut.event(2), Err(Error::Corrupt { .. })), "{:?}", cut.event(2));
        Ok(())
    }
}
