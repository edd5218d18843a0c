//! What the store checks when it opens, apart from sled's own recovery: that the directory holds a
//! whole store or nothing, that sled's recovery did not panic, and that the log reaches the last
//! position the store had acknowledged, which the head file (`annals-head`) keeps outside sled.
//!
//! sled recovers a damaged data file by cutting it at the first bad segment, so a damaged store can
//! open with a shorter log and then reuse the lost positions. The head file makes that loss visible:
//! it holds the store's id and a durable head, written with its own `fdatasync` at open, at every
//! clean close and, under `Fsync`, at least every [`HEAD_EVERY_GROUPS`] commit groups or
//! [`HEAD_EVERY`] (whichever comes first); an open whose log ends before it is refused.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::position::Position;

/// The head file's name in the store's directory.
pub(super) const HEAD_FILE: &str = "annals-head";
/// Its magic bytes.
const HEAD_MAGIC: &[u8; 4] = b"ANHD";
/// Its layout version.
const HEAD_VERSION: u32 = 1;
/// Magic, version, store id, head, crc32 of what comes before.
const HEAD_LEN: usize = 4 + 4 + 16 + 8 + 4;
/// Under `Fsync`, the head file is rewritten after at most this many commit groups...
pub(super) const HEAD_EVERY_GROUPS: u64 = 4096;
/// ... or this long after it was last written, whichever comes first.
pub(super) const HEAD_EVERY: Duration = Duration::from_secs(1);

/// The files sled and Annals keep in a store's directory besides the data file.
const STORE_FILES: [&str; 3] = ["conf", "blobs", HEAD_FILE];

/// The data file's name, as sled calls it.
pub(super) const DATA_FILE: &str = "db";

/// What damage to the data file (or a panic inside sled reading it) is reported as.
pub(super) const DATA_FILE_DAMAGE: &str = "data file (db)";

/// Checks the directory before sled opens it. A store is opened only when its data file is there and
/// not empty; a new one is created only where none of a store's files is: an empty data file, or a
/// store's other files without the data file, are damage, never a new store.
pub(super) fn inspect(path: &Path, create_if_missing: bool) -> Result<()> {
    if path.exists() && !path.is_dir() {
        let source = std::io::Error::new(ErrorKind::NotADirectory, "the path is not a directory");
        return Err(Error::CannotOpen { path: path.to_owned(), source: Box::new(source) });
    }
    match std::fs::metadata(path.join(DATA_FILE)) {
        Ok(data) if data.len() == 0 => Err(damaged(DATA_FILE_DAMAGE, "it is empty")),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            if has_store_files(path) {
                return Err(damaged(DATA_FILE_DAMAGE, "it is missing, but the store's other files are there"));
            }
            if !create_if_missing {
                return Err(Error::NotFound { path: path.to_owned() });
            }
            Ok(())
        }
        Err(error) => Err(Error::CannotOpen { path: path.to_owned(), source: Box::new(error) }),
    }
}

/// Whether the directory holds any of a store's files other than the data file.
fn has_store_files(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else { return false };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        STORE_FILES.contains(&name.as_ref()) || name.starts_with("snap.")
    })
}

/// The store directories open in this process (canonical paths). sled's file lock cannot tell a
/// second handle in this process from another process; this can.
static OPEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A store directory registered as open in this process, until dropped.
#[derive(Debug)]
pub(super) struct Registered(Option<PathBuf>);

/// Registers `path` as open in this process, or answers [`Error::AlreadyOpen`] when it still is after
/// `patience` (the same wait as for sled's lock: a handle being dropped on another thread lets go).
pub(super) fn register(path: &Path, patience: Duration) -> Result<Registered> {
    // A directory that does not exist yet cannot be open.
    let Ok(canonical) = std::fs::canonicalize(path) else { return Ok(Registered(None)) };
    let started = std::time::Instant::now();
    loop {
        if OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(canonical.clone()) {
            return Ok(Registered(Some(canonical)));
        }
        if started.elapsed() >= patience {
            return Err(Error::AlreadyOpen { path: path.to_owned() });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Registered {
    /// Registers a directory that `register` found missing, now that the store has created it.
    pub(super) fn created(&mut self, path: &Path) {
        if self.0.is_none() {
            if let Ok(canonical) = std::fs::canonicalize(path) {
                let mut open = OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if open.insert(canonical.clone()) {
                    self.0 = Some(canonical);
                }
            }
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&path);
        }
    }
}

/// Runs `work`, answering a panic inside it (sled panics on some damaged files) as
/// [`Error::Corrupt`] about `what`.
pub(super) fn guarded<T>(what: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(_) => Err(damaged(what, "sled panicked reading it")),
    }
}

/// `Error::Corrupt` for damage found before any position is known.
pub(super) fn damaged(what: &'static str, reason: &'static str) -> Error {
    Error::Corrupt { what, position: Position::ZERO, reason }
}

/// Syncs the store's directory (the names of sled's files in it) and the parent of it and of every
/// directory in `created`, so that after a power cut the store is found where it was created.
pub(super) fn sync_directories(store: &Path, created: &[std::path::PathBuf]) -> Result<()> {
    let parent = |dir: &Path| match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let mut dirs = vec![store.to_owned(), parent(store)];
    dirs.extend(created.iter().map(|dir| parent(dir)));
    dirs.dedup();
    for dir in dirs {
        File::open(&dir).and_then(|dir| dir.sync_all()).map_err(Error::storage)?;
    }
    Ok(())
}

/// What the head file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeadFile {
    /// The id of the store it belongs to (kept in the store too).
    pub(super) store: Uuid,
    /// A position the store had acknowledged durably: the log reaches at least here.
    pub(super) head: u64,
}

