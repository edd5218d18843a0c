//! `annals subscriptions`: subscriptions found by their checkpoints, their lag and parked events;
//! requeue or skip parked events of a stopped subscription.

use annals::{EventStore, SavedSubscription, Subscription};
use serde_json::json;

use crate::cli::{ParkedAction, SubscriptionsArgs, WhichParked};
use crate::failure::Failure;
use crate::output::{self, table, Output};

pub(super) async fn run(store: &dyn EventStore, args: SubscriptionsArgs, out: &mut Output) -> Result<(), Failure> {
    let saved = Subscription::list(store).await?;
    let Some(name) = args.name else {
        if args.action.is_some() {
            return Err(Failure::Usage("requeue and skip need a subscription name".to_owned()));
        }
        return list(store, &saved, out).await;
    };
    let Some(subscription) = saved.iter().find(|s| s.name == name) else {
        return Err(Failure::Usage(format!("there is no subscription {name:?} in the store")));
    };
    match args.action {
        None => show(store, subscription, out).await,
        Some(ParkedAction::Requeue(which)) => change(store, &name, Change::Requeue, &which, out).await,
        Some(ParkedAction::Skip(which)) => change(store, &name, Change::Skip, &which, out).await,
    }
}

async fn list(store: &dyn EventStore, saved: &[SavedSubscription], out: &mut Output) -> Result<(), Failure> {
    let head = store.head().await?;
    let mut rows = vec![["SUBSCRIPTION", "CHECKPOINT", "LAG", "PARKED", "PARTITIONS"].map(str::to_owned).to_vec()];
    for subscription in saved {
        let checkpoint = subscription.checkpoint;
        let lag = head.get().saturating_sub(checkpoint.get());
        let parked = subscription.parked.len();
        if out.json() {
            out.json_line(&json!({
                "name": subscription.name,
                "checkpoint": checkpoint.get(),
                "head": head.get(),
                "lag": lag,
                "parked": parked,
                "partitions": subscription.partitions,
            }))?;
        }
        rows.push(vec![
            subscription.name.clone(),
            checkpoint.to_string(),
            lag.to_string(),
            parked.to_string(),
            subscription.partitions.to_string(),
        ]);
    }
    if out.json() {
        return Ok(());
    }
    if saved.is_empty() {
        return Ok(out.line("(no subscriptions)")?);
    }
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}

async fn show(store: &dyn EventStore, subscription: &SavedSubscription, out: &mut Output) -> Result<(), Failure> {
    let head = store.head().await?;
    let name = &subscription.name;
    let checkpoint = subscription.checkpoint;
    let lag = head.get().saturating_sub(checkpoint.get());
    let parked = &subscription.parked;
    let partitions = &subscription.checkpoints;
    if out.json() {
        let partitions: Vec<_> = partitions
            .iter()
            .map(|c| json!({ "name": c.name, "position": c.position.get(), "updated_at": output::time(c.updated_at) }))
            .collect();
        out.json_line(&json!({
            "name": name,
            "checkpoint": checkpoint.get(),
            "head": head.get(),
            "lag": lag,
            "partitions": partitions,
            "parked": parked,
        }))?;
        return Ok(());
    }
    out.line(format!("subscription {name}"))?;
    out.line(format!("  checkpoint:  {checkpoint} (every event at or before it was handled)"))?;
    out.line(format!("  lag:         {lag} event(s) behind the head at {head}"))?;
    out.line(format!("  partitions:  {} ({} saved)", subscription.partitions, partitions.len()))?;
    for partition in partitions {
        let updated = output::time(partition.updated_at);
        out.line(format!("    {}  at {}  saved {updated}", partition.name, partition.position))?;
    }
    out.line(format!("  parked:      {}", parked.len()))?;
    for event in parked {
        let requeued = if event.requeued { "  (requeued)" } else { "" };
        out.line(format!(
            "    position {}: {} in {}, {} attempt(s), parked {}{requeued}",
            event.position,
            event.event_type,
            event.stream,
            event.attempts,
            output::time(event.parked_at)
        ))?;
        out.line(format!("      error: {}", event.error.replace('\n', " ")))?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Change {
    Requeue,
    Skip,
}

async fn change(
    store: &dyn EventStore,
    name: &str,
    change: Change,
    which: &WhichParked,
    out: &mut Output,
) -> Result<(), Failure> {
    let position = if which.all { None } else { which.position };
    let changed = match change {
        Change::Requeue => Subscription::requeue_parked(store, name, position).await?,
        Change::Skip => Subscription::skip_parked(store, name, position).await?,
    };
    if let (Some(position), 0) = (position, changed) {
        return Err(Failure::Usage(format!("subscription {name:?} has no parked event at position {position}")));
    }
    let (verb, key) = match change {
        Change::Requeue => ("requeued", "requeued"),
        Change::Skip => ("skipped", "skipped"),
    };
    if out.json() {
        out.json_line(&json!({ "name": name, key: changed }))?;
        return Ok(());
    }
    out.line(format!("{verb} {changed} parked event(s) of subscription {name}"))?;
    if let Change::Requeue = change {
        out.line("the subscription's next worker hands them to its handler before going on")?;
    }
    Ok(())
}
