//! Concurrent appenders: optimistic concurrency picks exactly one winner per version, and the log
//! and every stream stay gap-free, with every acknowledged event stored exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use annals::{Error, ExpectedVersion, ReadLog, ReadStream, StreamId, Version};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::timeout;
use uuid::Uuid;

use super::{event, positions, read_log, read_stream, span, stream, versions, TestResult, TestStore};

const RACERS: u64 = 16;
/// Events each racer appends to the shared stream.
const PER_RACER: u64 = 16;

/// Bounds each race, so that a racer stuck at a barrier fails the test instead of hanging it.
const RACE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a task saw while racing: `(version, id)` of each append it won, how many it lost, and any
/// answer it should not have had.
#[derive(Default)]
struct Tally {
    won: Vec<(u64, Uuid)>,
    lost: u64,
    unexpected: Vec<String>,
}

/// Checks that the stream holds exactly the events the winners were told they stored.
async fn assert_stream_is_the_winners<S: TestStore>(store: &S, s: &StreamId, won: &[(u64, Uuid)]) -> TestResult {
    let by_version: BTreeMap<u64, Uuid> = won.iter().copied().collect();
    assert_eq!(by_version.len(), won.len(), "two winners were given the same version");
    assert_eq!(by_version.keys().copied().collect::<Vec<_>>(), span(1, won.len() as u64), "winning versions");
    let read = read_stream(store, s, ReadStream::forward()).await?;
    assert_eq!(versions(&read), span(1, won.len() as u64), "stored versions");
    for e in &read {
        assert_eq!(by_version.get(&e.version.get()), Some(&e.id), "version {} holds another event", e.version);
    }
    assert_eq!(store.stream_version(s).await?, Some(Version::new(won.len() as u64)));
    Ok(())
}

pub(crate) async fn racers_expecting_the_same_version_have_exactly_one_winner<S: TestStore>(store: &S) -> TestResult {
    let s = stream("contested-1")?;
    let barrier = Arc::new(Barrier::new(RACERS as usize));
    let mut tasks = JoinSet::new();
    for racer in 0..RACERS {
        let (store, s, barrier) = (store.clone(), s.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for round in 0..PER_RACER {
                // Everyone reads the same version, then everyone appends expecting it.
                barrier.wait().await;
                let seen = store.stream_version(&s).await?.unwrap_or(Version::ZERO);
                barrier.wait().await;
                let new = event(racer * 1000 + round);
                let id = new.id();
                match store.append(&s, ExpectedVersion::Exact(seen), vec![new]).await {
                    Ok(result) => tally.won.push((result.version.get(), id)),
                    Err(Error::WrongExpectedVersion { expected, actual, .. })
                        if expected == ExpectedVersion::Exact(seen) && actual == Some(seen.next()) =>
                    {
                        tally.lost += 1
                    }
                    // Recorded rather than returned: the other racers wait for this one at the barrier.
                    Err(other) => tally.unexpected.push(other.to_string()),
                }
                barrier.wait().await;
            }
            Ok::<_, Error>(tally)
        });
    }
    let mut won = Vec::new();
    let mut lost = 0;
    while let Some(tally) = timeout(RACE_TIMEOUT, tasks.join_next()).await? {
        let tally = tally??;
        assert!(tally.unexpected.is_empty(), "unexpected answers: {:?}", tally.unexpected);
        won.extend(tally.won);
        lost += tally.lost;
    }
    assert_eq!(won.len() as u64, PER_RACER, "one winner per round");
    assert_eq!(lost, PER_RACER * (RACERS - 1), "every other racer lost with the actual version");
    assert_stream_is_the_winners(store, &s, &won).await
}

