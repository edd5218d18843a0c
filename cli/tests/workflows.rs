//! `annals workflows`: the workflows a store holds, and the pending deadlines of one, as a running
//! workflow left them (scheduled, fired, cancelled).
#![allow(missing_docs)]

mod common;

use annals::{
    Actions, Deadline, EventStore, ExpectedVersion, HandlerError, LogFilter, ManualClock, NewEvent, RecordedEvent,
    SledStore, StreamId, Workflow, WorkflowConfig, Workflows,
};
use chrono::{Duration, TimeZone, Utc};
use common::{annals, TestResult};
use serde_json::json;

/// "When a loan is 14 days old and not returned, send a reminder."
struct Reminders;

impl Workflow for Reminders {
    type State = u32;

    fn name(&self) -> &str {
        "reminders"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["LoanOpened", "LoanReturned"])
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        event.stream.as_str().strip_prefix("loan-").map(str::to_owned)
    }

    fn on_event(&self, _: &mut u32, event: &RecordedEvent, act: &mut Actions) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            "LoanOpened" => act.schedule("reminder", event.occurred_at + Duration::days(14), json!({ "n": 1 })),
            _ => act.complete(),
        }
        Ok(())
    }

    fn on_deadline(&self, sent: &mut u32, deadline: &Deadline, act: &mut Actions) -> Result<(), HandlerError> {
        *sent += 1;
        let loan = StreamId::new(format!("loan-{}", deadline.instance))?;
        act.append(loan, [NewEvent::raw("ReminderSent", "{}")]);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_lists_instances_and_pending_deadlines() -> TestResult {
    let dir = tempfile::tempdir()?;
    let day = |d: u32| Utc.with_ymd_and_hms(2024, 3, d, 9, 0, 0).single().ok_or("no such day");
    {
        let store = SledStore::open(dir.path())?;
        // Loan 1 opened on the 1st (reminder due on the 15th), loan 2 on the 5th (due on the 19th),
        // loan 3 on the 2nd and returned on the 3rd (its reminder cancelled).
        for (loan, opened) in [("1", day(1)?), ("2", day(5)?), ("3", day(2)?)] {
            let stream = StreamId::new(format!("loan-{loan}"))?;
            let event = NewEvent::raw("LoanOpened", "{}").with_occurred_at(opened);
            store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
        }
        let returned = NewEvent::raw("LoanReturned", "{}").with_occurred_at(day(3)?);
        store.append(&StreamId::new("loan-3")?, ExpectedVersion::Any, vec![returned]).await?;
        let clock = ManualClock::new(day(6)?);
        let running = Workflows::start(store.clone(), Reminders, clock.clone(), WorkflowConfig::new()).await?;
        let wait = std::time::Duration::from_secs(10);
        running.settle(wait).await?;
        // The 16th: loan 1's reminder fires, loan 2's is still ahead.
        clock.advance(Duration::days(10));
        running.settle(wait).await?;
        running.stop().await?;
    }
    let list = annals(dir.path(), &["workflows", "--json"])?;
    let lines = list.json_lines()?;
    assert_eq!(lines.len(), 1, "{list:?}");
    assert_eq!(lines[0]["name"], "reminders");
    assert_eq!(lines[0]["instances"], 3);
    assert_eq!(lines[0]["completed"], 1);
    assert_eq!(lines[0]["pending"], 1);
    assert_eq!(lines[0]["next_due"], "2024-03-19T09:00:00.000000Z");
    assert_eq!(lines[0]["lag"], 0, "the workflow had caught up: {list:?}");

    let pending = annals(dir.path(), &["workflows", "reminders", "--json"])?;
    let deadlines = pending.json_lines()?;
    assert_eq!(deadlines.len(), 1, "{pending:?}");
    assert_eq!(deadlines[0]["instance"], "2");
    assert_eq!(deadlines[0]["name"], "reminder");
    assert_eq!(deadlines[0]["due"], "2024-03-19T09:00:00.000000Z");
    assert_eq!(deadlines[0]["payload"], json!({ "n": 1 }));

    let text = annals(dir.path(), &["workflows"])?;
    assert!(text.stdout.starts_with("WORKFLOW"), "{text:?}");
    assert!(text.stdout.contains("reminders"), "{text:?}");
    let none = annals(dir.path(), &["workflows", "mailer"])?;
    assert_eq!(none.stdout, "(no pending deadlines for workflow \"mailer\")\n", "{none:?}");
    Ok(())
}
