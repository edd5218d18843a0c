//! A library-lending service on the embedded sled store. Books and members are two aggregate types,
//! and lending a book changes both in one atomic append (a `UnitOfWork`). The story, a week at the
//! lending desk, shows:
//!
//! - a loan refused by either side (the member at the loan limit, the book already lent) writing
//!   nothing, and a loan that conflicts with another desk's being retried as a whole;
//! - a return entered on Wednesday but back-dated to Monday (`CommandContext::occurred_at`), and the
//!   past asked by business time (returned on Monday) and by recorded time (not known until it was
//!   entered);
//! - history written by an older program (a `Lent` event without a due date) upcast on every read,
//!   with the upcasters of both event enums checked together for the store they share;
//! - a projection of open loans, asked about its past while it runs (`ProjectionHandle::as_of`);
//! - snapshots every 3 events, of which the store keeps only the last 2 per stream;
//! - a reminder mailer (a `Workflow`): each loan schedules a durable deadline the day after it is
//!   due, a return cancels it, and when the clock (one the story controls) passes it, a reminder is
//!   mailed once.
//!
//! Run it with `cargo run --example library`; its given / when / then tests and a test of the story
//! run with `cargo test --example library` (and with `cargo test --workspace --all-features`).

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use annals::{Actions, Clock, Deadline, ManualClock, Workflow, WorkflowConfig, WorkflowHandle, Workflows};
use annals::{
    Aggregate, AsOf, CommandContext, CommandError, Committed, CommittedWork, Event, EventStore, ExpectedVersion,
    HandlerError, LogFilter, NewEvent, Phase, Position, Projection, Projector, ReadLog, RecordedEvent, Repository,
    SledConfig, SledStore, SnapshotPolicy, SnapshotRetention, Staged, StreamId, UnitOfWork, Until, Upcasters,
    Upcasting, Version,
};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long a loan lasts.
const LOAN_DAYS: i64 = 14;
/// The most books a member may hold at once.
const LIMIT: usize = 2;

// ---------------------------------------------------------------------------------------------------
// Books.

/// What happens to a book.
#[derive(Event, Clone, Debug, PartialEq)]
enum BookEvent {
    /// It joined the catalogue.
    Added { title: String },
    /// Lent to a member until `due`. Version 1, written by an older program, had the day of the loan
    /// instead of the due date.
    #[event(version = 2)]
    Lent { member: String, due: NaiveDate },
    /// Back on the shelf.
    Returned { member: String },
}

/// What a book can be asked to do.
#[derive(Clone, Debug)]
enum BookCommand {
    Add { title: String },
    Lend { member: String, due: NaiveDate },
    Return,
}

/// Why a book refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
enum BookError {
    #[error("the book is already in the catalogue")]
    AlreadyAdded,
    #[error("the book is not in the catalogue")]
    NotInCatalogue,
    #[error("the book is lent to {to}")]
    AlreadyLent { to: String },
    #[error("the book is not lent")]
    NotLent,
}

/// A book: on the shelf, or lent to one member.
#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = BookCommand, event = BookEvent, error = BookError)]
struct Book {
    title: Option<String>,
    lent_to: Option<String>,
    due: Option<NaiveDate>,
}

impl Book {
    fn handle(&self, command: BookCommand) -> Result<Vec<BookEvent>, BookError> {
        match (command, &self.lent_to) {
            (BookCommand::Add { .. }, _) if self.title.is_some() => Err(BookError::AlreadyAdded),
            (BookCommand::Add { title }, _) => Ok(vec![BookEvent::Added { title }]),
            _ if self.title.is_none() => Err(BookError::NotInCatalogue),
            (BookCommand::Lend { .. }, Some(to)) => Err(BookError::AlreadyLent { to: to.clone() }),
            (BookCommand::Lend { member, due }, None) => Ok(vec![BookEvent::Lent { member, due }]),
            (BookCommand::Return, Some(member)) => Ok(vec![BookEvent::Returned { member: member.clone() }]),
            (BookCommand::Return, None) => Err(BookError::NotLent),
        }
    }

