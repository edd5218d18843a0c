//! Raw sled access to a closed store's directory, to damage or inspect its bytes as
//! `docs/storage-format.md` describes them.

use std::path::Path;
use std::time::{Duration, Instant};

/// Opens the directory with raw sled, waiting a moment for the lock as the store does: sled releases
/// it a little after the last handle of a database is dropped.
pub fn raw_open(dir: &Path) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened,
        }
    }
}

/// Runs `change` on the tree `tree` of the closed store in `dir`, and writes it out.
pub fn damage(dir: &Path, tree: &str, change: impl FnOnce(&sled::Tree) -> sled::Result<()>) -> sled::Result<()> {
    let db = raw_open(dir)?;
    change(&db.open_tree(tree)?)?;
    db.flush()?;
    Ok(())
}

/// The key of the log record whose first event is at `first`.
pub fn log_key(first: u64) -> Vec<u8> {
    let mut key = vec![b'L'];
    key.extend_from_slice(&first.to_be_bytes());
    key
}

/// The key of a stream index entry.
pub fn stream_key(stream: &str, first_version: u64) -> Vec<u8> {
    let mut key = vec![b'S'];
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

/// A stream index entry's value (format 2): first position, count, and the CRC-32 of the key and
/// those 12 bytes, so that sled and the checksum both accept it and only the store's other checks
/// can tell it is wrong.
pub fn stream_entry(key: &[u8], first_position: u64, count: u32) -> Vec<u8> {
    let mut value = first_position.to_be_bytes().to_vec();
    value.extend_from_slice(&count.to_be_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(&value);
    value.extend_from_slice(&hasher.finalize().to_be_bytes());
    value
}
