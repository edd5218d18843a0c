//! The reference store: built once per run, closed cleanly, and what it acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

use annals::{
    Checkpoint, CheckpointWrite, Durability, EventStore, ExpectedVersion, NewEvent, ReadLog, SledConfig, SledStore,
    Snapshot, StreamAppend, StreamId,
};
use uuid::Uuid;

use crate::common::child::Rng;
use crate::reads::{checkpoint_token, collect, event_token, snapshot_token, token};
use crate::{PREFIX_FILTER, SNAPSHOT_STREAM, STREAMS, TARGET_EVENTS, TYPES, TYPE_FILTERS};

pub(crate) const CHECKPOINTS: [&str; 4] =
    ["projection/balances", "subscription/audit/0", "subscription/audit/1", "projection-rebuild/balances"];

/// What the reference store acknowledged, as the child's reads should give it back.
pub(crate) struct Reference {
    pub(crate) head: u64,
    /// What each read should give, by its label.
    pub(crate) expected: BTreeMap<String, Expect>,
}

pub(crate) enum Expect {
    /// These tokens, in this order.
    Sequence(Vec<String>),
    /// This number (a head, a version): lower is a loss, higher is wrong.
    Number(u64),
    /// Any one of these tokens (a damaged snapshot may be skipped for an older one, or none).
    OneOf(Vec<String>),
    /// These streams with these versions (`list_streams`).
    Streams(BTreeMap<String, u64>),
}

/// An acknowledged event, as the appender knew it.
struct Acked {
    pub(crate) id: Uuid,
    pub(crate) stream: &'static str,
    pub(crate) version: u64,
    pub(crate) position: u64,
    pub(crate) event_type: &'static str,
    pub(crate) payload: String,
}

/// Builds the reference store in `dir` and closes it; returns what it acknowledged.
pub(crate) fn build_reference(dir: &Path, seed: u64) -> Reference {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rng = Rng::new(seed);
    let (acked, checkpoints, snapshots) = runtime.block_on(async {
        // The flushes of each group keep sled's layout the same from run to run; the syncs only cost.
        let store = SledConfig::new(dir).durability(Durability::Fsync).skip_fdatasync_for_tests(true).open().unwrap();
        let mut acked: Vec<Acked> = Vec::new();
        let mut snapshots = Vec::new();
        let mut appends = 0u64;
        while acked.len() < TARGET_EVENTS {
            appends += 1;
            let plan = plan_append(&mut rng, appends);
            let mut requests = Vec::new();
            let mut planned = Vec::new();
            for (stream, events) in plan {
                let mut news = Vec::new();
                for (event_type, payload) in events {
                    let id = Uuid::from_u64_pair(rng.next(), rng.next());
                    news.push(NewEvent::raw(event_type, payload.clone()).with_id(id));
                    planned.push((id, stream, event_type, payload));
                }
                requests.push(StreamAppend::new(StreamId::new(stream).unwrap(), ExpectedVersion::Any, news));
            }
            let sizes: Vec<usize> = requests.iter().map(|r| r.events.len()).collect();
            let results = store.append_multi(requests).await.unwrap();
            let mut planned = planned.into_iter();
            for (result, size) in results.iter().zip(sizes) {
                assert!(!result.already_appended);
                for offset in 0..size as u64 {
                    let (id, stream, event_type, payload) = planned.next().unwrap();
                    let version = result.version.get() + 1 + offset - size as u64;
                    let position = result.first_position.get() + offset;
                    acked.push(Acked { id, stream, version, position, event_type, payload });
                }
            }
            if appends == 150 {
                save_checkpoints(&store, &acked, false).await;
            }
            if appends == 200 || appends == 400 {
                let stream = StreamId::new(SNAPSHOT_STREAM).unwrap();
                let version = store.stream_version(&stream).await.unwrap().unwrap();
                let state = format!("{{\"balance\":{},\"at\":{appends}}}", rng.below(1_000_000));
                let snapshot = Snapshot::new(stream, version, 1, state);
                store.save_snapshot(snapshot.clone()).await.unwrap();
                snapshots.push(snapshot);
            }
        }
        acked.sort_by_key(|a| a.position);
        save_checkpoints(&store, &acked, true).await;
        let checkpoints = store.list_checkpoints("").await.unwrap();
        assert_eq!(store.head().await.unwrap().get(), acked.len() as u64);
        (acked, checkpoints, snapshots)
    });
    // Closed cleanly; opened again to check that the reference reads back as acknowledged.
    let reference = expected_reads(acked, &checkpoints, &snapshots);
    let store = SledStore::open(dir).unwrap();
    let (events, end) = runtime.block_on(collect(store.read_log(ReadLog::from_start())));
    end.unwrap();
    let tokens: Vec<String> = events.iter().map(event_token).collect();
    assert!(
        matches!(reference.expected.get("log"), Some(Expect::Sequence(log)) if *log == tokens),
        "the reference store does not read back as acknowledged"
    );
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "the reference store does not verify: {:?}", report.problems);
    // Dropping the last handle flushes everything before it returns; only sled's file lock lingers
    // a moment, and copies of the files do not share it.
    drop(store);
    reference
}

