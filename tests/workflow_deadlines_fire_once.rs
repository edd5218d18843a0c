//! A workflow's deadlines fire once, at their business time by the workflow's clock and never
//! before; a cancelled one (or one of a completed instance) never fires; a restart keeps the pending
//! ones and fires them once; a loan returned while the workflow was down gets no reminder, because
//! a deadline fires only after every event stored by then was reacted to; reading the log again
//! from the start issues nothing twice; a command to an aggregate is issued once, and a refusal is
//! recorded in the step. Tools read the same from the store. Each property runs on every store,
//! with a `ManualClock` the test moves (and once with the `SystemClock`).

#![allow(clippy::panic, clippy::unwrap_used)] // failing the test with the unexpected outcome is the point

#[macro_use]
#[path = "common/on_every_store.rs"]
mod on_every_store;
#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;
mod workflows;

use std::collections::BTreeMap;
use std::time::Duration as Wait;

use annals::{
    Checkpoint, CheckpointWrite, EventStore, ManualClock, Position, Start, SystemClock, Workflow, WorkflowConfig,
    WorkflowError, WorkflowHandle, Workflows,
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use workflows::{
    march_first, open_loan, reminder_numbers, reminders_sent, return_loan, steps, Issue, LoanReminders, OnReturn,
    Reminders, NAME, REMINDER_AFTER,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Wait = Wait::from_secs(20);

on_every_store!(
    a_deadline_fires_once_at_its_business_time_and_never_before,
    a_cancelled_deadline_never_fires,
    completing_an_instance_cancels_its_deadlines_and_ends_it,
    a_loan_returned_while_the_workflow_was_down_gets_no_reminder,
    a_restart_keeps_pending_deadlines_and_fires_each_once,
    reading_the_log_again_from_the_start_issues_nothing_twice,
    a_command_is_issued_to_its_aggregate_once_and_a_refusal_is_recorded,
    tools_read_workflows_instances_and_deadlines_from_the_store,
    a_workflow_name_with_a_dash_is_refused,
    a_deadline_fires_by_the_system_clock_not_before_its_time,
    a_workflow_reacts_only_to_events_from_its_start,
);

async fn start<S: EventStore + Clone + 'static>(
    store: &S,
    workflow: Reminders,
    clock: &ManualClock,
) -> Result<WorkflowHandle<Reminders>, WorkflowError> {
    Workflows::start(store.clone(), workflow, clock.clone(), WorkflowConfig::new()).await
}

fn numbers(expected: &[(&str, &[u32])]) -> BTreeMap<String, Vec<u32>> {
    expected.iter().map(|(loan, ns)| ((*loan).to_owned(), ns.to_vec())).collect()
}

async fn a_deadline_fires_once_at_its_business_time_and_never_before<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    let pending = mailer.pending_deadlines();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((pending[0].instance.as_str(), pending[0].name.as_str()), ("1", "reminder"));
    assert_eq!(pending[0].due, t0 + REMINDER_AFTER);

    // A microsecond before it is due, with an event to wake the workflow up: nothing fires.
    let almost = t0 + REMINDER_AFTER - Duration::microseconds(1);
    clock.set(almost);
    open_loan(&store, "2", almost).await?;
    mailer.settle(WAIT).await?;
    assert!(reminders_sent(&store).await?.is_empty(), "a reminder fired before its time");

    clock.set(t0 + REMINDER_AFTER);
    mailer.settle(WAIT).await?;
    let sent = reminders_sent(&store).await?;
    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1])]));
    assert_eq!(sent["1"][0].occurred_at, t0 + REMINDER_AFTER, "the reminder occurred at the clock's time");
    let expected = LoanReminders { opened: Some(t0), returned: false, sent: 1 };
    assert_eq!(mailer.instance_state("1").await?, Some(expected));
    let dues: Vec<DateTime<Utc>> = mailer.pending_deadlines().iter().map(|d| d.due).collect();
    assert_eq!(dues, [almost + REMINDER_AFTER, t0 + REMINDER_AFTER * 2], "the second reminder of loan 1 is pending");

    // Long after: each loan's two reminders, once each, and nothing is left.
    clock.set(t0 + Duration::days(365));
    mailer.settle(WAIT).await?;
    clock.advance(Duration::days(1));
    mailer.settle(WAIT).await?;
    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1, 2]), ("2", &[1, 2])]));
    assert!(mailer.pending_deadlines().is_empty());
    mailer.stop().await?;
    assert!(Workflows::deadlines(&store, NAME).await?.is_empty());
    Ok(())
}

