//! What the benchmarks share: the event payload, sled's cache size, scratch directories and the
//! runtime. Included by each bench with `mod support;` (a directory, so Cargo does not take it for a
//! benchmark of its own).
#![allow(dead_code)]

pub(crate) mod packed;

use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Bytes of every event payload.
pub(crate) const PAYLOAD_LEN: usize = 200;

/// sled's page cache in bytes, for the store and every baseline alike: the store's default of 64 MiB,
/// or `ANNALS_BENCH_CACHE_MB` (e.g. 1024 to see reads of the 1M-event log from a cache that holds it).
pub(crate) fn cache() -> u64 {
    std::env::var("ANNALS_BENCH_CACHE_MB").ok().and_then(|mb| mb.parse::<u64>().ok()).unwrap_or(64) << 20
}

/// A 200-byte JSON object, the payload of every event.
pub(crate) fn payload() -> String {
    let mut json =
        String::from(r#"{"order":"order-000042","customer":"customer-17","total":1250,"currency":"EUR","note":""#);
    json.extend(std::iter::repeat_n('x', PAYLOAD_LEN - json.len() - 2));
    json.push_str("\"}");
    assert_eq!(json.len(), PAYLOAD_LEN);
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    json
}

/// `L` + position (u64 big-endian): a log key, of one event (naive layout) or of the record whose
/// first event is at `position` (packed layout).
pub(crate) fn log_key(position: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// `S` + stream + `0x00` + version (u64 big-endian): a stream-index key, per event (naive layout) or
/// per stream per commit group, at its first version in the group (packed layout).
pub(crate) fn index_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(b'S');
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The user's type for [`payload`]: what a projection or a baseline decodes every payload into.
#[derive(serde::Deserialize)]
pub(crate) struct OrderPlaced {
    pub(crate) order: String,
    pub(crate) customer: String,
    pub(crate) total: u64,
    pub(crate) currency: String,
    pub(crate) note: String,
}

/// The resident set size of this process in bytes (`/proc/self/statm`, 4 KiB pages).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// The apparent size of every file under `path` (what `du -sb` counts, directories aside).
pub(crate) fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_size(&entry.path()) } else { meta.len() };
    }
    total
}

/// A directory on the same disk as the build (never a tmpfs, so `fsync` means something).
pub(crate) fn scratch_dir() -> TempDir {
    tempfile::Builder::new().prefix("annals-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A tokio runtime with two worker threads (the machine's two cores).
pub(crate) fn multi_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ---------------------------------------------------------------------------------------------------
// A raw-sled baseline for reads: the store's log records decoded by hand.
// ---------------------------------------------------------------------------------------------------

/// The fields of one event as a baseline decodes them from a log record: the same fields, owned,
/// that the store's `RecordedEvent` holds.
pub(crate) struct RawEvent {
    pub(crate) id: uuid::Uuid,
    pub(crate) stream: String,
    pub(crate) version: u64,
    pub(crate) position: u64,
    pub(crate) event_type: String,
    pub(crate) schema_version: u32,
    pub(crate) recorded_at: chrono::DateTime<chrono::Utc>,
    pub(crate) occurred_at: chrono::DateTime<chrono::Utc>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<String>,
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    pub(crate) payload: String,
}

/// A bounds-checked cursor over an entry.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let bytes = self.data.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str16(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        std::str::from_utf8(self.take(usize::from(len))?).ok()
    }

    fn str32(&mut self) -> Option<&'a str> {
        let len = self.u32()?;
        std::str::from_utf8(self.take(usize::try_from(len).ok()?)?).ok()
    }
}

/// Decodes one log record of the sled store (key `L` + first position, value as in
/// `docs/storage-format.md`, "Log record") the way the store's read path does, written out by hand:
/// the header and its CRC-32 (over the first position too, in format 2), then for each event its entry's CRC-32 and every envelope field into
/// owned values (stream name checked for control characters, as the store checks it). Calls `each`
/// with every event; panics on a record that does not check or decode (a baseline must not skip
/// work the store does).
pub(crate) fn decode_record(key: &[u8], record: &[u8], mut each: impl FnMut(RawEvent)) {
    const HEADER: usize = 1 + 4 + 8 + 4;
    let first = u64::from_be_bytes(key[1..9].try_into().unwrap());
    // Format 2 (0xA2) puts the record's first position under the header CRC; format 1 (0xA1) does not.
    assert!(record[0] == 0xA1 || record[0] == 0xA2, "record magic {:#x}", record[0]);
    let covers_position = record[0] == 0xA2;
    let count = u32::from_le_bytes(record[1..5].try_into().unwrap()) as usize;
    let table_end = HEADER + 4 * count;
    let mut crc = crc32fast::Hasher::new();
    if covers_position {
        crc.update(&first.to_le_bytes());
    }
    crc.update(&record[..13]);
    crc.update(&[0; 4]);
    crc.update(&record[HEADER..table_end]);
    assert_eq!(crc.finalize(), u32::from_le_bytes(record[13..17].try_into().unwrap()), "record header CRC");
    let micros = i64::from_le_bytes(record[5..13].try_into().unwrap());
    let recorded_at = chrono::DateTime::from_timestamp_micros(micros).unwrap();
    let offset = |i: usize| table_end + u32::from_le_bytes(record[HEADER + 4 * i..][..4].try_into().unwrap()) as usize;
    for i in 0..count {
        let end = if i + 1 < count { offset(i + 1) } else { record.len() };
        let entry = &record[offset(i)..end];
        let (stored_crc, entry) = entry.split_at(4);
        assert_eq!(u32::from_le_bytes(stored_crc.try_into().unwrap()), crc32fast::hash(entry), "event CRC");
        let event = decode_entry(entry, first + i as u64, recorded_at).expect("the entry decodes");
        each(event);
    }
}

fn decode_entry(entry: &[u8], position: u64, recorded_at: chrono::DateTime<chrono::Utc>) -> Option<RawEvent> {
    let mut r = Cursor { data: entry, at: 0 };
    let version = r.u64()?;
    let id = uuid::Uuid::from_slice(r.take(16)?).ok()?;
    let stream = r.str16()?;
    if stream.is_empty() || stream.len() > 256 || stream.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    let stream = stream.to_owned();
    let event_type = r.str16()?.to_owned();
    let schema_version = r.u32()?;
    let flags = r.take(1)?[0];
    let occurred_at = if flags & 1 != 0 {
        chrono::DateTime::from_timestamp_micros(i64::from_le_bytes(r.take(8)?.try_into().ok()?))?
    } else {
        recorded_at
    };
    let correlation_id = if flags & 2 != 0 { Some(r.str32()?.to_owned()) } else { None };
    let causation_id = if flags & 4 != 0 { Some(r.str32()?.to_owned()) } else { None };
    let mut headers = std::collections::BTreeMap::new();
    for _ in 0..r.u32()? {
        let key = r.str32()?.to_owned();
        headers.insert(key, r.str32()?.to_owned());
    }
    let payload = r.str32()?.to_owned();
    (r.at == entry.len()).then_some(RawEvent {
        id,
        stream,
        version,
        position,
        event_type,
        schema_version,
        recorded_at,
        occurred_at,
        correlation_id,
        causation_id,
        headers,
        payload,
    })
}
