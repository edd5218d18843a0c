//! Personal data that can be erased without rewriting the log: crypto-shredding.
//!
//! Events are immutable, but a member's e-mail address must be erasable. Fields of an event marked
//! personal (`#[event(personal)]` in the derive, keyed by a field marked `#[event(subject)]`, or
//! [`NewEvent::with_personal_data`](crate::NewEvent::with_personal_data)) are stored encrypted with
//! a key of their *subject* (a member, a customer). [`PersonalStore::forget`] destroys that key:
//! from then on every read, replay, projection rebuild, export and time-travel query through a
//! [`PersonalStore`] shows those fields as JSON `null`, listed in the [`ERASED_HEADER`] header,
//! while the rest of each event, its position and the log stay as they were.
//!
//! ```
//! use annals::personal::{PersonalStore, ERASED_HEADER};
//! use annals::{Event, EventStore, ExpectedVersion, MemoryStore, ReadStream, StreamId};
//! use futures_util::TryStreamExt;
//!
//! #[derive(Event, Debug, PartialEq)]
//! enum MemberEvent {
//!     Joined {
//!         #[event(subject)]
//!         member_id: String,
//!         #[event(personal)]
//!         email: Option<String>,
//!         plan: String,
//!     },
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let store = PersonalStore::new(MemoryStore::new());
//! let stream = StreamId::new("member-7")?;
//! let joined = MemberEvent::Joined { member_id: "7".into(), email: Some("ada@example.com".into()), plan: "gold".into() };
//! store.append(&stream, ExpectedVersion::NoStream, vec![joined.to_new_event()?]).await?;
//!
//! // The store itself holds ciphertext; reads through the PersonalStore decrypt.
//! let raw: Vec<_> = store.inner().read_stream(&stream, ReadStream::forward()).try_collect().await?;
//! assert!(!raw[0].payload.contains("ada@example.com"));
//! let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
//! assert_eq!(MemberEvent::from_recorded(&events[0])?, joined);
//!
//! // Forget the member: the key is destroyed, the field reads as null.
//! let forgotten = store.forget("7").await?;
//! assert_eq!(forgotten.keys_destroyed, 1);
//! let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
//! assert_eq!(
//!     MemberEvent::from_recorded(&events[0])?,
//!     MemberEvent::Joined { member_id: "7".into(), email: None, plan: "gold".into() }
//! );
//! assert_eq!(events[0].metadata.headers[ERASED_HEADER], "email");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is stored
//!
//! - Each subject's key is an event of type [`KEY_EVENT_TYPE`] in the stream
//!   `$personal-<subject>` ([`KEY_STREAM_PREFIX`]), with the payload
//!   `{"algorithm":"ChaCha20-Poly1305","key":"<base64 of 32 random bytes>"}`. It is appended in the
//!   same atomic append as the first event that uses it, so it is exactly as durable as that event:
//!   never lost after an acknowledged append, never stored without it.
//! - Each personal field's value (its JSON text) is replaced by the JSON string
//!   `base64(nonce || ciphertext)`: ChaCha20-Poly1305 with a fresh random 96-bit nonce, and
//!   associated data binding it to its place (event id, event type, field name, subject), so that a
//!   ciphertext copied to another field or event does not decrypt.
//! - The event gets three headers: [`SUBJECT_HEADER`] (the subject, in clear),
//!   [`KEY_HEADER`] (the version of its key event) and [`FIELDS_HEADER`] (the encrypted fields,
//!   comma-separated). Reads through a `PersonalStore` take them out again.
//!
//! The subject is stored in clear, in a header and in the key stream's name: choose an identifier
//! that is not itself personal data (a member id, not an e-mail address).
//!
//! # Reading
//!
//! Reads through a `PersonalStore` give each event back exactly as it was appended while its key is
//! readable, and with its personal fields `null` (listed in [`ERASED_HEADER`]) once the key was
//! forgotten. Key streams are invisible through it: log reads leave their events out (so keys never
//! reach projections, subscriptions or relays reading through it), `list_streams` hides them and a
//! read of one is empty. Whether a key is still readable is asked of the store once per subject for
//! every page read, so a `forget` made through another `PersonalStore` or process is seen at once;
//! the cache only saves reading and decoding the key event again.
//!
//! Wrap the `PersonalStore` inside [`Upcasting`](crate::Upcasting), not around it: fields are
//! decrypted under the event type they were stored with, and upcasters then see plaintext.
//!
//! # What the guarantee is not
//!
//! - The store's own handle, not wrapped (`inner()`), shows the ciphertext and the key events; an
//!   [`export_jsonl`](crate::export_jsonl) through it includes the keys, so an import elsewhere
//!   still decrypts (a backup is a copy of the keys: forget there too, or let backups expire). An
//!   export through a `PersonalStore` shows plaintext or erased fields and no keys.
//! - Copies made while the key existed are outside the store: read models, projections' saved
//!   states, snapshots of aggregates (they are not encrypted), caches, logs, messages relayed to a
//!   broker. Rebuild read models after a `forget`, and keep personal data out of snapshots.
//! - On a storage engine that writes a log of its own (sled), the key's bytes may stay in its files
//!   until the engine rewrites them; `docs/personal-data.md` says what was measured.
//! - An event appended while its subject is being forgotten may be erased with the rest.
mod append;
mod cipher;
mod keys;
mod read;
mod store;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::position::ExpectedVersion;
use crate::store::{DeleteMode, EventStore};

