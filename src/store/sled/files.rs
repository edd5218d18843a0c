//! The sled database of a store: opening and checking it, making writes durable, and reading records
//! and index entries back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sled::IVec;
use uuid::Uuid;

use super::codec::{
    be_u64, decode_checkpoint, decode_checkpoint_names, decode_snapshot, encode_checkpoint, encode_checkpoint_names,
    encode_snapshot, log_key, snapshot_key, stream_key, stream_prefix, Record, CHECKPOINT_NAMES_KEY, FORMAT_KEY,
    FORMAT_VERSION, LOG, STORE_ID_KEY, STREAM, TYPE_INDEX_KEY,
};
use super::config::SledConfig;
use super::index::{count_key, decode_count, type_key, type_prefix, IndexEntry, TypeEntry, COUNT};
use super::{ids, recovery, upgrade};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::store::{Checkpoint, CheckpointWrite, Direction, Snapshot, SnapshotRetention, StoredId};
use crate::stream_id::StreamId;

/// The name of the sled tree that holds the log and its indexes.
const TREE: &str = "annals";
/// The name of the sled tree that holds snapshots.
const SNAPSHOTS: &str = "annals-snapshots";
/// The name of the sled tree that holds consumers' checkpoints.
const CHECKPOINTS: &str = "annals-checkpoints";

/// How long an open retries a locked database before it reports [`Error::Locked`]: long enough for
/// sled to release the lock of a store whose last handle was just dropped (a few ms, up to ~150 ms
/// seen on a loaded machine).
pub(super) const LOCK_PATIENCE: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) struct Files {
    pub(super) path: PathBuf,
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) snapshots: sled::Tree,
    checkpoints: sled::Tree,
    /// sled's data file, kept open to `fdatasync` it after each flush.
    data: File,
    /// Blob files already synced (sled writes values of large pages as separate, unsynced files).
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Test-only: skip `fdatasync` (`SledConfig::skip_fdatasync_for_tests`).
    skip_fdatasync: bool,
    /// The store's id, which its head file repeats.
    store: Uuid,
    /// The last position written to sled so far, acknowledged or not: set by the writer before it
    /// applies a group, so that no index entry a reader meets lies past it unless it is damaged.
    applied: AtomicU64,
    /// The last version of each stream with events after the event-id index's mark, as the log said
    /// at open (see `check_stream_index`); set once, when the writer starts.
    tail_versions: OnceLock<HashMap<String, u64>>,
    /// How many slices of the event-id index the writer has applied since open: an appender that
    /// found none of its ids in the index tells the writer at which count it looked (see
    /// `unindexed`), so that the writer looks them up again only if a slice came in between.
    pub(super) slices: AtomicU64,
    /// The names of the saved checkpoints, as stored beside them (`None`: that list is damaged).
    checkpoint_names: Mutex<Option<BTreeSet<String>>>,
    /// How many snapshots per stream a save keeps.
    snapshot_retention: SnapshotRetention,
    /// Held by a save that deletes old snapshots, from reading a stream's snapshot keys to writing
    /// its batch, so that two saves never decide on the same stale list.
    snapshot_saves: Mutex<()>,
}

