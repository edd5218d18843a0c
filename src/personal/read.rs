//! The read side of [`PersonalStore`]: personal fields decrypted while their key is readable, and
//! erased (JSON `null`, listed in the `annals-erased` header) once it was forgotten.

use std::collections::HashMap;

use super::cipher::{self, Place};
use super::keys::{self, Key};
use super::{PersonalStore, ERASED_HEADER, FIELDS_HEADER, KEY_HEADER, SUBJECT_HEADER};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::{Direction, EventStore, StreamInfo, StreamView};
use crate::stream_id::StreamId;

/// What an event's headers say about its personal fields.
struct Sealed {
    subject: String,
    version: Version,
    fields: Vec<String>,
}

impl<S: EventStore> PersonalStore<S> {
    /// `events` with their personal fields decrypted or erased.
    pub(super) async fn reveal(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        // One look at each subject's key stream per batch: whether the keys its events name are
        // still readable is decided there, never by the cache alone.
        let mut infos: HashMap<String, (StreamId, StreamInfo)> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for mut event in events {
            let Some(sealed) = sealed_of(&mut event)? else {
                out.push(event);
                continue;
            };
            if !infos.contains_key(&sealed.subject) {
                let stream = keys::key_stream(&sealed.subject, &event.event_type).map_err(|_| Error::Corrupt {
                    what: "personal field",
                    position: event.position,
                    reason: "the subject header does not name a key stream",
                })?;
                let info = self.inner.stream_info(&stream).await?;
                infos.insert(sealed.subject.clone(), (stream, info));
            }
            let key = match infos.get(&sealed.subject) {
                Some((stream, info)) if readable(info, sealed.version) => {
                    self.key_at(&sealed.subject, stream, sealed.version).await?
                }
                _ => {
                    self.cache().remove(&sealed.subject, sealed.version);
                    None
                }
            };
            out.push(open(event, &sealed, key.as_ref())?);
        }
        Ok(out)
    }

    /// The key of `subject` stored at `version` of its key stream, when a read of the stream as it
    /// is now ([`StreamView::Current`]) still shows it: from the cache, or read and cached.
    pub(super) async fn key_at(&self, subject: &str, stream: &StreamId, version: Version) -> Result<Option<Key>> {
        if let Some(key) = self.cache().get(subject, version) {
            return Ok(Some(key));
        }
        let found = self.inner.read_stream_chunk(stream, version, Direction::Forward, 1, StreamView::Current).await?;
        let Some(event) = found.into_iter().next().filter(|event| event.version == version) else {
            return Ok(None);
        };
        let key = keys::decode_key(&event)?;
        self.cache().insert(subject, version, key);
        Ok(Some(key))
    }
}

/// Whether the key at `version` is still shown by a read of its stream as it is now.
fn readable(info: &StreamInfo, version: Version) -> bool {
    !info.tombstone && version >= info.truncated_before && info.last_version.is_some_and(|last| version <= last)
}

/// What the event's headers say about its personal fields (taking the headers out), or `None` when
/// it has none.
fn sealed_of(event: &mut RecordedEvent) -> Result<Option<Sealed>> {
    let headers = &mut event.metadata.headers;
    let Some(subject) = headers.remove(SUBJECT_HEADER) else { return Ok(None) };
    let corrupt = |reason| Error::Corrupt { what: "personal field", position: event.position, reason };
    let version = headers
        .remove(KEY_HEADER)
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|version| *version > 0)
        .ok_or(corrupt("the key header is not a version"))?;
    let fields = headers.remove(FIELDS_HEADER).ok_or(corrupt("the fields header is missing"))?;
    let fields = fields.split(',').map(str::to_owned).collect();
    Ok(Some(Sealed { subject, version: Version::new(version), fields }))
}

/// The event with its fields decrypted with `key`, or erased when there is none.
fn open(mut event: RecordedEvent, sealed: &Sealed, key: Option<&Key>) -> Result<RecordedEvent> {
    let position: Position = event.position;
    let ranges = cipher::field_ranges(&event.payload, &sealed.fields).map_err(|_| Error::Corrupt {
        what: "personal field",
        position,
        reason: "the payload does not hold the fields its header lists",
    })?;
    let place = Place { id: event.id, event_type: &event.event_type, subject: &sealed.subject };
    let mut replacements = Vec::with_capacity(ranges.len());
    for (field, range) in sealed.fields.iter().zip(ranges) {
        let text = match key {
            Some(key) => {
                let stored = event.payload.get(range.clone()).unwrap_or_default();
                cipher::decrypt(key, &place, field, stored, position)?
            }
            None => "null".to_owned(),
        };
        replacements.push((range, text));
    }
    event.payload = cipher::splice(&event.payload, replacements);
    if key.is_none() {
        event.metadata.headers.insert(ERASED_HEADER.to_owned(), sealed.fields.join(","));
    }
    Ok(event)
}
