//! The bytes of the sled store's two indexes (format 2), each entry with a checksum over its key and
//! value, so that an entry damaged or copied under another key is damage, not a wrong answer:
//!
//! - a **stream index entry** (`S` + stream + `0x00` + first version): first position (u64 BE), count
//!   (u32 BE), CRC-32 (u32 BE);
//! - an **event-type index entry** (`T` + type + `0x00` + first position): the number of events of
//!   that type before this entry (u64 BE), the entry's positions as LEB128 varints of their
//!   distances, CRC-32 (u32 BE). The counts chain: each entry's count is the previous one's plus its
//!   positions, so a missing entry breaks the chain;
//! - a **type count** (`C` + type): the number of events of that type in the log (u64 BE), CRC-32,
//!   written in the same batch as the entries, so a missing last entry shows too.
//!
//! `docs/storage-format.md` describes the same bytes for humans.

use std::collections::{BTreeMap, HashMap};

use super::codec::be_u64;
use crate::error::{Error, Result};
use crate::position::Position;

/// Prefix of type counts: `C` + event type.
pub(crate) const COUNT: u8 = b'C';

/// The checksum of an index entry: its key, then its value without the checksum.
fn checksum(key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(value);
    hasher.finalize()
}

/// `value` without its trailing checksum, if the checksum matches.
pub(super) fn checked<'a>(key: &[u8], value: &'a [u8]) -> Option<&'a [u8]> {
    let body = value.get(..value.len().checked_sub(4)?)?;
    let crc = u32::from_be_bytes(value.get(body.len()..)?.try_into().ok()?);
    (crc == checksum(key, body)).then_some(body)
}

pub(super) fn with_checksum(key: &[u8], mut body: Vec<u8>) -> Vec<u8> {
    let crc = checksum(key, &body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// A stream index entry: `count` events of one stream, from `first_version` at `first_position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) first_version: u64,
    pub(crate) first_position: u64,
    pub(crate) count: u32,
}

impl IndexEntry {
    /// The value stored under `key` (the entry's own key, which the checksum covers).
    pub(crate) fn encode(&self, key: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&self.first_position.to_be_bytes());
        body.extend_from_slice(&self.count.to_be_bytes());
        with_checksum(key, body)
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        let corrupt = |reason| Error::Corrupt { what: "stream index entry", position: Position::ZERO, reason };
        let version = key.len().checked_sub(8).and_then(|at| key.get(at..)).ok_or_else(|| corrupt("key too short"))?;
        let body = checked(key, value).ok_or_else(|| corrupt("its checksum does not match"))?;
        Self::from_parts(be_u64(version), body).ok_or_else(|| corrupt("its values are out of range"))
    }

    /// A format-1 entry (12 bytes, no checksum), as a store written before format 2 holds them.
    pub(crate) fn decode_format_1(key: &[u8], value: &[u8]) -> Option<Self> {
        let version = key.len().checked_sub(8).and_then(|at| key.get(at..))?;
        Self::from_parts(be_u64(version), value)
    }

    fn from_parts(first_version: Option<u64>, body: &[u8]) -> Option<Self> {
        let first_version = first_version?;
        if body.len() != 12 {
            return None;
        }
        let first_position = be_u64(&body[..8])?;
        let count = u32::from_be_bytes(body[8..12].try_into().ok()?);
        let valid = count > 0
            && first_version > 0
            && first_position > 0
            && first_version.checked_add(u64::from(count)).is_some()
            && first_position.checked_add(u64::from(count)).is_some();
        valid.then_some(IndexEntry { first_version, first_position, count })
    }

    pub(crate) fn last_version(&self) -> u64 {
        self.first_version + u64::from(self.count) - 1
    }
}

pub(crate) fn type_prefix(event_type: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(event_type.len() + 10);
    key.push(super::codec::TYPE);
    key.extend_from_slice(event_type.as_bytes());
    key.push(0);
    key
}

pub(crate) fn type_key(event_type: &str, first_position: u64) -> Vec<u8> {
    let mut key = type_prefix(event_type);
    key.extend_from_slice(&first_position.to_be_bytes());
    key
}

pub(crate) fn count_key(event_type: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(event_type.len() + 1);
    key.push(COUNT);
    key.extend_from_slice(event_type.as_bytes());
    key
}

/// An event-type index entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TypeEntry {
    /// Events of the type before this entry.
    pub(crate) before: u64,
    /// This entry's positions, ascending.
    pub(crate) positions: Vec<u64>,
}

impl TypeEntry {
    /// How many events of the type the log holds up to the end of this entry.
    pub(crate) fn through(&self) -> u64 {
        self.before + self.positions.len() as u64
    }

