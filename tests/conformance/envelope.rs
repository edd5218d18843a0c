//! What is stored comes back exactly: ids, types, schema versions, metadata, payload text and times.

use annals::{EventStore, ExpectedVersion, Metadata, NewEvent, ReadLog, ReadStream, StreamAppend};
use chrono::{SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

use super::stream_reads::pause;
use super::{events, read_log, read_stream, stream, TestResult, TestStore};

pub(crate) async fn every_envelope_field_round_trips_exactly<S: TestStore>(store: &S) -> TestResult {
    let order = stream("order-7")?;
    // Nanoseconds that the store keeps only to the microsecond.
    let occurred = Utc::now() - TimeDelta::days(2) + TimeDelta::nanoseconds(123_456_789);
    let full = NewEvent::raw("Order Placed ✓", "{ \"total\" : 12.50,\n \"items\": [1, 2], \"note\": \"é\\u00e9\" }")
        .with_id(Uuid::new_v4())
        .with_schema_version(3)
        .with_occurred_at(occurred)
        .with_correlation_id("corr-1")
        .with_causation_id("")
        .with_header("user", "ada")
        .with_header("tenant", "ü-日本")
        .with_header("", "empty key");
    let plain = NewEvent::json("Plain", &serde_json::json!({ "x": null }))?;
    let before = Utc::now().trunc_subsecs(6);
    store.append(&order, ExpectedVersion::NoStream, vec![full.clone(), plain.clone()]).await?;
    let after = Utc::now();

    let read = read_stream(store, &order, ReadStream::forward()).await?;
    assert_eq!(read.len(), 2);
    for (stored, new) in read.iter().zip([&full, &plain]) {
        assert_eq!(stored.id, new.id());
        assert_eq!(stored.stream, order);
        assert_eq!(stored.event_type, new.event_type());
        assert_eq!(stored.schema_version, new.schema_version());
        assert_eq!(&stored.metadata, new.metadata());
        assert_eq!(stored.payload, new.payload(), "the payload text is kept byte for byte");
        assert!(before <= stored.recorded_at && stored.recorded_at <= after, "recorded at {}", stored.recorded_at);
        assert_eq!(stored.recorded_at, stored.recorded_at.trunc_subsecs(6), "recorded_at has microsecond precision");
    }
    assert_eq!(read[0].schema_version, 3);
    assert_eq!(read[0].occurred_at, occurred.trunc_subsecs(6));
    assert_eq!(read[0].metadata.causation_id.as_deref(), Some(""));
    assert_eq!(read[1].occurred_at, read[1].recorded_at, "occurred_at defaults to recorded_at");
    assert_eq!(read[1].metadata, Metadata::default());
    assert_eq!(read[1].schema_version, 1);
    assert_eq!(read[1].payload_as::<serde_json::Value>()?, serde_json::json!({ "x": null }));
    // The log gives back the very same envelopes.
    assert_eq!(read_log(store, ReadLog::from_start()).await?, read);
    Ok(())
}

pub(crate) async fn recorded_at_never_decreases_along_the_log<S: TestStore>(store: &S) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    let mut last_of_batch = Vec::new();
    for round in 0..6 {
        if round % 2 == 0 {
            pause().await;
        }
        let results = store
            .append_multi(vec![
                StreamAppend::new(a.clone(), ExpectedVersion::Any, events(round * 10, 3)),
                StreamAppend::new(b.clone(), ExpectedVersion::Any, events(round * 10 + 5, 1)),
            ])
            .await?;
        last_of_batch.push(results.last().map(|r| r.last_position).ok_or("no result")?);
    }
    let log = read_log(store, ReadLog::from_start()).await?;
    assert_eq!(log.len(), 24);
    for pair in log.windows(2) {
        assert!(pair[0].recorded_at <= pair[1].recorded_at, "{:?} then {:?}", pair[0], pair[1]);
    }
    // The events of one append are recorded at one time; a pause makes the next one later.
    for chunk in log.chunks(4) {
        assert!(chunk.iter().all(|e| e.recorded_at == chunk[0].recorded_at), "one append, several times");
    }
    assert!(log[7].recorded_at < log[8].recorded_at, "the pause before the third append did not show");
    assert_eq!(last_of_batch.last().map(|p| p.get()), Some(24));
    Ok(())
}

/// A restored event recorded an hour from now stands for a clock that went back: the next append
/// takes its time, not the clock's, so `recorded_at` still does not decrease.
pub(crate) async fn an_append_is_recorded_no_earlier_than_the_last_stored_event<S: TestStore>(store: &S) -> TestResult {
    let source = annals::MemoryStore::new();
    let a = stream("a-1")?;
    source.append(&a, ExpectedVersion::NoStream, events(1, 1)).await?;
    let mut restored = read_log(&source, ReadLog::from_start()).await?;
    let later = Utc::now().trunc_subsecs(6) + TimeDelta::hours(1);
    restored[0].recorded_at = later;
    store.restore(restored).await?;

    let appended = store.append(&a, ExpectedVersion::Any, events(2, 2)).await?;
    let log = read_log(store, ReadLog::from_start()).await?;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].recorded_at, later);
    for event in &log[1..] {
        assert!(event.recorded_at >= later, "recorded at {} after an event recorded at {later}", event.recorded_at);
    }
    assert_eq!(store.seek_recorded(later).await?, Some(annals::Position::FIRST));
    assert_eq!(appended.first_position.get(), 2);
    Ok(())
}
