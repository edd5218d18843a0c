//! The life of a stream on PostgreSQL, where several connections and processes share one log:
//!
//! - a schema at version 2 (tables made by the migration steps up to 2, rows as the version 2 writer
//!   wrote them) opens, migrates to version 3, and keeps every event, stream, snapshot and checkpoint;
//!   deletion, truncation and scavenging then work on it;
//! - an append and a soft or hard delete of the same stream, racing from two store handles (each with
//!   its own connections and writer), always end as one of the two serial orders: exactly one wins,
//!   and the loser left nothing behind (no event of a multi-stream append, no deletion, and the
//!   snapshots only gone when the delete won);
//! - a scavenge running while appends and deletions go on keeps every kept event at its position,
//!   never reuses a position, and a subscription reading the log live across the scavenged ranges
//!   gets every kept event once, in order, then catches up over the gaps after a restart and is not
//!   left waiting for removed positions at the end of the log;
//! - a missing row a scavenge did not remove is still damage, reported with its position.
//!
//! Every test runs in a fresh schema of the test binary's throwaway cluster.
#![cfg(feature = "postgres")]
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[path = "common/postgres.rs"]
mod postgres_support;
#[path = "common/subscriptions.rs"]
mod subscriptions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    Checkpoint, CheckpointWrite, DeleteMode, Error, EventStore, ExpectedVersion, NewEvent, Position, PostgresStore,
    ReadLog, RecordedEvent, Snapshot, StreamAppend, StreamId, StreamInfo, StreamView, Subscription, SubscriptionConfig,
    Version, POSTGRES_SCHEMA_VERSION,
};
use futures_util::TryStreamExt;
use subscriptions::{Log, Probe, TestResult, WAIT};
use uuid::Uuid;

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("a valid stream name")
}

fn event(n: u64) -> NewEvent {
    NewEvent::raw("Ticked", format!("{{\"n\":{n}}}"))
}

async fn whole_log(store: &PostgresStore) -> Result<Vec<RecordedEvent>, Error> {
    store.read_log(ReadLog::from_start()).try_collect().await
}

async fn scavenge_everything(store: &PostgresStore, chunk: usize) -> Result<u64, Error> {
    let mut from = Position::FIRST;
    let mut removed = 0;
    loop {
        let step = store.scavenge_chunk(from, chunk).await?;
        removed += step.removed;
        from = step.next;
        if step.end {
            return Ok(removed);
        }
    }
}

