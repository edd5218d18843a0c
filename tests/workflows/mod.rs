//! A library's reminder mailer: loans (an aggregate) and the `reminders` workflow ("when a loan is
//! 14 days old and not returned, send a reminder; a second one 14 days later"), with a store
//! wrapper that loses acknowledgements or halts at a chosen write. Shared by the workflow tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod meddler;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use annals::{
    Actions, Aggregate, Deadline, Event, EventStore, ExpectedVersion, HandlerError, LogFilter, ReadLog, ReadStream,
    RecordedEvent, StreamId, Workflow, WORKFLOW_STEP_EVENT_TYPE,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

/// The workflow's name.
pub const NAME: &str = "reminders";
/// How long after the loan (then after the first reminder) a reminder is due.
pub const REMINDER_AFTER: Duration = Duration::days(14);
/// Reminders per loan, at most.
pub const MAX_REMINDERS: u32 = 2;

/// The first of March 2024, 9:00: when the stories start.
pub fn march_first() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 9, 0, 0).unwrap()
}

#[derive(Event, Clone, Debug, PartialEq)]
pub enum LoanEvent {
    LoanOpened { member: String },
    LoanReturned,
    ReminderSent { n: u32 },
}

#[derive(Clone, Debug, PartialEq)]
pub enum LoanCommand {
    SendReminder { n: u32 },
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum LoanError {
    #[error("loan is not open")]
    NotOpen,
    #[error("the loan was returned")]
    Returned,
}

/// A loan: open, returned, and the reminders it got. It takes every reminder it is sent (it does
/// not refuse a repeated one), so that a workflow sending one twice shows in its stream.
#[derive(Aggregate, Clone, Debug, Default, PartialEq)]
#[aggregate(command = LoanCommand, event = LoanEvent, error = LoanError)]
pub struct Loan {
    pub open: bool,
    pub returned: bool,
    pub reminders: Vec<u32>,
}

impl Loan {
    fn handle(&self, command: LoanCommand) -> Result<Vec<LoanEvent>, LoanError> {
        match command {
            LoanCommand::SendReminder { .. } if !self.open => Err(LoanError::NotOpen),
            LoanCommand::SendReminder { .. } if self.returned => Err(LoanError::Returned),
            LoanCommand::SendReminder { n } => Ok(vec![LoanEvent::ReminderSent { n }]),
        }
    }

    fn apply(&mut self, event: &LoanEvent) {
        match event {
            LoanEvent::LoanOpened { .. } => self.open = true,
            LoanEvent::LoanReturned => self.returned = true,
            LoanEvent::ReminderSent { n } => self.reminders.push(*n),
        }
    }
}

/// How the workflow sends a reminder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issue {
    /// `Actions::append` of `ReminderSent` to the loan's stream.
    Append,
    /// `Actions::command::<Loan>(SendReminder)`: the loan decides.
    Command,
}

/// What the workflow does when a loan is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnReturn {
    /// Cancels the pending reminder; the instance stays.
    Cancel,
    /// Completes the instance (which cancels the reminder).
    Complete,
    /// Does not see returns at all (its filter leaves them out).
    Blind,
}

/// The reminder mailer.
#[derive(Clone, Debug)]
pub struct Reminders {
    pub name: String,
    pub issue: Issue,
    pub on_return: OnReturn,
    /// While above zero, each handler call fails and counts it down.
    pub failures: Arc<AtomicU32>,
    /// While above zero, each handler call panics and counts it down.
    pub panics: Arc<AtomicU32>,
}

impl Reminders {
    pub fn new() -> Self {
        Reminders {
            name: NAME.to_owned(),
            issue: Issue::Append,
            on_return: OnReturn::Cancel,
            failures: Arc::default(),
            panics: Arc::default(),
        }
    }

    pub fn issuing(mut self, issue: Issue) -> Self {
        self.issue = issue;
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn on_return(mut self, on_return: OnReturn) -> Self {
        self.on_return = on_return;
        self
    }

    fn trouble(&self) -> Result<(), HandlerError> {
        if self.panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("the mailer broke");
        }
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err("the mail server is down".into());
        }
        Ok(())
    }
}

/// One loan's instance state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoanReminders {
    pub opened: Option<DateTime<Utc>>,
    pub returned: bool,
    pub sent: u32,
}

#[derive(Deserialize)]
struct Nth {
    n: u32,
}

