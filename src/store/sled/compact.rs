//! Offline compaction: the store's sled database copied into a fresh one beside it, and the two
//! directories swapped so that a crash at any moment leaves one complete store.
//!
//! sled 0.34.7 drains a segment only when at most half of it is live, so a scavenge that removes a
//! quarter of every segment gives nothing back. A fresh database holds only what is live.
//!
//! The protocol (docs/storage-format.md, "Compaction", says the same with its crash cases), for a
//! store at `<dir>/<name>`:
//! 1. copy every tree into `<dir>/<name>.annals-compact`, flush it, close it; copy the head file;
//! 2. close the store, keeping its data file locked; sync every file and directory of the copy;
//! 3. write the marker `annals-compacted` in the copy, sync it, the copy and `<dir>`;
//! 4. rename `<name>` to `<name>.annals-old`, sync `<dir>`;
//! 5. rename `<name>.annals-compact` to `<name>`, sync `<dir>`;
//! 6. delete `<name>.annals-old`, sync `<dir>`; delete the marker, sync `<name>`.
//!
//! [`settle`], run by every open and every compaction before anything else, finishes or undoes an
//! interrupted one: a copy without the marker is deleted, a copy with it is renamed into place.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fs2::FileExt as _;

use super::config::SledConfig;
use super::files::{sled_error, Files, LOCK_PATIENCE};
use super::recovery::{guarded, DATA_FILE, DATA_FILE_DAMAGE, HEAD_FILE};
use crate::error::{Error, Result};

/// The suffix of the copy being built, beside the store.
const COPY_SUFFIX: &str = "annals-compact";
/// The suffix the old store takes during the swap, beside the new one.
const OLD_SUFFIX: &str = "annals-old";
/// The file written last in a complete copy: its presence means the copy may replace the store.
pub(super) const MARKER: &str = "annals-compacted";
/// How many keys one batch of the copy writes.
const BATCH_KEYS: usize = 8192;

/// What a compaction did: the store's size before and after, in bytes of its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// The bytes of the store's files before the compaction.
    pub bytes_before: u64,
    /// The bytes of the store's files after it.
    pub bytes_after: u64,
    /// The keys copied (every tree: log records, indexes, lifecycle keys, snapshots, checkpoints).
    pub keys: u64,
}

/// `<dir>/<name>.<suffix>` for the store at `<dir>/<name>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_owned).unwrap_or_default();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// The directory holding the store's directory.
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(Error::storage)
}

/// Takes the lock sled takes on a store's data file (an `flock`), waiting up to [`LOCK_PATIENCE`]
/// for a handle closed a moment ago to let go; [`Error::Locked`] when it does not.
fn lock_data_file(store: &Path) -> Result<File> {
    let file = File::options().read(true).write(true).open(store.join(DATA_FILE)).map_err(Error::storage)?;
    let started = Instant::now();
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => return Ok(file),
            Err(_) if started.elapsed() < LOCK_PATIENCE => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(_) => return Err(Error::Locked { path: store.to_owned() }),
        }
    }
}

/// Finishes or undoes a compaction that stopped part way through (a crash), before the store at
/// `path` is opened or compacted. Nothing to do (the common case) costs two `stat`s.
///
/// A running compaction holds the lock of the store's data file: when that lock is taken, this
/// answers [`Error::Locked`] and changes nothing.
pub(super) fn settle(path: &Path) -> Result<()> {
    let (copy, old) = (sibling(path, COPY_SUFFIX), sibling(path, OLD_SUFFIX));
    let stray_marker = path.join(MARKER);
    if !copy.exists() && !old.exists() {
        if stray_marker.exists() {
            std::fs::remove_file(&stray_marker).map_err(Error::storage)?;
            sync_dir(path)?;
        }
        return Ok(());
    }
    // The live data file: the store's, or the old store's between the two renames.
    let live = if path.join(DATA_FILE).exists() { path.to_owned() } else { old.clone() };
    let _lock = if live.join(DATA_FILE).exists() { Some(lock_data_file(&live)?) } else { None };
    let dir = parent(path);
    if copy.exists() && !copy.join(MARKER).exists() {
        // Step 1 or 2 was interrupted: the store is untouched, the copy is partial.
        std::fs::remove_dir_all(&copy).map_err(Error::storage)?;
        sync_dir(&dir)?;
    }
    if copy.exists() {
        // The copy is complete (step 3 done): finish the swap.
        if path.join(DATA_FILE).exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(Error::storage)?;
            }
            std::fs::rename(path, &old).map_err(Error::storage)?;
            sync_dir(&dir)?;
        }
        std::fs::rename(&copy, path).map_err(Error::storage)?;
        sync_dir(&dir)?;
    }
    if old.exists() && path.join(DATA_FILE).exists() {
        // The swap is done (step 5): the old store is left over.
        std::fs::remove_dir_all(&old).map_err(Error::storage)?;
        sync_dir(&dir)?;
    }
    if stray_marker.exists() {
        std::fs::remove_file(&stray_marker).map_err(Error::storage)?;
        sync_dir(path)?;
    }
    Ok(())
}

