//! The write side of [`PersonalStore`]: each personal field is encrypted with its subject's key, and
//! a subject's first key is appended in the same atomic append as the first event that uses it.

use std::collections::HashSet;

use super::cipher::{self, FieldProblem, Place};
use super::keys::{self, is_key_stream, Key, KEY_STREAM_PREFIX};
use super::{PersonalStore, ERASED_HEADER, FIELDS_HEADER, KEY_HEADER, SUBJECT_HEADER};
use crate::envelope::{NewEvent, PersonalData};
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Version};
use crate::store::{AppendResult, EventStore, StreamAppend};
use crate::stream_id::StreamId;

/// How many times an append is made again when another writer created a subject's first key in
/// the meantime (each time, the key it created is read and the fields encrypted with it).
const KEY_RACE_ATTEMPTS: usize = 8;

/// The key an append encrypts one subject's fields with.
struct SubjectKey {
    subject: String,
    stream: StreamId,
    /// The version of the key event in its stream (the one the events' header names).
    version: Version,
    key: Key,
    /// The key event to append with the events, when the key is new.
    new_event: Option<NewEvent>,
}

/// The headers only [`PersonalStore`] writes.
const RESERVED_HEADERS: [&str; 4] = [SUBJECT_HEADER, KEY_HEADER, FIELDS_HEADER, ERASED_HEADER];

