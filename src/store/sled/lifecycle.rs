//! The life of a stream in the sled store (format 3): the lifecycle key of each stream that was
//! truncated or deleted, read by readers and the writer, and written by the writer thread only.
//!
//! `D` + stream name → the JSON text of [`StreamInfo::encode_meta`] (truncation point, soft
//! deletions, tombstone and the last version when it was written), then a CRC-32 (u32 BE) of the key
//! and that text, so that a value damaged or copied under another stream's key is damage.

use super::codec::snapshot_key;
use super::config::Durability;
use super::files::{sled_error, Files};
use super::index::{checked, with_checksum};
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::StreamInfo;

/// Prefix of lifecycle keys: `D` + stream name (names hold no `0x00`, so the key names one stream).
pub(crate) const LIFE: u8 = b'D';

/// The lifecycle key of `stream`.
pub(crate) fn life_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 1);
    key.push(LIFE);
    key.extend_from_slice(stream.as_bytes());
    key
}

/// The value stored under `key` for `info`.
pub(crate) fn encode_life(key: &[u8], info: &StreamInfo) -> Vec<u8> {
    with_checksum(key, info.encode_meta().into_bytes())
}

/// Decodes the value stored under `key`; `None` when it is damaged.
pub(crate) fn decode_life(key: &[u8], value: &[u8]) -> Option<StreamInfo> {
    let text = std::str::from_utf8(checked(key, value)?).ok()?;
    let info = StreamInfo::decode_meta(text)?;
    // What the rules never write: a truncation point past the version after the last one.
    let end = info.last_version.unwrap_or(Version::ZERO).next();
    (info.truncated_before >= Version::FIRST && info.truncated_before <= end).then_some(info)
}

/// The error for a lifecycle value that does not decode.
pub(crate) fn life_damage() -> Error {
    Error::Corrupt { what: "stream lifecycle", position: Position::ZERO, reason: "it does not decode" }
}

impl Files {
    /// What the lifecycle key of `stream` holds (`StreamInfo::new()` when it has none): its
    /// `last_version` is the one the key was written with, not the stream's.
    pub(super) fn lifecycle(&self, stream: &str) -> Result<StreamInfo> {
        let key = life_key(stream);
        match self.tree.get(&key).map_err(sled_error)? {
            None => Ok(StreamInfo::new()),
            Some(value) => decode_life(&key, &value).ok_or_else(life_damage),
        }
    }

    /// What a reader knows of the life of `stream`, up to the durable `head`: the lifecycle key, and
    /// the last version of the key or of the stream index, whichever is greater.
    pub(super) fn stream_info(&self, stream: &str, head: u64) -> Result<StreamInfo> {
        let mut info = self.lifecycle(stream)?;
        let indexed = self.stream_version(stream, head)?.map(Version::new);
        info.last_version = info.last_version.max(indexed);
        Ok(info)
    }

    /// Writes the lifecycle of `stream` (with its `last_version`), after deleting its snapshots when
    /// `drop_snapshots` says so, then makes both durable under `Fsync` (one flush, one `fdatasync`).
    /// Snapshots go first: a crash between the two leaves a stream without snapshots (a cache) and
    /// never a deleted stream with them.
    pub(super) fn write_life(
        &self,
        stream: &str,
        info: &StreamInfo,
        drop_snapshots: bool,
        durability: Durability,
    ) -> Result<()> {
        if drop_snapshots {
            let mut batch = sled::Batch::default();
            for key in self.snapshots.range(snapshot_key(stream, 0)..=snapshot_key(stream, u64::MAX)).keys() {
                batch.remove(key.map_err(sled_error)?);
            }
            self.snapshots.apply_batch(batch).map_err(sled_error)?;
        }
        let key = life_key(stream);
        self.tree.insert(key.as_slice(), encode_life(&key, info)).map_err(sled_error)?;
        self.make_durable(durability)
    }

    /// Under `Fsync`: flushes sled and syncs, as a group commit does. Under `Buffered`, the flusher
    /// does it within `flush_every_ms`.
    pub(super) fn make_durable(&self, durability: Durability) -> Result<()> {
        if durability == Durability::Fsync {
            self.db.flush().map_err(sled_error)?;
            self.sync_to_disk()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::store::{DeleteMode, SoftDeletion};
    use crate::stream_id::StreamId;

    fn sample() -> StreamInfo {
        let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        StreamInfo {
            last_version: Some(Version::new(12)),
            truncated_before: Version::new(8),
            soft_deletions: vec![SoftDeletion { next_version: Version::new(8), at }],
            tombstone: false,
        }
    }

    #[test]
    fn the_lifecycle_round_trips_and_names_its_stream() {
        let key = life_key("cart-1");
        let value = encode_life(&key, &sample());
        assert_eq!(decode_life(&key, &value), Some(sample()));
        assert_eq!(decode_life(&life_key("cart-2"), &value), None, "copied under another stream's key");
        for at in 0..value.len() {
            let mut flipped = value.clone();
            flipped[at] ^= 0x04;
            assert_eq!(decode_life(&key, &flipped), None, "byte {at} flipped");
        }
        for len in 0..value.len() {
            assert_eq!(decode_life(&key, &value[..len]), None, "cut at {len}");
        }
    }

    #[test]
    fn a_tombstone_of_a_stream_never_written_round_trips() -> Result<()> {
        let stream = StreamId::new("never-1")?;
        let mut info = StreamInfo::new();
        assert!(info.delete(&stream, DeleteMode::Hard, Utc::now())?);
        let key = life_key(stream.as_str());
        assert_eq!(decode_life(&key, &encode_life(&key, &info)), Some(info));
        Ok(())
    }

    #[test]
    fn the_stored_text_is_the_one_the_storage_format_page_shows() {
        let key = life_key("cart-1");
        let mut info = sample();
        info.last_version = Some(Version::new(3));
        info.truncated_before = Version::new(4);
        info.soft_deletions[0].next_version = Version::new(4);
        let value = encode_life(&key, &info);
        let text = std::str::from_utf8(&value[..value.len() - 4]).unwrap_or_default();
        assert_eq!(text, r#"{"tb":4,"sd":[{"next_version":4,"at":"2023-11-14T22:13:20.123456Z"}],"hd":false,"lv":3}"#);
    }

    #[test]
    fn a_checksummed_value_the_rules_never_write_is_damage() {
        let mut info = sample();
        info.truncated_before = Version::new(14);
        let key = life_key("cart-1");
        assert_eq!(decode_life(&key, &encode_life(&key, &info)), None);
    }
}
