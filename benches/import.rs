//! Benchmark of `annals::import::CsvImport` on the real help-desk log: the whole file (21,348 rows)
//! into a fresh sled store with the default `Fsync` durability, end to end (reading and checking the
//! file, appending in batches of 1,000 rows, durable when it returns). Beside it, the baseline: the
//! very events the import writes (same streams, types, payloads, occurred times and ids), built
//! before timing from a store the import wrote, appended in the same batches of the same
//! `append_multi` parts; the bench checks once that the two stores hold the same log. The difference
//! is what reading, checking and converting the CSV costs.
//!
//! The log is the one shipped with the repository, `data/helpdesk.csv.gz`, or the file named by
//! `ANNALS_HELPDESK_CSV` (a CSV file, or a gzipped one if its name ends in `.gz`); a log that does not
//! read stops the bench. It is decompressed once into memory and written once as a plain CSV file to
//! a scratch directory, and the measured `import_file` reads that file: decompression is not part of
//! the figure, which stays comparable with run I1 in `docs/PERFORMANCE.md`. Data: Ilya Verenich,
//! "Helpdesk", Mendeley Data 2016, doi:10.17632/39bp3vv62t.1 (see `data/README.md`).
//!
//! ```text
//! cargo bench --bench import
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::scratch_dir;

use annals::import::{CsvImport, DEFAULT_BATCH_SIZE};
use annals::{EventStore, ExpectedVersion, Metadata, NewEvent, ReadLog, RecordedEvent, SledStore, StreamAppend};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::read::GzDecoder;
use futures_util::TryStreamExt;
use serde_json::value::RawValue;

/// The log to import: `ANNALS_HELPDESK_CSV`, or the shipped `data/helpdesk.csv.gz`.
fn log_path() -> PathBuf {
    std::env::var_os("ANNALS_HELPDESK_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/helpdesk.csv.gz"))
}

/// The log's CSV text, decompressed if the file's name ends in `.gz`.
fn csv_text(path: &Path) -> String {
    eprintln!("import: reading {}", path.display());
    if path.extension().is_some_and(|extension| extension == "gz") {
        let mut text = String::new();
        GzDecoder::new(std::fs::File::open(path).expect("the log opens")).read_to_string(&mut text).expect("it unzips");
        text
    } else {
        std::fs::read_to_string(path).expect("the log reads")
    }
}

/// The events of a store the import wrote, as the import appended them: one `append_multi` per
/// batch of 1,000 rows (1,000 positions, no row being skipped), one part per stream in the order of
/// its first row, each event with the import's id, type, payload (the same JSON text, passed as JSON
/// as the import passes it) and occurred time.
fn same_appends(log: &[RecordedEvent]) -> Vec<Vec<StreamAppend>> {
    log.chunks(DEFAULT_BATCH_SIZE)
        .map(|batch| {
            let mut parts: Vec<StreamAppend> = Vec::new();
            for event in batch {
                assert_eq!((event.schema_version, &event.metadata), (1, &Metadata::default()));
                let payload = RawValue::from_string(event.payload.clone()).unwrap();
                let new = NewEvent::json(event.event_type.clone(), &payload)
                    .unwrap()
                    .with_id(event.id)
                    .with_occurred_at(event.occurred_at);
                match parts.iter_mut().find(|part| part.stream == event.stream) {
                    Some(part) => part.events.push(new),
                    None => parts.push(StreamAppend::new(event.stream.clone(), ExpectedVersion::Any, vec![new])),
                }
            }
            parts
        })
        .collect()
}

async fn whole_log(store: &SledStore) -> Vec<RecordedEvent> {
    store.read_log(ReadLog::from_start()).try_collect().await.unwrap()
}

/// What must be equal between the import's store and the baseline's, event by event.
fn written(log: &[RecordedEvent]) -> Vec<(&str, u64, &str, &str, String, uuid::Uuid)> {
    log.iter()
        .map(|e| {
            (
                e.stream.as_str(),
                e.version.get(),
                e.event_type.as_str(),
                e.payload.as_str(),
                e.occurred_at.to_rfc3339(),
                e.id,
            )
        })
        .collect()
}

fn import(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let text = csv_text(&log_path());
    // The plain CSV the import reads, written once; the directory lives as long as the benchmarks.
    let csv_dir = scratch_dir();
    let path = csv_dir.path().join("helpdesk.csv");
    std::fs::write(&path, &text).unwrap();
    let options = CsvImport::new("case", "activity", "timestamp").stream_prefix("ticket-");

    // The baseline's appends, from one import before timing; then one baseline run, to check that it
    // writes the same log.
    let (imported, appends) = rt.block_on(async {
        let dir = scratch_dir();
        let store = SledStore::open(dir.path()).unwrap();
        options.import_file(&store, &path, |_| {}).await.unwrap();
        let imported = whole_log(&store).await;
        let appends = same_appends(&imported);
        (imported, appends)
    });
    let rows = imported.len();
    rt.block_on(async {
        let dir = scratch_dir();
        let store = SledStore::open(dir.path()).unwrap();
        for batch in appends.clone() {
            store.append_multi(batch).await.unwrap();
        }
        assert!(written(&whole_log(&store).await) == written(&imported), "the baseline writes what the import writes");
    });
    let payload_bytes: usize = imported.iter().map(|e| e.payload.len()).sum();
    eprintln!(
        "import: {rows} rows from {} in {} appends; payloads {} bytes on average; baseline checked to write the same log",
        path.display(),
        appends.len(),
        payload_bytes / rows
    );

    let mut group = c.benchmark_group("import_helpdesk");
    group.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Elements(rows as u64));
    group.bench_function("csv_import_fsync", |b| {
        b.iter_batched(
            scratch_dir,
            |dir| {
                rt.block_on(async {
                    let store = SledStore::open(dir.path()).unwrap();
                    let summary = options.import_file(&store, &path, |_| {}).await.unwrap();
                    assert_eq!(summary.events_written as usize, rows);
                });
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("same_events_appended_fsync", |b| {
        b.iter_batched(
            || (scratch_dir(), appends.clone()),
            |(dir, appends)| {
                rt.block_on(async {
                    let store = SledStore::open(dir.path()).unwrap();
                    for batch in appends {
                        store.append_multi(batch).await.unwrap();
                    }
                });
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
