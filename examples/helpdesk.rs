//! Real data: the event log of the help desk of an Italian software company, 4,580 tickets and 21,348
//! events from 2010 to 2014 (Ilya Verenich, Mendeley Data 2016, "Helpdesk", doi:10.17632/39bp3vv62t.1,
//! as redistributed in the test data of pm4py). It shows:
//!
//! - importing a CSV event log with `annals::import`: one stream per ticket (`ticket-Case 7`), the
//!   activity as event type, the log's timestamp as the events' occurred (business) time; then the
//!   same import run again, which stores nothing twice;
//! - a projection replayed up to an occurred time: how many tickets were open on a given day (a ticket
//!   is open from its first event until its "Closed" activity; a later activity reopens it), and how
//!   often each activity happened;
//! - an aggregate loaded as of an occurred time: what ticket "Case 7" looked like on a given day.
//!
//! Run it with `cargo run --release --example helpdesk`. It reads the log shipped with the repository,
//! `data/helpdesk.csv.gz` (gzip, decompressed as it is read; `data/README.md` has its origin and
//! licence), or the log given as its argument, a CSV file or a gzipped one if its name ends in `.gz`
//! (`cargo run --release --example helpdesk -- path/to/helpdesk.csv`). A log that does not open is an
//! error. `tests/helpdesk_import.rs` checks its answers against a plain computation over the CSV rows.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::error::Error;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annals::import::{CsvImport, ImportSummary};
use annals::{
    replay, Aggregate, AsOf, Event, EventStore, HandlerError, Loaded, LogFilter, Phase, Projection, RecordedEvent,
    Repository, SledStore, Start, Until,
};
use chrono::{DateTime, NaiveDate, Utc};
use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};

/// The log shipped with the repository, relative to it.
const SHIPPED_LOG: &str = "data/helpdesk.csv.gz";

/// The credit line of the data set.
pub(crate) const CREDIT: &str =
    "Data: \"Helpdesk\" by Ilya Verenich, Mendeley Data (2016), doi:10.17632/39bp3vv62t.1, \
                                 via the test data of pm4py.";

/// The activity that closes a ticket.
pub(crate) const CLOSED: &str = "Closed";

// ---------------------------------------------------------------------------------------------------
// A ticket, as an aggregate whose history is imported.

/// Who did a step of a ticket (the other columns of the log are in the payload too, unused here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Step {
    /// The (anonymised) resource that did it, e.g. "Value 11".
    pub(crate) resource: String,
}

/// The activities of the help desk's process, under the names the log gives them.
#[derive(Event, Clone, Debug, PartialEq, Eq)]
pub(crate) enum TicketEvent {
    #[event(name = "Insert ticket")]
    Insert(Step),
    #[event(name = "Assign seriousness")]
    AssignSeriousness(Step),
    #[event(name = "Take in charge ticket")]
    TakeInCharge(Step),
    #[event(name = "Wait")]
    Wait(Step),
    #[event(name = "Require upgrade")]
    RequireUpgrade(Step),
    #[event(name = "Create SW anomaly")]
    CreateSwAnomaly(Step),
    #[event(name = "Resolve SW anomaly")]
    ResolveSwAnomaly(Step),
    #[event(name = "Schedule intervention")]
    ScheduleIntervention(Step),
    #[event(name = "Resolve ticket")]
    Resolve(Step),
    #[event(name = "RESOLVED")]
    Resolved(Step),
    #[event(name = "VERIFIED")]
    Verified(Step),
    #[event(name = "INVALID")]
    Invalid(Step),
    #[event(name = "DUPLICATE")]
    Duplicate(Step),
    #[event(name = "Closed")]
    Closed(Step),
}

impl TicketEvent {
    fn step(&self) -> &Step {
        use TicketEvent::*;
        match self {
            Insert(step)
            | AssignSeriousness(step)
            | TakeInCharge(step)
            | Wait(step)
            | RequireUpgrade(step)
            | CreateSwAnomaly(step)
            | ResolveSwAnomaly(step)
            | ScheduleIntervention(step)
            | Resolve(step)
            | Resolved(step)
            | Verified(step)
            | Invalid(step)
            | Duplicate(step)
            | Closed(step) => step,
        }
    }
}

/// A ticket's state: how many steps it went through, the last one, and whether it is closed.
///
/// Its history is imported, so it takes no commands here (`Infallible`: there are none).
#[derive(Aggregate, Clone, Debug, Default, PartialEq, Eq)]
#[aggregate(name = "ticket", command = Infallible, event = TicketEvent, error = Infallible)]
pub(crate) struct Ticket {
    /// Events applied.
    pub(crate) steps: u32,
    /// The last activity, if any.
    pub(crate) last_activity: Option<&'static str>,
    /// Who did it.
    pub(crate) last_resource: Option<String>,
    /// Whether the last activity closed the ticket.
    pub(crate) closed: bool,
}

impl Ticket {
    fn handle(&self, command: Infallible) -> Result<Vec<TicketEvent>, Infallible> {
        match command {}
    }

    fn apply(&mut self, event: &TicketEvent) {
        self.steps += 1;
        self.last_activity = Some(event.event_type());
        self.last_resource = Some(event.step().resource.clone());
        self.closed = matches!(event, TicketEvent::Closed(_));
    }
}

// ---------------------------------------------------------------------------------------------------
// The import.

/// The import of the help desk's log: the case is the ticket, its stream the one `Ticket` loads.
pub(crate) fn helpdesk_import() -> CsvImport {
    CsvImport::new("case", "activity", "timestamp").stream_prefix(format!("{}-", Ticket::TYPE))
}

