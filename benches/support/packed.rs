//! The raw-sled "packed" layout of issue 16, a baseline for the store's writes, reads and disk use:
//! one log record per commit group holding all of its events, and one stream-index key per stream per
//! group, made durable with `flush()` + `fdatasync` of `<path>/db` per group.
//!
//! Keys and values (one sled tree, `packed`; the two prefixes keep one `apply_batch` per group):
//!
//! - log record: key `L` + position of its first event (u64 big-endian); value `recorded_at` (i64
//!   microseconds, LE), the event count (u32 LE), then per event its length (u32 LE) and its bytes:
//!   version (u64 LE), id (16 bytes), stream (u16 LE length + UTF-8), type (u16 LE length + UTF-8),
//!   payload (the rest). No checksum of its own: sled checksums its log.
//! - stream index: key `S` + stream + `0x00` + the stream's first version in the group (u64 BE); value
//!   the position of that first event (u64 BE) and how many of the group's events are the stream's
//!   (u32 BE). A reader finds the record holding the position and takes the stream's events from it.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{index_key, log_key};

/// One event handed to the packed layout: the envelope a store must keep, and the payload.
pub(crate) struct PackedEvent {
    pub(crate) stream: String,
    pub(crate) event_type: &'static str,
    pub(crate) id: Uuid,
    pub(crate) payload: String,
}

impl PackedEvent {
    pub(crate) fn new(stream: &str, event_type: &'static str, payload: &str) -> Self {
        PackedEvent { stream: stream.to_owned(), event_type, id: Uuid::now_v7(), payload: payload.to_owned() }
    }
}

/// A raw sled database written in the packed layout by one writer.
pub(crate) struct Packed {
    db: sled::Db,
    tree: sled::Tree,
    data: File,
    next_position: u64,
    versions: HashMap<String, u64>,
    /// Time spent applying the batch, in `flush` and in `fdatasync`, over `groups`.
    spent: [Duration; 3],
    groups: u64,
    events: u64,
}

impl Packed {
    pub(crate) fn open(path: &Path) -> Self {
        let db = sled::Config::new().path(path).cache_capacity(super::cache()).open().unwrap();
        let tree = db.open_tree("packed").unwrap();
        let data = File::options().read(true).write(true).open(path.join("db")).unwrap();
        Packed {
            db,
            tree,
            data,
            next_position: 1,
            versions: HashMap::new(),
            spent: [Duration::ZERO; 3],
            groups: 0,
            events: 0,
        }
    }

    /// The tree holding the records and the index keys.
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Writes `events` as one commit group (one record, one index key per stream), `flush` +
    /// `fdatasync`; returns the position of the first event.
    pub(crate) fn commit(&mut self, events: &[PackedEvent]) -> u64 {
        let started = Instant::now();
        let first = self.apply(events, chrono::Utc::now().timestamp_micros());
        let written = Instant::now();
        self.db.flush().unwrap();
        let flushed = Instant::now();
        self.data.sync_data().unwrap();
        self.spent[0] += written - started;
        self.spent[1] += flushed - written;
        self.spent[2] += flushed.elapsed();
        first
    }

    /// Writes `events` as one commit group without making it durable (to build a fixture); returns
    /// the position of the first event.
    pub(crate) fn apply(&mut self, events: &[PackedEvent], recorded_at: i64) -> u64 {
        let first = self.next_position;
        let mut record = Vec::with_capacity(12 + events.iter().map(|e| e.payload.len() + 64).sum::<usize>());
        record.extend_from_slice(&recorded_at.to_le_bytes());
        record.extend_from_slice(&(events.len() as u32).to_le_bytes());
        // Each stream's first version and first position in the group, and its event count.
        let mut firsts: HashMap<&str, (u64, u64, u32)> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            if !self.versions.contains_key(event.stream.as_str()) {
                self.versions.insert(event.stream.clone(), 0);
            }
            let version = self.versions.get_mut(event.stream.as_str()).unwrap();
            *version += 1;
            let version = *version;
            let entry = firsts.entry(event.stream.as_str()).or_insert((version, first + i as u64, 0));
            entry.2 += 1;
            encode_event(&mut record, version, event);
        }
        let mut batch = sled::Batch::default();
        batch.insert(&log_key(first)[..], record);
        for (stream, (version, position, count)) in firsts {
            let mut value = [0; 12];
            value[..8].copy_from_slice(&position.to_be_bytes());
            value[8..].copy_from_slice(&count.to_be_bytes());
            batch.insert(index_key(stream, version), &value[..]);
        }
        self.tree.apply_batch(batch).unwrap();
        self.next_position += events.len() as u64;
        self.groups += 1;
        self.events += events.len() as u64;
        first
    }

    /// Flushes sled's buffers (before a clean close).
    pub(crate) fn flush(&self) {
        self.db.flush().unwrap();
    }

    /// Prints the average commit group and where the time of a commit went.
    pub(crate) fn report(&self, what: &str) {
        let n = self.groups;
        if n == 0 {
            return;
        }
        let [write, flush, sync] = self.spent.map(|d| d / n as u32);
        eprintln!(
            "{what}: {} events in {n} commit groups ({:.1} events per group); per group: write {write:.1?}, \
             flush {flush:.1?}, fdatasync {sync:.1?}",
            self.events,
            self.events as f64 / n as f64
        );
    }
}

