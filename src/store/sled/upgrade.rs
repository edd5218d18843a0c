//! Bringing a store's indexes up to date at open: a store of format 1 gets checksums on its stream
//! index entries and checkpoints, and a rebuilt event-type index with its counts; a store of format
//! 2 or 3 gets the event-id index and stream heads of format 4 built from its log (format 3 only
//! added lifecycle keys and holes in records, which a format-2 store has none of); a store whose
//! event-type index is incomplete gets it rebuilt. Each step can run again after a crash: the format
//! key is written last.

use std::collections::{BTreeMap, HashMap};

use super::codec::{
    decode_checkpoint_format_1, encode_checkpoint, Record, FORMAT_KEY, FORMAT_VERSION, LOG, STREAM, TYPE,
    TYPE_INDEX_KEY,
};
use super::files::{parse_record, sled_error};
use super::ids;
use super::index::{insert_type_entries, IndexEntry, COUNT};
use crate::error::Result;

/// How many writes one sled batch of an upgrade holds.
const CHUNK: usize = 10_000;

/// Upgrades a store of format 2 or 3 to the current format: the event-id index and the stream heads
/// (format 4) are built from the log, then the format key is written and flushed, so that an older
/// version refuses the store from then on. Format 3 only added lifecycle keys and holes in records,
/// which a format-2 store has none of, so both take the same step.
pub(super) fn from_format_3(db: &sled::Db, tree: &sled::Tree) -> Result<()> {
    build_id_index(tree)?;
    tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes()).map_err(sled_error)?;
    db.flush().map_err(sled_error)?;
    Ok(())
}

/// Upgrades a store of format 1 to the current format.
pub(super) fn from_format_1(db: &sled::Db, tree: &sled::Tree, checkpoints: &sled::Tree) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for item in tree.scan_prefix([STREAM]) {
        let (key, value) = item.map_err(sled_error)?;
        // An entry that does not decode stays as it is: its checksum now reports it as damage.
        if let Some(entry) = IndexEntry::decode_format_1(&key, &value) {
            batch.insert(key.to_vec(), entry.encode(&key));
            pending += 1;
        }
        if pending >= CHUNK {
            tree.apply_batch(std::mem::take(&mut batch)).map_err(sled_error)?;
            pending = 0;
        }
    }
    tree.apply_batch(batch).map_err(sled_error)?;
    let mut batch = sled::Batch::default();
    for item in checkpoints.iter() {
        let (key, value) = item.map_err(sled_error)?;
        let name = String::from_utf8_lossy(&key).into_owned();
        if let Some(checkpoint) = decode_checkpoint_format_1(&name, &value) {
            batch.insert(key, encode_checkpoint(&checkpoint));
        }
    }
    checkpoints.apply_batch(batch).map_err(sled_error)?;
    rebuild_type_index(db, tree)?;
    build_id_index(tree)?;
    tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes()).map_err(sled_error)?;
    db.flush().map_err(sled_error)?;
    Ok(())
}

/// Builds the event-type index (entries and counts) from the log in one pass, replacing what there
/// was, then the marker that says it is complete. Damaged records are left out: reading them still
/// reports the damage, and `verify` lists them.
pub(super) fn rebuild_type_index(db: &sled::Db, tree: &sled::Tree) -> Result<()> {
    let mut batch = sled::Batch::default();
    for prefix in [TYPE, COUNT] {
        for key in tree.scan_prefix([prefix]).keys() {
            batch.remove(key.map_err(sled_error)?);
        }
    }
    batch.remove(TYPE_INDEX_KEY);
    tree.apply_batch(batch).map_err(sled_error)?;
    let mut batch = sled::Batch::default();
    let mut counts = HashMap::new();
    let mut pending = 0;
    for item in tree.scan_prefix([LOG]) {
        let (key, value) = item.map_err(sled_error)?;
        let Ok(record) = parse_record(&key, value) else { continue };
        pending += insert_type_entries(&mut batch, types_of(&record), &mut counts);
        if pending >= CHUNK {
            tree.apply_batch(std::mem::take(&mut batch)).map_err(sled_error)?;
            pending = 0;
        }
    }
    batch.insert(TYPE_INDEX_KEY, &[1u8]);
    tree.apply_batch(batch).map_err(sled_error)?;
    db.flush().map_err(sled_error)?;
    Ok(())
}

/// The positions of a record's events by type (events that do not decode are left out).
fn types_of(record: &Record<sled::IVec>) -> BTreeMap<String, Vec<u64>> {
    let mut types: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for position in record.first..=record.last() {
        if let Ok(Some((_, event_type))) = record.peek(position) {
            types.entry(event_type.to_owned()).or_default().push(position);
        }
    }
    types
}

/// Builds the event-id index and the stream heads of format 4 from the log (stores of format 3 or
/// older have none): id keys in batches of [`CHUNK`], then the head keys, then the mark at the end
/// of the last record that decodes, last, so that an interrupted build runs again at the next open.
/// The caller flushes.
fn build_id_index(tree: &sled::Tree) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let mut heads: HashMap<String, u64> = HashMap::new();
    let mut failure = None;
    ids::for_each_event_after(tree, 0, |id, position, stream, version| {
        ids::add_ids(&mut batch, [(&id, &position)]);
        ids::note_version(&mut heads, stream, version);
        pending += 1;
        if pending >= CHUNK && failure.is_none() {
            failure = tree.apply_batch(std::mem::take(&mut batch)).err();
            pending = 0;
        }
    })?;
    if let Some(error) = failure {
        return Err(sled_error(error));
    }
    ids::add_heads(&mut batch, heads.iter().map(|(stream, version)| (stream.as_str(), *version)));
    tree.apply_batch(batch).map_err(sled_error)?;
    let mut last = 0;
    for item in tree.scan_prefix([LOG]).rev() {
        let (key, value) = item.map_err(sled_error)?;
        if let Ok(record) = parse_record(&key, value) {
            last = record.last();
            break;
        }
    }
    let mut batch = sled::Batch::default();
    ids::add_mark(&mut batch, last);
    tree.apply_batch(batch).map_err(sled_error)
}
