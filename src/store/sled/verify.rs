//! [`SledStore::verify`]: a full check of a store's bytes and their agreement with each other.

use std::collections::HashMap;

use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::codec::{be_u64, decode_checkpoint, decode_snapshot, Record, LOG, STREAM, TYPE};
use super::files::sled_error;
use super::ids;
use super::index::{IndexEntry, TypeEntry};
use super::lifecycle::{decode_life, LIFE};
use super::SledStore;
use crate::error::Result;
use crate::position::{Position, Version};
use crate::store::StreamInfo;
use crate::stream_id::StreamId;

/// What [`SledStore::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Events that decode.
    pub events: u64,
    /// Log records read.
    pub records: u64,
    /// Streams in the index.
    pub streams: u64,
    /// Stream index entries read.
    pub index_entries: u64,
    /// Checkpoints that decode.
    pub checkpoints: u64,
    /// Snapshots that decode.
    pub snapshots: u64,
    /// Events a scavenge removed: holes in their records, which are not damage.
    pub scavenged: u64,
    /// Streams hard-deleted or soft-deleted at least once (their lifecycle says so).
    pub deleted_streams: u64,
    /// Streams whose reads start past version 1: truncated, by a soft delete too.
    pub truncated_streams: u64,
    /// Everything that is wrong, in the order found.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing [`SledStore::verify`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProblem {
    /// Where: the position of the event or record (`Position::ZERO` when it has none).
    pub position: Position,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "position {}: {}", self.position, self.what)
    }
}

/// What the log walk learned about each position, for the index check.
enum Slot {
    /// An event that decodes.
    Event(Placed),
    /// An event a scavenge removed.
    Hole,
    /// Nothing that decodes: damage, reported already.
    Damaged,
}

/// An event that decodes.
struct Placed {
    stream: u32,
    version: u64,
    event_type: String,
}

impl Slot {
    fn event(&self) -> Option<&Placed> {
        match self {
            Slot::Event(placed) => Some(placed),
            Slot::Hole | Slot::Damaged => None,
        }
    }
}

/// The lifecycle of every stream that has one, by name: which versions a scavenge may have removed.
#[derive(Default)]
struct Lives(HashMap<String, StreamInfo>);

impl Lives {
    /// Whether a scavenge may have removed version `version` of `stream`.
    fn removable(&self, stream: &str, version: u64) -> bool {
        self.0.get(stream).is_some_and(|info| info.is_removable(Version::new(version)))
    }
}

impl SledStore {
    /// Checks the whole store: every log record decodes (checksums included) and positions run from
    /// 1 to the head without a gap; `recorded_at` never decreases; every event decodes, its id is
    /// unique and its version is the next of its stream; the stream index covers every event exactly
    /// once, at the right position; every checkpoint and snapshot decodes; every stream's lifecycle
    /// key decodes. Events a scavenge removed (holes in their records, index entries deleted, versions
    /// skipped) are not damage when the stream's lifecycle lets a scavenge remove them: the report
    /// counts them ([`VerifyReport::scavenged`]), and the streams deleted or truncated. Reads
    /// everything, so it takes about as long as a full replay; it blocks the calling thread.
    ///
    /// ```
    /// use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamId};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let store = SledStore::open(dir.path())?;
    /// store.append(&StreamId::new("a")?, ExpectedVersion::Any, vec![NewEvent::raw("E", "{}")]).await?;
    /// let report = store.verify()?;
    /// assert!(report.is_ok(), "{:?}", report.problems);
    /// assert_eq!((report.events, report.streams), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be read; damage is reported in the
    /// report, not as an error, except a panic inside sled, which is
    /// [`Error::Corrupt`](crate::Error::Corrupt).
    pub fn verify(&self) -> Result<VerifyReport> {
        super::recovery::guarded(super::recovery::DATA_FILE_DAMAGE, || self.verify_all())
    }

    fn verify_all(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut names: Vec<String> = Vec::new();
        let lives = self.verify_lives(&mut report)?;
        let mut ids = HashMap::new();
        let mut placed = self.verify_log(&mut report, &mut names, &mut ids, &lives)?;
        self.verify_ids(&mut report, &names, &placed, &ids, &lives)?;
        self.verify_index(&mut report, &names, &mut placed, &lives)?;
        self.verify_type_index(&mut report, &placed)?;
        self.verify_side_trees(&mut report)?;
        Ok(report)
    }