    fn apply(&mut self, event: &BookEvent) {
        match event {
            BookEvent::Added { title } => self.title = Some(title.clone()),
            BookEvent::Lent { member, due } => (self.lent_to, self.due) = (Some(member.clone()), Some(*due)),
            BookEvent::Returned { .. } => (self.lent_to, self.due) = (None, None),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Members.

/// What happens to a member.
#[derive(Event, Clone, Debug, PartialEq)]
enum MemberEvent {
    /// They joined the library (stored as `MemberRegistered` by the older program).
    Joined { name: String },
    /// They took a book home.
    Borrowed { book: String },
    /// They brought it back.
    BroughtBack { book: String },
}

/// What a member can be asked to do.
#[derive(Clone, Debug)]
enum MemberCommand {
    Join { name: String },
    Borrow { book: String },
    BringBack { book: String },
}

/// Why a member refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
enum MemberError {
    #[error("already a member")]
    AlreadyJoined,
    #[error("not a member")]
    NotAMember,
    #[error("holds {holding} books already, the most allowed")]
    AtLimit { holding: usize },
    #[error("does not hold {book}")]
    DoesNotHold { book: String },
}

/// A member: the books they hold.
#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = MemberCommand, event = MemberEvent, error = MemberError)]
struct Member {
    name: Option<String>,
    holds: Vec<String>,
}

impl Member {
    fn handle(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, MemberError> {
        match command {
            MemberCommand::Join { .. } if self.name.is_some() => Err(MemberError::AlreadyJoined),
            MemberCommand::Join { name } => Ok(vec![MemberEvent::Joined { name }]),
            _ if self.name.is_none() => Err(MemberError::NotAMember),
            MemberCommand::Borrow { .. } if self.holds.len() >= LIMIT => {
                Err(MemberError::AtLimit { holding: self.holds.len() })
            }
            MemberCommand::Borrow { book } => Ok(vec![MemberEvent::Borrowed { book }]),
            MemberCommand::BringBack { book } if self.holds.contains(&book) => {
                Ok(vec![MemberEvent::BroughtBack { book }])
            }
            MemberCommand::BringBack { book } => Err(MemberError::DoesNotHold { book }),
        }
    }

    fn apply(&mut self, event: &MemberEvent) {
        match event {
            MemberEvent::Joined { name } => self.name = Some(name.clone()),
            MemberEvent::Borrowed { book } => self.holds.push(book.clone()),
            MemberEvent::BroughtBack { book } => self.holds.retain(|b| b != book),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The lending desk: commands over a book and a member at once.

/// Why a loan or a return is refused: by the book, or by the member.
#[derive(Debug, PartialEq, thiserror::Error)]
enum LendError {
    #[error("{0}")]
    Book(#[from] BookError),
    #[error("the member {0}")]
    Member(#[from] MemberError),
}

/// The store: sled, read through the upcasters.
type Store = Upcasting<SledStore>;
/// What a loan or a return committed: the book's events and the member's.
type Loan = CommittedWork<(Committed<BookEvent>, Committed<MemberEvent>), ()>;

/// The library's repositories, over one store.
struct Library {
    store: Store,
    books: Repository<Book, Store>,
    members: Repository<Member, Store>,
}

/// A desk's command, stamped with the business time it happened at.
fn at_desk(when: DateTime<Utc>) -> CommandContext {
    CommandContext::new().occurred_at(when).header("desk", "front")
}

/// The loan decision over the book and the member a unit of work loaded: the book first, then the
/// member, so a member at the limit refuses after the book has staged its `Lent`.
fn lend_decision(due: NaiveDate) -> impl Fn(&mut (Staged<Book>, Staged<Member>)) -> Result<(), LendError> {
    move |(book, member)| {
        book.handle(BookCommand::Lend { member: member.id().to_owned(), due })?;
        member.handle(MemberCommand::Borrow { book: book.id().to_owned() })?;
        Ok(())
    }
}

impl Library {
    /// Lends `book` to `member` at `when`: one command, two aggregates, one atomic append.
    async fn lend(&self, book: &str, member: &str, when: DateTime<Utc>) -> Result<Loan, CommandError<LendError>> {
        let due = (when + TimeDelta::days(LOAN_DAYS)).date_naive();
        let unit = UnitOfWork::new((self.books.target(book), self.members.target(member)));
        unit.execute(&at_desk(when), lend_decision(due)).await
    }

    /// `member` brings `book` back at `when`.
    async fn give_back(&self, book: &str, member: &str, when: DateTime<Utc>) -> Result<Loan, CommandError<LendError>> {
        let unit = UnitOfWork::new((self.books.target(book), self.members.target(member)));
        unit.execute(&at_desk(when), |(book, member)| -> Result<(), LendError> {
            book.handle(BookCommand::Return)?;
            member.handle(MemberCommand::BringBack { book: book.id().to_owned() })?;
            Ok(())
        })
        .await
    }
}

/// Runs another desk's command to its end from inside a decision (which is synchronous), so that it
/// lands between this unit of work's load and its append: the race is then certain rather than
/// likely. Needs tokio's multi-threaded runtime.
fn meanwhile<F: Future>(other_desk: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(other_desk))
}

// ---------------------------------------------------------------------------------------------------
// Upcasters: one set for the store both enums share, each enum's steps built where it lives.

/// `Lent` v1 stored the day of the loan (loans were for three weeks then); v2 stores the due date.
fn lent_v1_to_v2(payload: Value) -> Result<Value, String> {
    let member = payload.get("member").and_then(Value::as_str).ok_or("no member")?;
    let on = payload.get("on").and_then(Value::as_str).ok_or("no day of the loan")?;
    let on: NaiveDate = on.parse().map_err(|e| format!("day of the loan {on:?}: {e}"))?;
    Ok(json!({ "member": member, "due": on + TimeDelta::days(21) }))
}

fn book_upcasters() -> Upcasters {
    Upcasters::new().upgrade("Lent", 1, lent_v1_to_v2)
}

fn member_upcasters() -> Upcasters {
    Upcasters::new().rename("MemberRegistered", 1, "Joined", 1)
}

// ---------------------------------------------------------------------------------------------------
// A read model: the open loans, by book.

/// The books out on loan: to whom, and until when.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct OpenLoans(BTreeMap<String, (String, NaiveDate)>);

#[async_trait::async_trait]
impl Projection for OpenLoans {
    fn name(&self) -> &str {
        "open-loans"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["Lent", "Returned"])
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let book = event.stream.as_str().trim_start_matches("book-").to_owned();
        match BookEvent::from_recorded(event)? {
            BookEvent::Lent { member, due } => {
                self.0.insert(book, (member, due));
            }
            BookEvent::Returned { .. } => {
                self.0.remove(&book);
            }
            BookEvent::Added { .. } => {}
        }
        Ok(())
    }
}

impl OpenLoans {
    fn books(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn overdue(&self, on: NaiveDate) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, (_, due))| *due < on)
            .map(|(book, (member, _))| format!("{book} ({member})"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------------
// The story: a week at the desk, from Monday 4 March 2024 (fixed business times, so that the story
// reads the same on every run; recorded times are the real ones).

/// `hour` o'clock on day `n` of the week (0 is Monday 4 March 2024; negative days are before it).
fn day(n: i64, hour: i64) -> DateTime<Utc> {
    let monday = DateTime::UNIX_EPOCH + TimeDelta::seconds(1_709_510_400);
    monday + TimeDelta::days(n) + TimeDelta::hours(hour)
}

/// What the story found: checked at its end, and by its test.
#[derive(Debug, Default)]
struct Outcome {
    /// Solaris, lent by the older program: to whom and until when, read through the upcasters.
    solaris: (Option<String>, Option<NaiveDate>),
    /// The refused loans: why, and whether the log's head moved.
    refusals: Vec<(LendError, bool)>,
    /// What cy held as each decision of the conflicting loan saw it.
    decisions: Vec<Vec<String>>,
    /// What cy holds after it.
    cy_holds: Vec<String>,
    /// The back-dated return of dune: when it occurred and when it was recorded.
    dune_returned: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Who had dune on Tuesday: by business time, and as recorded before the return was entered.
    dune_on_tuesday: (Option<String>, Option<String>),
    /// The books out on loan now, on Tuesday by business time, and as recorded before the return.
    loans: (Vec<String>, Vec<String>, Vec<String>),
    /// The loans overdue on 19 March.
    overdue: Vec<String>,
    /// Dune's version, the versions of its snapshots kept, and who had it at version 4.
    dune_snapshots: (Version, Vec<u64>, Option<String>),
    /// The reminders mailed by 19 March noon: mailbox and mail, sorted.
    mailed: Vec<String>,
    /// The books whose reminder is still pending then.
    still_pending: Vec<String>,
}

/// Opens the store, writes the older program's history, and checks and installs the upcasters.
async fn open(dir: &Path) -> Result<Library, Box<dyn Error>> {
    let store = SledConfig::new(dir).snapshot_retention(SnapshotRetention::last(2)).open()?;
    println!("Annals library: a sled store in {}, snapshots every 3 events, the last 2 kept", dir.display());

    println!("\n== history written by the older program, on Monday 26 February ==");
    let then = day(-7, 10);
    let old = |kind: &str, json: &str| NewEvent::raw(kind, json).with_occurred_at(then);
    let bob = vec![old("MemberRegistered", r#"{"name":"Bob"}"#), old("Borrowed", r#"{"book":"solaris"}"#)];
    let lent_v1 = old("Lent", r#"{"member":"bob","on":"2024-02-26"}"#).with_schema_version(1);
    let solaris = vec![old("Added", r#"{"title":"Solaris"}"#), lent_v1];
    store.append(&StreamId::new("member-bob")?, ExpectedVersion::NoStream, bob).await?;
    store.append(&StreamId::new("book-solaris")?, ExpectedVersion::NoStream, solaris).await?;
    println!("member-bob: MemberRegistered v1, Borrowed; book-solaris: Added, Lent v1 (the day, no due date)");

    let upcasters = Upcasters::new().merge(book_upcasters()).merge(member_upcasters());
    if let Err(alone) = upcasters.check::<BookEvent>() {
        println!("the upcasters checked against BookEvent alone: {alone}");
    }
    upcasters.check::<(BookEvent, MemberEvent)>()?;
    println!("the upcasters checked against (BookEvent, MemberEvent): every chain ends at a current event");
    let store = Upcasting::new(store, upcasters);
    let books = Repository::new(store.clone()).with_snapshots(SnapshotPolicy::every(3));
    let members = Repository::new(store.clone()).with_snapshots(SnapshotPolicy::every(3));
    Ok(Library { store, books, members })
}

/// Monday: the catalogue, the members, two loans and two refusals.
async fn monday(library: &Library, outcome: &mut Outcome) -> Result<(), Box<dyn Error>> {
    println!("\n== Monday 4 March ==");
    for book in ["dune", "emma", "walden", "ulysses"] {
        let title = book[..1].to_uppercase() + &book[1..];
        library.books.execute(book, BookCommand::Add { title }, &at_desk(day(0, 9))).await?;
    }
    for member in ["ada", "cy", "dan"] {
        let join = MemberCommand::Join { name: member.to_uppercase() };
        library.members.execute(member, join, &at_desk(day(0, 9))).await?;
    }
    println!("catalogue: dune, emma, walden, ulysses; members: ada, cy, dan");
    for (book, member, hour) in [("dune", "ada", 10), ("emma", "ada", 11), ("walden", "ada", 12), ("dune", "cy", 13)] {
        let head = library.store.head().await?;
        match library.lend(book, member, day(0, hour)).await {
            Ok(loan) => {
                let (b, m) = &loan.committed;
                let at = loan.last_position().map_or(0, |p| p.get());
                println!(
                    "{book} lent to {member}: {} v{} and {} v{} in one append, up to {at}",
                    b.stream, b.version, m.stream, m.version
                );
            }
            Err(CommandError::Rejected(why)) => {
                let after = library.store.head().await?;
                println!("{book} to {member} refused: {why} (the log's head before: {head}, after: {after})");
                outcome.refusals.push((why, after == head));
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

/// Tuesday: desk 1 lends walden to cy while desk 2 lends ulysses to cy.
async fn tuesday(library: &Library, outcome: &mut Outcome) -> Result<(), Box<dyn Error>> {
    println!("\n== Tuesday: two desks lend to cy at once ==");
    let when = day(1, 10);
    let decide = lend_decision((when + TimeDelta::days(LOAN_DAYS)).date_naive());
    let mut other_desk = None;
    let unit = UnitOfWork::new((library.books.target("walden"), library.members.target("cy")));
    let loan = unit
        .execute(&at_desk(when), |parts| {
            outcome.decisions.push(parts.1.state().holds.clone());
            if other_desk.is_none() {
                // Desk 1 has loaded walden and cy; desk 2 lends ulysses to cy before desk 1 appends.
                other_desk = Some(meanwhile(library.lend("ulysses", "cy", when)));
            }
            decide(parts)
        })
        .await?;
    other_desk.ok_or("desk 2 never ran")??;
    println!("desk 2: ulysses lent to cy while desk 1 was deciding");
    println!(
        "desk 1: walden lent to cy after {} decisions (cy held {:?}, then {:?}); member-cy at v{}",
        outcome.decisions.len(),
        outcome.decisions.first().ok_or("no decision")?,
        outcome.decisions.last().ok_or("no decision")?,
        loan.committed.1.version
    );
    outcome.cy_holds = library.members.load("cy").await?.state.holds;
    Ok(())
}

/// Wednesday: the return box is emptied; dune came back on Monday evening. Returns the recorded
/// time of the last event before the return was entered.
async fn wednesday(library: &Library, outcome: &mut Outcome) -> Result<DateTime<Utc>, Box<dyn Error>> {
    println!("\n== Wednesday: the return box ==");
    let known_before = event_at(&library.store, library.store.head().await?).await?.recorded_at;
    let back = library.give_back("dune", "ada", day(0, 18)).await?;
    let returned = event_at(&library.store, back.last_position().ok_or("the return wrote nothing")?).await?;
    let (occurred, recorded) = (returned.occurred_at, returned.recorded_at);
    println!("dune brought back by ada: occurred {occurred} (Monday evening), recorded {recorded} (entered now)");
    outcome.dune_returned = Some((occurred, recorded));
    Ok(known_before)
}

/// Thursday and Friday: dune goes round, and its snapshots with it.
async fn busy_days(library: &Library) -> Result<(), Box<dyn Error>> {
    println!("\n== Thursday and Friday: dune goes round ==");
    for (member, when) in [("dan", day(3, 10)), ("ada", day(3, 15)), ("dan", day(4, 10))] {
        library.lend("dune", member, when).await?;
        library.give_back("dune", member, when + TimeDelta::hours(3)).await?;
        println!("dune lent to {member} and back the same day");
    }
    Ok(())
}

/// Where a book is, for the story.
fn holder(lent_to: &Option<String>) -> String {
    lent_to.as_ref().map_or("on the shelf".into(), |member| format!("lent to {member}"))
}

/// The event at `position` in the log, as stored (`Committed` has no recorded time).
async fn event_at(store: &Store, position: Position) -> Result<RecordedEvent, Box<dyn Error>> {
    let event = store.read_log(ReadLog::from(position).limit(1)).try_next().await?;
    Ok(event.ok_or_else(|| format!("no event at {position}"))?)
}

/// The versions of the snapshots the store keeps for `stream`, newest first.
async fn kept_snapshots(store: &Store, stream: &StreamId) -> Result<Vec<u64>, Box<dyn Error>> {
    let (mut kept, mut below) = (Vec::new(), Version::MAX);
    while let Some(snapshot) = store.load_snapshot(stream, below).await? {
        kept.push(snapshot.version.get());
        below = Version::new(snapshot.version.get().saturating_sub(1));
    }
    Ok(kept)
}

/// Asks the aggregates, the projection and the snapshots about the past.
async fn the_past(
    library: &Library,
    loans: &annals::ProjectionHandle<OpenLoans>,
    known_before: DateTime<Utc>,
    outcome: &mut Outcome,
) -> Result<(), Box<dyn Error>> {
    println!("\n== the past ==");
    let tuesday = day(1, 12);
    let by_business = library.books.load_as_of("dune", AsOf::Occurred(tuesday)).await?.state.lent_to;
    let as_known = library.books.load_as_of("dune", AsOf::Recorded(known_before)).await?.state.lent_to;
    println!("dune on Tuesday, by business time: {} (it came back on Monday)", holder(&by_business));
    println!("dune on Tuesday, as recorded then: {} (the return was entered on Wednesday)", holder(&as_known));
    outcome.dune_on_tuesday = (by_business, as_known);

    loans.wait_for(library.store.head().await?, Duration::from_secs(10)).await?;
    let now = loans.read().await?.clone();
    let tuesday_loans = loans.as_of(Until { occurred: Some(tuesday), ..Until::default() }).await?;
    let as_recorded = loans.as_of(Until { recorded: Some(known_before), ..Until::default() }).await?;
    println!("open loans now: {:?}", now.books());
    println!("open loans on Tuesday, by business time: {:?}", tuesday_loans.books());
    println!("open loans as recorded before the return: {:?}", as_recorded.books());
    let on = day(15, 0).date_naive();
    println!("overdue on {on}: {:?}", now.overdue(on));
    outcome.loans = (now.books(), tuesday_loans.books(), as_recorded.books());
    outcome.overdue = now.overdue(on);

    let dune = library.books.load("dune").await?;
    let kept = kept_snapshots(&library.store, &Book::stream_id("dune")?).await?;
    let at_4 = library.books.load_as_of("dune", AsOf::Version(Version::new(4))).await?.state.lent_to;
    println!("book-dune is at v{}; snapshots kept: {kept:?} (older ones deleted)", dune.version);
    println!("book-dune at v4, before the oldest snapshot kept: {} (replayed from the start)", holder(&at_4));
    outcome.dune_snapshots = (dune.version, kept, at_4);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The reminder mailer: a workflow per book on loan.

/// "The day after a loan is due, if the book is not back, mail the member a reminder." One instance
/// per book; its state is who has the book.
struct Reminders;

impl Workflow for Reminders {
    type State = Option<String>;

    fn name(&self) -> &str {
        "reminders"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["Lent", "Returned"])
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        event.stream.as_str().strip_prefix("book-").map(str::to_owned)
    }

    fn on_event(&self, holder: &mut Self::State, event: &RecordedEvent, act: &mut Actions) -> Result<(), HandlerError> {
        match BookEvent::from_recorded(event)? {
            BookEvent::Lent { member, due } => {
                let remind = due.succ_opt().and_then(|d| d.and_hms_opt(9, 0, 0)).ok_or("no such day")?.and_utc();
                act.schedule("reminder", remind, json!({ "member": member, "due": due }));
                *holder = Some(member);
            }
            _ => {
                act.cancel("reminder");
                *holder = None;
            }
        }
        Ok(())
    }

    fn on_deadline(
        &self,
        holder: &mut Self::State,
        deadline: &Deadline,
        act: &mut Actions,
    ) -> Result<(), HandlerError> {
        let member = holder.clone().ok_or("a reminder for a book on the shelf")?;
        let mail = json!({ "book": deadline.instance, "due": deadline.payload["due"] });
        act.append(StreamId::new(format!("mailbox-{member}"))?, [NewEvent::json("ReminderMailed", &mail)?]);
        Ok(())
    }
}

/// The mailer's last day: the clock moves to Tuesday 19 March, and the reminders due by then go out.
async fn the_mailer(
    library: &Library,
    mailer: &WorkflowHandle<Reminders>,
    clock: &ManualClock,
    outcome: &mut Outcome,
) -> Result<(), Box<dyn Error>> {
    println!("\n== the reminder mailer ==");
    let wait = Duration::from_secs(10);
    mailer.settle(wait).await?;
    for deadline in mailer.pending_deadlines() {
        println!("pending: a reminder for {} on {}", deadline.instance, deadline.due);
    }
    clock.advance(day(15, 12) - clock.now());
    mailer.settle(wait).await?;
    let mailed: Vec<RecordedEvent> = library
        .store
        .read_log(ReadLog::from_start().filter(LogFilter::all().event_types(["ReminderMailed"])))
        .try_collect()
        .await?;
    for mail in &mailed {
        println!("on {}: {} mailed {}", clock.now().date_naive(), mail.stream, mail.payload);
    }
    // Both reminders come due at the same moment: their order between them is not part of the story.
    outcome.mailed = mailed.iter().map(|m| format!("{} {}", m.stream, m.payload)).collect();
    outcome.mailed.sort();
    outcome.still_pending = mailer.pending_deadlines().iter().map(|d| d.instance.clone()).collect();
    outcome.still_pending.sort();
    Ok(())
}

/// Runs the week on a store in `dir`.
async fn run(dir: &Path) -> Result<Outcome, Box<dyn Error>> {
    let mut outcome = Outcome::default();
    let library = open(dir).await?;
    let solaris = library.books.load("solaris").await?.state;
    let due = solaris.due.map_or("no date".into(), |d| d.to_string());
    println!("solaris reads as {}, due {due} (Lent v1 upcast to v2)", holder(&solaris.lent_to));
    outcome.solaris = (solaris.lent_to, solaris.due);
    let loans = Projector::persisted(library.store.clone(), OpenLoans::default).run().await?;

    monday(&library, &mut outcome).await?;
    tuesday(&library, &mut outcome).await?;
    let known_before = wednesday(&library, &mut outcome).await?;
    busy_days(&library).await?;
    the_past(&library, &loans, known_before, &mut outcome).await?;
    // The mailer starts last, so that its steps do not move the log's head under the checks above;
    // it catches up on the whole week from the start of the log, as after any downtime.
    let clock = ManualClock::new(day(4, 20));
    let mailer = Workflows::start(library.store.clone(), Reminders, clock.clone(), WorkflowConfig::new()).await?;
    the_mailer(&library, &mailer, &clock, &mut outcome).await?;
    mailer.stop().await?;
    loans.stop().await?;
    Ok(outcome)
}

/// Checks what the story found against what the week implies; names every check that fails.
fn check(outcome: &Outcome) -> Result<(), String> {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let march = |day| NaiveDate::from_ymd_opt(2024, 3, day);
    let refused = [
        LendError::Member(MemberError::AtLimit { holding: LIMIT }),
        LendError::Book(BookError::AlreadyLent { to: "ada".into() }),
    ];
    let checks = [
        ("solaris upcast: lent to bob, due 18 March", outcome.solaris == (Some("bob".into()), march(18))),
        ("two refusals, for the limit and the lent book", outcome.refusals.iter().map(|r| &r.0).eq(&refused)),
        ("the refusals wrote nothing", outcome.refusals.iter().all(|r| r.1)),
        ("the conflicting loan was decided again", outcome.decisions == [names(&[]), names(&["ulysses"])]),
        ("cy holds both", outcome.cy_holds == names(&["ulysses", "walden"])),
        (
            "the return occurred on Monday and was recorded later",
            outcome.dune_returned.is_some_and(|(occurred, recorded)| occurred == day(0, 18) && recorded > occurred),
        ),
        ("dune on Tuesday", outcome.dune_on_tuesday == (None, Some("ada".into()))),
        ("open loans now", outcome.loans.0 == names(&["emma", "solaris", "ulysses", "walden"])),
        ("open loans on Tuesday", outcome.loans.1 == names(&["emma", "solaris", "ulysses", "walden"])),
        ("open loans as recorded", outcome.loans.2 == names(&["dune", "emma", "solaris", "ulysses", "walden"])),
        ("overdue", outcome.overdue == names(&["emma (ada)", "solaris (bob)"])),
        ("dune's snapshots", outcome.dune_snapshots == (Version::new(9), vec![9, 6], Some("dan".into()))),
        (
            "reminders mailed once, for the loans due by the 18th",
            outcome.mailed
                == names(&[
                    r#"mailbox-ada {"book":"emma","due":"2024-03-18"}"#,
                    r#"mailbox-bob {"book":"solaris","due":"2024-03-18"}"#,
                ]),
        ),
        (
            "reminders still pending for the loans due on the 19th",
            outcome.still_pending == names(&["ulysses", "walden"]),
        ),
    ];
    let failed: Vec<_> = checks.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
    match failed.as_slice() {
        [] => Ok(()),
        _ => Err(format!("checks failed: {}; found {outcome:#?}", failed.join(", "))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let outcome = run(dir.path()).await?;
    check(&outcome)?;
    println!("\nevery check passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use annals::testing::given;

    use super::*;

    fn added() -> BookEvent {
        BookEvent::Added { title: "Dune".into() }
    }

    fn due() -> NaiveDate {
        day(14, 0).date_naive()
    }

    fn lent_to(member: &str) -> BookEvent {
        BookEvent::Lent { member: member.into(), due: due() }
    }

    fn joined() -> MemberEvent {
        MemberEvent::Joined { name: "Ada".into() }
    }

    fn borrowed(book: &str) -> MemberEvent {
        MemberEvent::Borrowed { book: book.into() }
    }

    #[test]
    fn a_book_on_the_shelf_is_lent() {
        let book = given::<Book>([added()])
            .when(BookCommand::Lend { member: "ada".into(), due: due() })
            .then([lent_to("ada")]);
        assert_eq!((book.lent_to.as_deref(), book.due), (Some("ada"), Some(due())));
    }

    #[test]
    fn a_lent_book_is_not_lent_again() {
        given::<Book>([added(), lent_to("ada")])
            .when(BookCommand::Lend { member: "cy".into(), due: due() })
            .then_error(BookError::AlreadyLent { to: "ada".into() });
    }

    #[test]
    fn a_book_outside_the_catalogue_is_not_lent_and_is_added_once() {
        given::<Book>([])
            .when(BookCommand::Lend { member: "ada".into(), due: due() })
            .then_error(BookError::NotInCatalogue);
        given::<Book>([added()]).when(BookCommand::Add { title: "Dune".into() }).then_error(BookError::AlreadyAdded);
    }

    #[test]
    fn a_return_names_who_had_the_book_and_needs_a_loan() {
        let book = given::<Book>([added(), lent_to("ada")])
            .when(BookCommand::Return)
            .then([BookEvent::Returned { member: "ada".into() }]);
        assert_eq!(book.lent_to, None);
        given::<Book>([added()]).when(BookCommand::Return).then_error(BookError::NotLent);
    }

    #[test]
    fn a_member_borrows_up_to_the_limit() {
        given::<Member>([joined(), borrowed("dune")])
            .when(MemberCommand::Borrow { book: "emma".into() })
            .then([borrowed("emma")]);
        given::<Member>([joined(), borrowed("dune"), borrowed("emma")])
            .when(MemberCommand::Borrow { book: "walden".into() })
            .then_error(MemberError::AtLimit { holding: LIMIT });
    }

    #[test]
    fn only_members_borrow_and_only_what_they_hold_comes_back() {
        given::<Member>([]).when(MemberCommand::Borrow { book: "dune".into() }).then_error(MemberError::NotAMember);
        let ada = given::<Member>([joined(), borrowed("dune")])
            .when(MemberCommand::BringBack { book: "dune".into() })
            .then([MemberEvent::BroughtBack { book: "dune".into() }]);
        assert!(ada.holds.is_empty());
        given::<Member>([joined()])
            .when(MemberCommand::BringBack { book: "dune".into() })
            .then_error(MemberError::DoesNotHold { book: "dune".into() });
    }

    #[test]
    fn the_v1_loan_gets_the_due_date_of_its_time() {
        let v2 = lent_v1_to_v2(json!({ "member": "bob", "on": "2024-02-26" }));
        assert_eq!(v2, Ok(json!({ "member": "bob", "due": "2024-03-18" })));
        assert!(lent_v1_to_v2(json!({ "member": "bob", "on": "Monday" })).is_err());
        assert_eq!(day(0, 0).to_rfc3339(), "2024-03-04T00:00:00+00:00", "the week starts on Monday 4 March");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_week_at_the_desk_passes_its_checks() -> Result<(), Box<dyn Error>> {
        let dir = tempfile::tempdir()?;
        let outcome = run(dir.path()).await?;
        check(&outcome)?;
        assert_eq!(outcome.decisions.len(), 2, "desk 1 decided again after desk 2's loan");
        assert_eq!(outcome.dune_on_tuesday, (None, Some("ada".to_owned())));
        Ok(())
    }
}