impl<S: EventStore> PersonalStore<S> {
    /// `append_multi` with every personal field encrypted.
    pub(super) async fn append_protected(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        check_request(&appends)?;
        if !appends.iter().flat_map(|append| &append.events).any(|event| event.personal.is_some()) {
            return self.inner.append_multi(appends).await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let keys = self.keys_for(&appends).await?;
            let mut request: Vec<StreamAppend> = keys
                .iter()
                .filter_map(|k| {
                    let event = k.new_event.clone()?;
                    Some(StreamAppend::new(k.stream.clone(), ExpectedVersion::NoStream, vec![event]))
                })
                .collect();
            let created = request.len();
            for append in &appends {
                let events = append.events.iter().map(|event| seal(event, &keys)).collect::<Result<Vec<_>>>()?;
                request.push(StreamAppend::new(append.stream.clone(), append.expected, events));
            }
            match self.inner.append_multi(request).await {
                Ok(mut results) => {
                    self.remember_created(&keys, &results);
                    return Ok(results.split_off(created.min(results.len())));
                }
                Err(Error::WrongExpectedVersion { stream, .. })
                    if attempt < KEY_RACE_ATTEMPTS
                        && keys.iter().any(|k| k.new_event.is_some() && k.stream == stream) =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The key of each subject of the request, read or made: in the order subjects first appear.
    async fn keys_for(&self, appends: &[StreamAppend]) -> Result<Vec<SubjectKey>> {
        let mut keys: Vec<SubjectKey> = Vec::new();
        for event in appends.iter().flat_map(|append| &append.events) {
            let Some(personal) = &event.personal else { continue };
            if personal.fields.is_empty() || keys.iter().any(|k| k.subject == personal.subject) {
                continue;
            }
            let stream = keys::key_stream(&personal.subject, &event.event_type)?;
            let info = self.inner.stream_info(&stream).await?;
            if info.tombstone {
                return Err(Error::StreamDeleted { stream });
            }
            let current = match info.current_version() {
                Some(version) => self.key_at(&personal.subject, &stream, version).await?.map(|key| (version, key)),
                None => None,
            };
            let subject = personal.subject.clone();
            keys.push(match current {
                Some((version, key)) => SubjectKey { subject, stream, version, key, new_event: None },
                None => {
                    // The next append to the key stream gets the version after its last one ever.
                    let version = info.last_version.map_or(Version::FIRST, Version::next);
                    let (key, event) = keys::new_key()?;
                    SubjectKey { subject, stream, version, key, new_event: Some(event) }
                }
            });
        }
        Ok(keys)
    }

    /// Caches the keys an append created, when they landed at the version their events name.
    fn remember_created(&self, keys: &[SubjectKey], results: &[AppendResult]) {
        let created = keys.iter().filter(|k| k.new_event.is_some());
        let mut cache = self.cache();
        for (key, result) in created.zip(results) {
            if result.version == key.version {
                cache.insert(&key.subject, key.version, key.key);
            }
        }
    }
}

/// Refuses appends to key streams and events carrying the headers only a `PersonalStore` writes.
fn check_request(appends: &[StreamAppend]) -> Result<()> {
    for append in appends {
        let subject_of = |event: &NewEvent| event.personal.as_ref().map(|p| p.subject.clone()).unwrap_or_default();
        if is_key_stream(append.stream.as_str()) {
            let event_type = append.events.first().map(|e| e.event_type.clone()).unwrap_or_default();
            return Err(Error::PersonalData {
                event_type,
                subject: append.stream.as_str().trim_start_matches(KEY_STREAM_PREFIX).to_owned(),
                field: Some(append.stream.to_string()),
                problem: "appends to a key stream are refused: only PersonalStore writes keys, in the stream",
            });
        }
        for event in &append.events {
            if let Some(header) = RESERVED_HEADERS.iter().find(|h| event.metadata.headers.contains_key(**h)) {
                return Err(Error::PersonalData {
                    event_type: event.event_type.clone(),
                    subject: subject_of(event),
                    field: Some((*header).to_owned()),
                    problem: "only PersonalStore writes the header",
                });
            }
        }
    }
    Ok(())
}

/// `event` with its personal fields encrypted with its subject's key from `keys`, the headers that
/// say so, and its personal declaration cleared.
fn seal(event: &NewEvent, keys: &[SubjectKey]) -> Result<NewEvent> {
    let mut sealed = event.clone();
    let Some(personal) = sealed.personal.take() else { return Ok(sealed) };
    if personal.fields.is_empty() {
        return Ok(sealed);
    }
    let problem = |field: Option<&str>, problem| Error::PersonalData {
        event_type: event.event_type.clone(),
        subject: personal.subject.clone(),
        field: field.map(str::to_owned),
        problem,
    };
    check_fields(&personal, problem)?;
    let Some(key) = keys.iter().find(|k| k.subject == personal.subject) else {
        return Err(problem(None, "no key was found or made for the subject"));
    };
    let ranges = cipher::field_ranges(&event.payload, &personal.fields).map_err(|found| match found {
        FieldProblem::NotAnObject => problem(None, "the payload is not a JSON object"),
        FieldProblem::Missing(field) => problem(Some(&field), "the payload has no field"),
        FieldProblem::Twice(field) => problem(Some(&field), "the payload has twice the field"),
    })?;
    let place = Place { id: event.id, event_type: &event.event_type, subject: &personal.subject };
    let mut replacements = Vec::with_capacity(ranges.len());
    for (field, range) in personal.fields.iter().zip(ranges) {
        let plaintext = event.payload.get(range.clone()).unwrap_or_default();
        replacements.push((range, cipher::encrypt(&key.key, &place, field, plaintext)?));
    }
    sealed.payload = cipher::splice(&event.payload, replacements);
    let headers = &mut sealed.metadata.headers;
    headers.insert(SUBJECT_HEADER.to_owned(), personal.subject.clone());
    headers.insert(KEY_HEADER.to_owned(), key.version.get().to_string());
    headers.insert(FIELDS_HEADER.to_owned(), personal.fields.join(","));
    Ok(sealed)
}

/// Checks the declared field names: each once, none with a comma (the header lists them with
/// commas).
fn check_fields(personal: &PersonalData, problem: impl Fn(Option<&str>, &'static str) -> Error) -> Result<()> {
    let mut seen = HashSet::with_capacity(personal.fields.len());
    for field in &personal.fields {
        if field.contains(',') {
            return Err(problem(Some(field), "a personal field's name cannot contain a comma"));
        }
        if !seen.insert(field.as_str()) {
            return Err(problem(Some(field), "the field is declared personal twice"));
        }
    }
    Ok(())
}
