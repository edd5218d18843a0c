//! Scavenging in the sled store: the writer thread removes, for good, the events that a stream's
//! lifecycle says may go, by rewriting their log records with holes (`codec.rs`, format 3) and
//! deleting the stream index entries left with nothing but holes, in one sled batch per step.
//!
//! A step is planned from what is stored, then applied by the writer (which also forgets the removed
//! ids), so nothing else writes the log meanwhile. Event-type index entries are left as they are:
//! they may point at holes, which filtered reads skip.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sled::IVec;
use uuid::Uuid;

use super::codec::{log_key, stream_key, Record};
use super::files::Files;
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::{Direction, ScavengeChunk, StreamInfo};

/// What one step removes: the sled batch that does it, and what it removed.
pub(super) struct Removal {
    /// Rewritten records and deleted stream index entries, to apply at once.
    pub(super) batch: sled::Batch,
    /// The ids of the removed events, for the writer to forget.
    pub(super) ids: Vec<Uuid>,
    /// How many events it removes.
    pub(super) removed: u64,
    /// Their payload, type and metadata bytes.
    pub(super) bytes: u64,
}

/// The lifecycle of each stream a step meets, read once per step.
#[derive(Default)]
struct Lives(HashMap<String, StreamInfo>);

impl Lives {
    fn get(&mut self, files: &Files, stream: &str) -> Result<&StreamInfo> {
        if !self.0.contains_key(stream) {
            let info = files.lifecycle(stream)?;
            self.0.insert(stream.to_owned(), info);
        }
        self.0.get(stream).ok_or(Error::Closed)
    }
}

/// The removals a step has decided so far.
#[derive(Default)]
struct Plan {
    /// The records to rewrite, by first position, with the positions each loses.
    records: BTreeMap<u64, (Record<IVec>, BTreeSet<u64>)>,
    /// The versions removed, by stream.
    touched: BTreeMap<String, Vec<u64>>,
    ids: Vec<Uuid>,
    bytes: u64,
}

impl Plan {
    /// Removes the event at `position` of `record`, which must be stored (not a hole).
    fn remove(&mut self, record: &Record<IVec>, position: u64) -> Result<()> {
        let event = record.event(position)?.ok_or_else(|| damage(position, "the event to remove is gone"))?;
        self.bytes += (event.payload.len() + event.event_type.len() + event.metadata.byte_len()) as u64;
        self.ids.push(event.id);
        self.touched.entry(event.stream.as_str().to_owned()).or_default().push(event.version.get());
        self.records.entry(record.first).or_insert_with(|| (record.clone(), BTreeSet::new())).1.insert(position);
        Ok(())
    }

    fn removed(&self) -> u64 {
        self.records.values().map(|(_, positions)| positions.len() as u64).sum()
    }

    /// Whether the event at `position` is a hole once this plan is applied.
    fn is_hole(&self, files: &Files, position: u64, cache: &mut Option<Record<IVec>>) -> Result<bool> {
        let planned = self.records.range(..=position).next_back();
        if planned.is_some_and(|(_, (record, positions))| record.contains(position) && positions.contains(&position)) {
            return Ok(true);
        }
        if !cache.as_ref().is_some_and(|r| r.contains(position)) {
            *cache = files.record_at(position)?;
        }
        match cache {
            Some(record) => record.is_hole(position),
            None => Err(damage(position, "a stream index entry points past the log")),
        }
    }

    /// The batch: the rewritten records, and the deletion of every stream index entry holding a
    /// removed version whose versions are all removable and whose events are all holes after it.
    fn finish(self, files: &Files, lives: &mut Lives) -> Result<Removal> {
        let mut batch = sled::Batch::default();
        for (first, (record, positions)) in &self.records {
            batch.insert(&log_key(*first), record.without(positions)?);
        }
        let mut cache = None;
        for (stream, versions) in &self.touched {
            let info = lives.get(files, stream)?.clone();
            let mut checked_to = 0;
            for &version in versions {
                if version <= checked_to {
                    continue;
                }
                let Some(entry) = files.stream_entries(stream, version, Direction::Forward).next().transpose()? else {
                    continue;
                };
                checked_to = entry.last_version().max(version);
                if entry.first_version > version || !info.is_removable(Version::new(entry.last_version())) {
                    continue;
                }
                let mut all_holes = true;
                for position in entry.first_position..entry.first_position + u64::from(entry.count) {
                    if !self.is_hole(files, position, &mut cache)? {
                        all_holes = false;
                        break;
                    }
                }
                if all_holes {
                    batch.remove(stream_key(stream, entry.first_version));
                }
            }
        }
        let removed = self.removed();
        Ok(Removal { batch, ids: self.ids, removed, bytes: self.bytes })
    }
}

fn damage(position: u64, reason: &'static str) -> Error {
    Error::Corrupt { what: "log record", position: Position::new(position), reason }
}

/// Plans one step of a scavenge over the positions `from .. from + max`, up to the durable `head`.
pub(super) fn plan_chunk(files: &Files, head: u64, from: Position, max: usize) -> Result<(ScavengeChunk, Removal)> {
    let start = from.get().max(1);
    let end = start.saturating_add(max.max(1) as u64).min(head.saturating_add(1)).max(start);
    let mut lives = Lives::default();
    let mut plan = Plan::default();
    let mut examined = 0;
    if start < end {
        for record in files.records_from(start) {
            let record = record?;
            if record.first >= end {
                break;
            }
            for position in start.max(record.first)..=record.last().min(end - 1) {
                let Some((_, stream, version)) = record.identity(position)? else { continue };
                examined += 1;
                if lives.get(files, stream)?.is_removable(Version::new(version)) {
                    plan.remove(&record, position)?;
                }
            }
        }
    }
    let removal = plan.finish(files, &mut lives)?;
    let chunk = ScavengeChunk {
        next: Position::new(end),
        examined,
        removed: removal.removed,
        bytes_removed: removal.bytes,
        end: end > head,
    };
    Ok((chunk, removal))
}

/// Plans the removal of what a scavenge would remove of one stream, through its index, up to the
/// durable `head`.
pub(super) fn plan_stream(files: &Files, head: u64, stream: &str) -> Result<Removal> {
    let mut lives = Lives::default();
    let info = lives.get(files, stream)?.clone();
    let mut plan = Plan::default();
    let mut cache: Option<Record<IVec>> = None;
    for entry in files.stream_entries(stream, 1, Direction::Forward) {
        let entry = entry?;
        if !info.is_removable(Version::new(entry.first_version)) {
            break;
        }
        for offset in 0..u64::from(entry.count) {
            let (version, position) = (entry.first_version + offset, entry.first_position + offset);
            if position > head || !info.is_removable(Version::new(version)) {
                break;
            }
            if !cache.as_ref().is_some_and(|r| r.contains(position)) {
                cache = Some(files.record_at(position)?.ok_or_else(|| damage(position, "missing below the head"))?);
            }
            let Some(record) = cache.as_ref() else { continue };
            match record.identity(position)? {
                None => continue,
                Some((_, name, at)) if name == stream && at == version => plan.remove(record, position)?,
                Some(_) => {
                    return Err(Error::Corrupt {
                        what: "stream index entry",
                        position: Position::new(position),
                        reason: "it points at another event",
                    })
                }
            }
        }
    }
    plan.finish(files, &mut lives)
}