async fn a_cancelled_deadline_never_fires<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    for loan in ["1", "2", "3"] {
        open_loan(&store, loan, t0).await?;
    }
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    clock.set(t0 + Duration::days(1));
    return_loan(&store, "2", t0 + Duration::days(1)).await?;
    mailer.settle(WAIT).await?;
    let mut pending: Vec<String> = mailer.pending_deadlines().into_iter().map(|d| d.instance).collect();
    pending.sort();
    assert_eq!(pending, ["1", "3"], "due at the same time, ordered by id");

    clock.set(t0 + Duration::days(100));
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    // And after a restart, later still.
    clock.set(t0 + Duration::days(200));
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;

    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1, 2]), ("3", &[1, 2])]));
    let loan2 = steps(&store, "2").await?;
    assert_eq!(loan2.len(), 2, "opened and returned, nothing fired: {loan2:?}");
    let scheduled = &loan2[0]["scheduled"];
    assert_eq!(loan2[1]["cancelled"], *scheduled, "the return cancelled the reminder the opening scheduled");
    assert_eq!(loan2[1]["pending"], serde_json::json!([]));
    Ok(())
}

async fn completing_an_instance_cancels_its_deadlines_and_ends_it<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    open_loan(&store, "2", t0).await?;
    let mailer = start(&store, Reminders::new().on_return(OnReturn::Complete), &clock).await?;
    return_loan(&store, "2", t0).await?;
    mailer.settle(WAIT).await?;
    // A second return of the completed loan: the instance takes no step for it.
    return_loan(&store, "2", t0).await?;
    clock.set(t0 + Duration::days(100));
    mailer.settle(WAIT).await?;
    assert_eq!(mailer.instance_state("2").await?.map(|s| s.returned), Some(true), "the final state stays readable");
    mailer.stop().await?;

    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1, 2])]));
    let loan2 = steps(&store, "2").await?;
    assert_eq!(loan2.len(), 2, "{loan2:?}");
    assert_eq!(loan2[1]["completed"], true);
    let saved = Workflows::instance(&store, NAME, "2").await?.ok_or("no instance 2")?;
    assert!(saved.completed && saved.pending.is_empty(), "{saved:?}");
    Ok(())
}

async fn a_loan_returned_while_the_workflow_was_down_gets_no_reminder<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    open_loan(&store, "2", t0).await?;
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;

    // Down for 20 days: both reminders came due meanwhile, and loan 2 was returned on day 20.
    let later = t0 + Duration::days(20);
    return_loan(&store, "2", later).await?;
    clock.set(later);
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1])]));
    Ok(())
}