/// The streams and events of one append: a single event (55%), a batch to one stream (25%), or an
/// `append_multi` over two or three streams (20%); every 97th append carries three ~40 KiB events.
fn plan_append(rng: &mut Rng, n: u64) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let event = |rng: &mut Rng, stream: &str, large: bool| {
        let event_type = TYPES[rng.below(TYPES.len() as u64) as usize];
        let pad = if large { 40_000 + rng.below(2_000) } else { rng.below(400) };
        let payload = format!(
            "{{\"stream\":\"{stream}\",\"amount\":{},\"note\":\"{}\"}}",
            rng.below(100_000),
            "x".repeat(pad as usize)
        );
        (event_type, payload)
    };
    let stream = |rng: &mut Rng| STREAMS[rng.below(STREAMS.len() as u64) as usize];
    if n % 97 == 0 {
        let s = stream(rng);
        return vec![(s, (0..3).map(|_| event(rng, s, true)).collect())];
    }
    match rng.below(100) {
        0..55 => {
            let s = stream(rng);
            vec![(s, vec![event(rng, s, false)])]
        }
        55..80 => {
            let s = stream(rng);
            let size = 2 + rng.below(23);
            vec![(s, (0..size).map(|_| event(rng, s, false)).collect())]
        }
        _ => {
            let mut streams: Vec<&'static str> = Vec::new();
            let parts = 2 + rng.below(2);
            while streams.len() < parts as usize {
                let s = stream(rng);
                if !streams.contains(&s) {
                    streams.push(s);
                }
            }
            streams
                .into_iter()
                .map(|s| {
                    let size = 1 + rng.below(6);
                    (s, (0..size).map(|_| event(rng, s, false)).collect())
                })
                .collect()
        }
    }
}

/// The checkpoints: two in the middle (one of them deleted at the end), three at the end.
async fn save_checkpoints(store: &SledStore, acked: &[Acked], last: bool) {
    let at = annals::Position::new(acked.iter().map(|a| a.position).max().unwrap_or(0));
    let writes = if last {
        vec![
            CheckpointWrite::Save(
                Checkpoint::new(CHECKPOINTS[0], at)
                    .with_state(format!("{{\"version\":1,\"state\":{{\"events\":{at}}}}}")),
            ),
            CheckpointWrite::Save(Checkpoint::new(CHECKPOINTS[2], at)),
            CheckpointWrite::Delete(CHECKPOINTS[3].to_owned()),
        ]
    } else {
        vec![
            CheckpointWrite::Save(Checkpoint::new(CHECKPOINTS[0], at).with_state("{\"version\":1,\"state\":{}}")),
            CheckpointWrite::Save(Checkpoint::new(CHECKPOINTS[1], at).with_state("{\"partitions\":2,\"parked\":[]}")),
            CheckpointWrite::Save(Checkpoint::new(CHECKPOINTS[3], at).with_state("{\"version\":1}")),
        ]
    };
    store.save_checkpoints(writes).await.unwrap();
}

/// What every read of the child should give on an undamaged copy.
fn expected_reads(acked: Vec<Acked>, checkpoints: &[Checkpoint], snapshots: &[Snapshot]) -> Reference {
    let head = acked.len() as u64;
    let mut expected = BTreeMap::new();
    for (i, event) in acked.iter().enumerate() {
        assert_eq!(event.position, i as u64 + 1, "the reference's positions have a gap");
    }
    let tokens: Vec<(&Acked, String)> =
        acked.iter().map(|a| (a, token(a.id, a.stream, a.version, a.position, a.event_type, &a.payload))).collect();
    let select = |keep: &dyn Fn(&Acked) -> bool| -> Vec<String> {
        tokens.iter().filter(|(a, _)| keep(a)).map(|(_, t)| t.clone()).collect()
    };
    expected.insert("head".to_owned(), Expect::Number(head));
    expected.insert("log".to_owned(), Expect::Sequence(select(&|_| true)));
    for types in TYPE_FILTERS {
        let wanted = select(&|a| types.contains(&a.event_type));
        expected.insert(format!("log:types={}", types.join("+")), Expect::Sequence(wanted));
    }
    expected.insert(
        format!("log:prefix={PREFIX_FILTER}"),
        Expect::Sequence(select(&|a| a.stream.starts_with(PREFIX_FILTER))),
    );
    let mut versions = BTreeMap::new();
    for name in STREAMS {
        let forward = select(&|a| a.stream == name);
        let backward = forward.iter().rev().cloned().collect();
        let version = acked.iter().filter(|a| a.stream == name).map(|a| a.version).max().unwrap_or(0);
        assert_eq!(version as usize, forward.len(), "{name}: the reference's versions have a gap");
        expected.insert(format!("stream>{name}"), Expect::Sequence(forward));
        expected.insert(format!("stream<{name}"), Expect::Sequence(backward));
        expected.insert(format!("version:{name}"), Expect::Number(version));
        versions.insert(name.to_owned(), version);
    }
    expected.insert("streams".to_owned(), Expect::Streams(versions));
    expected.insert("checkpoints".to_owned(), Expect::Sequence(checkpoints.iter().map(checkpoint_token).collect()));
    for name in CHECKPOINTS {
        let saved = checkpoints.iter().filter(|c| c.name == name).map(checkpoint_token).collect();
        expected.insert(format!("checkpoint:{name}"), Expect::Sequence(saved));
    }
    let mut snapshot = vec!["none".to_owned()];
    snapshot.extend(snapshots.iter().map(snapshot_token));
    expected.insert("snapshot".to_owned(), Expect::OneOf(snapshot));
    Reference { head, expected }
}