    /// Reads every stream's lifecycle key; one that does not decode is a problem.
    fn verify_lives(&self, report: &mut VerifyReport) -> Result<Lives> {
        let mut lives = Lives::default();
        for item in self.inner.files.tree.scan_prefix([LIFE]) {
            let (key, value) = item.map_err(sled_error)?;
            let name = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
            let Some(info) = decode_life(&key, &value) else {
                let what = format!("the lifecycle of {name:?} does not decode");
                report.problems.push(VerifyProblem { position: Position::ZERO, what });
                continue;
            };
            if info.tombstone || !info.soft_deletions.is_empty() {
                report.deleted_streams += 1;
            }
            if info.truncated_before > Version::FIRST {
                report.truncated_streams += 1;
            }
            lives.0.insert(name, info);
        }
        Ok(lives)
    }

    /// Walks the log records; returns what is at each position (index = position - 1).
    fn verify_log(
        &self,
        report: &mut VerifyReport,
        names: &mut Vec<String>,
        ids: &mut HashMap<Uuid, u64>,
        lives: &Lives,
    ) -> Result<Vec<Slot>> {
        let head = self.durable_head();
        let mut placed = Vec::with_capacity(usize::try_from(head).unwrap_or(0));
        let mut problem = |position: u64, what: String| {
            report.problems.push(VerifyProblem { position: Position::new(position), what })
        };
        let mut stream_numbers: HashMap<String, u32> = HashMap::new();
        let mut versions: HashMap<u32, u64> = HashMap::new();
        let mut next = 1;
        let mut last_recorded = DateTime::<Utc>::MIN_UTC;
        let (mut events, mut records) = (0, 0);
        for item in self.inner.files.tree.scan_prefix([LOG]) {
            let (key, value) = item.map_err(sled_error)?;
            let Some(first) = key.get(1..).and_then(be_u64) else {
                problem(0, "a log key is not a position".into());
                continue;
            };
            records += 1;
            let record = match Record::parse(first, value) {
                Ok(record) => record,
                Err(error) => {
                    problem(first, format!("log record does not decode: {error}"));
                    continue;
                }
            };
            if record.first != next {
                problem(record.first, format!("record starts at {}, the previous ended before {next}", record.first));
            }
            if record.recorded_at < last_recorded {
                problem(record.first, "recorded_at goes back in time".into());
            }
            last_recorded = record.recorded_at;
            for position in record.first..=record.last() {
                while placed.len() + 1 < position as usize {
                    placed.push(Slot::Damaged);
                }
                let event = match record.event(position) {
                    Ok(Some(event)) => event,
                    Ok(None) => {
                        report.scavenged += 1;
                        placed.push(Slot::Hole);
                        continue;
                    }
                    Err(error) => {
                        problem(position, format!("event does not decode: {error}"));
                        placed.push(Slot::Damaged);
                        continue;
                    }
                };
                events += 1;
                if ids.insert(event.id, position).is_some() {
                    problem(position, format!("event id {} is stored twice", event.id));
                }
                let number = *stream_numbers.entry(event.stream.as_str().to_owned()).or_insert_with(|| {
                    names.push(event.stream.as_str().to_owned());
                    (names.len() - 1) as u32
                });
                let expected = versions.get(&number).copied().unwrap_or(0) + 1;
                let version = event.version.get();
                // Versions skipped must be ones the stream's lifecycle lets a scavenge remove.
                let skipped = version > expected && lives.removable(event.stream.as_str(), version - 1);
                if version != expected && !skipped {
                    problem(position, format!("{} version {}, expected {expected}", event.stream, event.version));
                }
                versions.insert(number, version.max(expected));
                placed.push(Slot::Event(Placed { stream: number, version, event_type: event.event_type }));
            }
            next = record.last() + 1;
        }
        if next - 1 != head {
            problem(next - 1, format!("the log ends at {}, the head is {head}", next - 1));
        }
        report.events = events;
        report.records = records;
        Ok(placed)
    }

