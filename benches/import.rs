//! Benchmark of `annals::import::CsvImport` on the real help-desk log: the whole file (21,348 rows)
//! into a fresh sled store with the default `Fsync` durability, end to end (reading and checking the
//! file, appending in batches of 1,000 rows, durable when it returns). Beside it, the same rows
//! appended by hand as `NewEvent`s in the same batches, to show what the CSV work costs.
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

use annals::import::CsvImport;
use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamAppend, StreamId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::read::GzDecoder;

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

/// The rows as (case, activity, timestamp), split naively (the log has no quotes).
fn rows(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
            (fields[0].to_owned(), fields[1].to_owned(), fields[3].to_owned())
        })
        .collect()
}

fn import(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let text = csv_text(&log_path());
    let rows = rows(&text);
    // The plain CSV the import reads, written once; the directory lives as long as the benchmarks.
    let csv_dir = scratch_dir();
    let path = csv_dir.path().join("helpdesk.csv");
    std::fs::write(&path, &text).unwrap();
    eprintln!("import: {} rows, written to {}", rows.len(), path.display());
    let options = CsvImport::new("case", "activity", "timestamp").stream_prefix("ticket-");

    let mut group = c.benchmark_group("import_helpdesk");
    group.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("csv_import_fsync", |b| {
        b.iter_batched(
            scratch_dir,
            |dir| {
                rt.block_on(async {
                    let store = SledStore::open(dir.path()).unwrap();
                    let summary = options.import_file(&store, &path, |_| {}).await.unwrap();
                    assert_eq!(summary.events_written as usize, rows.len());
                });
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("same_batches_appended_by_hand_fsync", |b| {
        b.iter_batched(
            scratch_dir,
            |dir| {
                rt.block_on(async {
                    let store = SledStore::open(dir.path()).unwrap();
                    for batch in rows.chunks(1_000) {
                        let mut appends: Vec<StreamAppend> = Vec::new();
                        for (case, activity, time) in batch {
                            let occurred = chrono::DateTime::parse_from_rfc3339(time).unwrap().to_utc();
                            let event = NewEvent::raw(activity.clone(), "{}").with_occurred_at(occurred);
                            match appends.iter_mut().find(|a| a.stream.as_str().ends_with(case.as_str())) {
                                Some(append) => append.events.push(event),
                                None => appends.push(StreamAppend::new(
                                    StreamId::new(format!("ticket-{case}")).unwrap(),
                                    ExpectedVersion::Any,
                                    vec![event],
                                )),
                            }
                        }
                        store.append_multi(appends).await.unwrap();
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