impl Workflow for Reminders {
    type State = LoanReminders;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        match self.on_return {
            OnReturn::Blind => LogFilter::all().event_types(["LoanOpened"]),
            _ => LogFilter::all().event_types(["LoanOpened", "LoanReturned"]),
        }
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        event.stream.as_str().strip_prefix("loan-").map(str::to_owned)
    }

    fn on_event(
        &self,
        state: &mut LoanReminders,
        event: &RecordedEvent,
        act: &mut Actions,
    ) -> Result<(), HandlerError> {
        self.trouble()?;
        match event.event_type.as_str() {
            "LoanOpened" => {
                state.opened = Some(event.occurred_at);
                act.schedule("reminder", event.occurred_at + REMINDER_AFTER, serde_json::json!({ "n": 1 }));
            }
            "LoanReturned" => {
                state.returned = true;
                match self.on_return {
                    OnReturn::Complete => act.complete(),
                    _ => act.cancel("reminder"),
                }
            }
            other => return Err(format!("unexpected event {other}").into()),
        }
        Ok(())
    }

    fn on_deadline(
        &self,
        state: &mut LoanReminders,
        deadline: &Deadline,
        act: &mut Actions,
    ) -> Result<(), HandlerError> {
        self.trouble()?;
        let Nth { n } = serde_json::from_value(deadline.payload.clone())?;
        state.sent = n;
        match self.issue {
            Issue::Append => {
                let loan = StreamId::new(format!("loan-{}", deadline.instance))?;
                act.append(loan, [LoanEvent::ReminderSent { n }.to_new_event()?]);
            }
            Issue::Command => act.command::<Loan>(&deadline.instance, LoanCommand::SendReminder { n }),
        }
        if n < MAX_REMINDERS {
            act.schedule("reminder", deadline.due + REMINDER_AFTER, serde_json::json!({ "n": n + 1 }));
        }
        Ok(())
    }
}

/// Opens the loan `id` at business time `at`.
pub async fn open_loan<S: EventStore + ?Sized>(store: &S, id: &str, at: DateTime<Utc>) -> annals::Result<()> {
    let event = LoanEvent::LoanOpened { member: format!("member-{id}") }.to_new_event()?.with_occurred_at(at);
    store.append(&Loan::stream_id(id)?, ExpectedVersion::NoStream, vec![event]).await?;
    Ok(())
}

/// Returns the loan `id` at business time `at`.
pub async fn return_loan<S: EventStore + ?Sized>(store: &S, id: &str, at: DateTime<Utc>) -> annals::Result<()> {
    let event = LoanEvent::LoanReturned.to_new_event()?.with_occurred_at(at);
    store.append(&Loan::stream_id(id)?, ExpectedVersion::StreamExists, vec![event]).await?;
    Ok(())
}

/// Every `ReminderSent` of the log, by loan id, in log order.
pub async fn reminders_sent<S: EventStore + ?Sized>(store: &S) -> annals::Result<BTreeMap<String, Vec<RecordedEvent>>> {
    let filter = LogFilter::all().event_types(["ReminderSent"]);
    let events: Vec<RecordedEvent> = store.read_log(ReadLog::from_start().filter(filter)).try_collect().await?;
    let mut sent: BTreeMap<String, Vec<RecordedEvent>> = BTreeMap::new();
    for event in events {
        let loan = event.stream.as_str().strip_prefix("loan-").unwrap_or("?").to_owned();
        sent.entry(loan).or_default().push(event);
    }
    Ok(sent)
}

/// The `n` of each `ReminderSent`, by loan id.
pub async fn reminder_numbers<S: EventStore + ?Sized>(store: &S) -> annals::Result<BTreeMap<String, Vec<u32>>> {
    let mut numbers = BTreeMap::new();
    for (loan, events) in reminders_sent(store).await? {
        let ns = events.iter().map(|e| e.payload_as::<Nth>().map(|nth| nth.n)).collect::<annals::Result<Vec<_>>>()?;
        numbers.insert(loan, ns);
    }
    Ok(numbers)
}

/// The steps of the instance `loan`, as JSON, in order.
pub async fn steps<S: EventStore + ?Sized>(store: &S, loan: &str) -> annals::Result<Vec<serde_json::Value>> {
    let stream = StreamId::new(format!("workflow-{NAME}-{loan}"))?;
    let events: Vec<RecordedEvent> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
    assert!(events.iter().all(|e| e.event_type == WORKFLOW_STEP_EVENT_TYPE), "only steps in {stream:?}");
    events.iter().map(|e| e.payload_as::<serde_json::Value>()).collect()
}
