//! `annals workflows`: the workflows saved in a store, and the pending deadlines of one.

use annals::{Deadline, EventStore, WorkflowError, Workflows};
use serde_json::json;

use crate::cli::WorkflowsArgs;
use crate::failure::Failure;
use crate::output::{table, Output};

fn failure(error: WorkflowError) -> Failure {
    match error {
        WorkflowError::Store(error) => Failure::Store(error),
        other => Failure::Usage(other.to_string()),
    }
}

pub(super) async fn run(store: &dyn EventStore, args: WorkflowsArgs, out: &mut Output) -> Result<(), Failure> {
    match args.name {
        None => list(store, out).await,
        Some(name) => deadlines(store, &name, out).await,
    }
}

async fn list(store: &dyn EventStore, out: &mut Output) -> Result<(), Failure> {
    let head = store.head().await?;
    let saved = Workflows::list(store).await.map_err(failure)?;
    let mut rows = vec![["WORKFLOW", "CHECKPOINT", "LAG", "INSTANCES", "COMPLETED", "PENDING", "NEXT DUE"]
        .map(str::to_owned)
        .to_vec()];
    for workflow in &saved {
        let checkpoint = workflow.checkpoint.map_or(0, |p| p.get());
        let lag = head.get().saturating_sub(checkpoint);
        let next = workflow.pending.first().map(|d| d.due.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        if out.json() {
            out.json_line(&json!({
                "name": workflow.name,
                "checkpoint": checkpoint,
                "head": head.get(),
                "lag": lag,
                "instances": workflow.instances,
                "completed": workflow.completed,
                "pending": workflow.pending.len(),
                "next_due": next,
            }))?;
            continue;
        }
        rows.push(vec![
            workflow.name.clone(),
            checkpoint.to_string(),
            lag.to_string(),
            workflow.instances.to_string(),
            workflow.completed.to_string(),
            workflow.pending.len().to_string(),
            next.unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    if out.json() {
        return Ok(());
    }
    if saved.is_empty() {
        return Ok(out.line("(no workflows)")?);
    }
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}

async fn deadlines(store: &dyn EventStore, name: &str, out: &mut Output) -> Result<(), Failure> {
    let pending: Vec<Deadline> = Workflows::deadlines(store, name).await.map_err(failure)?;
    let mut rows = vec![["DUE", "INSTANCE", "DEADLINE", "ID"].map(str::to_owned).to_vec()];
    for deadline in &pending {
        let due = deadline.due.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if out.json() {
            out.json_line(&json!({
                "due": due,
                "instance": deadline.instance,
                "name": deadline.name,
                "id": deadline.id.to_string(),
                "payload": deadline.payload,
            }))?;
            continue;
        }
        rows.push(vec![due, deadline.instance.clone(), deadline.name.clone(), deadline.id.to_string()]);
    }
    if out.json() {
        return Ok(());
    }
    if pending.is_empty() {
        return Ok(out.line(format!("(no pending deadlines for workflow {name:?})"))?);
    }
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}
