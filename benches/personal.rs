//! Benchmarks of personal data (crypto-shredding) on the sled store: what encrypting two fields per
//! event costs on appends and on replays, beside the same events without personal fields, in the
//! same run.
//!
//! | group | what |
//! | --- | --- |
//! | `personal_append_100` | appends of 100 events (10 members, 10 events each, out of 1,000 members whose keys exist) on sled with `Durability::Fsync`: `plain` through the store, `personal` (e-mail and name encrypted) through a `PersonalStore` |
//! | `personal_replay_100k` | a replay of a 100,000-event log (1,000 members) with `read_log` and a decode of every event into the user's type: `plain` from the store, `plain_through_personal_store` (the same events through a `PersonalStore`: the wrapper's cost), `personal` (every event decrypted), `erased` (every subject forgotten) |
//!
//! Every event's payload is about 200 bytes: a member id, an e-mail address and a name (the personal
//! fields), a plan and a note. The replay fixtures are built fresh in each run with
//! `Durability::Buffered`, then reopened with `Fsync`.
//!
//! ```text
//! cargo bench --bench personal
//! cargo bench --bench personal 2>&1 | grep -E '^personal_[a-z_0-9]+/|time:|thrpt:'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{multi_thread_runtime as runtime, scratch_dir};

use annals::personal::PersonalStore;
use annals::{
    Durability, Event, EventStore, ExpectedVersion, NewEvent, ReadLog, SledConfig, SledStore, StreamAppend, StreamId,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::TryStreamExt;
use tempfile::TempDir;

const MEMBERS: u64 = 1_000;
const LOG: u64 = 100_000;
const BATCH: u64 = 100;

#[derive(Event, Clone, Debug, PartialEq)]
enum MemberEvent {
    Joined {
        #[event(subject)]
        member_id: String,
        #[event(personal)]
        email: Option<String>,
        #[event(personal)]
        name: Option<String>,
        plan: String,
        note: String,
    },
}

/// The same payloads, without personal fields.
#[derive(Event, Clone, Debug, PartialEq)]
enum PlainEvent {
    Joined { member_id: String, email: Option<String>, name: Option<String>, plan: String, note: String },
}

fn note() -> String {
    "x".repeat(90)
}

fn personal_event(member: u64, n: u64) -> NewEvent {
    MemberEvent::Joined {
        member_id: format!("member-{member:05}"),
        email: Some(format!("member.{member:05}.{n}@example.org")),
        name: Some(format!("Member Number {member:05}")),
        plan: "gold".into(),
        note: note(),
    }
    .to_new_event()
    .unwrap()
}

fn plain_event(member: u64, n: u64) -> NewEvent {
    PlainEvent::Joined {
        member_id: format!("member-{member:05}"),
        email: Some(format!("member.{member:05}.{n}@example.org")),
        name: Some(format!("Member Number {member:05}")),
        plan: "gold".into(),
        note: note(),
    }
    .to_new_event()
    .unwrap()
}

/// One append of `BATCH` events: 10 members, 10 events each, in their own streams.
fn batch(first_member: u64, n: u64, make: fn(u64, u64) -> NewEvent) -> Vec<StreamAppend> {
    (0..10)
        .map(|m| {
            let member = (first_member + m) % MEMBERS;
            let events = (0..BATCH / 10).map(|i| make(member, n * BATCH + i)).collect();
            StreamAppend::new(StreamId::new(format!("member-{member:05}")).unwrap(), ExpectedVersion::Any, events)
        })
        .collect()
}

fn open(dir: &TempDir, durability: Durability) -> SledStore {
    SledConfig::new(dir.path()).durability(durability).open().unwrap()
}

/// Appends `LOG` events (1,000 per append, every member's in each) with `make`, through `store`.
async fn fill(store: &impl EventStore, make: fn(u64, u64) -> NewEvent) {
    for n in 0..LOG / 1_000 {
        let appends = (0..MEMBERS)
            .map(|member| {
                let stream = StreamId::new(format!("member-{member:05}")).unwrap();
                StreamAppend::new(stream, ExpectedVersion::Any, vec![make(member, n)])
            })
            .collect();
        store.append_multi(appends).await.unwrap();
    }
}

fn appends(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("personal_append_100");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(BATCH));

    let plain_dir = scratch_dir();
    let plain = open(&plain_dir, Durability::Fsync);
    let personal_dir = scratch_dir();
    let personal = PersonalStore::new(open(&personal_dir, Durability::Fsync));
    // Every member's key exists before the measurement, as in a store that has run for a while.
    runtime.block_on(async {
        for first in (0..MEMBERS).step_by(10) {
            personal.append_multi(batch(first, 0, personal_event)).await.unwrap();
            plain.append_multi(batch(first, 0, plain_event)).await.unwrap();
        }
    });
    let counter = AtomicU64::new(1);
    group.bench_function("plain", |b| {
        b.to_async(&runtime).iter(|| async {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            black_box(plain.append_multi(batch(n * 10 % MEMBERS, n, plain_event)).await.unwrap());
        });
    });
    group.bench_function("personal", |b| {
        b.to_async(&runtime).iter(|| async {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            black_box(personal.append_multi(batch(n * 10 % MEMBERS, n, personal_event)).await.unwrap());
        });
    });
    group.finish();
}