/// The log shipped with the repository, `data/helpdesk.csv.gz`.
pub(crate) fn shipped_log() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_LOG)
}

/// Opens the log at `path` for reading: decompressed as it is read if its name ends in `.gz`, as it
/// is otherwise. The error names the path.
pub(crate) fn open_log(path: &Path) -> Result<Box<dyn Read>, Box<dyn Error>> {
    let file = File::open(path).map_err(|error| format!("cannot open the log {}: {error}", path.display()))?;
    if path.extension().is_some_and(|extension| extension == "gz") {
        Ok(Box::new(GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Imports the log at `path` (see [`open_log`]) into `store`; returns the summary and how long it
/// took, decompression included.
pub(crate) async fn import(store: &SledStore, path: &Path) -> Result<(ImportSummary, Duration), Box<dyn Error>> {
    let started = Instant::now();
    let summary = helpdesk_import().import_reader(store, open_log(path)?, |_progress| {}).await?;
    Ok((summary, started.elapsed()))
}

// ---------------------------------------------------------------------------------------------------
// The read model: open tickets and activity counts.

/// Every ticket's last activity so far, and how often each activity happened.
#[derive(Debug, Default)]
pub(crate) struct Desk {
    last_activity: HashMap<String, String>,
    per_activity: BTreeMap<String, u64>,
}

#[async_trait::async_trait]
impl Projection for Desk {
    fn name(&self) -> &str {
        "helpdesk-desk"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_prefix(format!("{}-", Ticket::TYPE))
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        self.last_activity.insert(event.stream.to_string(), event.event_type.clone());
        *self.per_activity.entry(event.event_type.clone()).or_default() += 1;
        Ok(())
    }
}

impl Desk {
    /// Tickets whose last activity is not "Closed".
    pub(crate) fn open(&self) -> usize {
        self.last_activity.values().filter(|activity| *activity != CLOSED).count()
    }

    /// Tickets with at least one event.
    pub(crate) fn tickets(&self) -> usize {
        self.last_activity.len()
    }

    /// How often each activity happened.
    pub(crate) fn per_activity(&self) -> &BTreeMap<String, u64> {
        &self.per_activity
    }
}

/// The desk as it was at the occurred time `at` (`None`: everything), replayed from the log.
pub(crate) async fn desk_as_of(store: &SledStore, at: Option<DateTime<Utc>>) -> Result<Desk, annals::Error> {
    replay(store, Desk::default(), Start::Beginning, Until { occurred: at, ..Until::default() }).await
}

/// The ticket `case` (e.g. "Case 7") as it was at the occurred time `at`.
pub(crate) async fn ticket_as_of(
    store: &SledStore,
    case: &str,
    at: DateTime<Utc>,
) -> Result<Loaded<Ticket>, annals::Error> {
    Repository::<Ticket, _>::new(store.clone()).load_as_of(case, AsOf::Occurred(at)).await
}

/// Midnight UTC at the start of `day` ("2013-01-01").
pub(crate) fn start_of(day: &str) -> Result<DateTime<Utc>, Box<dyn Error>> {
    Ok(NaiveDate::parse_from_str(day, "%Y-%m-%d")?.and_time(Default::default()).and_utc())
}

fn describe(ticket: &Loaded<Ticket>) -> String {
    let state = &ticket.state;
    match (state.last_activity, &state.last_resource) {
        (Some(activity), Some(resource)) => format!(
            "{} after {} step(s); last: \"{activity}\" by {resource}",
            if state.closed { "closed" } else { "open" },
            state.steps
        ),
        _ => "not opened yet: no event had occurred".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------
// The demo.

async fn run(log: &Path, db: &Path) -> Result<(), Box<dyn Error>> {
    let store = SledStore::open(db)?;
    println!("Importing {} into a sled store (fsync on every batch)...", log.display());
    let (first, took) = import(&store, log).await?;
    println!(
        "  {} rows -> {} events in {} ticket streams in {:.2} s ({} skipped)",
        first.rows,
        first.events_written,
        first.streams,
        took.as_secs_f64(),
        first.skipped.len()
    );
    let (again, took) = import(&store, log).await?;
    println!(
        "  the same import again: {} written, {} already present, head still {} ({:.2} s)",
        again.events_written,
        again.already_present,
        store.head().await?,
        took.as_secs_f64()
    );

    println!("\nTickets open (a first event, no \"Closed\" since) at the start of the day, by occurred time:");
    for day in ["2011-01-01", "2012-01-01", "2013-01-01", "2014-01-01"] {
        let desk = desk_as_of(&store, Some(start_of(day)?)).await?;
        println!("  {day}: {:>4} open of {:>4} tickets seen so far", desk.open(), desk.tickets());
    }

    let everything = desk_as_of(&store, None).await?;
    println!(
        "\nActivities over the whole log ({} tickets, {} still open at the end):",
        everything.tickets(),
        everything.open()
    );
    let mut counts: Vec<_> = everything.per_activity().iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (activity, count) in counts {
        println!("  {count:>6}  {activity}");
    }

    println!("\nTicket \"Case 7\", loaded as of an occurred time:");
    for day in ["2012-11-01", "2013-11-23", "2013-12-01", "2014-01-01"] {
        println!("  {day}: {}", describe(&ticket_as_of(&store, "Case 7", start_of(day)?).await?));
    }

    println!("\n{CREDIT}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let log = std::env::args_os().nth(1).map_or_else(shipped_log, PathBuf::from);
    let dir = tempfile::tempdir()?;
    run(&log, dir.path()).await
}