impl Files {
    pub(super) fn open(config: &SledConfig) -> Result<Self> {
        let path = config.path.clone();
        recovery::inspect(&path, config.create_if_missing)?;
        // The directories sled is about to create: their names become durable only once their
        // parents are synced.
        let created: Vec<PathBuf> = path.ancestors().take_while(|dir| !dir.exists()).map(Path::to_owned).collect();
        let sled_config = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_capacity)
            // sled's own flusher would `fsync` the data file while blob files it points at are not
            // synced yet; the store flushes and syncs itself, in that order (see `writer::spawn`).
            .flush_every_ms(None);
        // sled's recovery panics on some damaged files: a panic is damage, not a crash of the caller.
        let db = recovery::guarded(recovery::DATA_FILE_DAMAGE, || open_db(&path, &sled_config))?;
        let opened = recovery::guarded(recovery::DATA_FILE_DAMAGE, || {
            let tree = db.open_tree(TREE).map_err(|e| open_error(&path, e))?;
            check_format(&path, &db, &tree)?;
            ensure_type_index(&db, &tree)?;
            let store = ensure_store_id(&db, &tree)?;
            let snapshots = db.open_tree(SNAPSHOTS).map_err(sled_error)?;
            let checkpoints = db.open_tree(CHECKPOINTS).map_err(sled_error)?;
            let names = load_checkpoint_names(&checkpoints)?;
            Ok((tree, store, snapshots, checkpoints, names))
        })?;
        let (tree, store, snapshots, checkpoints, names) = opened;
        let data = File::options()
            .read(true)
            .write(true)
            .open(path.join(recovery::DATA_FILE))
            .map_err(|e| cannot_open(&path, e))?;
        let synced_blobs = Mutex::new(HashSet::new());
        let skip_fdatasync = config.skip_fdatasync;
        let applied = AtomicU64::new(0);
        let tail_versions = OnceLock::new();
        let files = Files {
            path,
            db,
            tree,
            snapshots,
            checkpoints,
            data,
            synced_blobs,
            skip_fdatasync,
            store,
            applied,
            tail_versions,
            slices: AtomicU64::new(0),
            checkpoint_names: Mutex::new(names),
            snapshot_retention: config.snapshot_retention,
            snapshot_saves: Mutex::new(()),
        };
        let log_head = recovery::guarded(recovery::DATA_FILE_DAMAGE, || files.last_record())?.map_or(0, |r| r.last());
        files.applied.store(log_head, Ordering::Release);
        // What sled recovered (and any id just made) is durable before the head file names it, and so
        // are the names of the store's files and of the directories made for it.
        files.sync_to_disk()?;
        recovery::sync_directories(&files.path, &created)?;
        recovery::check_head(&files.path, store, log_head)?;
        Ok(files)
    }

    /// The last position written to sled (see the field).
    pub(super) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Announces that positions up to `last` are about to be written.
    pub(super) fn applying(&self, last: u64) {
        self.applied.fetch_max(last, Ordering::AcqRel);
    }

    /// Writes everything sled buffers and makes it durable (a clean close under `Buffered`).
    pub(super) fn flush_and_sync(&self) -> Result<()> {
        self.db.flush().map_err(sled_error)?;
        self.sync_to_disk()
    }

    /// Records `head` (durable now) in the head file, which the next open checks the log against.
    pub(super) fn write_head(&self, head: u64) -> Result<()> {
        let file = recovery::HeadFile { store: self.store, head };
        recovery::write_head_file(&self.path, file)
    }

    /// Makes everything sled has flushed so far durable. sled's flush ends in `sync_file_range`,
    /// which neither flushes the device cache nor covers blob files; `fdatasync` on the data file and
    /// on any new blob file does.
    pub(super) fn sync_to_disk(&self) -> Result<()> {
        if self.skip_fdatasync {
            return Ok(());
        }
        // Blobs first: the data file points at them, and must never be durable before them.
        self.sync_blobs()?;
        self.data.sync_data().map_err(Error::storage)
    }

    fn sync_blobs(&self) -> Result<()> {
        let dir = self.path.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::storage(e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let name = entry.map_err(Error::storage)?.file_name();
            if !synced.contains(&name) {
                match File::open(dir.join(&name)) {
                    Ok(file) => file.sync_all().map_err(Error::storage)?,
                    // sled removed it (garbage collection) since the listing: nothing to sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::storage(e)),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&dir).and_then(|d| d.sync_all()).map_err(Error::storage)?;
        }
        *synced = present;
        Ok(())
    }

    /// The last log record, if any.
    pub(super) fn last_record(&self) -> Result<Option<Record<IVec>>> {
        match self.tree.scan_prefix([LOG]).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(sled_error)?;
                Ok(Some(parse_record(&key, value)?))
            }
        }
    }

    /// The record holding `position`, if the log reaches that far.
    pub(super) fn record_at(&self, position: u64) -> Result<Option<Record<IVec>>> {
        let Some(item) = self.tree.range(log_key(0)..=log_key(position)).next_back() else { return Ok(None) };
        let (key, value) = item.map_err(sled_error)?;
        let record = parse_record(&key, value)?;
        Ok(record.contains(position).then_some(record))
    }

    /// The records from the one holding `position` on.
    pub(super) fn records_from(&self, position: u64) -> impl Iterator<Item = Result<Record<IVec>>> + '_ {
        let start = match self.tree.range(log_key(0)..=log_key(position)).next_back() {
            Some(Ok((key, value))) => match parse_record(&key, value) {
                Ok(record) if record.contains(position) => record.first,
                Ok(_) => position,
                Err(e) => return Box::new(std::iter::once(Err(e))) as Box<dyn Iterator<Item = _>>,
            },
            Some(Err(e)) => return Box::new(std::iter::once(Err(sled_error(e)))),
            None => position,
        };
        Box::new(self.tree.range(log_key(start)..=log_key(u64::MAX)).map(|item| {
            let (key, value) = item.map_err(sled_error)?;
            parse_record(&key, value)
        }))
    }

    /// The decoded event at `position`, reusing the record in `cache` when it holds it; `None` when a
    /// scavenge removed it (a hole).
    pub(super) fn event_at(&self, position: u64, cache: &mut Option<Record<IVec>>) -> Result<Option<RecordedEvent>> {
        if !cache.as_ref().is_some_and(|r| r.contains(position)) {
            *cache = Some(self.record_at(position)?.ok_or(Error::Corrupt {
                what: "stream index entry",
                position: Position::new(position),
                reason: "points at an event missing from the log",
            })?);
        }
        match cache {
            Some(record) => record.event(position),
            None => Err(Error::Closed),
        }
    }

    /// The index entries of a stream, starting with the one holding version `from`, in `direction`.
    pub(super) fn stream_entries<'a>(
        &'a self,
        stream: &str,
        from: u64,
        direction: Direction,
    ) -> Box<dyn Iterator<Item = Result<IndexEntry>> + 'a> {
        let prefix = stream_prefix(stream);
        let until = stream_key(stream, from);
        let decode = |item: sled::Result<(IVec, IVec)>| {
            let (key, value) = item.map_err(sled_error)?;
            IndexEntry::decode(&key, &value)
        };
        match direction {
            Direction::Backward => Box::new(self.tree.range(prefix..=until).rev().map(decode)),
            Direction::Forward => {
                // The entry holding `from` may start before it.
                let start = match self.tree.range(prefix.clone()..=until.clone()).next_back() {
                    Some(Ok((key, _))) => key.to_vec(),
                    _ => until,
                };
                let end = stream_key(stream, u64::MAX);
                Box::new(
                    self.tree
                        .range(start..=end)
                        .map(decode)
                        .filter(move |e| !matches!(e, Ok(entry) if entry.last_version() < from)),
                )
            }
        }
    }

    /// Whether `stream` has an index entry for a version above `version`.
    pub(super) fn stream_has_entry_after(&self, stream: &str, version: u64) -> Result<bool> {
        let Some(next) = version.checked_add(1) else { return Ok(false) };
        let first = self.tree.range(stream_key(stream, next)..=stream_key(stream, u64::MAX)).next();
        Ok(first.transpose().map_err(sled_error)?.is_some())
    }

    /// The names of the streams starting with `prefix`, in order: one index lookup per stream, jumping
    /// over each stream's entries (names hold no control character, so `name + 0x01` is past them).
    pub(super) fn stream_names<'a>(&'a self, prefix: &str) -> impl Iterator<Item = Result<String>> + 'a {
        let mut scan = vec![STREAM];
        scan.extend_from_slice(prefix.as_bytes());
        let mut cursor = scan.clone();
        std::iter::from_fn(move || {
            let (key, _) = match self.tree.range(cursor.clone()..).next()? {
                Ok(item) => item,
                Err(e) => return Some(Err(sled_error(e))),
            };
            if !key.starts_with(&scan) {
                return None;
            }
            let end = key.iter().skip(1).position(|&b| b == 0).map(|at| at + 1);
            let Some(end) = end else {
                return Some(Err(Error::Corrupt {
                    what: "stream index entry",
                    position: Position::ZERO,
                    reason: "key has no stream name terminator",
                }));
            };
            let name = String::from_utf8_lossy(&key[1..end]).into_owned();
            cursor = key[..end].to_vec();
            cursor.push(1);
            Some(Ok(name))
        })
    }

    /// The positions of events of `event_type` from `from` to `head` (inclusive), ascending, at most
    /// `max` of them, from the event-type index. The entries' counts must chain up to the type's
    /// count, so a missing entry is [`Error::Corrupt`], never a silently shorter answer.
    pub(super) fn type_positions(&self, event_type: &str, from: u64, head: u64, max: usize) -> Result<Vec<u64>> {
        // The count first: entries written after it only lengthen the chain.
        let total = self.type_count(event_type)?;
        let prefix = type_prefix(event_type);
        // The entry holding `from` may start before it.
        let found = self.tree.range(prefix.clone()..=type_key(event_type, from)).next_back();
        let (start, mut chained) = match found {
            Some(item) => (item.map_err(sled_error)?.0.to_vec(), None),
            // No entry before `from`: the first entry is the type's first.
            None => (type_key(event_type, from), Some(0)),
        };
        let mut positions = Vec::new();
        for item in self.tree.range(start..=type_key(event_type, u64::MAX)) {
            let (key, value) = item.map_err(sled_error)?;
            let first = key.get(key.len().saturating_sub(8)..).and_then(be_u64).unwrap_or_default();
            let entry = TypeEntry::decode(&key, &value).ok_or_else(|| type_damage(first, "it does not decode"))?;
            if chained.is_some_and(|count| count != entry.before) {
                return Err(type_damage(first, "an entry of this type before it is missing"));
            }
            chained = Some(entry.through());
            // Entries past the head are read only to finish the chain.
            for position in entry.positions.into_iter().filter(|p| (from..=head).contains(p)) {
                positions.push(position);
                if positions.len() >= max {
                    return Ok(positions);
                }
            }
        }
        if chained.unwrap_or(0) < total {
            return Err(type_damage(head, "the last entries of this type are missing"));
        }
        Ok(positions)
    }

    /// How many events of `event_type` the log holds (0 for a type never written).
    fn type_count(&self, event_type: &str) -> Result<u64> {
        let key = count_key(event_type);
        match self.tree.get(&key).map_err(sled_error)? {
            None => Ok(0),
            Some(value) => decode_count(&key, &value).ok_or_else(|| type_damage(0, "its count does not decode")),
        }
    }

    /// Every event type's count, for the writer to continue them.
    pub(super) fn type_counts(&self) -> Result<HashMap<String, u64>> {
        let mut counts = HashMap::new();
        for item in self.tree.scan_prefix([COUNT]) {
            let (key, value) = item.map_err(sled_error)?;
            let count = decode_count(&key, &value).ok_or_else(|| type_damage(0, "its count does not decode"))?;
            counts.insert(String::from_utf8_lossy(&key[1..]).into_owned(), count);
        }
        Ok(counts)
    }

    pub(super) fn stream_version(&self, stream: &str, head: u64) -> Result<Option<u64>> {
        self.check_stream_index(stream)?;
        let damage =
            |position, reason| Error::Corrupt { what: "stream index entry", position: Position::new(position), reason };
        for entry in self.stream_entries(stream, u64::MAX, Direction::Backward) {
            let entry = entry?;
            if entry.first_position > self.applied() {
                return Err(damage(entry.first_position, "it lies past the end of the log"));
            }
            if entry.first_position > head {
                continue; // Not acknowledged yet.
            }
            // A group is acknowledged whole, and the entry is believed once its last event agrees.
            let last = entry.first_position + u64::from(entry.count) - 1;
            if last > head {
                return Err(damage(entry.first_position, "it reaches past the head"));
            }
            // A hole (the event was scavenged) cannot be checked: holes are only ever written.
            if let Some(event) = self.event_at(last, &mut None)? {
                if event.stream.as_str() != stream || event.version.get() != entry.last_version() {
                    return Err(damage(last, "it points at another event"));
                }
            }
            return Ok(Some(entry.last_version()));
        }
        Ok(None)
    }

    /// Stores a snapshot (not synced: snapshots are a cache), and deletes the stream's snapshots
    /// beyond the newest the retention keeps. Both go in one sled batch, which sled applies
    /// atomically, also across a crash: the stream's newest snapshot is never deleted without the
    /// one that replaces it being there.
    pub(super) fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let key = snapshot_key(snapshot.stream.as_str(), snapshot.version.get());
        let value = encode_snapshot(snapshot);
        let Some(kept) = self.snapshot_retention.kept() else {
            self.snapshots.insert(key, value).map_err(sled_error)?;
            return Ok(());
        };
        let _serial = self.snapshot_saves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let prefix = snapshot_key(snapshot.stream.as_str(), 0);
        let last = snapshot_key(snapshot.stream.as_str(), u64::MAX);
        // Every key of the stream, the new one included, sorted newest first.
        let mut keys = vec![IVec::from(key.as_slice())];
        for item in self.snapshots.range(prefix..=last).keys() {
            let stored = item.map_err(sled_error)?;
            if stored != key.as_slice() {
                keys.push(stored);
            }
        }
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let mut batch = sled::Batch::default();
        if keys.iter().take(kept).any(|k| k == key.as_slice()) {
            batch.insert(key, value);
        }
        for old in keys.into_iter().skip(kept) {
            batch.remove(old);
        }
        self.snapshots.apply_batch(batch).map_err(sled_error)
    }

    /// The newest snapshot of `stream` at or before `at` that is not damaged.
    pub(super) fn load_snapshot(&self, stream: &StreamId, at: u64) -> Result<Option<Snapshot>> {
        let prefix = snapshot_key(stream.as_str(), 0);
        let until = snapshot_key(stream.as_str(), at);
        for item in self.snapshots.range(prefix..=until).rev() {
            let (key, value) = item.map_err(sled_error)?;
            let version = key.len().checked_sub(8).and_then(|at| key.get(at..)).and_then(be_u64);
            if let Some(snapshot) = version.and_then(|v| decode_snapshot(stream, v, &value)) {
                return Ok(Some(snapshot));
            }
        }
        Ok(None)
    }

    /// The tree of checkpoints, for a full check.
    pub(super) fn checkpoints_tree(&self) -> &sled::Tree {
        &self.checkpoints
    }

    /// The checkpoint named `name`, if any. One the store saved and did not delete is never `None`:
    /// the list of names says it must be there.
    pub(super) fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let value = match self.checkpoints.get(name.as_bytes()).map_err(sled_error)? {
            Some(value) => value,
            None => {
                let names = self.names();
                match &*names {
                    None => return Err(names_damaged()),
                    Some(names) if !names.contains(name) => return Ok(None),
                    Some(_) => {}
                }
                // Listed: a save may have applied its batch and listed the name since the read
                // above (it does both under this lock), so read again while holding it.
                let again = self.checkpoints.get(name.as_bytes()).map_err(sled_error)?;
                drop(names);
                again.ok_or_else(missing_checkpoint)?
            }
        };
        decode_checkpoint(name, &value).map(Some).ok_or_else(|| corrupt_checkpoint(name))
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Option<BTreeSet<String>>> {
        self.checkpoint_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies checkpoint writes in one sled batch (atomic within the tree); `sync` makes them
    /// durable before returning.
    pub(super) fn save_checkpoints(&self, writes: &[CheckpointWrite], sync: bool) -> Result<()> {
        // The list of names changes in the same batch as the checkpoints, under this lock.
        let mut names = self.names();
        let Some(current) = names.as_ref() else { return Err(names_damaged()) };
        let mut next = None::<BTreeSet<String>>;
        let mut batch = sled::Batch::default();
        for write in writes {
            match write {
                CheckpointWrite::Save(checkpoint) => {
                    batch.insert(checkpoint.name.as_bytes(), encode_checkpoint(checkpoint));
                    if !next.as_ref().unwrap_or(current).contains(&checkpoint.name) {
                        next.get_or_insert_with(|| current.clone()).insert(checkpoint.name.clone());
                    }
                }
                CheckpointWrite::Delete(name) => {
                    batch.remove(name.as_bytes());
                    if next.as_ref().unwrap_or(current).contains(name) {
                        next.get_or_insert_with(|| current.clone()).remove(name);
                    }
                }
            }
        }
        if let Some(next) = &next {
            batch.insert(CHECKPOINT_NAMES_KEY, encode_checkpoint_names(next));
        }
        self.checkpoints.apply_batch(batch).map_err(sled_error)?;
        if let Some(next) = next {
            *names = Some(next);
        }
        drop(names);
        if sync {
            self.checkpoints.flush().map_err(sled_error)?;
            self.sync_to_disk()?;
        }
        Ok(())
    }

    /// Every checkpoint whose name starts with `prefix`, by name.
    pub(super) fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        let mut checkpoints = Vec::new();
        for item in self.checkpoints.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item.map_err(sled_error)?;
            if key.starts_with(&[0]) {
                continue; // The list of names.
            }
            let name = std::str::from_utf8(&key).map_err(|_| corrupt_checkpoint(prefix))?;
            checkpoints.push(decode_checkpoint(name, &value).ok_or_else(|| corrupt_checkpoint(name))?);
        }
        let names = self.names();
        let Some(names) = names.as_ref() else { return Err(names_damaged()) };
        let listed = names.iter().filter(|name| name.starts_with(prefix)).count();
        if listed != checkpoints.len() {
            return Err(missing_checkpoint());
        }
        Ok(checkpoints)
    }

    /// Where the event with `id`, which the id index places at `position`, is, for retry detection;
    /// `None` when it was scavenged. An index that points at another event is damage.
    pub(super) fn stored_at(&self, position: u64, id: Uuid) -> Result<Option<StoredId>> {
        let Some(event) = self.event_at(position, &mut None)? else { return Ok(None) };
        if event.id != id {
            return Err(Error::Corrupt {
                what: "event-id index entry",
                position: event.position,
                reason: "it points at another event",
            });
        }
        Ok(Some(StoredId { position: event.position, stream: event.stream, version: event.version }))
    }

    /// What the event-id index does not cover, read from the log after its mark when the writer
    /// starts: the ids for the writer to keep in memory until its next slice, and the streams' last
    /// versions there, which `check_stream_index` holds their index to from then on.
    pub(super) fn index_tail(&self) -> Result<ids::Tail> {
        let mark = ids::read_mark(&self.tree)?;
        let mut tail = ids::scan_after(&self.tree, mark)?;
        // The scan runs once, when the writer starts; a second one would find the same versions.
        let _ = self.tail_versions.set(std::mem::take(&mut tail.versions));
        Ok(tail)
    }

    /// Looks `ids` up in the event-id index, on the appender's thread: `Some(slices)` when none is
    /// there (the writer then only checks the ids it holds in memory, unless a slice was applied
    /// after `slices`), `None` when one is, or its key does not decode (the writer looks again).
    pub(super) fn unindexed(&self, ids: impl IntoIterator<Item = Uuid>) -> Option<u64> {
        // The count first: a slice applied after it shows in the count the writer compares with.
        let slices = self.slices.load(Ordering::Acquire);
        for id in ids {
            if !matches!(ids::lookup(&self.tree, &id), Ok(None)) {
                return None;
            }
        }
        Some(slices)
    }

    /// Fails for a stream whose index ends before its last event: the index must reach the stream's
    /// head key (its last version at the id index's mark) and its last version after the mark (read
    /// from the log at open), unless its lifecycle key says those versions were written and removed.
    /// Without this, a lost last index entry would hand the same versions out again.
    pub(super) fn check_stream_index(&self, stream: &str) -> Result<()> {
        let after_mark = self.tail_versions.get().and_then(|tail| tail.get(stream)).copied().unwrap_or(0);
        let expected = ids::stream_head(&self.tree, stream)?.unwrap_or(0).max(after_mark);
        if expected == 0 {
            return Ok(());
        }
        // A last entry that does not decode is damage of this stream only: its reads report it.
        let indexed = match self.stream_entries(stream, u64::MAX, Direction::Backward).next() {
            Some(Ok(entry)) => entry.last_version(),
            Some(Err(_)) | None => 0,
        };
        if indexed >= expected {
            return Ok(());
        }
        let written = self.lifecycle(stream)?.last_version.map_or(0, |v| v.get());
        if written >= expected {
            return Ok(());
        }
        Err(Error::Corrupt {
            what: "stream index entry",
            position: Position::ZERO,
            reason: "the stream's index ends before its last event in the log",
        })
    }
}