    /// Checks the event-id index and the stream heads against the log: every event at or before the
    /// mark has its id key, every id key names a stored event with that id, and every stream with an
    /// event at or before the mark has a head key at its last version there (or below what its
    /// lifecycle key says was written, for removed versions).
    fn verify_ids(
        &self,
        report: &mut VerifyReport,
        names: &[String],
        placed: &[Slot],
        stored: &HashMap<Uuid, u64>,
        lives: &Lives,
    ) -> Result<()> {
        let tree = &self.inner.files.tree;
        let mut problem = |what: String| report.problems.push(VerifyProblem { position: Position::ZERO, what });
        let mark = match tree.get(ids::MARK_KEY).map_err(sled_error)? {
            None => 0,
            Some(value) => ids::decode_number(ids::MARK_KEY, &value).unwrap_or_else(|| {
                problem("the event-id index's mark does not decode".into());
                0
            }),
        };
        if mark > placed.len() as u64 {
            problem(format!("the event-id index's mark {mark} is past the end of the log"));
        }
        let mut indexed = 0u64;
        for item in tree.scan_prefix([ids::ID]) {
            let (key, value) = item.map_err(sled_error)?;
            let id = key.get(1..).and_then(|bytes| Uuid::from_slice(bytes).ok());
            let position = ids::decode_number(&key, &value);
            let (Some(id), Some(position)) = (id, position) else {
                problem(format!("an event-id index entry does not decode (key {:?})", key.as_ref()));
                continue;
            };
            if stored.get(&id) == Some(&position) {
                indexed += 1;
            } else {
                problem(format!("the event-id index places {id} at {position}, where the log does not have it"));
            }
        }
        let below = stored.values().filter(|position| **position <= mark).count() as u64;
        if indexed < below {
            problem(format!("{} events at or before the id index's mark have no id key", below - indexed));
        }
        let mut heads: HashMap<u32, u64> = HashMap::new();
        for slot in placed.iter().take(usize::try_from(mark).unwrap_or(usize::MAX)) {
            if let Some(event) = slot.event() {
                let head = heads.entry(event.stream).or_default();
                *head = (*head).max(event.version);
            }
        }
        let numbers: HashMap<&str, u32> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
        for item in tree.scan_prefix([ids::HEAD]) {
            let (key, value) = item.map_err(sled_error)?;
            let name = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
            let Some(version) = ids::decode_number(&key, &value) else {
                problem(format!("the head of {name:?} does not decode"));
                continue;
            };
            let number = numbers.get(name.as_str()).copied();
            let in_log = number.and_then(|n| heads.remove(&n)).unwrap_or(0);
            let written = lives.0.get(&name).and_then(|info| info.last_version).map_or(0, Version::get);
            if version < in_log || (version > in_log && version > written) {
                problem(format!("the head of {name:?} says version {version}, the log has {in_log}"));
            }
        }
        for (number, version) in heads {
            let name = names.get(number as usize).map_or("?", String::as_str);
            problem(format!("{name:?} has events up to version {version} before the id index's mark but no head"));
        }
        Ok(())
    }

    /// Checks that the stream index covers every event once, where the log has it; versions a
    /// scavenge removed (holes, deleted entries) must be ones their stream's lifecycle lets it remove.
    fn verify_index(
        &self,
        report: &mut VerifyReport,
        names: &[String],
        placed: &mut [Slot],
        lives: &Lives,
    ) -> Result<()> {
        let numbers: HashMap<&str, u32> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
        let mut covered = vec![false; placed.len()];
        let mut last_version: HashMap<String, u64> = HashMap::new();
        let head = placed.len() as u64;
        for item in self.inner.files.tree.scan_prefix([STREAM]) {
            let (key, value) = item.map_err(sled_error)?;
            report.index_entries += 1;
            let name_end = key.len().saturating_sub(9);
            let name = String::from_utf8_lossy(key.get(1..name_end).unwrap_or_default()).into_owned();
            let entry = match IndexEntry::decode(&key, &value) {
                Ok(entry) => entry,
                Err(error) => {
                    report.problems.push(VerifyProblem {
                        position: Position::ZERO,
                        what: format!("index entry of {name:?}: {error}"),
                    });
                    continue;
                }
            };
            let previous = last_version.insert(name.clone(), entry.last_version()).unwrap_or(0);
            let removed = entry.first_version > previous + 1 && lives.removable(&name, entry.first_version - 1);
            if entry.first_version != previous + 1 && !removed {
                let what = format!("index of {name:?} jumps from version {previous} to {}", entry.first_version);
                report.problems.push(VerifyProblem { position: Position::new(entry.first_position), what });
            }
            // An entry claims at most the positions the log has: a damaged count does not make this
            // loop run longer than the log.
            let claimed = u64::from(entry.count).min(head.saturating_sub(entry.first_position).saturating_add(1));
            if claimed < u64::from(entry.count) {
                let what = format!("index entry of {name:?} claims positions past the end of the log");
                report.problems.push(VerifyProblem { position: Position::new(entry.first_position), what });
            }
            for offset in 0..claimed {
                let position = entry.first_position + offset;
                let at = usize::try_from(position).unwrap_or(usize::MAX).wrapping_sub(1);
                let version = entry.first_version + offset;
                let fits = match (placed.get(at), numbers.get(name.as_str())) {
                    (Some(Slot::Event(event)), Some(&number)) => event.stream == number && event.version == version,
                    (Some(Slot::Hole), _) => lives.removable(&name, version),
                    _ => false,
                };
                if !fits {
                    let what = format!(
                        "index says {name:?} version {} is here, the log disagrees",
                        entry.first_version + offset
                    );
                    report.problems.push(VerifyProblem { position: Position::new(position), what });
                } else if let Some(flag) = covered.get_mut(at) {
                    *flag = true;
                }
            }
        }
        report_uncovered(report, placed, &covered, "the event is missing from its stream's index");
        // A stream whose last index entries were scavenged keeps its last version in its lifecycle.
        for (name, info) in &lives.0 {
            let indexed = last_version.get(name).copied().unwrap_or(0);
            let last = info.last_version.map_or(0, Version::get);
            if indexed < last && !lives.removable(name, last) {
                let what = format!("the index of {name:?} ends at version {indexed}, its lifecycle says {last}");
                report.problems.push(VerifyProblem { position: Position::ZERO, what });
            }
        }
        report.streams = last_version.len() as u64;
        Ok(())
    }