fn encode_event(record: &mut Vec<u8>, version: u64, event: &PackedEvent) {
    let len = 8 + 16 + 2 + event.stream.len() + 2 + event.event_type.len() + event.payload.len();
    record.extend_from_slice(&(len as u32).to_le_bytes());
    record.extend_from_slice(&version.to_le_bytes());
    record.extend_from_slice(event.id.as_bytes());
    record.extend_from_slice(&(event.stream.len() as u16).to_le_bytes());
    record.extend_from_slice(event.stream.as_bytes());
    record.extend_from_slice(&(event.event_type.len() as u16).to_le_bytes());
    record.extend_from_slice(event.event_type.as_bytes());
    record.extend_from_slice(event.payload.as_bytes());
}

/// One event of a packed record, its envelope decoded into owned values (as the store's
/// `RecordedEvent` holds it) and its payload left in the record for the caller to decode.
pub(crate) struct PackedView<'a> {
    pub(crate) position: u64,
    pub(crate) version: u64,
    pub(crate) id: Uuid,
    pub(crate) stream: String,
    pub(crate) event_type: String,
    pub(crate) recorded_at: chrono::DateTime<chrono::Utc>,
    pub(crate) payload: &'a str,
}

/// Decodes the record stored under `key`, calling `each` with every event; panics on a record that
/// does not decode (a baseline must not skip work).
pub(crate) fn decode(key: &[u8], record: &[u8], mut each: impl FnMut(PackedView<'_>)) {
    let first = u64::from_be_bytes(key[1..9].try_into().unwrap());
    let micros = i64::from_le_bytes(record[..8].try_into().unwrap());
    let recorded_at = chrono::DateTime::from_timestamp_micros(micros).unwrap();
    let count = u32::from_le_bytes(record[8..12].try_into().unwrap());
    let mut at = 12;
    for i in 0..u64::from(count) {
        let len = u32::from_le_bytes(record[at..at + 4].try_into().unwrap()) as usize;
        let entry = &record[at + 4..at + 4 + len];
        at += 4 + len;
        let version = u64::from_le_bytes(entry[..8].try_into().unwrap());
        let id = Uuid::from_slice(&entry[8..24]).unwrap();
        let stream_len = usize::from(u16::from_le_bytes(entry[24..26].try_into().unwrap()));
        let stream = std::str::from_utf8(&entry[26..26 + stream_len]).unwrap().to_owned();
        let rest = &entry[26 + stream_len..];
        let type_len = usize::from(u16::from_le_bytes(rest[..2].try_into().unwrap()));
        let event_type = std::str::from_utf8(&rest[2..2 + type_len]).unwrap().to_owned();
        let payload = std::str::from_utf8(&rest[2 + type_len..]).unwrap();
        each(PackedView { position: first + i, version, id, stream, event_type, recorded_at, payload });
    }
    assert_eq!(at, record.len(), "the record ends after its last event");
}

// ---------------------------------------------------------------------------------------------------
// Group commit over the packed layout: appenders queue, one writer thread commits what is queued.
// ---------------------------------------------------------------------------------------------------

struct Job {
    event: PackedEvent,
    ack: oneshot::Sender<u64>,
}

/// A writer thread draining a queue the way a group-commit writer does: it takes everything queued,
/// writes it as one group (one record, index keys, `flush` + `fdatasync`) and acknowledges each
/// appender with its event's position. Cloning gives another appender's handle.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    queue: mpsc::Sender<Job>,
}

/// The writer thread; `close` waits for it to finish the queue and gives the database back.
pub(crate) struct GroupWriterThread(JoinHandle<Packed>);

impl GroupWriter {
    pub(crate) fn spawn(mut packed: Packed) -> (GroupWriter, GroupWriterThread) {
        let (queue, jobs) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            while let Ok(job) = jobs.recv() {
                let mut group = vec![job];
                group.extend(jobs.try_iter());
                let (events, acks): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.event, job.ack)).unzip();
                let first = packed.commit(&events);
                for (i, ack) in acks.into_iter().enumerate() {
                    let _ = ack.send(first + i as u64);
                }
            }
            packed
        });
        (GroupWriter { queue }, GroupWriterThread(thread))
    }

    /// Queues one event and waits until it is durable; returns its position.
    pub(crate) async fn append(&self, event: PackedEvent) -> u64 {
        let (ack, acked) = oneshot::channel();
        self.queue.send(Job { event, ack }).unwrap();
        acked.await.unwrap()
    }
}

impl GroupWriterThread {
    /// Waits for the writer to stop (every `GroupWriter` handle dropped) and returns the database.
    pub(crate) fn close(self) -> Packed {
        self.0.join().unwrap()
    }
}
