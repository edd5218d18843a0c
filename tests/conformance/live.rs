//! The live signal: a head watch wakes when another task's append is acknowledged.

use std::time::Duration;

use annals::{ExpectedVersion, Position, ReadLog};
use tokio::time::timeout;

use super::{events, read_log, stream, TestResult, TestStore};

/// Long enough for any append on a loaded machine, short enough to fail a hung test quickly.
const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) async fn a_head_watch_wakes_on_an_append_from_another_task<S: TestStore>(store: &S) -> TestResult {
    let order = stream("order-1")?;
    store.append(&order, ExpectedVersion::NoStream, events(1, 2)).await?;
    let mut watch = store.watch_head();
    assert_eq!(watch.current(), Position::new(2));
    // Nothing new: waiting past the head does not resolve on its own.
    let early = timeout(Duration::from_millis(50), watch.wait_past(Position::new(2))).await;
    assert!(early.is_err(), "wait_past resolved with nothing appended: {early:?}");

    let writer = store.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let order = annals::StreamId::new("order-1")?;
        writer.append(&order, ExpectedVersion::Exact(annals::Version::new(2)), events(3, 3)).await
    });
    let head = timeout(PATIENCE, watch.wait_past(Position::new(2))).await??;
    let result = timeout(PATIENCE, appender).await???;
    // The three events are one append: the head moves past all of them at once, never partway.
    assert_eq!(head, Position::new(5));
    assert_eq!(result.last_position, head);
    // Woken means acknowledged: the events can be read at once.
    let read = read_log(store, ReadLog::from(Position::new(3))).await?;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [3, 4, 5]);

    // `changed` wakes on the next append as well.
    let writer = store.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        writer.append(&annals::StreamId::new("order-2")?, ExpectedVersion::Any, events(6, 1)).await
    });
    let moved = timeout(PATIENCE, watch.changed()).await??;
    timeout(PATIENCE, appender).await???;
    assert_eq!(moved, Position::new(6));
    assert_eq!(watch.current(), Position::new(6));
    Ok(())
}

pub(crate) async fn many_watchers_are_all_woken_by_one_append<S: TestStore>(store: &S) -> TestResult {
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let mut watch = store.watch_head();
            tokio::spawn(async move { timeout(PATIENCE, watch.wait_past(Position::ZERO)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let result = store.append(&stream("order-1")?, ExpectedVersion::Any, events(1, 4)).await?;
    for waiter in waiters {
        assert_eq!(waiter.await???, result.last_position);
    }
    Ok(())
}

/// Events the race below appends, in appends of 1 to 3.
const RACED: u64 = 300;

/// A task that does nothing but wait on the head watch reads, the moment it wakes, every event up to
/// the head it was woken with, in the log, in its stream and in the head: it never sees the watch
/// move before the events are readable. It does not wait for the appender's acknowledgement.
pub(crate) async fn a_task_woken_by_the_head_watch_reads_the_events_at_once<S: TestStore>(store: &S) -> TestResult {
    let reader = {
        let store = store.clone();
        let mut watch = store.watch_head();
        tokio::spawn(async move {
            let (mut seen, mut wakes) = (0, 0);
            while seen < RACED {
                let woken = timeout(PATIENCE, watch.wait_past(Position::new(seen))).await??;
                wakes += 1;
                // At once: no sleep, no other await before the reads.
                let read = read_log(&store, ReadLog::from(Position::new(seen + 1))).await?;
                let head = store.head().await?;
                let positions: Vec<u64> = read.iter().map(|e| e.position.get()).collect();
                if positions.first() != Some(&(seen + 1)) || positions.last() < Some(&woken.get()) {
                    return Err(format!("woken at {woken} after {seen}, the log read gave {positions:?}").into());
                }
                if head < woken {
                    return Err(format!("woken at {woken}, head() said {head}").into());
                }
                let last = read.iter().find(|e| e.position == woken).ok_or("the woken position was not read")?;
                let version = store.stream_version(&last.stream).await?;
                if version < Some(last.version) {
                    return Err(format!("woken at {woken}, {} is at {version:?}", last.stream).into());
                }
                seen = woken.get();
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(wakes)
        })
    };
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut appended = 0;
            while appended < RACED {
                let count = (1 + appended % 3).min(RACED - appended);
                let s = annals::StreamId::new(format!("race-{}", appended % 5))?;
                store.append(&s, ExpectedVersion::Any, events(appended, count)).await?;
                appended += count;
                // Lets the reader run between appends even on a store that never waits.
                tokio::task::yield_now().await;
            }
            Ok::<_, annals::Error>(())
        })
    };
    timeout(PATIENCE, appender).await???;
    let wakes = timeout(PATIENCE, reader).await??.map_err(|e| e.to_string())?;
    assert!(wakes > 1, "the reader woke only {wakes} times: it raced with nothing");
    Ok(())
}
