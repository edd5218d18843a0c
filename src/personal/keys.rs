//! The subjects' keys: where they are stored (one `$personal-<subject>` stream each), the event
//! that holds one, and the bounded cache of those already read.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Generate, Key as AeadKey};
use chacha20poly1305::ChaCha20Poly1305;
use serde::{Deserialize, Serialize};

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::position::Version;
use crate::stream_id::StreamId;

/// The prefix of the streams that hold the subjects' keys: `$personal-<subject>`.
pub const KEY_STREAM_PREFIX: &str = "$personal-";

/// The event type of a key event.
pub const KEY_EVENT_TYPE: &str = "$PersonalKey";

/// The algorithm every key is for, as stored in its event.
pub(crate) const ALGORITHM: &str = "ChaCha20-Poly1305";

/// A subject's key: 32 bytes for ChaCha20-Poly1305.
pub(crate) type Key = AeadKey<ChaCha20Poly1305>;

/// The payload of a key event.
#[derive(Serialize, Deserialize)]
struct KeyPayload {
    algorithm: String,
    key: String,
}

/// The key stream of `subject`. `event_type` names the event the subject came with, for the error.
///
/// # Errors
/// [`Error::PersonalData`] when the subject is empty or does not fit in a stream name.
pub(crate) fn key_stream(subject: &str, event_type: &str) -> Result<StreamId> {
    let problem = |problem| Error::PersonalData {
        event_type: event_type.to_owned(),
        subject: subject.to_owned(),
        field: None,
        problem,
    };
    if subject.is_empty() {
        return Err(problem("the subject is empty"));
    }
    StreamId::new(format!("{KEY_STREAM_PREFIX}{subject}"))
        .map_err(|_| problem("the subject does not fit in a stream name (at most 246 bytes, no control characters)"))
}

/// Whether `stream` is a key stream.
pub(crate) fn is_key_stream(stream: &str) -> bool {
    stream.starts_with(KEY_STREAM_PREFIX)
}

/// A fresh random key and the event that stores it.
///
/// # Errors
/// [`Error::Storage`] when the operating system's random number generator fails.
pub(crate) fn new_key() -> Result<(Key, NewEvent)> {
    let key = Key::try_generate().map_err(Error::storage)?;
    let payload = serde_json::to_string(&KeyPayload { algorithm: ALGORITHM.to_owned(), key: STANDARD.encode(key) })
        .map_err(|source| Error::Serialize { event_type: KEY_EVENT_TYPE.to_owned(), source })?;
    Ok((key, NewEvent::trusted_json(KEY_EVENT_TYPE, payload)))
}

/// The key a key event holds.
///
/// # Errors
/// [`Error::Corrupt`] when the event is not a key event of the known algorithm with a 32-byte key.
pub(crate) fn decode_key(event: &RecordedEvent) -> Result<Key> {
    let corrupt = |reason| Error::Corrupt { what: "personal key", position: event.position, reason };
    if event.event_type != KEY_EVENT_TYPE {
        return Err(corrupt("the event in a key stream is not a key event"));
    }
    let payload: KeyPayload =
        serde_json::from_str(&event.payload).map_err(|_| corrupt("the key event's payload does not decode"))?;
    if payload.algorithm != ALGORITHM {
        return Err(corrupt("the key is for an unknown algorithm"));
    }
    let bytes = STANDARD.decode(payload.key.as_bytes()).map_err(|_| corrupt("the key is not base64"))?;
    Key::try_from(bytes.as_slice()).map_err(|_| corrupt("the key is not 32 bytes long"))
}

/// The keys read so far, by subject and version of the key event, at most `capacity` of them: when
/// full, the entry cached first is evicted (first in, first out). Keys of forgotten subjects are
/// evicted by [`forget`](crate::personal::PersonalStore::forget).
pub(crate) struct KeyCache {
    capacity: usize,
    keys: HashMap<(String, Version), Key>,
    order: VecDeque<(String, Version)>,
}

impl KeyCache {
    /// An empty cache of at most `capacity` keys (0: no caching).
    pub(crate) fn new(capacity: usize) -> Self {
        KeyCache { capacity, keys: HashMap::new(), order: VecDeque::new() }
    }

    /// The cached key of `subject` at `version`.
    pub(crate) fn get(&self, subject: &str, version: Version) -> Option<Key> {
        self.keys.get(&(subject.to_owned(), version)).copied()
    }

    /// Caches `key`, evicting the oldest entries beyond the capacity.
    pub(crate) fn insert(&mut self, subject: &str, version: Version, key: Key) {
        if self.capacity == 0 {
            return;
        }
        let entry = (subject.to_owned(), version);
        if self.keys.insert(entry.clone(), key).is_none() {
            self.order.push_back(entry);
        }
        while self.keys.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.keys.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// Evicts the key of `subject` at `version`.
    pub(crate) fn remove(&mut self, subject: &str, version: Version) {
        if self.keys.remove(&(subject.to_owned(), version)).is_some() && self.order.len() > 2 * self.capacity {
            // The order keeps entries already removed until here: drop them, so it stays bounded.
            let keys = &self.keys;
            self.order.retain(|entry| keys.contains_key(entry));
        }
    }

    /// Evicts every key of `subject`.
    pub(crate) fn evict(&mut self, subject: &str) {
        self.keys.retain(|(cached, _), _| cached != subject);
        self.order.retain(|(cached, _)| cached != subject);
    }

    /// How many keys are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

impl fmt::Debug for KeyCache {
    /// Shows how full the cache is, never a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache").field("capacity", &self.capacity).field("cached", &self.keys.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_evicts_the_oldest_first() -> Result<()> {
        let mut cache = KeyCache::new(2);
        let (a, _) = new_key()?;
        cache.insert("a", Version::FIRST, a);
        cache.insert("b", Version::FIRST, a);
        cache.insert("a", Version::FIRST, a);
        assert_eq!(cache.len(), 2);
        cache.insert("c", Version::FIRST, a);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", Version::FIRST).is_none(), "the oldest was evicted");
        assert!(cache.get("c", Version::FIRST).is_some());
        cache.evict("c");
        assert!(cache.get("c", Version::FIRST).is_none());
        assert_eq!(cache.len(), 1);
        let mut none = KeyCache::new(0);
        none.insert("a", Version::FIRST, a);
        assert_eq!(none.len(), 0);
        Ok(())
    }

    #[test]
    fn subjects_make_key_streams_and_bad_ones_are_refused() -> Result<()> {
        assert_eq!(key_stream("member-7", "Joined")?.as_str(), "$personal-member-7");
        assert!(is_key_stream("$personal-member-7") && !is_key_stream("member-7"));
        let empty = key_stream("", "Joined");
        assert!(matches!(empty, Err(Error::PersonalData { problem: "the subject is empty", .. })), "{empty:?}");
        let long = key_stream(&"x".repeat(300), "Joined");
        assert!(matches!(long, Err(Error::PersonalData { .. })), "{long:?}");
        Ok(())
    }
}
