//! Writing batches: one atomic append per batch, and the retry of a batch stored in part.

use std::collections::HashMap;

use super::rows::Row;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position};
use crate::store::{AppendResult, EventStore, StreamAppend};
use crate::stream_id::StreamId;

// ---------------------------------------------------------------------------------------------------
// Writing batches.

/// Events appended and found already stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) written: u64,
    pub(super) present: u64,
    /// The highest position of the batch's events (stored now or before).
    pub(super) last: Option<Position>,
}

impl Tally {
    fn add(&mut self, events: usize, result: &AppendResult) {
        if result.already_appended {
            self.present += events as u64;
        } else {
            self.written += events as u64;
        }
        self.last = self.last.max(Some(result.last_position));
    }
}

/// Groups a batch's rows by stream, keeping their order: one part per stream, streams in the order
/// of their first row.
fn group(rows: Vec<Row>) -> Vec<StreamAppend> {
    let mut parts: Vec<StreamAppend> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for Row { stream, event } in rows {
        match index.get(&stream) {
            Some(&at) => parts[at].events.push(event),
            None => {
                index.insert(stream.clone(), parts.len());
                parts.push(StreamAppend::new(stream, ExpectedVersion::Any, vec![event]));
            }
        }
    }
    parts
}

/// Appends one batch atomically. A batch the store holds partly (see the module docs) goes again
/// stream by stream, and a stream's part that is itself partly stored event by event.
pub(super) async fn append_batch<S: EventStore + ?Sized>(store: &S, rows: Vec<Row>) -> Result<Tally> {
    let mut tally = Tally::default();
    if rows.is_empty() {
        return Ok(tally);
    }
    let parts = group(rows);
    let sizes: Vec<usize> = parts.iter().map(|part| part.events.len()).collect();
    match store.append_multi(parts.clone()).await {
        Ok(results) => {
            for (size, result) in sizes.iter().zip(&results) {
                tally.add(*size, result);
            }
            Ok(tally)
        }
        Err(Error::DuplicateEventId { .. }) => {
            for part in parts {
                let size = part.events.len();
                match store.append_multi(vec![part.clone()]).await {
                    Ok(results) => results.iter().for_each(|result| tally.add(size, result)),
                    Err(Error::DuplicateEventId { .. }) => {
                        for event in part.events {
                            let result = store.append(&part.stream, ExpectedVersion::Any, vec![event]).await?;
                            tally.add(1, &result);
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(tally)
        }
        Err(error) => Err(error),
    }
}
