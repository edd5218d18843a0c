//! `annals tail`: the last events of the log, then (with `-f`) new ones until Ctrl-C.

use std::collections::VecDeque;

use annals::{follow, Delivery, EventStore, LogFilter, Position, ReadLog, RecordedEvent};
use futures_util::{FutureExt, StreamExt, TryStreamExt};

use crate::cli::TailArgs;
use crate::failure::Failure;
use crate::output::Output;

pub(super) async fn run(store: &dyn EventStore, args: TailArgs, out: &mut Output) -> Result<(), Failure> {
    // Listen for Ctrl-C before printing anything, so that an interrupt that comes as soon as the
    // first lines show ends the command cleanly instead of killing it.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    if args.follow {
        if let Some(Err(e)) = ctrl_c.as_mut().now_or_never() {
            return Err(Failure::io("cannot listen for Ctrl-C", e));
        }
    }
    let filter = args.filter.filter();
    let head = store.head().await?;
    match args.from {
        Some(from) => {
            let mut events = store.read_log(ReadLog::from(from).filter(filter.clone()).until_position(head));
            while let Some(event) = events.try_next().await? {
                out.event(&event)?;
            }
        }
        None => {
            for event in last_events(store, &filter, head, args.lines).await? {
                out.event(&event)?;
            }
        }
    }
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    let mut deliveries = follow(store, head.next(), filter);
    loop {
        tokio::select! {
            interrupted = ctrl_c.as_mut() => {
                return interrupted.map_err(|e| Failure::io("cannot listen for Ctrl-C", e));
            }
            delivery = deliveries.next() => match delivery {
                Some(Ok(Delivery::Event { event, .. })) => {
                    out.event(&event)?;
                    out.flush()?;
                }
                Some(Ok(Delivery::CaughtUp { .. })) => {}
                Some(Err(error)) => return Err(error.into()),
                None => return Ok(()),
            },
        }
    }
}

/// The last `count` events at or before `head` that `filter` admits, oldest first. Reads windows
/// back from the head, growing them until they hold enough events or reach the start of the log.
async fn last_events(
    store: &dyn EventStore,
    filter: &LogFilter,
    head: Position,
    count: usize,
) -> Result<VecDeque<RecordedEvent>, Failure> {
    let mut last = VecDeque::with_capacity(count.min(1024));
    if count == 0 || head == Position::ZERO {
        return Ok(last);
    }
    let mut window = (count as u64).saturating_mul(2).max(64);
    loop {
        let start = Position::new(head.get().saturating_sub(window - 1).max(1));
        last.clear();
        let mut found = 0usize;
        let mut events = store.read_log(ReadLog::from(start).filter(filter.clone()).until_position(head));
        while let Some(event) = events.try_next().await? {
            if last.len() == count {
                last.pop_front();
            }
            last.push_back(event);
            found += 1;
        }
        if found >= count || start == Position::FIRST {
            return Ok(last);
        }
        window = window.saturating_mul(4);
    }
}