/// Compacts the closed store at `path` (see the module docs), calling `at` with the name of
/// each step as it gets there (`copying`, `copied`, `marked`, `old-moved`, `swapped`, `old-deleted`). The caller has registered `path` as open in this process and settled
/// it.
pub(super) fn run(path: &Path, at: &mut dyn FnMut(&'static str)) -> Result<CompactReport> {
    let config = SledConfig::new(path).create_if_missing(false);
    let copy = sibling(path, COPY_SUFFIX);
    // Opening checks (and recovers, upgrades) the store and takes sled's lock on it.
    let files = Files::open(&config)?;
    let bytes_before = dir_size(path)?;
    let copied = copy_store(&files, &copy, config.cache_capacity, at);
    // The store is closed before the copy is synced; its data file stays locked by this process
    // until the swap is done, so that no other process opens it and appends events the copy lacks.
    drop(files);
    let prepared = copied.and_then(|keys| {
        let lock = lock_data_file(path)?;
        at("copied");
        sync_tree(&copy)?;
        write_marker(&copy)?;
        Ok((keys, lock))
    });
    let (keys, lock) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            // Nothing was renamed: the store is as it was. The partial copy goes (or the next open
            // deletes it, having no marker).
            if std::fs::remove_dir_all(&copy).is_ok() {
                let _ = sync_dir(&parent(path));
            }
            return Err(error);
        }
    };
    at("marked");
    swap(path, &copy, at)?;
    drop(lock);
    let bytes_after = dir_size(path)?;
    Ok(CompactReport { bytes_before, bytes_after, keys })
}

/// Steps 4 to 6.
fn swap(path: &Path, copy: &Path, at: &mut dyn FnMut(&'static str)) -> Result<()> {
    let (old, dir) = (sibling(path, OLD_SUFFIX), parent(path));
    std::fs::rename(path, &old).map_err(Error::storage)?;
    sync_dir(&dir)?;
    at("old-moved");
    std::fs::rename(copy, path).map_err(Error::storage)?;
    sync_dir(&dir)?;
    at("swapped");
    std::fs::remove_dir_all(&old).map_err(Error::storage)?;
    sync_dir(&dir)?;
    at("old-deleted");
    std::fs::remove_file(path.join(MARKER)).map_err(Error::storage)?;
    sync_dir(path)
}

/// Step 1: every tree of the store's database into a new database at `copy`, then the head file.
/// Returns the number of keys copied.
fn copy_store(files: &Files, copy: &Path, cache_capacity: u64, at: &mut dyn FnMut(&'static str)) -> Result<u64> {
    let target = sled::Config::new()
        .path(copy)
        .create_new(true)
        .cache_capacity(cache_capacity)
        .flush_every_ms(None)
        .open()
        .map_err(sled_error)?;
    // sled panics on some damaged files: a panic is damage, reported as such.
    let keys = guarded(DATA_FILE_DAMAGE, || copy_trees(&files.db, &target, at))?;
    target.flush().map_err(sled_error)?;
    drop(target);
    // sled closes its files a little after its last handle goes: its lock going says it has.
    drop(lock_data_file(copy)?);
    std::fs::copy(files.path.join(HEAD_FILE), copy.join(HEAD_FILE)).map_err(Error::storage)?;
    Ok(keys)
}

fn copy_trees(source: &sled::Db, target: &sled::Db, at: &mut dyn FnMut(&'static str)) -> Result<u64> {
    let mut keys = 0u64;
    let mut started = false;
    let mut first_batch = |at: &mut dyn FnMut(&'static str)| {
        if !std::mem::replace(&mut started, true) {
            at("copying");
        }
    };
    for name in source.tree_names() {
        let from = source.open_tree(&name).map_err(sled_error)?;
        let to = target.open_tree(&name).map_err(sled_error)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in from.iter() {
            let (key, value) = item.map_err(sled_error)?;
            batch.insert(key, value);
            in_batch += 1;
            keys += 1;
            if in_batch == BATCH_KEYS {
                to.apply_batch(std::mem::take(&mut batch)).map_err(sled_error)?;
                in_batch = 0;
                first_batch(at);
            }
        }
        to.apply_batch(batch).map_err(sled_error)?;
        first_batch(at);
    }
    Ok(keys)
}

/// Syncs every file and directory under `dir`, and `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::storage)? {
        let entry = entry.map_err(Error::storage)?;
        let kind = entry.file_type().map_err(Error::storage)?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path()).and_then(|file| file.sync_all()).map_err(Error::storage)?;
        }
    }
    sync_dir(dir)
}

/// Step 3: the marker, durable, with the copy's name in its directory.
fn write_marker(copy: &Path) -> Result<()> {
    let marker = File::create(copy.join(MARKER)).map_err(Error::storage)?;
    marker.sync_all().map_err(Error::storage)?;
    sync_dir(copy)?;
    sync_dir(&parent(copy))
}

/// The bytes of the files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(Error::storage)? {
        let entry = entry.map_err(Error::storage)?;
        let meta = entry.metadata().map_err(Error::storage)?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_sit_beside_the_store() {
        let path = Path::new("/data/events");
        assert_eq!(sibling(path, COPY_SUFFIX), Path::new("/data/events.annals-compact"));
        assert_eq!(sibling(path, OLD_SUFFIX), Path::new("/data/events.annals-old"));
        assert_eq!(parent(Path::new("events")), Path::new("."));
    }
}