    /// Decodes the entry stored under `key`; `None` when it is damaged.
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Option<Self> {
        let first = be_u64(key.get(key.len().checked_sub(8)?..)?)?;
        let body = checked(key, value)?;
        let before = be_u64(body.get(..8)?)?;
        let positions = decode_positions(first, body.get(8..)?)?;
        Some(TypeEntry { before, positions })
    }

    fn encode(key: &[u8], before: u64, first: u64, positions: &[u64]) -> Vec<u8> {
        let mut body = before.to_be_bytes().to_vec();
        encode_positions(&mut body, first, positions);
        with_checksum(key, body)
    }
}

/// Decodes a type count stored under `key`; `None` when it is damaged.
pub(crate) fn decode_count(key: &[u8], value: &[u8]) -> Option<u64> {
    be_u64(checked(key, value)?)
}

fn encode_count(key: &[u8], count: u64) -> Vec<u8> {
    with_checksum(key, count.to_be_bytes().to_vec())
}

/// Adds the event-type index entries of one commit group (positions by type, ascending) and the new
/// counts to `batch`, and moves `counts` (events of each type so far) past them. Returns how many
/// entries it added.
pub(crate) fn insert_type_entries(
    batch: &mut sled::Batch,
    types: BTreeMap<String, Vec<u64>>,
    counts: &mut HashMap<String, u64>,
) -> usize {
    let entries = types.len();
    for (event_type, positions) in types {
        let first = positions.first().copied().unwrap_or_default();
        let key = type_key(&event_type, first);
        let count = counts.entry(event_type.clone()).or_default();
        batch.insert(key.clone(), TypeEntry::encode(&key, *count, first, &positions));
        *count += positions.len() as u64;
        let count_key = count_key(&event_type);
        batch.insert(count_key.clone(), encode_count(&count_key, *count));
    }
    entries
}

/// The positions, ascending, each as the LEB128 varint of its distance from the previous one (the
/// first from the key's first position, so it is 0).
fn encode_positions(value: &mut Vec<u8>, first: u64, positions: &[u64]) {
    let mut previous = first;
    for &position in positions {
        let mut delta = position - previous;
        previous = position;
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                value.push(byte);
                break;
            }
            value.push(byte | 0x80);
        }
    }
}

/// Decodes varint positions; `None` when they are damaged.
pub(crate) fn decode_positions(first: u64, value: &[u8]) -> Option<Vec<u64>> {
    let mut positions = Vec::new();
    let (mut previous, mut delta, mut shift) = (first, 0u64, 0u32);
    for &byte in value {
        delta |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            previous = previous.checked_add(delta)?;
            positions.push(previous);
            (delta, shift) = (0, 0);
        } else {
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }
    (shift == 0 && !positions.is_empty()).then_some(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_entries_round_trip_and_check_their_key() {
        let key = b"Sorder-1\x00\x00\x00\x00\x00\x00\x00\x00\x05".to_vec();
        let entry = IndexEntry { first_version: 5, first_position: 42, count: 3 };
        let value = entry.encode(&key);
        assert_eq!(IndexEntry::decode(&key, &value).ok(), Some(entry));
        let mut other = key.clone();
        other[1] = b'O';
        assert!(IndexEntry::decode(&other, &value).is_err(), "copied under another stream's key");
        for at in 0..value.len() {
            let mut flipped = value.clone();
            flipped[at] ^= 1;
            assert!(IndexEntry::decode(&key, &flipped).is_err(), "byte {at}");
        }
    }

    #[test]
    fn type_entries_chain_their_counts() {
        let mut batch = sled::Batch::default();
        let mut counts = HashMap::new();
        let mut types = BTreeMap::new();
        types.insert("A".to_owned(), vec![3, 5, 900]);
        assert_eq!(insert_type_entries(&mut batch, types, &mut counts), 1);
        let mut types = BTreeMap::new();
        types.insert("A".to_owned(), vec![1000]);
        insert_type_entries(&mut batch, types, &mut counts);
        assert_eq!(counts.get("A"), Some(&4));

        let key = type_key("A", 1000);
        let value = TypeEntry::encode(&key, 3, 1000, &[1000]);
        let entry = TypeEntry::decode(&key, &value);
        assert_eq!(entry.as_ref().map(TypeEntry::through), Some(4));
        assert_eq!(TypeEntry::decode(&type_key("B", 1000), &value), None, "another type's key");
        let count = count_key("A");
        assert_eq!(decode_count(&count, &encode_count(&count, 4)), Some(4));
        assert_eq!(decode_count(&count_key("B"), &encode_count(&count, 4)), None);
    }
}