fn missing_checkpoint() -> Error {
    Error::Corrupt { what: "checkpoint", position: Position::ZERO, reason: "it was saved but is missing" }
}

fn names_damaged() -> Error {
    Error::Corrupt { what: "checkpoint list", position: Position::ZERO, reason: "it does not decode" }
}

/// The list of checkpoint names, read at open; a store written before it has none and gets one made
/// from its checkpoints. `None`: the list is damaged.
fn load_checkpoint_names(checkpoints: &sled::Tree) -> Result<Option<BTreeSet<String>>> {
    if let Some(value) = checkpoints.get(CHECKPOINT_NAMES_KEY).map_err(sled_error)? {
        return Ok(decode_checkpoint_names(&value));
    }
    let mut names = BTreeSet::new();
    for key in checkpoints.iter().keys() {
        let key = key.map_err(sled_error)?;
        if let Ok(name) = std::str::from_utf8(&key) {
            names.insert(name.to_owned());
        }
    }
    checkpoints.insert(CHECKPOINT_NAMES_KEY, encode_checkpoint_names(&names)).map_err(sled_error)?;
    Ok(Some(names))
}

fn corrupt_checkpoint(_name: &str) -> Error {
    Error::Corrupt { what: "checkpoint", position: Position::ZERO, reason: "checksum or layout mismatch" }
}