impl HeadFile {
    fn encode(&self) -> [u8; HEAD_LEN] {
        let mut bytes = [0u8; HEAD_LEN];
        bytes[..4].copy_from_slice(HEAD_MAGIC);
        bytes[4..8].copy_from_slice(&HEAD_VERSION.to_be_bytes());
        bytes[8..24].copy_from_slice(self.store.as_bytes());
        bytes[24..32].copy_from_slice(&self.head.to_be_bytes());
        let crc = crc32fast::hash(&bytes[..32]);
        bytes[32..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<HeadFile> {
        if bytes.len() != HEAD_LEN || &bytes[..4] != HEAD_MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(bytes[32..].try_into().ok()?);
        if crc != crc32fast::hash(&bytes[..32]) || u32::from_be_bytes(bytes[4..8].try_into().ok()?) != HEAD_VERSION {
            return None;
        }
        let store = Uuid::from_slice(&bytes[8..24]).ok()?;
        let head = u64::from_be_bytes(bytes[24..32].try_into().ok()?);
        Some(HeadFile { store, head })
    }
}

/// The head file of the store at `path`, if it has one.
pub(super) fn read_head_file(path: &Path) -> Result<Option<HeadFile>> {
    match std::fs::read(path.join(HEAD_FILE)) {
        Ok(bytes) => HeadFile::decode(&bytes)
            .map(Some)
            .ok_or_else(|| damaged("head file (annals-head)", "its checksum or layout does not match")),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::CannotOpen { path: path.to_owned(), source: Box::new(error) }),
    }
}

/// Replaces the head file: written beside it, `fdatasync`ed, renamed over it, and the directory
/// synced, so that a crash leaves the old file or the new one, never a torn one. It is synced also
/// under the test-only switch that skips the store's `fdatasync` of its data: the head file is what
/// finds the loss that switch causes.
pub(super) fn write_head_file(path: &Path, file: HeadFile) -> Result<()> {
    let temporary = path.join(format!("{HEAD_FILE}.tmp"));
    let mut out = File::create(&temporary).map_err(Error::storage)?;
    out.write_all(&file.encode()).map_err(Error::storage)?;
    out.sync_data().map_err(Error::storage)?;
    drop(out);
    std::fs::rename(&temporary, path.join(HEAD_FILE)).map_err(Error::storage)?;
    File::open(path).and_then(|dir| dir.sync_all()).map_err(Error::storage)?;
    Ok(())
}

/// The open-time check of the log against the head file: refuses a log that ends before the head the
/// store had acknowledged, or a head file of another store; otherwise brings the head file up to the
/// log's head.
pub(super) fn check_head(path: &Path, store: Uuid, log_head: u64) -> Result<()> {
    if let Some(saved) = read_head_file(path)? {
        if saved.store != store {
            return Err(damaged("head file (annals-head)", "it belongs to another store"));
        }
        if log_head < saved.head {
            return Err(Error::LogTruncated {
                path: path.to_owned(),
                acknowledged: Position::new(saved.head),
                found: Position::new(log_head),
            });
        }
        if log_head == saved.head {
            return Ok(());
        }
    }
    write_head_file(path, HeadFile { store, head: log_head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_file_round_trips_and_any_flipped_byte_is_damage() {
        let file = HeadFile { store: Uuid::from_u128(0x1234), head: 987_654 };
        let bytes = file.encode();
        assert_eq!(HeadFile::decode(&bytes), Some(file));
        for at in 0..bytes.len() {
            let mut flipped = bytes;
            flipped[at] ^= 0x10;
            assert_eq!(HeadFile::decode(&flipped), None, "byte {at} flipped");
        }
        assert_eq!(HeadFile::decode(&bytes[..HEAD_LEN - 1]), None);
    }

    #[test]
    fn a_log_shorter_than_the_head_file_is_refused_with_both_positions() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::storage)?;
        let store = Uuid::from_u128(7);
        check_head(dir.path(), store, 10)?;
        check_head(dir.path(), store, 12)?;
        assert_eq!(read_head_file(dir.path())?, Some(HeadFile { store, head: 12 }));
        let refused = check_head(dir.path(), store, 11);
        assert!(
            matches!(refused, Err(Error::LogTruncated { acknowledged, found, .. })
                if acknowledged == Position::new(12) && found == Position::new(11)),
            "{refused:?}"
        );
        let other = check_head(dir.path(), Uuid::from_u128(8), 12);
        assert!(matches!(other, Err(Error::Corrupt { what: "head file (annals-head)", .. })), "{other:?}");
        Ok(())
    }
}
