//! Benchmark of `annals::import::CsvImport` on the real help-desk log: the whole file (21,348 rows)
//! into a fresh sled store with the default `Fsync` durability, end to end (reading and checking the
//! file, appending in batches of 1,000 rows, durable when it returns). Beside it, the same rows
//! appended by hand as `NewEvent`s in the same batches, to show what the CSV work costs.
//!
//! The file is `../shared/data/helpdesk.csv` beside the repository, or the path in
//! `ANNALS_HELPDESK_CSV`; without it, the bench runs on the 212-row excerpt in `tests/fixtures/` and
//! says so. Data: Ilya Verenich, "Helpdesk", Mendeley Data 2016, doi:10.17632/39bp3vv62t.1.
//!
//! ```text
//! cargo bench --bench import
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::scratch_dir;

use annals::import::CsvImport;
use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamAppend, StreamId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn csv_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let full = std::env::var_os("ANNALS_HELPDESK_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../shared/data/helpdesk.csv"));
    if full.is_file() {
        return full;
    }
    eprintln!("import: {} is missing; using the excerpt in tests/fixtures", full.display());
    manifest.join("tests/fixtures/helpdesk-excerpt.csv")
}

/// The rows as (case, activity, timestamp, the whole line), split naively (the log has no quotes).
fn rows(path: &PathBuf) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
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
    let path = csv_path();
    let rows = rows(&path);
    eprintln!("import: {} rows from {}", rows.len(), path.display());
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