/// Reads the whole log through `store` and decodes every event into `E`; returns how many.
async fn replay<E: Event>(store: &impl EventStore) -> u64 {
    let mut count = 0;
    let mut events = store.read_log(ReadLog::from_start());
    while let Some(event) = events.try_next().await.unwrap() {
        if event.stream.as_str().starts_with('$') {
            continue;
        }
        black_box(E::from_recorded(&event).unwrap());
        count += 1;
    }
    count
}

fn replays(c: &mut Criterion) {
    let runtime = runtime();
    let plain_dir = scratch_dir();
    let personal_dir = scratch_dir();
    let erased_dir = scratch_dir();
    let started = Instant::now();
    runtime.block_on(async {
        fill(&open(&plain_dir, Durability::Buffered), plain_event).await;
        fill(&PersonalStore::new(open(&personal_dir, Durability::Buffered)), personal_event).await;
        let erased = PersonalStore::new(open(&erased_dir, Durability::Buffered));
        fill(&erased, personal_event).await;
        for member in 0..MEMBERS {
            erased.forget(&format!("member-{member:05}")).await.unwrap();
        }
    });
    eprintln!("personal_replay_100k: fixtures built in {:?}", started.elapsed());
    let plain = open(&plain_dir, Durability::Fsync);
    let plain_wrapped = PersonalStore::new(plain.clone());
    let personal = PersonalStore::new(open(&personal_dir, Durability::Fsync));
    let erased = PersonalStore::new(open(&erased_dir, Durability::Fsync));
    runtime.block_on(async {
        assert_eq!(replay::<PlainEvent>(&plain).await, LOG);
        assert_eq!(replay::<MemberEvent>(&personal).await, LOG);
        assert_eq!(replay::<MemberEvent>(&erased).await, LOG);
    });

    let mut group = c.benchmark_group("personal_replay_100k");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(LOG));
    group.bench_function("plain", |b| b.to_async(&runtime).iter(|| replay::<PlainEvent>(&plain)));
    group.bench_function("plain_through_personal_store", |b| {
        b.to_async(&runtime).iter(|| replay::<PlainEvent>(&plain_wrapped))
    });
    group.bench_function("personal", |b| b.to_async(&runtime).iter(|| replay::<MemberEvent>(&personal)));
    group.bench_function("erased", |b| b.to_async(&runtime).iter(|| replay::<MemberEvent>(&erased)));
    group.finish();
}

criterion_group!(benches, appends, replays);
criterion_main!(benches);