fn type_damage(position: u64, reason: &'static str) -> Error {
    Error::Corrupt { what: "event-type index entry", position: Position::new(position), reason }
}

pub(super) fn parse_record(key: &[u8], value: IVec) -> Result<Record<IVec>> {
    let first = key.get(1..).and_then(be_u64).ok_or(Error::Corrupt {
        what: "log record",
        position: Position::ZERO,
        reason: "key is not a position",
    })?;
    Record::parse(first, value)
}

fn check_format(path: &Path, db: &sled::Db, tree: &sled::Tree) -> Result<()> {
    let unsupported = |found| Error::UnsupportedFormat { path: path.to_owned(), found, supported: FORMAT_VERSION };
    match tree.get(FORMAT_KEY).map_err(sled_error)? {
        Some(value) => {
            let found = value.as_ref().try_into().map(u32::from_be_bytes).map_err(|_| unsupported(0))?;
            match found {
                FORMAT_VERSION => {}
                2 | 3 => upgrade::from_format_3(db, tree)?,
                1 => upgrade::from_format_1(db, tree, &db.open_tree(CHECKPOINTS).map_err(sled_error)?)?,
                _ => return Err(unsupported(found)),
            }
        }
        None => {
            let foreign = tree.first().map_err(sled_error)?.is_some()
                || db
                    .tree_names()
                    .iter()
                    .any(|name| name.as_ref() != b"__sled__default" && name.as_ref() != TREE.as_bytes())
                || db.first().map_err(sled_error)?.is_some();
            if foreign {
                return Err(unsupported(0));
            }
            tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes()).map_err(sled_error)?;
            db.flush().map_err(sled_error)?;
        }
    }
    Ok(())
}

