//! The mutations: what damage each kind does to a copy of the reference store.

use std::path::{Path, PathBuf};

use crate::common::child::Rng;
use crate::common::raw_sled::{damage, raw_open, stream_entry};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// No damage: the copy must read back exactly (the campaign's own check).
    Control,
    FlipDb,
    FlipOther,
    TruncateDb,
    TruncateOther,
    ZeroDb,
    AppendGarbage,
    DeleteFile,
    RecordRemove,
    RecordFlip,
    RecordSwap,
    IndexRandom,
    IndexPlausible,
    IndexRemove,
    CheckpointFlip,
    CheckpointSwap,
    CheckpointRemove,
    TypeEntryRemove,
}

impl Kind {
    /// Mutation `i` is of kind `ALL[i % ALL.len()]`; flips and cuts of `db` come twice as often.
    pub(crate) const ALL: [Kind; 20] = [
        Kind::Control,
        Kind::FlipDb,
        Kind::FlipOther,
        Kind::TruncateDb,
        Kind::TruncateOther,
        Kind::ZeroDb,
        Kind::AppendGarbage,
        Kind::DeleteFile,
        Kind::RecordRemove,
        Kind::RecordFlip,
        Kind::RecordSwap,
        Kind::FlipDb,
        Kind::IndexRandom,
        Kind::IndexPlausible,
        Kind::IndexRemove,
        Kind::CheckpointFlip,
        Kind::CheckpointSwap,
        Kind::CheckpointRemove,
        Kind::TypeEntryRemove,
        Kind::TruncateDb,
    ];

    pub(crate) fn of(index: usize) -> Kind {
        Kind::ALL[index % Kind::ALL.len()]
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Control => "control",
            Kind::FlipDb => "flip-db",
            Kind::FlipOther => "flip-other",
            Kind::TruncateDb => "truncate-db",
            Kind::TruncateOther => "truncate-other",
            Kind::ZeroDb => "zero-db",
            Kind::AppendGarbage => "append-garbage",
            Kind::DeleteFile => "delete-file",
            Kind::RecordRemove => "record-remove",
            Kind::RecordFlip => "record-flip",
            Kind::RecordSwap => "record-swap",
            Kind::IndexRandom => "index-random",
            Kind::IndexPlausible => "index-plausible",
            Kind::IndexRemove => "index-remove",
            Kind::CheckpointFlip => "checkpoint-flip",
            Kind::CheckpointSwap => "checkpoint-swap",
            Kind::CheckpointRemove => "checkpoint-remove",
            Kind::TypeEntryRemove => "type-entry-remove",
        }
    }
}

