//! A workflow's reaction is committed once, whatever goes wrong around it: an append whose
//! acknowledgement is lost (stored, but answered with a storage error) is not decided and issued
//! again; two runners of one workflow racing on one store issue each reminder once; a failing
//! handler is retried, then stops the workflow with a typed error naming the trigger, and a restart
//! reacts to that trigger again (nothing is skipped); a panicking handler stops it the same way.
//! Each property runs on every store.

#![allow(clippy::panic, clippy::unwrap_used)] // failing the test with the unexpected outcome is the point

#[macro_use]
#[path = "common/on_every_store.rs"]
mod on_every_store;
#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;
mod workflows;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration as Wait;

use annals::{EventStore, ManualClock, RetryPolicy, Trigger, WorkflowConfig, WorkflowError, Workflows};
use chrono::Duration;
use workflows::meddler::Meddler;
use workflows::{march_first, open_loan, reminder_numbers, return_loan, steps, Reminders, NAME, REMINDER_AFTER};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Wait = Wait::from_secs(20);

on_every_store!(
    a_lost_acknowledgement_is_not_decided_and_issued_again,
    two_runners_of_one_workflow_issue_each_reminder_once,
    a_failing_handler_is_retried_then_stops_naming_the_trigger_and_a_restart_reacts_again,
    a_panicking_handler_stops_the_workflow_and_a_restart_reacts_again,
);

/// Quick retries, so that the tests do not wait on backoff.
fn quick() -> WorkflowConfig {
    WorkflowConfig::new().retry(RetryPolicy::attempts(3).backoff(Wait::from_millis(1), Wait::from_millis(5)))
}

/// Every trigger id of every step of the loans, with how many steps name it.
async fn triggers<S: EventStore>(store: &S, loans: &[String]) -> Result<BTreeMap<String, usize>, annals::Error> {
    let mut seen = BTreeMap::new();
    for loan in loans {
        for step in steps(store, loan).await? {
            *seen.entry(step["trigger"]["id"].to_string()).or_default() += 1;
        }
    }
    Ok(seen)
}

async fn a_lost_acknowledgement_is_not_decided_and_issued_again<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    let meddler = Meddler::new(store.clone());
    for loan in ["1", "2"] {
        open_loan(&store, loan, t0).await?;
    }
    // Both openings and the first firing are stored but answered with a storage error.
    meddler.lose_acks(3);
    let mailer = Workflows::start(meddler.clone(), Reminders::new(), clock.clone(), quick()).await?;
    mailer.settle(WAIT).await?;
    clock.set(t0 + REMINDER_AFTER);
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(meddler.acks_to_lose(), 0, "three acknowledgements were lost");

    let expected: BTreeMap<String, Vec<u32>> = [("1".to_owned(), vec![1]), ("2".to_owned(), vec![1])].into();
    assert_eq!(reminder_numbers(&store).await?, expected);
    for loan in ["1", "2"] {
        assert_eq!(steps(&store, loan).await?.len(), 2, "loan {loan}: one step for the opening, one for the reminder");
    }
    Ok(())
}

async fn two_runners_of_one_workflow_issue_each_reminder_once<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    let loans: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    let first = Workflows::start(store.clone(), Reminders::new(), clock.clone(), quick()).await?;
    let second = Workflows::start(store.clone(), Reminders::new(), clock.clone(), quick()).await?;
    for (i, loan) in loans.iter().enumerate() {
        open_loan(&store, loan, t0 + Duration::hours(i as i64)).await?;
    }
    return_loan(&store, "3", t0).await?;
    for days in [13, 14, 15, 28, 29, 60] {
        clock.set(t0 + Duration::days(days));
        first.settle(WAIT).await?;
        second.settle(WAIT).await?;
    }
    first.stop().await?;
    second.stop().await?;

    let expected: BTreeMap<String, Vec<u32>> =
        loans.iter().filter(|loan| *loan != "3").map(|loan| (loan.clone(), vec![1, 2])).collect();
    assert_eq!(reminder_numbers(&store).await?, expected);
    let twice: BTreeSet<String> =
        triggers(&store, &loans).await?.into_iter().filter(|(_, n)| *n > 1).map(|(id, _)| id).collect();
    assert!(twice.is_empty(), "steps taken twice for the triggers {twice:?}");
    Ok(())
}

async fn a_failing_handler_is_retried_then_stops_naming_the_trigger_and_a_restart_reacts_again<
    S: EventStore + Clone + 'static,
>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    let workflow = Reminders::new();
    // Two failures, then the third attempt goes through.
    workflow.failures.store(2, Ordering::SeqCst);
    let mailer = Workflows::start(store.clone(), workflow.clone(), clock.clone(), quick()).await?;
    mailer.settle(WAIT).await?;
    assert_eq!(mailer.pending_deadlines().len(), 1, "the opening was handled on its third attempt");

    // Now the deadline fails on every attempt: the workflow stops with the deadline as its trigger.
    workflow.failures.store(100, Ordering::SeqCst);
    clock.set(t0 + REMINDER_AFTER);
    let waited = mailer.settle(WAIT).await;
    assert!(matches!(waited, Err(WorkflowError::Stopped { .. })), "{waited:?}");
    let stopped = mailer.stop().await;
    match &stopped {
        Err(WorkflowError::Handler { workflow, instance, trigger, attempts: 3, source }) => {
            assert_eq!((workflow.as_str(), instance.as_str()), (NAME, "1"));
            assert!(
                matches!(&**trigger, Trigger::Deadline { name, due, .. } if name == "reminder" && *due == t0 + REMINDER_AFTER)
            );
            assert_eq!(source.to_string(), "the mail server is down");
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    assert!(reminder_numbers(&store).await?.is_empty());
    assert_eq!(Workflows::deadlines(&store, NAME).await?.len(), 1, "the deadline is still pending");

    workflow.failures.store(0, Ordering::SeqCst);
    let mailer = Workflows::start(store.clone(), workflow, clock, quick()).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(reminder_numbers(&store).await?.get("1"), Some(&vec![1]));
    Ok(())
}

async fn a_panicking_handler_stops_the_workflow_and_a_restart_reacts_again<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let t0 = march_first();
    let clock = ManualClock::new(t0);
    open_loan(&store, "1", t0).await?;
    let workflow = Reminders::new();
    workflow.panics.store(1, Ordering::SeqCst);
    let mailer = Workflows::start(store.clone(), workflow.clone(), clock.clone(), quick()).await?;
    let waited = mailer.settle(WAIT).await;
    assert!(matches!(waited, Err(WorkflowError::Stopped { .. })), "{waited:?}");
    let stopped = mailer.stop().await;
    assert!(
        matches!(&stopped, Err(WorkflowError::Panicked { message: Some(m), .. }) if m == "the mailer broke"),
        "{stopped:?}"
    );
    assert!(Workflows::instance(&store, NAME, "1").await?.is_none(), "no step was taken");

    let mailer = Workflows::start(store.clone(), workflow, clock, quick()).await?;
    mailer.settle(WAIT).await?;
    mailer.stop().await?;
    assert_eq!(Workflows::deadlines(&store, NAME).await?.len(), 1, "the restart reacted to the opening");
    Ok(())
}