pub(crate) async fn racers_retrying_exact_appends_fill_one_stream_without_gaps_or_duplicates<S: TestStore>(
    store: &S,
) -> TestResult {
    let s = stream("contested-1")?;
    let mut tasks = JoinSet::new();
    for racer in 0..RACERS {
        let (store, s) = (store.clone(), s.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            while (tally.won.len() as u64) < PER_RACER {
                let seen = store.stream_version(&s).await?.unwrap_or(Version::ZERO);
                let new = event(racer * 1000 + tally.won.len() as u64);
                let id = new.id();
                match store.append(&s, ExpectedVersion::Exact(seen), vec![new]).await {
                    Ok(result) => {
                        if result.version != seen.next() || result.already_appended {
                            return Err(format!("expected {seen} and got {result:?}").into());
                        }
                        tally.won.push((result.version.get(), id));
                    }
                    // Someone else got there first: only ever a conflict with a later actual version.
                    Err(Error::WrongExpectedVersion { actual: Some(actual), .. }) if actual > seen => tally.lost += 1,
                    Err(other) => return Err(Box::<dyn std::error::Error + Send + Sync>::from(other)),
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(tally)
        });
    }
    let mut won = Vec::new();
    while let Some(tally) = timeout(RACE_TIMEOUT, tasks.join_next()).await? {
        let tally = tally?.map_err(|e| e.to_string())?;
        assert_eq!(tally.won.len() as u64, PER_RACER);
        won.extend(tally.won);
    }
    assert_stream_is_the_winners(store, &s, &won).await
}

const APPENDERS: usize = 64;
const STREAMS: usize = 1000;
const EVENTS_PER_STREAM: usize = 20;

/// What one acknowledged append said about its single event.
#[derive(Clone, Debug, PartialEq)]
struct Ack {
    stream: usize,
    version: u64,
    position: u64,
}

pub(crate) async fn many_appenders_over_many_streams_keep_log_and_streams_gap_free<S: TestStore>(
    store: &S,
) -> TestResult {
    let names: Arc<Vec<StreamId>> =
        Arc::new((0..STREAMS).map(|n| StreamId::new(format!("account-{n}"))).collect::<Result<_, _>>()?);
    let mut tasks = JoinSet::new();
    for appender in 0..APPENDERS {
        let (store, names) = (store.clone(), Arc::clone(&names));
        tasks.spawn(async move {
            let mut acks = HashMap::new();
            // Work item k goes to appender k % 64 and stream k % 1000: every stream is appended to by
            // several appenders at once.
            for k in (appender..STREAMS * EVENTS_PER_STREAM).step_by(APPENDERS) {
                let new = event(k as u64);
                let id = new.id();
                let result = store.append(&names[k % STREAMS], ExpectedVersion::Any, vec![new]).await?;
                if result.first_position != result.last_position || result.already_appended {
                    return Err(format!("one event, result {result:?}").into());
                }
                let ack =
                    Ack { stream: k % STREAMS, version: result.version.get(), position: result.last_position.get() };
                acks.insert(id, ack);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(acks)
        });
    }
    let mut acks: HashMap<Uuid, Ack> = HashMap::new();
    while let Some(task_acks) = timeout(RACE_TIMEOUT, tasks.join_next()).await? {
        acks.extend(task_acks?.map_err(|e| e.to_string())?);
    }
    let total = (STREAMS * EVENTS_PER_STREAM) as u64;
    assert_eq!(acks.len() as u64, total);
    let acked_positions: BTreeSet<u64> = acks.values().map(|a| a.position).collect();
    assert_eq!(acked_positions.len() as u64, total, "two appends were given the same position");
    assert_eq!(acked_positions.first().copied(), Some(1));
    assert_eq!(acked_positions.last().copied(), Some(total));
    let mut acked_versions: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); STREAMS];
    for ack in acks.values() {
        acked_versions[ack.stream].insert(ack.version);
    }
    for (n, versions) in acked_versions.iter().enumerate() {
        assert_eq!(versions.iter().copied().collect::<Vec<_>>(), span(1, EVENTS_PER_STREAM as u64), "account-{n}");
    }

    assert_eq!(store.head().await?.get(), total);
    let log = read_log(store, ReadLog::from_start()).await?;
    assert_eq!(positions(&log), span(1, total), "the log has a gap or a duplicate");
    for e in &log {
        let ack = acks.get(&e.id).ok_or_else(|| format!("unacknowledged event {e:?}"))?;
        assert_eq!(
            (names[ack.stream].clone(), ack.version, ack.position),
            (e.stream.clone(), e.version.get(), e.position.get())
        );
    }
    for (n, name) in names.iter().enumerate() {
        let read = read_stream(store, name, ReadStream::forward()).await?;
        assert_eq!(versions(&read), span(1, EVENTS_PER_STREAM as u64), "{name}");
        assert!(read.iter().all(|e| acks.get(&e.id).is_some_and(|a| a.stream == n)), "{name} holds a foreign event");
    }
    Ok(())
}