/// Builds the event-type index of a store whose index is not marked complete (written before it
/// existed, or its rebuild was interrupted).
fn ensure_type_index(db: &sled::Db, tree: &sled::Tree) -> Result<()> {
    if tree.get(TYPE_INDEX_KEY).map_err(sled_error)?.is_some() {
        return Ok(());
    }
    upgrade::rebuild_type_index(db, tree)
}

/// Opens sled's database, waiting up to [`LOCK_PATIENCE`] for the lock of a store closed a moment ago.
fn open_db(path: &Path, config: &sled::Config) -> Result<sled::Db> {
    let started = Instant::now();
    loop {
        match config.open() {
            // sled lets go of its file lock a little after its last `Db` is dropped (its background
            // jobs still hold the file), so a store closed a moment ago may still look locked.
            Err(e) if is_lock_error(&e) && started.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened.map_err(|e| open_error(path, e)),
        }
    }
}

/// The store's id, made when a store without one is opened (a new store, or one written before ids).
fn ensure_store_id(db: &sled::Db, tree: &sled::Tree) -> Result<Uuid> {
    if let Some(value) = tree.get(STORE_ID_KEY).map_err(sled_error)? {
        return Uuid::from_slice(&value).map_err(|_| recovery::damaged("store id", "it is not 16 bytes"));
    }
    let id = Uuid::new_v4();
    tree.insert(STORE_ID_KEY, id.as_bytes()).map_err(sled_error)?;
    db.flush().map_err(sled_error)?;
    Ok(id)
}