async fn a_restart_keeps_pending_deadlines_and_fires_each_once<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    let opened: Vec<(String, DateTime<Utc>)> = (0..5).map(|i| (i.to_string(), t0 + Duration::days(i))).collect();
    for (loan, at) in &opened {
        open_loan(&store, loan, *at).await?;
    }
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    let saved: Vec<(String, DateTime<Utc>)> =
        Workflows::deadlines(&store, NAME).await?.into_iter().map(|d| (d.instance, d.due)).collect();
    let due: Vec<(String, DateTime<Utc>)> =
        opened.iter().map(|(loan, at)| (loan.clone(), *at + REMINDER_AFTER)).collect();
    assert_eq!(saved, due, "the stopped workflow's deadlines are saved");

    // Fifteen restarts, three days apart: every deadline fires in the run after it came due.
    for round in 1..=15 {
        clock.set(t0 + Duration::days(3 * round));
        let mailer = start(&store, Reminders::new(), &clock).await?;
        mailer.settle(WAIT).await?;
        mailer.stop().await?;
    }
    let expected: BTreeMap<String, Vec<u32>> = opened.iter().map(|(loan, _)| (loan.clone(), vec![1, 2])).collect();
    assert_eq!(reminder_numbers(&store).await?, expected);
    for (loan, sent) in reminders_sent(&store).await? {
        let at = opened.iter().find(|(l, _)| *l == loan).map(|(_, at)| *at).ok_or("unknown loan")?;
        for (n, event) in (1..).zip(&sent) {
            let due = at + REMINDER_AFTER * n;
            assert!(event.occurred_at >= due, "loan {loan}'s reminder {n} fired at {} before {due}", event.occurred_at);
            assert!(event.occurred_at < due + Duration::days(3), "loan {loan}'s reminder {n} fired a round late");
        }
    }
    assert!(Workflows::deadlines(&store, NAME).await?.is_empty());
    Ok(())
}

async fn reading_the_log_again_from_the_start_issues_nothing_twice<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    for loan in ["1", "2", "3"] {
        open_loan(&store, loan, t0).await?;
    }
    return_loan(&store, "3", t0).await?;
    let mailer = start(&store, Reminders::new(), &clock).await?;
    clock.set(t0 + REMINDER_AFTER);
    mailer.settle(WAIT).await?;
    return_loan(&store, "2", t0 + REMINDER_AFTER).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    let head = store.head().await?;
    let before = reminder_numbers(&store).await?;
    assert_eq!(before, numbers(&[("1", &[1]), ("2", &[1])]));

    // The checkpoint is lost: the whole log is read again, each event handed to its instance again.
    let rewind = Checkpoint::new(format!("workflow/{NAME}"), Position::ZERO);
    store.save_checkpoints(vec![CheckpointWrite::Save(rewind)]).await?;
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(store.head().await?, head, "reading the log again appended something");
    store.save_checkpoints(vec![CheckpointWrite::Delete(format!("workflow/{NAME}"))]).await?;
    let mailer = start(&store, Reminders::new(), &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(store.head().await?, head, "reading the log again without a checkpoint appended something");
    Ok(())
}

async fn a_command_is_issued_to_its_aggregate_once_and_a_refusal_is_recorded<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    open_loan(&store, "2", t0).await?;
    // The workflow does not see returns: the loan itself refuses the reminder.
    return_loan(&store, "2", t0 + Duration::days(1)).await?;
    let workflow = Reminders::new().issuing(Issue::Command).on_return(OnReturn::Blind);
    let mailer = start(&store, workflow.clone(), &clock).await?;
    clock.set(t0 + REMINDER_AFTER);
    mailer.settle(WAIT).await?;
    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1])]));
    let loan2 = steps(&store, "2").await?;
    let refused = &loan2.last().ok_or("no step")?["rejected"];
    assert_eq!(*refused, serde_json::json!([{ "stream": "loan-2", "error": "the loan was returned" }]));

    let fired = mailer.pending_deadlines().len();
    mailer.stop().await?;
    clock.set(t0 + REMINDER_AFTER * 3);
    let mailer = start(&store, workflow, &clock).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(fired, 2, "both loans have their second reminder pending");
    assert_eq!(reminder_numbers(&store).await?, numbers(&[("1", &[1, 2])]));
    let sent = &reminders_sent(&store).await?["1"];
    let causes: Vec<Option<String>> = sent.iter().map(|e| e.metadata.causation_id.clone()).collect();
    assert!(causes.iter().all(Option::is_some), "each reminder names the deadline that caused it: {causes:?}");
    Ok(())
}

