//! The id-index thread of a sled store: it writes the slices of the event-id index that the writer
//! cuts (docs/DESIGN.md, "Why is the event-id index written in slices?"), beside the writer instead
//! of on its thread, in batches of a few hundred keys.
//!
//! sled applies one batch at a time and holds every flush back while it does (its concurrency
//! control takes a write lock for a batch), so a slice written in one batch of 16,384 keys stalled
//! every append for the tenth of a second it took. Small batches let the writer's groups and flushes
//! go in between. The head keys and the mark go in the last batch (a head key holds its stream's
//! version at the mark): sled recovers batches in the order they were applied, so a mark that
//! survived a crash comes with every id key before it, and id keys written without their mark only
//! name events that are stored (which `verify` accepts).
//!
//! The writer hands over at most one slice at a time and keeps its ids in memory, for lookups, until
//! this thread has answered that the slice is written; a slice that failed comes back to the
//! writer's memory and goes into the next one.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use uuid::Uuid;

use super::files::sled_error;
use super::ids;
use super::recovery::{guarded, DATA_FILE_DAMAGE};
use crate::error::{Error, Result};

/// How many keys one batch of a slice holds (a few milliseconds of sled's time).
const BATCH_KEYS: usize = 256;

/// A slice for the index: the ids stored after the previous mark, the heads of the streams appended
/// to since, and the new mark.
pub(super) struct Slice {
    pub(super) ids: Arc<HashMap<Uuid, u64>>,
    pub(super) heads: Vec<(String, u64)>,
    pub(super) mark: u64,
}

/// The running id-index thread, owned by the writer. Dropping it lets the thread finish the slice it
/// has and waits for it.
pub(super) struct Indexer {
    slices: Option<mpsc::SyncSender<Slice>>,
    done: mpsc::Receiver<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").finish_non_exhaustive()
    }
}

/// Starts the id-index thread of the store whose tree is `tree`.
pub(super) fn spawn(tree: sled::Tree) -> Result<Indexer> {
    let (slices, incoming) = mpsc::sync_channel::<Slice>(1);
    let (answers, done) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("annals-indexer".into())
        .spawn(move || {
            for slice in incoming {
                let written = guarded(DATA_FILE_DAMAGE, || write(&tree, &slice)).is_ok();
                if answers.send(written).is_err() {
                    break;
                }
            }
        })
        .map_err(Error::storage)?;
    Ok(Indexer { slices: Some(slices), done, thread: Some(thread) })
}

impl Indexer {
    /// Hands `slice` to the thread; gives it back if the thread is gone.
    pub(super) fn hand(&self, slice: Slice) -> std::result::Result<(), Slice> {
        match &self.slices {
            Some(sender) => sender.send(slice).map_err(|failed| failed.0),
            None => Err(slice),
        }
    }

    /// The answer for the slice handed over: `Some(true)` once it is written, `Some(false)` if it
    /// failed (or the thread is gone), `None` while it is being written and `wait` is false.
    pub(super) fn answer(&self, wait: bool) -> Option<bool> {
        if wait {
            return Some(self.done.recv().unwrap_or(false));
        }
        match self.done.try_recv() {
            Ok(written) => Some(written),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(false),
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        drop(self.slices.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `slice`: its id keys in batches of [`BATCH_KEYS`], then its head keys and the mark in one
/// last batch.
/// Not flushed: the writer's next flush carries it.
pub(super) fn write(tree: &sled::Tree, slice: &Slice) -> Result<()> {
    let mut ids: Vec<(&Uuid, &u64)> = slice.ids.iter().collect();
    ids.sort_unstable_by_key(|(id, _)| **id);
    for chunk in ids.chunks(BATCH_KEYS) {
        let mut batch = sled::Batch::default();
        ids::add_ids(&mut batch, chunk.iter().copied());
        tree.apply_batch(batch).map_err(sled_error)?;
    }
    // A head key holds the stream's version at the mark, so heads and mark go together.
    let mut batch = sled::Batch::default();
    ids::add_heads(&mut batch, slice.heads.iter().map(|(stream, version)| (stream.as_str(), *version)));
    ids::add_mark(&mut batch, slice.mark);
    tree.apply_batch(batch).map_err(sled_error)
}
