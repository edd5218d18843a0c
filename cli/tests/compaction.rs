//! `annals compact --yes` gives back the space a scavenge freed and keeps every live event; without
//! `--yes`, or on an open store, it changes nothing.
#![allow(missing_docs)]

mod common;

use annals::{
    scavenge, DeleteMode, EventStore, ExpectedVersion, NewEvent, ScavengeOptions, SledStore, StreamAppend, StreamId,
};
use common::{annals, TestResult};

#[tokio::test(flavor = "multi_thread")]
async fn compact_after_a_scavenge_gives_back_space_and_keeps_the_live_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events");
    let streams: Vec<StreamId> = (0..100).map(|i| StreamId::new(format!("s-{i}"))).collect::<Result<_, _>>()?;
    let kept = {
        let store = SledStore::open(&path)?;
        for round in 0..100 {
            let appends = streams
                .iter()
                .map(|s| {
                    StreamAppend::new(
                        s.clone(),
                        ExpectedVersion::Any,
                        vec![NewEvent::raw("E", format!(r#"{{"r":{round},"p":"{}"}}"#, "x".repeat(80)))],
                    )
                })
                .collect();
            store.append_multi(appends).await?;
        }
        for s in streams.iter().step_by(2) {
            store.delete_stream(s, ExpectedVersion::Any, DeleteMode::Hard).await?;
        }
        scavenge(&store, ScavengeOptions::new(), |_| {}).await?;
        store.read_log_chunk(annals::Position::ZERO, 100_000, &annals::LogFilter::default()).await?.events
    };
    let refused = annals(&path, &["compact"])?;
    assert!(!refused.ok(), "{refused:?}");
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    let run = annals(&path, &["compact", "--yes", "--json"])?;
    assert!(run.ok(), "{run:?}");
    let report = run.json()?;
    let (before, after) = (report["bytes_before"].as_u64().unwrap_or(0), report["bytes_after"].as_u64().unwrap_or(0));
    assert!(after > 0 && after < before, "{report}");
    let store = SledStore::open(&path)?;
    let found = store.read_log_chunk(annals::Position::ZERO, 100_000, &annals::LogFilter::default()).await?.events;
    assert_eq!(found, kept);
    let open = annals(&path, &["compact", "--yes"])?;
    assert!(!open.ok(), "an open store is refused: {open:?}");
    Ok(())
}
