//! The persisted event-id index of the sled store (format 4), and the stream heads that come with it.
//!
//! - An **id key** (`I` + the event id's 16 bytes) holds the position of that event (u64 BE) and a
//!   CRC-32 of key and position (u32 BE).
//! - A **head key** (`H` + stream name) holds the stream's last version at the index's mark (u64 BE)
//!   and a CRC-32 of key and version.
//! - The **mark** (`M\0id-index`) holds a position (u64 BE) and a CRC-32: every event stored at or
//!   before it has its id key, and every stream with an event at or before it has its head key.
//!
//! The writer keeps the ids of the events after the mark in memory, and once there are [`SLICE`] of
//! them (and at every clean close) hands them, the heads of the streams they touched and the new mark
//! to the indexer thread as a *slice* (`super::indexer`), which writes it in small batches, the mark
//! last. Until then the ids stay in the writer's memory (at most three slices' worth). Appends never write an id key
//! themselves: a sled key costs microseconds, and one per event would halve the append rate
//! (docs/DESIGN.md, "Why is the event-id index written in slices?"). At open, only the log after the mark is
//! read (the ids a crash left unindexed), so opening does not grow with the log.
//!
//! The head keys let an open notice, without reading the log, a stream whose index lost its last
//! entries (damage that would otherwise hand the same versions out again): a stream's index must
//! reach its head key's version, or the versions its lifecycle key says were written.

use std::collections::HashMap;

use sled::IVec;
use uuid::Uuid;

use super::codec::{be_u64, log_key, LOG};
use super::files::{parse_record, sled_error};
use super::index::{checked, with_checksum};
use crate::error::{Error, Result};
use crate::position::Position;

/// Prefix of id keys: `I` + event id (16 bytes).
pub(crate) const ID: u8 = b'I';
/// Prefix of head keys: `H` + stream name.
pub(crate) const HEAD: u8 = b'H';
/// The key of the index's mark.
pub(crate) const MARK_KEY: &[u8] = b"M\x00id-index";
/// How many unindexed ids the writer lets gather before it cuts a slice.
pub(super) const SLICE: usize = 16 * 1024;

pub(crate) fn id_key(id: &Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = ID;
    key[1..].copy_from_slice(id.as_bytes());
    key
}

pub(crate) fn head_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 1);
    key.push(HEAD);
    key.extend_from_slice(stream.as_bytes());
    key
}

/// A u64 (BE) with its checksum over `key` and the number.
pub(crate) fn encode_number(key: &[u8], number: u64) -> Vec<u8> {
    with_checksum(key, number.to_be_bytes().to_vec())
}

/// The number stored under `key`, if its checksum matches.
pub(crate) fn decode_number(key: &[u8], value: &[u8]) -> Option<u64> {
    let body = checked(key, value)?;
    (body.len() == 8).then(|| be_u64(body)).flatten()
}

fn damaged(what: &'static str) -> Error {
    Error::Corrupt { what, position: Position::ZERO, reason: "its checksum does not match" }
}

/// The index's mark: `0` when the store has none (nothing is indexed).
pub(super) fn read_mark(tree: &sled::Tree) -> Result<u64> {
    match tree.get(MARK_KEY).map_err(sled_error)? {
        None => Ok(0),
        Some(value) => decode_number(MARK_KEY, &value).ok_or_else(|| damaged("event-id index mark")),
    }
}

/// The position the id index holds for `id`.
pub(super) fn lookup(tree: &sled::Tree, id: &Uuid) -> Result<Option<u64>> {
    let key = id_key(id);
    match tree.get(key).map_err(sled_error)? {
        None => Ok(None),
        Some(value) => decode_number(&key, &value).map(Some).ok_or_else(|| damaged("event-id index entry")),
    }
}

/// The version the head key of `stream` holds.
pub(super) fn stream_head(tree: &sled::Tree, stream: &str) -> Result<Option<u64>> {
    let key = head_key(stream);
    match tree.get(&key).map_err(sled_error)? {
        None => Ok(None),
        Some(value) => decode_number(&key, &value).map(Some).ok_or_else(|| damaged("stream head")),
    }
}

/// What the index does not cover: the events stored after its mark, read from the log at open.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// The position of every event id stored after the mark.
    pub(super) ids: HashMap<Uuid, u64>,
    /// The last version of each stream with an event after the mark.
    pub(super) versions: HashMap<String, u64>,
}

/// Raises `stream`'s last version in `versions` to `version` (the name is copied only the first time).
pub(super) fn note_version(versions: &mut HashMap<String, u64>, stream: &str, version: u64) {
    match versions.get_mut(stream) {
        Some(last) => *last = (*last).max(version),
        None => {
            versions.insert(stream.to_owned(), version);
        }
    }
}

/// Reads the log after `mark`. Records that do not decode, and events in them that do not, are left
/// out: reading them reports the damage, and `verify` lists it.
pub(super) fn scan_after(tree: &sled::Tree, mark: u64) -> Result<Tail> {
    let mut tail = Tail::default();
    for_each_event_after(tree, mark, |id, position, stream, version| {
        tail.ids.insert(id, position);
        note_version(&mut tail.versions, stream, version);
    })?;
    Ok(tail)
}

/// Calls `visit` with the id, position, stream and version of every event stored after `mark`.
pub(super) fn for_each_event_after(
    tree: &sled::Tree,
    mark: u64,
    mut visit: impl FnMut(Uuid, u64, &str, u64),
) -> Result<()> {
    let next = mark.saturating_add(1);
    // The record holding `next` may start before it.
    let start = match tree.range([LOG].as_slice()..=log_key(next).as_slice()).next_back() {
        Some(Ok((key, _))) => key,
        Some(Err(e)) => return Err(sled_error(e)),
        None => IVec::from(&log_key(next)),
    };
    let end = log_key(u64::MAX);
    for item in tree.range(start..=IVec::from(&end)) {
        let (key, value) = item.map_err(sled_error)?;
        let Ok(record) = parse_record(&key, value) else { continue };
        for position in record.first.max(next)..=record.last() {
            if let Ok(Some((id, stream, version))) = record.identity(position) {
                visit(id, position, stream, version);
            }
        }
    }
    Ok(())
}

/// Adds the id keys of `ids` to `batch`.
pub(super) fn add_ids<'a>(batch: &mut sled::Batch, ids: impl IntoIterator<Item = (&'a Uuid, &'a u64)>) {
    for (id, position) in ids {
        let key = id_key(id);
        batch.insert(&key, encode_number(&key, *position));
    }
}

/// Adds the head keys of `heads` (stream, last version at the mark) to `batch`.
pub(super) fn add_heads<'a>(batch: &mut sled::Batch, heads: impl IntoIterator<Item = (&'a str, u64)>) {
    for (stream, version) in heads {
        let key = head_key(stream);
        let value = encode_number(&key, version);
        batch.insert(key, value);
    }
}

/// Adds the index's new `mark` to `batch`.
pub(super) fn add_mark(batch: &mut sled::Batch, mark: u64) {
    batch.insert(MARK_KEY, encode_number(MARK_KEY, mark));
}