    /// Checks that the event-type index lists every event once, under its type.
    fn verify_type_index(&self, report: &mut VerifyReport, placed: &[Slot]) -> Result<()> {
        let mut covered = vec![false; placed.len()];
        // Per type: the count the next entry must start from (the entries' counts chain).
        let mut chains: HashMap<String, u64> = HashMap::new();
        for item in self.inner.files.tree.scan_prefix([TYPE]) {
            let (key, value) = item.map_err(sled_error)?;
            let split = key.len().saturating_sub(9);
            let event_type = String::from_utf8_lossy(key.get(1..split).unwrap_or_default()).into_owned();
            let first = key.get(split + 1..).and_then(be_u64).unwrap_or(0);
            let Some(entry) = TypeEntry::decode(&key, &value) else {
                let what = format!("event-type index entry of {event_type:?} does not decode");
                report.problems.push(VerifyProblem { position: Position::new(first), what });
                continue;
            };
            let chain = chains.entry(event_type.clone()).or_default();
            if entry.before != *chain {
                let what = format!("event-type index entries of {event_type:?} do not chain: an entry is missing");
                report.problems.push(VerifyProblem { position: Position::new(first), what });
            }
            *chain = entry.through();
            for position in entry.positions {
                let at = usize::try_from(position).unwrap_or(usize::MAX).wrapping_sub(1);
                match placed.get(at) {
                    Some(Slot::Event(event)) if event.event_type == event_type => {
                        if let Some(flag) = covered.get_mut(at) {
                            *flag = true;
                        }
                    }
                    // The entries keep pointing at events a scavenge removed.
                    Some(Slot::Hole) => {}
                    _ => {
                        let what = format!("event-type index lists a {event_type:?} event here, the log disagrees");
                        report.problems.push(VerifyProblem { position: Position::new(position), what });
                    }
                }
            }
        }
        for (event_type, total) in self.inner.files.type_counts()? {
            if chains.get(&event_type).copied().unwrap_or(0) != total {
                let what = format!("the count of {event_type:?} events does not match its index entries");
                report.problems.push(VerifyProblem { position: Position::ZERO, what });
            }
        }
        report_uncovered(report, placed, &covered, "the event is missing from the event-type index");
        Ok(())
    }

    /// Checks that every checkpoint and snapshot decodes.
    fn verify_side_trees(&self, report: &mut VerifyReport) -> Result<()> {
        if let Err(error) = self.inner.files.list_checkpoints("") {
            let what = format!("the checkpoints disagree with their list of names: {error}");
            report.problems.push(VerifyProblem { position: Position::ZERO, what });
        }
        for item in self.inner.files.checkpoints_tree().iter() {
            let (key, value) = item.map_err(sled_error)?;
            if key.starts_with(&[0]) {
                continue; // The list of names, checked above.
            }
            let name = String::from_utf8_lossy(&key).into_owned();
            match decode_checkpoint(&name, &value) {
                Some(_) => report.checkpoints += 1,
                None => report.problems.push(VerifyProblem {
                    position: Position::ZERO,
                    what: format!("checkpoint {name:?} does not decode"),
                }),
            }
        }
        for item in self.inner.files.snapshots.iter() {
            let (key, value) = item.map_err(sled_error)?;
            let split = key.len().saturating_sub(9);
            let name = String::from_utf8_lossy(key.get(..split).unwrap_or_default()).into_owned();
            let version = key.get(split + 1..).and_then(be_u64).unwrap_or(0);
            let decoded = StreamId::stored(&name).and_then(|stream| decode_snapshot(&stream, version, &value));
            match decoded {
                Some(_) => report.snapshots += 1,
                None => {
                    let what = format!("snapshot of {name:?} at version {version} does not decode");
                    report.problems.push(VerifyProblem { position: Position::ZERO, what });
                }
            }
        }
        Ok(())
    }
}

/// Reports every event of the log that an index did not cover.
fn report_uncovered(report: &mut VerifyReport, placed: &[Slot], covered: &[bool], what: &str) {
    for (at, slot) in placed.iter().enumerate() {
        if slot.event().is_some() && !covered.get(at).copied().unwrap_or(false) {
            report.problems.push(VerifyProblem { position: Position::new(at as u64 + 1), what: what.to_owned() });
        }
    }
}