/// A sled error met while reading or writing: damage it reports is [`Error::Corrupt`], and so are
/// the I/O errors that only damaged files cause (a data file that ends early, a blob file that is
/// gone, bytes that are not what sled wrote); the rest (a full disk, ...) is [`Error::Storage`].
pub(super) fn sled_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Corruption { .. } => recovery::damaged(recovery::DATA_FILE_DAMAGE, "sled reports corruption"),
        sled::Error::Io(ref io) if is_damage(io) => {
            recovery::damaged(recovery::DATA_FILE_DAMAGE, "sled cannot read it back")
        }
        other => Error::storage(other),
    }
}

/// Whether an I/O error reading an existing store's files means they are damaged.
fn is_damage(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
    )
}

/// Whether sled failed to open because another handle holds the database's lock. sled reports it as
/// a plain I/O error with this message (sled 0.34.7, config.rs).
fn is_lock_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// A sled error while opening: what only an open can mean, then what any sled error means.
fn open_error(path: &Path, error: sled::Error) -> Error {
    match error {
        ref locked if is_lock_error(locked) => Error::Locked { path: path.to_owned() },
        // sled checks its config file (`conf`) first; a damaged one reads as a config written by a
        // sled older than 0.29, which no Annals store ever was.
        sled::Error::Unsupported(_) => recovery::damaged("sled config file (conf)", "it does not read"),
        // The directory or its files cannot be created or read: permissions, a file in the way.
        sled::Error::Io(source) if !is_damage(&source) => cannot_open(path, source),
        damage => sled_error(damage),
    }
}

/// The store's directory cannot be opened, and why.
fn cannot_open(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::CannotOpen { path: path.to_owned(), source: Box::new(source) }
}