async fn tools_read_workflows_instances_and_deadlines_from_the_store<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    open_loan(&store, "2", t0).await?;
    let mailer = start(&store, Reminders::new().on_return(OnReturn::Complete), &clock).await?;
    return_loan(&store, "2", t0).await?;
    mailer.settle(WAIT).await?;
    let running = mailer.pending_deadlines();
    mailer.stop().await?;

    let saved = Workflows::list(&store).await?;
    assert_eq!(saved.len(), 1, "{saved:?}");
    let reminders = &saved[0];
    assert_eq!((reminders.name.as_str(), reminders.instances, reminders.completed), (NAME, 2, 1));
    assert_eq!(reminders.checkpoint, Some(store.head().await?));
    assert_eq!(reminders.pending, running);
    assert_eq!(Workflows::deadlines(&store, NAME).await?, running);
    let instances = Workflows::instances(&store, NAME).await?;
    let ids: Vec<(&str, &str, bool)> =
        instances.iter().map(|i| (i.instance.as_str(), i.stream.as_str(), i.completed)).collect();
    assert_eq!(ids, [("1", "workflow-reminders-1", false), ("2", "workflow-reminders-2", true)]);
    assert_eq!(instances[0].state, serde_json::json!({ "opened": t0, "returned": false, "sent": 0 }));
    assert!(Workflows::instance(&store, NAME, "3").await?.is_none());
    assert!(Workflows::deadlines(&store, "mailer").await?.is_empty(), "another workflow has none");
    Ok(())
}

async fn a_workflow_name_with_a_dash_is_refused<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    let clock = ManualClock::new(march_first());
    let refused = start(&store, Reminders::new().named("loan-reminders"), &clock).await;
    assert!(
        matches!(&refused, Err(WorkflowError::InvalidName { name, .. }) if name == "loan-reminders"),
        "{refused:?}"
    );
    let empty = start(&store, Reminders::new().named(""), &clock).await;
    assert!(matches!(empty, Err(WorkflowError::InvalidName { .. })));
    assert!(matches!(Workflows::deadlines(&store, "a-b").await, Err(WorkflowError::InvalidName { .. })));
    assert_eq!(Reminders::new().name(), NAME);
    Ok(())
}

async fn a_deadline_fires_by_the_system_clock_not_before_its_time<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    // A loan opened (in business time) 14 days ago less 300 ms: its reminder is due 300 ms from now.
    let due = Utc::now() + Duration::milliseconds(300);
    open_loan(&store, "1", due - REMINDER_AFTER).await?;
    let mailer = Workflows::start(store.clone(), Reminders::new(), SystemClock, WorkflowConfig::new()).await?;
    mailer.caught_up().await?;
    let waiting = std::time::Instant::now();
    let sent = loop {
        let sent = reminders_sent(&store).await?;
        let now = Utc::now();
        if let Some(first) = sent.get("1").and_then(|events| events.first()) {
            break first.clone();
        }
        assert!(waiting.elapsed() < WAIT, "no reminder {:?} after it was due", now - due);
        tokio::time::sleep(Wait::from_millis(20)).await;
    };
    assert!(sent.occurred_at >= due.trunc_subsecs(6), "fired at {} before it was due at {due}", sent.occurred_at);
    assert!(sent.recorded_at >= due.trunc_subsecs(6), "recorded at {} before it was due at {due}", sent.recorded_at);
    mailer.stop().await?;
    Ok(())
}

async fn a_workflow_reacts_only_to_events_from_its_start<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "old", t0).await?;
    let from = Position::new(store.head().await?.get() + 1);
    let config = WorkflowConfig::new().start(Start::Position(from));
    let mailer = Workflows::start(store.clone(), Reminders::new(), clock.clone(), config.clone()).await?;
    open_loan(&store, "new", t0).await?;
    clock.set(t0 + Duration::days(100));
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    // A restart goes on from its checkpoint, not from the configured start.
    let mailer = Workflows::start(store.clone(), Reminders::new(), clock, config).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(reminder_numbers(&store).await?, numbers(&[("new", &[1, 2])]));
    assert!(Workflows::instance(&store, NAME, "old").await?.is_none());
    Ok(())
}
