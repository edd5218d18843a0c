//! The embedded store end to end: append to a few streams on sled, close the store, reopen it and read
//! everything back (a stream, the whole log, a filtered log, and "as of a time").
//!
//! Run it with `cargo run --release --example quickstart [DIR]`. Without `DIR` it uses a fresh
//! temporary directory; with one, running it twice shows the retry of the same events being recognised.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::error::Error;
use std::path::PathBuf;

use annals::{
    EventStore, ExpectedVersion, LogFilter, NewEvent, ReadLog, ReadStream, SledStore, StreamAppend, StreamId,
};
use futures_util::TryStreamExt;
use serde_json::json;
use uuid::Uuid;

/// Deterministic ids, so that a second run of the example is recognised as a retry.
fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0A11_A150_0000_0000_0000_0000_0000_0000 + n)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let temporary = tempfile::tempdir()?;
    let dir = std::env::args().nth(1).map_or_else(|| temporary.path().to_owned(), PathBuf::from);
    let order = StreamId::new("order-1")?;
    let payment = StreamId::new("payment-1")?;

    let placed_at = {
        let store = SledStore::open(&dir)?;
        println!("opened {} (head {})", dir.display(), store.head().await?);
        let placed = NewEvent::json("OrderPlaced", &json!({ "item": "book", "quantity": 2, "total": 3000 }))?
            .with_id(id(1))
            .with_correlation_id("checkout-1");
        let first = store.append(&order, ExpectedVersion::Any, vec![placed]).await?;
        println!(
            "appended OrderPlaced: version {}, position {}, already there: {}",
            first.version, first.last_position, first.already_appended
        );
        let placed_at = store.read_log(ReadLog::from(first.last_position).limit(1)).try_next().await?;

        // Paying is two streams in one atomic append: the order and its payment.
        let paid = NewEvent::json("OrderPaid", &json!({ "amount": 3000 }))?
            .with_id(id(2))
            .with_causation_id(id(1).to_string());
        let charged = NewEvent::json("PaymentCaptured", &json!({ "order": "order-1", "amount": 3000 }))?.with_id(id(3));
        let results = store
            .append_multi(vec![
                StreamAppend::new(order.clone(), ExpectedVersion::Exact(first.version), vec![paid]),
                StreamAppend::new(payment.clone(), ExpectedVersion::NoStream, vec![charged]),
            ])
            .await?;
        for (stream, result) in [&order, &payment].iter().zip(&results) {
            println!("appended to {stream}: version {}, position {}", result.version, result.last_position);
        }
        placed_at.map(|e| e.recorded_at)
        // The store is closed here: the writer stops and the directory is unlocked.
    };

    let store = SledStore::open(&dir)?;
    println!("reopened: head {}", store.head().await?);
    println!("stream {order}:");
    let mut events = store.read_stream(&order, ReadStream::forward());
    while let Some(event) = events.try_next().await? {
        println!("  v{} @{} {} {}", event.version, event.position, event.event_type, event.payload);
    }
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    println!("whole log: {} events", log.len());
    let payments: Vec<_> =
        store.read_log(ReadLog::from_start().filter(LogFilter::all().stream_prefix("payment-"))).try_collect().await?;
    println!("payment category: {} event(s), first {}", payments.len(), payments[0].event_type);
    if let Some(at) = placed_at {
        let then: Vec<_> = store.read_stream(&order, ReadStream::forward().until_recorded(at)).try_collect().await?;
        println!("order-1 as recorded by {at}: {} event(s)", then.len());
    }
    Ok(())
}