/// The reference store's files and keys, which the mutations pick from.
pub(crate) struct Layout {
    /// Every file, relative to the store's directory, with its length.
    pub(crate) files: Vec<(PathBuf, u64)>,
    pub(crate) records: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) index: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) types: Vec<Vec<u8>>,
    pub(crate) checkpoints: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Layout {
    /// Lists the files of `pristine`, and its keys from a copy in `scratch` (opening it writes).
    pub(crate) fn of(pristine: &Path, scratch: &Path) -> Layout {
        let mut files = Vec::new();
        list_files(pristine, Path::new(""), &mut files);
        files.sort();
        copy_dir(pristine, scratch);
        let db = raw_open(scratch).unwrap();
        let tree = db.open_tree("annals").unwrap();
        let pairs = |prefix: u8| -> Vec<(Vec<u8>, Vec<u8>)> {
            tree.scan_prefix([prefix]).map(|item| item.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
        };
        let records = pairs(b'L');
        let index = pairs(b'S');
        let types = pairs(b'T').into_iter().map(|(k, _)| k).collect();
        let checkpoints = db
            .open_tree("annals-checkpoints")
            .unwrap()
            .iter()
            .map(|i| i.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        drop(db);
        Layout { files, records, index, types, checkpoints }
    }

    /// A stream index entry: a stream's first one (a quarter of the time), its last one (another
    /// quarter), or any; the ends of a stream are where a read has the least to check against.
    fn index_entry(&self, rng: &mut Rng) -> &(Vec<u8>, Vec<u8>) {
        let stream = |key: &[u8]| key[..key.len() - 8].to_vec();
        let at = rng.below(self.index.len() as u64) as usize;
        let ends: Vec<usize> = match rng.below(4) {
            0 => (0..self.index.len())
                .filter(|&i| i == 0 || stream(&self.index[i - 1].0) != stream(&self.index[i].0))
                .collect(),
            1 => (0..self.index.len())
                .filter(|&i| i + 1 == self.index.len() || stream(&self.index[i + 1].0) != stream(&self.index[i].0))
                .collect(),
            _ => return &self.index[at],
        };
        &self.index[*pick(rng, &ends)]
    }

    pub(crate) fn file(&self, rng: &mut Rng, db: bool) -> &(PathBuf, u64) {
        let candidates: Vec<&(PathBuf, u64)> =
            self.files.iter().filter(|(path, _)| (path == Path::new("db")) == db).collect();
        candidates[rng.below(candidates.len() as u64) as usize]
    }
}

fn list_files(dir: &Path, relative: &Path, out: &mut Vec<(PathBuf, u64)>) {
    for entry in std::fs::read_dir(dir.join(relative)).unwrap() {
        let entry = entry.unwrap();
        let path = relative.join(entry.file_name());
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            list_files(dir, &path, out);
        } else {
            out.push((path, meta.len()));
        }
    }
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.metadata().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

/// A key shown for a person: printable bytes as they are, the rest as `\xNN`.
fn show_key(key: &[u8]) -> String {
    key.iter().map(|&b| if b.is_ascii_graphic() { (b as char).to_string() } else { format!("\\x{b:02x}") }).collect()
}

fn decode_index_value(value: &[u8]) -> (u64, u32) {
    (u64::from_be_bytes(value[..8].try_into().unwrap()), u32::from_be_bytes(value[8..12].try_into().unwrap()))
}

/// Damages the copy in `dir` as mutation `kind` says; returns what it did.
pub(crate) fn mutate(kind: Kind, dir: &Path, layout: &Layout, rng: &mut Rng) -> String {
    match kind {
        Kind::Control => "nothing".to_owned(),
        Kind::FlipDb | Kind::FlipOther => {
            let (path, _) = layout.file(rng, kind == Kind::FlipDb);
            let mut bytes = std::fs::read(dir.join(path)).unwrap();
            if bytes.is_empty() {
                return format!("nothing ({} is empty)", path.display());
            }
            let flips = 1 + rng.below(8);
            let mut offsets = Vec::new();
            for _ in 0..flips {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 + rng.below(255) as u8;
                offsets.push(at);
            }
            std::fs::write(dir.join(path), bytes).unwrap();
            format!("flipped {flips} bytes of {} at {offsets:?}", path.display())
        }
        Kind::TruncateDb | Kind::TruncateOther => {
            let (path, len) = layout.file(rng, kind == Kind::TruncateDb);
            if *len == 0 {
                return format!("nothing ({} is empty)", path.display());
            }
            // Half the cuts land in the last 64 KiB, where the newest data is.
            let cut = if rng.below(2) == 0 { rng.below(*len) } else { len - 1 - rng.below((*len).min(64 * 1024)) };
            let file = std::fs::OpenOptions::new().write(true).open(dir.join(path)).unwrap();
            file.set_len(cut).unwrap();
            format!("cut {} from {len} to {cut} bytes", path.display())
        }
        Kind::ZeroDb => {
            let path = dir.join("db");
            let mut bytes = std::fs::read(&path).unwrap();
            let start = rng.below(bytes.len() as u64) as usize;
            let len = 1 + rng.below((bytes.len() - start).min(64 * 1024) as u64) as usize;
            bytes[start..start + len].fill(0);
            std::fs::write(&path, bytes).unwrap();
            format!("zeroed db bytes {start}..{}", start + len)
        }
        Kind::AppendGarbage => {
            let (path, _) = pick(rng, &layout.files).clone();
            let len = 1 + rng.below(4096) as usize;
            let garbage = random_bytes(rng, len);
            let mut bytes = std::fs::read(dir.join(&path)).unwrap();
            bytes.extend_from_slice(&garbage);
            std::fs::write(dir.join(&path), bytes).unwrap();
            format!("appended {} random bytes to {}", garbage.len(), path.display())
        }
        Kind::DeleteFile => {
            let (path, _) = pick(rng, &layout.files);
            std::fs::remove_file(dir.join(path)).unwrap();
            format!("deleted {}", path.display())
        }
        Kind::RecordRemove => {
            let (key, _) = pick(rng, &layout.records).clone();
            damage(dir, "annals", |tree| tree.remove(&key).map(drop)).unwrap();
            format!("removed log record {}", show_key(&key))
        }
        Kind::RecordFlip => {
            let (key, mut value) = pick(rng, &layout.records).clone();
            let at = rng.below(value.len() as u64) as usize;
            let bit = 1u8 << rng.below(8);
            value[at] ^= bit;
            damage(dir, "annals", |tree| tree.insert(&key, value).map(drop)).unwrap();
            format!("flipped bit {bit:#04x} of byte {at} of log record {}", show_key(&key))
        }
        Kind::RecordSwap => record_swap(dir, layout, rng),
        Kind::IndexRandom => {
            let (key, _) = layout.index_entry(rng).clone();
            let len = if rng.below(4) == 0 { rng.below(24) as usize } else { 12 };
            let value = random_bytes(rng, len);
            damage(dir, "annals", |tree| tree.insert(&key, value.clone()).map(drop)).unwrap();
            format!("stream index entry {} := random {value:02x?}", show_key(&key))
        }
        Kind::IndexPlausible => index_plausible(dir, layout, rng),
        Kind::IndexRemove => {
            let (key, value) = layout.index_entry(rng).clone();
            damage(dir, "annals", |tree| tree.remove(&key).map(drop)).unwrap();
            format!("removed stream index entry {} {:?}", show_key(&key), decode_index_value(&value))
        }
        Kind::CheckpointFlip => {
            let (key, mut value) = pick(rng, &layout.checkpoints).clone();
            let at = rng.below(value.len() as u64) as usize;
            value[at] ^= 1 + rng.below(255) as u8;
            damage(dir, "annals-checkpoints", |tree| tree.insert(&key, value).map(drop)).unwrap();
            format!("flipped byte {at} of checkpoint {}", show_key(&key))
        }
        Kind::CheckpointSwap => {
            let (key, _) = pick(rng, &layout.checkpoints).clone();
            let others: Vec<_> = layout.checkpoints.iter().filter(|(k, _)| *k != key).collect();
            let (other, value) = (*pick(rng, &others)).clone();
            damage(dir, "annals-checkpoints", |tree| tree.insert(&key, value).map(drop)).unwrap();
            format!("checkpoint {} := the bytes of checkpoint {}", show_key(&key), show_key(&other))
        }
        Kind::CheckpointRemove => {
            let (key, _) = pick(rng, &layout.checkpoints).clone();
            damage(dir, "annals-checkpoints", |tree| tree.remove(&key).map(drop)).unwrap();
            format!("removed checkpoint {}", show_key(&key))
        }
        Kind::TypeEntryRemove => {
            let key = pick(rng, &layout.types).clone();
            damage(dir, "annals", |tree| tree.remove(&key).map(drop)).unwrap();
            format!("removed event-type index entry {}", show_key(&key))
        }
    }
}

/// A log record rewritten with the bytes of another record holding as many events (a misplaced
/// write): every checksum inside it holds.
fn record_swap(dir: &Path, layout: &Layout, rng: &mut Rng) -> String {
    let count = |value: &[u8]| u32::from_le_bytes(value[1..5].try_into().unwrap());
    let (key, value) = pick(rng, &layout.records).clone();
    let same: Vec<_> = layout.records.iter().filter(|(k, v)| *k != key && count(v) == count(&value)).collect();
    let others: Vec<_> = layout.records.iter().filter(|(k, _)| *k != key).collect();
    let (other, bytes) = (*pick(rng, if same.is_empty() { &others } else { &same })).clone();
    damage(dir, "annals", |tree| tree.insert(&key, bytes).map(drop)).unwrap();
    format!("log record {} := the bytes of record {} ({} events)", show_key(&key), show_key(&other), count(&value))
}

/// A stream index entry rewritten with values that decode: shifted, stretched, shrunk, or another
/// entry's.
fn index_plausible(dir: &Path, layout: &Layout, rng: &mut Rng) -> String {
    let (key, value) = layout.index_entry(rng).clone();
    let (position, count) = decode_index_value(&value);
    let delta = 1 + rng.below(3);
    let (new_position, new_count) = match rng.below(6) {
        0 => (position, count + delta as u32),
        1 => (position, count.saturating_sub(delta as u32).max(1)),
        2 => (position + delta, count),
        3 => (position.saturating_sub(delta).max(1), count),
        4 => (position + delta, count + delta as u32),
        _ => decode_index_value(&pick(rng, &layout.index).1),
    };
    let (new_position, new_count) =
        if (new_position, new_count) == (position, count) { (position, count + 1) } else { (new_position, new_count) };
    let new = stream_entry(&key, new_position, new_count);
    damage(dir, "annals", |tree| tree.insert(&key, new.clone()).map(drop)).unwrap();
    format!(
        "stream index entry {} := (position {new_position}, count {new_count}) instead of ({position}, {count})",
        show_key(&key)
    )
}