pub use keys::{KEY_EVENT_TYPE, KEY_STREAM_PREFIX};

/// The header that names the subject of an event's encrypted fields (stored; reads through a
/// [`PersonalStore`] take it out).
pub const SUBJECT_HEADER: &str = "annals-personal-subject";

/// The header that holds the version of the key event an event's fields were encrypted with, in its
/// `$personal-<subject>` stream (stored; reads through a [`PersonalStore`] take it out).
pub const KEY_HEADER: &str = "annals-personal-key";

/// The header that lists an event's encrypted fields, comma-separated (stored; reads through a
/// [`PersonalStore`] take it out).
pub const FIELDS_HEADER: &str = "annals-personal-fields";

/// The header that reads through a [`PersonalStore`] add to an event whose subject was forgotten: the
/// fields that were erased (each now JSON `null`), comma-separated.
pub const ERASED_HEADER: &str = "annals-erased";

/// How many keys a [`PersonalStore`] keeps in memory by default.
pub const DEFAULT_KEY_CACHE: usize = 4096;

/// An [`EventStore`] that encrypts the personal fields of the events appended through it, decrypts
/// them on every read, and erases them for good when their subject is [forgotten](Self::forget).
/// Every other call is passed to the wrapped store. Cloning gives another handle sharing the cache.
///
/// Keys read are cached in memory, by subject and key version, at most
/// [`DEFAULT_KEY_CACHE`] of them (or [`with_key_cache`](Self::with_key_cache)): when full, the
/// entry cached first is evicted. The module documentation ([`crate::personal`]) has an example and
/// says exactly what is stored.
#[derive(Clone, Debug)]
pub struct PersonalStore<S> {
    inner: S,
    cache: Arc<Mutex<keys::KeyCache>>,
}

/// What [`PersonalStore::forget`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forgotten {
    /// The subject forgotten.
    pub subject: String,
    /// How many key events this call removed from the store (0 when the subject had no key left:
    /// already forgotten, or never seen).
    pub keys_destroyed: u64,
}

impl<S: EventStore> PersonalStore<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        PersonalStore { inner: store, cache: Arc::new(Mutex::new(keys::KeyCache::new(DEFAULT_KEY_CACHE))) }
    }

    /// Keeps at most `capacity` keys in memory (0: none, every read reads its key event again).
    pub fn with_key_cache(self, capacity: usize) -> Self {
        PersonalStore { cache: Arc::new(Mutex::new(keys::KeyCache::new(capacity))), ..self }
    }

    /// The wrapped store: its reads show the stored ciphertext and the key streams.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Destroys every key of `subject`: soft-deletes its key stream, then removes the key events
    /// from the store ([`EventStore::scavenge_stream`]), and evicts them from this handle's cache.
    /// Durable when it returns (for a store that syncs to disk): from the soft delete on, reads
    /// through any `PersonalStore` show the subject's fields as erased, and after the scavenge the
    /// store no longer holds the keys' events. Idempotent: forgetting again destroys nothing more,
    /// and a call interrupted between the two steps finishes the job when made again.
    ///
    /// New events of the subject appended afterwards get a new key (the next version of the key
    /// stream): the old events stay erased, the new ones decrypt, until the next `forget`.
    ///
    /// ```
    /// use annals::personal::PersonalStore;
    /// use annals::MemoryStore;
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let store = PersonalStore::new(MemoryStore::new());
    /// assert_eq!(store.forget("member-7").await?.keys_destroyed, 0);
    /// assert!(!store.is_forgotten("member-7").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::PersonalData`] when the subject does not fit in a stream name; storage errors (make
    /// the call again).
    pub async fn forget(&self, subject: &str) -> Result<Forgotten> {
        let stream = keys::key_stream(subject, "")?;
        match self.inner.delete_stream(&stream, ExpectedVersion::Any, DeleteMode::Soft).await {
            // A hard-deleted key stream is as forgotten as it gets: its scavenge removes every key.
            Ok(()) | Err(Error::StreamDeleted { .. }) => {}
            Err(error) => return Err(error),
        }
        self.cache().evict(subject);
        let keys_destroyed = self.inner.scavenge_stream(&stream).await?;
        self.cache().evict(subject);
        Ok(Forgotten { subject: subject.to_owned(), keys_destroyed })
    }

    /// Whether `subject` is forgotten now: it had a key, and none is readable (no event of it was
    /// appended through a `PersonalStore` since the last [`forget`](Self::forget)).
    ///
    /// # Errors
    /// [`Error::PersonalData`] when the subject does not fit in a stream name; storage errors.
    pub async fn is_forgotten(&self, subject: &str) -> Result<bool> {
        let info = self.inner.stream_info(&keys::key_stream(subject, "")?).await?;
        Ok(info.last_version.is_some() && (info.tombstone || info.current_version().is_none()))
    }

    /// The key cache, locked (briefly: never across an `.await`).
    fn cache(&self) -> MutexGuard<'_, keys::KeyCache> {
        // The cache holds no invariant a panic could break half-way: keep using it.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