#[tokio::test]
async fn a_version_2_schema_migrates_to_3_with_its_events_intact() -> TestResult {
    let cluster = annals_testkit::shared()?;
    let config = postgres_support::fresh_config()?;
    let s = config.schema_name().to_owned();
    let psql = |sql: String| cluster.psql("postgres", &sql);
    let streams_columns = || {
        psql(format!(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns \
             WHERE table_schema = '{s}' AND table_name = 'streams'"
        ))
    };

    // The tables of version 2, made by its own migration steps, holding what its writer wrote: two
    // streams interleaved, the head, a snapshot and a checkpoint.
    drop(config.clone().stop_at_schema_version_for_tests(2).open().await?);
    assert_eq!(psql(format!("SELECT value FROM {s}.meta WHERE key = 'schema_version'"))?, "2");
    assert_eq!(streams_columns()?, "stream,version");
    let t0: i64 = 1_700_000_000_000_000;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let rows = [("order-1", 1), ("order-1", 2), ("cart-1", 1), ("order-1", 3)];
    let mut sql = String::new();
    for (n, ((name, version), id)) in rows.iter().zip(&ids).enumerate() {
        let recorded = t0 + n as i64 / 2;
        sql.push_str(&format!(
            "INSERT INTO {s}.events (position, id, stream, version, event_type, schema_version, recorded_us, \
             occurred_us, metadata, payload) VALUES ({}, '{id}', '{name}', {version}, 'Ticked', 1, {recorded}, \
             {}, '{{}}', '{{\"n\":{n}}}');\n",
            n + 1,
            recorded - 1_000,
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO {s}.streams (stream, version) VALUES ('order-1', 3), ('cart-1', 1);
         UPDATE {s}.head SET position = 4, recorded_us = {} WHERE id = 1;
         INSERT INTO {s}.snapshots VALUES ('order-1', 2, 1, '{{\"total\":2}}', {t0});
         INSERT INTO {s}.checkpoints VALUES ('projection/orders', 4, '{{\"seen\":4}}', {t0});",
        t0 + 1
    ));
    psql(sql)?;

    let store = config.open().await?;
    assert_eq!(
        psql(format!("SELECT value FROM {s}.meta WHERE key = 'schema_version'"))?,
        POSTGRES_SCHEMA_VERSION.to_string()
    );
    assert_eq!(POSTGRES_SCHEMA_VERSION, 3);
    assert_eq!(streams_columns()?, "stream,version,truncated_before,tombstone,deleted_next,deleted_us");
    assert_eq!(psql(format!("SELECT count(*) FROM {s}.scavenged"))?, "0");

    // Every event as it was written, and every stream with its version and an untouched life.
    let log = whole_log(&store).await?;
    let found: Vec<_> = log.iter().map(|e| (e.position.get(), e.id, e.stream.to_string(), e.version.get())).collect();
    let written: Vec<_> =
        rows.iter().zip(&ids).enumerate().map(|(n, ((s, v), id))| (n as u64 + 1, *id, (*s).to_owned(), *v)).collect();
    assert_eq!(found, written);
    assert_eq!(log[3].recorded_at.timestamp_micros(), t0 + 1);
    assert_eq!(log[3].payload, r#"{"n":3}"#);
    assert_eq!(
        store.list_streams("").await?,
        vec![(stream("cart-1"), Version::new(1)), (stream("order-1"), Version::new(3))]
    );
    let mut order_life = StreamInfo::new();
    order_life.last_version = Some(Version::new(3));
    assert_eq!(store.stream_info(&stream("order-1")).await?, order_life);
    let snapshot = store.load_snapshot(&stream("order-1"), Version::MAX).await?.ok_or("the snapshot is gone")?;
    assert_eq!((snapshot.version, snapshot.state.as_str()), (Version::new(2), r#"{"total":2}"#));
    assert_eq!(store.load_checkpoint("projection/orders").await?.map(|c| c.position), Some(Position::new(4)));

    // The lifecycle works on the migrated rows.
    let next = store.append(&stream("order-1"), ExpectedVersion::Exact(Version::new(3)), vec![event(5)]).await?;
    assert_eq!((next.first_position, next.version), (Position::new(5), Version::new(4)));
    store.delete_stream(&stream("cart-1"), ExpectedVersion::Exact(Version::new(1)), DeleteMode::Soft).await?;
    store.delete_stream(&stream("ghost-1"), ExpectedVersion::NoStream, DeleteMode::Hard).await?;
    let ghost = store.stream_info(&stream("ghost-1")).await?;
    assert!(ghost.tombstone && ghost.last_version.is_none(), "a stream deleted before it was written: {ghost:?}");
    assert!(matches!(
        store.append(&stream("ghost-1"), ExpectedVersion::Any, vec![event(6)]).await,
        Err(Error::StreamDeleted { .. })
    ));
    store.truncate_stream(&stream("order-1"), Version::new(2)).await?;
    assert_eq!(scavenge_everything(&store, 2).await?, 2, "cart-1 v1 and order-1 v1");
    let positions: Vec<u64> = whole_log(&store).await?.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, [2, 4, 5]);
    assert_eq!(store.head().await?, Position::new(5));
    Ok(())
}

/// How one round of the race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Winner {
    Append,
    Delete,
}

/// Races, `rounds` times on a fresh stream each, an append (with the stream's `side` stream, as one
/// multi-stream append) expecting version 1 through handle `a` against a delete expecting version 1
/// through handle `b`, then checks that the outcome is one of the two serial orders.
async fn race(
    a: &PostgresStore,
    b: &PostgresStore,
    mode: DeleteMode,
    rounds: u32,
) -> Result<BTreeMap<Winner, u32>, Box<dyn std::error::Error>> {
    let mut wins = BTreeMap::new();
    for round in 0..rounds {
        let (s, side) = (stream(&format!("race-{mode:?}-{round}")), stream(&format!("side-{mode:?}-{round}")));
        a.append(&s, ExpectedVersion::NoStream, vec![event(0)]).await?;
        a.save_snapshot(Snapshot::new(s.clone(), Version::new(1), 1, "{}".to_owned())).await?;
        let (main, extra) = (event(1), event(2));
        let ids = [main.id(), extra.id()];
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        // Each side waits a little more on alternate rounds, so that both win some rounds.
        let (append_delay, delete_delay) = match round % 3 {
            0 => (Duration::ZERO, Duration::ZERO),
            1 => (Duration::from_micros(300), Duration::ZERO),
            _ => (Duration::ZERO, Duration::from_micros(300)),
        };
        let appending = {
            let (a, s, side, barrier) = (a.clone(), s.clone(), side.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep(append_delay).await;
                a.append_multi(vec![
                    StreamAppend::new(s, ExpectedVersion::Exact(Version::new(1)), vec![main]),
                    StreamAppend::new(side, ExpectedVersion::NoStream, vec![extra]),
                ])
                .await
            })
        };
        let deleting = {
            let (b, s) = (b.clone(), s.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep(delete_delay).await;
                b.delete_stream(&s, ExpectedVersion::Exact(Version::new(1)), mode).await
            })
        };
        let (appended, deleted) = (appending.await?, deleting.await?);
        let life = a.stream_info(&s).await?;
        let stored: Vec<RecordedEvent> = a
            .read_log(
                ReadLog::from_start().filter(annals::LogFilter::all().stream_prefix(format!("side-{mode:?}-{round}"))),
            )
            .try_collect()
            .await?;
        let mut stored_ids: Vec<Uuid> = stored.iter().filter(|e| e.stream == side).map(|e| e.id).collect();
        stored_ids.extend(
            a.read_stream(&s, annals::ReadStream::forward().view(StreamView::History))
                .map_ok(|e| e.id)
                .try_collect::<Vec<_>>()
                .await
                .unwrap_or_default(),
        );
        let snapshot = a.load_snapshot(&s, Version::MAX).await?;
        let context = format!("round {round} {mode:?}: append {appended:?}, delete {deleted:?}, life {life:?}");
        let winner = match (&appended, &deleted) {
            (Ok(_), Err(Error::WrongExpectedVersion { actual: Some(v), .. })) if v.get() == 2 => {
                // Append first: the delete saw version 2 and changed nothing.
                assert_eq!(life.last_version, Some(Version::new(2)), "{context}");
                assert!(!life.tombstone && life.soft_deletions.is_empty(), "{context}");
                assert_eq!(life.truncated_before, Version::FIRST, "{context}");
                assert!(snapshot.is_some(), "{context}: the losing delete dropped the snapshots");
                Winner::Append
            }
            (Err(lost), Ok(())) => {
                // Delete first: the append was refused whole.
                match mode {
                    DeleteMode::Hard => {
                        assert!(matches!(lost, Error::StreamDeleted { .. }), "{context}");
                        assert!(life.tombstone, "{context}");
                    }
                    DeleteMode::Soft => {
                        assert!(matches!(lost, Error::WrongExpectedVersion { actual: None, .. }), "{context}");
                        assert_eq!(life.truncated_before, Version::new(2), "{context}");
                        assert_eq!(life.soft_deletions.len(), 1, "{context}");
                    }
                }
                assert_eq!(life.last_version, Some(Version::new(1)), "{context}");
                assert!(!stored_ids.iter().any(|id| ids.contains(id)), "{context}: a refused append left events");
                assert_eq!(a.stream_info(&side).await?.last_version, None, "{context}: half an append");
                assert!(snapshot.is_none(), "{context}: the delete kept the snapshots");
                Winner::Delete
            }
            _ => panic!("not a serial order: {context}"),
        };
        if winner == Winner::Append {
            assert!(ids.iter().all(|id| stored_ids.contains(id)), "round {round}: the acknowledged append is missing");
        }
        *wins.entry(winner).or_insert(0) += 1;
    }
    Ok(wins)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_racing_a_delete_of_its_stream_ends_as_one_of_the_serial_orders() -> TestResult {
    let config = postgres_support::fresh_config()?;
    let a = config.clone().open().await?;
    let b = config.open().await?;
    for mode in [DeleteMode::Soft, DeleteMode::Hard] {
        let wins = race(&a, &b, mode, 150).await?;
        eprintln!("{mode:?} delete against an append: {wins:?}");
    }
    // Nothing of the rounds broke the log: positions are gap-free (nothing was scavenged).
    let log = whole_log(&a).await?;
    assert!(log.iter().zip(1..).all(|(e, p)| e.position.get() == p), "a gap in the log");
    assert_eq!(a.head().await?.get(), log.len() as u64);
    Ok(())
}

/// Every append of [`appender`] that was acknowledged: its events' ids with their positions and
/// streams; and the ids of those refused.
#[derive(Default)]
struct Acks {
    stored: Vec<(Uuid, u64, StreamId, u64)>,
    refused: Vec<Uuid>,
}

/// Appends `rounds` rounds of one event to `keep-<r % 4>` and one to `drop-<r % 3>`, through `store`,
/// noting what was acknowledged. A hard-deleted `drop-*` stream refuses its events.
async fn appender(store: PostgresStore, first: u64, rounds: u64) -> Result<Acks, Error> {
    let mut acks = Acks::default();
    for round in first..first + rounds {
        for name in [format!("keep-{}", round % 4), format!("drop-{}", round % 3)] {
            let new = event(round);
            let id = new.id();
            match store.append(&stream(&name), ExpectedVersion::Any, vec![new]).await {
                Ok(done) => acks.stored.push((id, done.first_position.get(), stream(&name), done.version.get())),
                Err(Error::StreamDeleted { .. }) if name.starts_with("drop-") => acks.refused.push(id),
                Err(error) => return Err(error),
            }
        }
    }
    Ok(acks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scavenge_beside_appends_keeps_positions_and_a_live_subscription_gets_every_kept_event_once() -> TestResult {
    let config = postgres_support::fresh_config()?;
    let store = config.clone().open().await?;
    let admin = config.open().await?;
    let seen = Log::default();
    let subscription = Subscription::start(store.clone(), SubscriptionConfig::new("live"), Probe::new(&seen)).await?;

    let mut acks = appender(store.clone(), 0, 200).await?;
    // Appends go on while another handle deletes, truncates and scavenges, pass after pass.
    let appending = tokio::spawn(appender(store.clone(), 200, 600));
    admin.delete_stream(&stream("drop-0"), ExpectedVersion::Any, DeleteMode::Hard).await?;
    admin.delete_stream(&stream("drop-1"), ExpectedVersion::Any, DeleteMode::Soft).await?;
    admin.truncate_stream(&stream("keep-0"), Version::new(40)).await?;
    let mut passes = 0;
    let mut removed = 0;
    while !appending.is_finished() || passes < 2 {
        if passes == 3 {
            admin.delete_stream(&stream("drop-2"), ExpectedVersion::Any, DeleteMode::Hard).await?;
        }
        removed += scavenge_everything(&admin, 97).await?;
        passes += 1;
    }
    let later = appending.await??;
    acks.stored.extend(later.stored);
    acks.refused.extend(later.refused);
    // A last pass after the appends: everything removable is gone.
    removed += scavenge_everything(&admin, 97).await?;
    eprintln!("{passes} passes beside the appends, {removed} events removed");

    // No position was reused: every acknowledged event has its own, and together they are 1..=head.
    let head = store.head().await?.get();
    let positions: BTreeSet<u64> = acks.stored.iter().map(|a| a.1).collect();
    assert_eq!(positions.len(), acks.stored.len(), "a position given twice");
    assert_eq!(positions, (1..=head).collect(), "positions are the acknowledged events' and nothing else");

    // What is stored is exactly what the streams' lives keep, each event at its acknowledged position.
    let mut lives = HashMap::new();
    for name in ["keep-0", "keep-1", "keep-2", "keep-3", "drop-0", "drop-1", "drop-2"] {
        lives.insert(stream(name), admin.stream_info(&stream(name)).await?);
    }
    let log = whole_log(&store).await?;
    let stored: Vec<(Uuid, u64)> = log.iter().map(|e| (e.id, e.position.get())).collect();
    let kept: Vec<(Uuid, u64)> = acks
        .stored
        .iter()
        .filter(|(_, _, s, v)| !lives[s].is_removable(Version::new(*v)))
        .map(|(id, p, _, _)| (*id, *p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort_unstable();
    assert_eq!(stored_sorted, kept, "the stored events are the kept ones, at their positions");
    assert_eq!(removed as usize, acks.stored.len() - kept.len(), "every removed event was removed once");
    assert!(acks.refused.iter().all(|id| !stored.iter().any(|(s, _)| s == id)), "a refused event is stored");
    assert!(!acks.refused.is_empty(), "no append met the tombstone of drop-2");
    assert!(lives[&stream("drop-1")].current_version().is_some(), "drop-1 started again after its soft delete");

    // The newest position removed too: the log ends in a gap no reader waits for.
    let tail = store.append(&stream("tail-1"), ExpectedVersion::NoStream, vec![event(0)]).await?;
    admin.delete_stream(&stream("tail-1"), ExpectedVersion::Any, DeleteMode::Hard).await?;
    assert_eq!(admin.scavenge_stream(&stream("tail-1")).await?, 1);
    assert_eq!(store.head().await?, tail.last_position, "the head never moves back");

    // The live subscription got every kept event once, in order (and removed ones it read before
    // they went), and reaches the head although the head's event is gone.
    subscription.wait_for(tail.last_position, WAIT).await?;
    let live = seen.positions();
    assert!(live.windows(2).all(|w| w[0] < w[1]), "in order and once");
    let live_set: BTreeSet<u64> = live.iter().copied().collect();
    assert!(stored.iter().all(|(_, p)| live_set.contains(p)), "the live subscription missed a kept event");
    assert_eq!(subscription.lag(), 0);
    subscription.stop().await?;

    // A subscription from the start catches up over the gaps and gets exactly what is stored.
    let again = Log::default();
    let catching_up = Subscription::start(store.clone(), SubscriptionConfig::new("late"), Probe::new(&again)).await?;
    catching_up.wait_for(tail.last_position, WAIT).await?;
    let mut expected: Vec<u64> = stored.iter().map(|(_, p)| *p).collect();
    expected.sort_unstable();
    assert_eq!(again.positions(), expected);
    catching_up.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_row_no_scavenge_removed_is_still_damage_with_its_position() -> TestResult {
    let cluster = annals_testkit::shared()?;
    let config = postgres_support::fresh_config()?;
    let s = config.schema_name().to_owned();
    let store = config.open().await?;
    for n in 0..6 {
        store.append(&stream(&format!("s-{}", n % 2)), ExpectedVersion::Any, vec![event(n)]).await?;
    }
    store.delete_stream(&stream("s-0"), ExpectedVersion::Any, DeleteMode::Hard).await?;
    // s-0 holds positions 1, 3, 5; scavenging removes them, and reads skip the gaps.
    assert_eq!(store.scavenge_stream(&stream("s-0")).await?, 3);
    let positions: Vec<u64> = whole_log(&store).await?.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, [2, 4, 6]);
    // A row deleted behind the store's back, next to the scavenged gaps, is reported where it was.
    cluster.psql("postgres", &format!("DELETE FROM {s}.events WHERE position = 4"))?;
    let damaged = whole_log(&store).await;
    assert!(matches!(&damaged, Err(Error::Corrupt { position, .. }) if position.get() == 4), "{damaged:?}");
    // The same at the end of the log.
    cluster.psql(
        "postgres",
        &format!("INSERT INTO {s}.scavenged VALUES (4, 4); DELETE FROM {s}.events WHERE position = 6"),
    )?;
    let damaged = whole_log(&store).await;
    assert!(matches!(&damaged, Err(Error::Corrupt { position, .. }) if position.get() == 6), "{damaged:?}");
    Ok(())
}

#[tokio::test]
async fn checkpoints_and_snapshots_of_other_streams_survive_a_delete() -> TestResult {
    let store = postgres_support::fresh_config()?.open().await?;
    let (gone, kept) = (stream("cart-1"), stream("cart-10"));
    for s in [&gone, &kept] {
        store.append(s, ExpectedVersion::NoStream, vec![event(1)]).await?;
        store.save_snapshot(Snapshot::new(s.clone(), Version::new(1), 1, "{}".to_owned())).await?;
    }
    store.save_checkpoints(vec![CheckpointWrite::Save(Checkpoint::new("projection/carts", Position::new(2)))]).await?;
    store.delete_stream(&gone, ExpectedVersion::Any, DeleteMode::Hard).await?;
    assert!(store.load_snapshot(&gone, Version::MAX).await?.is_none());
    assert!(store.load_snapshot(&kept, Version::MAX).await?.is_some(), "a prefix-sharing stream lost its snapshot");
    assert!(store.load_checkpoint("projection/carts").await?.is_some());
    Ok(())
}

/// The figures of the PostgreSQL scavenge: 400,000 events, every other one in a hard-deleted stream
/// (the worst case for `scavenged`: one range per removed event) or, with `ANNALS_MEASURE_RUNS=1`, in
/// runs of 500. Not a guarantee: run it by hand, in release mode, and read what it prints:
/// `cargo test --release --features postgres --test postgres_lifecycle measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn measure_scavenging_200_000_of_400_000_events() -> TestResult {
    let cluster = annals_testkit::shared()?;
    let config = postgres_support::fresh_config()?;
    let s = config.schema_name().to_owned();
    let store = config.open().await?;
    let runs = std::env::var("ANNALS_MEASURE_RUNS").is_ok_and(|v| v == "1");
    let payload = format!("{{\"reading\":{},\"unit\":\"celsius\",\"note\":\"{}\"}}", 21.5, "x".repeat(60));
    let started = std::time::Instant::now();
    for batch in 0..400u64 {
        let appends = if runs {
            // Two streams per append, 500 events each: removed positions come in runs of 500.
            ["keep", "drop"]
                .iter()
                .map(|kind| {
                    let events = (0..500).map(|_| NewEvent::raw("Read", payload.clone())).collect();
                    StreamAppend::new(stream(&format!("{kind}-{}", batch % 50)), ExpectedVersion::Any, events)
                })
                .collect()
        } else {
            // 1,000 streams (500 to keep, 500 to drop) of one event each, alternating: every other
            // position goes.
            (0..1000u64)
                .map(|n| {
                    let kind = if n % 2 == 0 { "keep" } else { "drop" };
                    let name = format!("{kind}-{}", n / 2);
                    StreamAppend::new(stream(&name), ExpectedVersion::Any, vec![NewEvent::raw("Read", payload.clone())])
                })
                .collect::<Vec<_>>()
        };
        store.append_multi(appends).await?;
    }
    eprintln!("appended 400,000 events in {:?}", started.elapsed());
    let drops = if runs { 50 } else { 500 };
    for n in 0..drops {
        store.delete_stream(&stream(&format!("drop-{n}")), ExpectedVersion::Any, DeleteMode::Hard).await?;
    }
    // Total (with indexes and TOAST) | heap alone, in bytes.
    let size = |table: &str| {
        cluster.psql(
            "postgres",
            &format!(
                "SELECT pg_total_relation_size('{s}.{table}') || ' (heap ' || pg_relation_size('{s}.{table}') || ')'"
            ),
        )
    };
    cluster.psql("postgres", &format!("VACUUM {s}.events"))?;
    let before = size("events")?;
    let started = std::time::Instant::now();
    let report = annals::scavenge(&store, annals::ScavengeOptions::new(), |_| {}).await?;
    let took = started.elapsed();
    assert_eq!(report.removed, 200_000);
    let after = size("events")?;
    let ranges = cluster.psql("postgres", &format!("SELECT count(*) FROM {s}.scavenged"))?;
    let ranges_size = size("scavenged")?;
    let started = std::time::Instant::now();
    cluster.psql("postgres", &format!("VACUUM {s}.events"))?;
    let vacuum = started.elapsed();
    let vacuumed = size("events")?;
    let started = std::time::Instant::now();
    let log_read = whole_log(&store).await?.len();
    let read = started.elapsed();
    // The space VACUUM freed is reused: 200,000 new events fit in it.
    for batch in 0..200u64 {
        let events = (0..1000).map(|_| NewEvent::raw("Read", payload.clone())).collect();
        store.append(&stream(&format!("refill-{batch}")), ExpectedVersion::NoStream, events).await?;
    }
    let refilled = size("events")?;
    for batch in 0..200u64 {
        let refill = stream(&format!("refill-{batch}"));
        store.delete_stream(&refill, ExpectedVersion::Any, DeleteMode::Hard).await?;
        store.scavenge_stream(&refill).await?;
    }
    let started = std::time::Instant::now();
    cluster.psql("postgres", &format!("VACUUM FULL {s}.events"))?;
    let full = started.elapsed();
    let compacted = size("events")?;
    eprintln!(
        "layout: {}; scavenge (chunk 10,000): {took:?}, {} examined, {} removed, {} bytes of event data; \
         events table: {before} bytes before, {after} after the scavenge, {vacuumed} after VACUUM ({vacuum:?}), \
         {refilled} after 200,000 new events, {compacted} after VACUUM FULL ({full:?}); scavenged: {ranges} ranges, {ranges_size} bytes; \
         reading the {log_read} events left: {read:?}",
        if runs { "runs of 500" } else { "alternating" },
        report.examined,
        report.removed,
        report.bytes_removed,
    );
    Ok(())
}
