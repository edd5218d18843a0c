//! One command over aggregates of several types (a `UnitOfWork` lending a `Book` to a `Member`)
//! commits every stream in one atomic append or nothing: a rejection by either aggregate or by the
//! decision, or a conflict on any stream that the retries cannot resolve, writes nothing to any
//! stream; a conflict reloads everything and decides again; concurrent loans of a few books never
//! lend a book twice nor lose one; snapshots and the cache work per repository as for single
//! commands; the context's metadata is on every event. Each property runs on every store.

#![allow(clippy::panic, clippy::unwrap_used)] // failing the test with the unexpected outcome is the point

#[macro_use]
#[path = "common/on_every_store.rs"]
mod on_every_store;
mod lending;
#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use annals::{
    Aggregate, CommandContext, CommandError, Error, Event, EventStore, ExpectedVersion, NewEvent, ReadLog, ReadStream,
    RecordedEvent, Repository, SnapshotPolicy, Staged, StreamId, UnitOfWork, Version,
};
use futures_util::TryStreamExt;
use lending::probe::Probe;
use lending::{
    give_back, lend, Book, BookCommand, BookError, BookEvent, LendError, Member, MemberCommand, MemberError,
    MemberEvent, LIMIT,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

on_every_store!(
    multi_thread;
    a_loan_changes_the_book_and_the_member_in_one_append,
    a_rejection_by_any_aggregate_or_by_the_decision_writes_nothing,
    a_conflict_on_the_second_stream_reloads_everything_and_decides_again,
    a_conflict_the_retry_rejects_writes_nothing_to_any_stream,
    without_retries_a_conflict_on_the_second_stream_writes_nothing_to_the_first,
    the_retry_limit_is_the_smallest_of_the_repositories_unless_set,
    concurrent_loans_of_a_few_books_never_lend_a_book_twice_nor_lose_one,
    snapshots_are_taken_and_used_per_each_repositorys_policy,
    a_snapshot_that_cannot_be_saved_does_not_fail_the_committed_command,
    the_cache_serves_a_unit_of_work_until_a_stream_moves,
    the_context_metadata_is_on_every_event_of_every_stream,
    a_basket_of_books_is_lent_in_one_append_or_not_at_all,
    a_decision_without_events_appends_nothing,
    a_target_named_twice_or_invalid_is_refused_before_anything_is_loaded,
);

struct Library<S> {
    probe: Probe<S>,
    books: Repository<Book, Probe<S>>,
    members: Repository<Member, Probe<S>>,
}

impl<S: EventStore + Clone> Library<S> {
    fn new(store: S) -> Self {
        let probe = Probe::new(store);
        Library { books: Repository::new(probe.clone()), members: Repository::new(probe.clone()), probe }
    }

    async fn events(&self, stream: &str) -> Result<Vec<RecordedEvent>, Error> {
        let stream = StreamId::new(stream)?;
        self.probe.read_stream(&stream, ReadStream::forward()).try_collect().await
    }
}

fn no_context() -> CommandContext {
    CommandContext::new()
}

/// A `NewEvent` as a concurrent writer would append it for aggregate events `event`.
fn foreign<E: Event>(event: &E) -> NewEvent {
    event.to_new_event().unwrap()
}

async fn a_loan_changes_the_book_and_the_member_in_one_append<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    let loan = lend(&library.books, &library.members, "dune", "ada", &no_context()).await?;
    assert_eq!(library.probe.take_appends(), 1, "one append for both streams");
    let (book, member) = &loan.committed;
    assert_eq!((book.stream.as_str(), book.version), ("book-dune", Version::new(1)));
    assert_eq!((member.stream.as_str(), member.version), ("member-ada", Version::new(1)));
    assert_eq!(book.events[0].event, BookEvent::Lent { member: "ada".into() });
    assert_eq!(member.events[0].event, MemberEvent::Borrowed { book: "dune".into() });
    let positions = [book.events[0].position.get(), member.events[0].position.get()];
    assert_eq!(positions, [1, 2], "one atomic append takes contiguous positions");
    assert_eq!(loan.last_position().map(|p| p.get()), Some(2));
    let recorded: Vec<_> = library.probe.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(recorded[0].recorded_at, recorded[1].recorded_at, "one commit group");
    assert_eq!(library.books.load("dune").await?.state.lent_to.as_deref(), Some("ada"));
    assert_eq!(library.members.load("ada").await?.state.books, ["dune"]);
    Ok(())
}

async fn a_rejection_by_any_aggregate_or_by_the_decision_writes_nothing<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    lend(&library.books, &library.members, "dune", "ada", &no_context()).await?;

    // The first aggregate refuses.
    let refused = lend(&library.books, &library.members, "dune", "bob", &no_context()).await;
    assert!(
        matches!(&refused, Err(CommandError::Rejected(LendError::Book(BookError::AlreadyLent { to }))) if to == "ada"),
        "{refused:?}"
    );

    // The second aggregate refuses after the first staged its event.
    for book in ["emma", "ulysses"] {
        lend(&library.books, &library.members, book, "ada", &no_context()).await?;
    }
    let head_at_limit = library.probe.head().await?;
    let refused = lend(&library.books, &library.members, "walden", "ada", &no_context()).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(LendError::Member(MemberError::TooMany(LIMIT))))),
        "{refused:?}"
    );
    assert_eq!(library.probe.head().await?, head_at_limit, "the book's staged event is not written");
    assert!(library.events("book-walden").await?.is_empty());

    // The decision itself refuses after both staged.
    let unit = UnitOfWork::new((library.books.target("walden"), library.members.target("bob")));
    let refused = unit
        .execute(&no_context(), |(book, member)| -> Result<(), &'static str> {
            book.handle(BookCommand::Lend { member: "bob".into() }).map_err(|_| "book")?;
            member.handle(MemberCommand::Borrow { book: "walden".into() }).map_err(|_| "member")?;
            assert_eq!(book.events().len() + member.events().len(), 2);
            Err("closed on Sundays")
        })
        .await;
    assert!(matches!(refused, Err(CommandError::Rejected("closed on Sundays"))), "{refused:?}");
    assert!(library.events("book-walden").await?.is_empty());
    assert!(library.events("member-bob").await?.is_empty());
    assert_eq!(library.probe.head().await?, head_at_limit);
    Ok(())
}

async fn a_conflict_on_the_second_stream_reloads_everything_and_decides_again<S: EventStore + Clone>(
    store: S,
) -> TestResult {
    let library = Library::new(store);
    lend(&library.books, &library.members, "emma", "ada", &no_context()).await?;
    // Between our load and our append, ada brings emma back at another desk.
    let brought_back = foreign(&MemberEvent::BroughtBack { book: "emma".into() });
    library.probe.meddle_once(Member::stream_id("ada")?, brought_back);
    library.probe.take_conflicts();
    let decisions = AtomicUsize::new(0);
    let seen = std::sync::Mutex::new(Vec::new());
    let unit = UnitOfWork::new((library.books.target("dune"), library.members.target("ada")));
    let loan = unit
        .execute(&no_context(), |(book, member)| -> Result<(), LendError> {
            decisions.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push((book.loaded_version(), member.loaded_version(), member.state().books.clone()));
            book.handle(BookCommand::Lend { member: "ada".into() })?;
            member.handle(MemberCommand::Borrow { book: "dune".into() })?;
            Ok(())
        })
        .await?;
    assert_eq!(decisions.load(Ordering::SeqCst), 2, "decided again after the conflict");
    assert_eq!(library.probe.take_conflicts(), 1);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen[0], (Version::ZERO, Version::new(1), vec!["emma".to_owned()]));
    assert_eq!(seen[1], (Version::ZERO, Version::new(2), vec![]), "both reloaded: the second sees the meddling");
    let (book, member) = loan.committed;
    assert_eq!((book.version, member.version), (Version::new(1), Version::new(3)));
    assert_eq!(library.events("book-dune").await?.len(), 1, "the first attempt wrote nothing");
    assert_eq!(library.members.load("ada").await?.state.books, ["dune"]);
    Ok(())
}

async fn a_conflict_the_retry_rejects_writes_nothing_to_any_stream<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    // The member is suspended between our load and our append: the retry sees it and refuses.
    library.probe.meddle_once(Member::stream_id("ada")?, foreign(&MemberEvent::Suspended));
    let refused = lend(&library.books, &library.members, "dune", "ada", &no_context()).await;
    assert!(matches!(refused, Err(CommandError::Rejected(LendError::Member(MemberError::Suspended)))), "{refused:?}");
    assert!(library.events("book-dune").await?.is_empty(), "nothing on the first stream");
    assert_eq!(library.events("member-ada").await?.len(), 1, "only the meddler's event on the second");

    // The book is lent to someone else between our load and our append.
    library.probe.meddle_once(Book::stream_id("emma")?, foreign(&BookEvent::Lent { member: "cy".into() }));
    let refused = lend(&library.books, &library.members, "emma", "bob", &no_context()).await;
    assert!(
        matches!(&refused, Err(CommandError::Rejected(LendError::Book(BookError::AlreadyLent { to }))) if to == "cy"),
        "{refused:?}"
    );
    assert!(library.events("member-bob").await?.is_empty());
    assert_eq!(library.events("book-emma").await?.len(), 1);
    Ok(())
}

async fn without_retries_a_conflict_on_the_second_stream_writes_nothing_to_the_first<S: EventStore + Clone>(
    store: S,
) -> TestResult {
    let library = Library::new(store);
    library.probe.meddle_once(Member::stream_id("ada")?, foreign(&MemberEvent::Borrowed { book: "emma".into() }));
    let unit = UnitOfWork::new((library.books.target("dune"), library.members.target("ada"))).with_max_retries(0);
    let outcome = unit
        .execute(&no_context(), |(book, member)| -> Result<(), LendError> {
            book.handle(BookCommand::Lend { member: "ada".into() })?;
            member.handle(MemberCommand::Borrow { book: "dune".into() })?;
            Ok(())
        })
        .await;
    match outcome {
        Err(CommandError::Store(Error::WrongExpectedVersion { stream, expected, actual })) => {
            assert_eq!(stream.as_str(), "member-ada");
            assert_eq!(expected, ExpectedVersion::Exact(Version::ZERO));
            assert_eq!(actual, Some(Version::new(1)));
        }
        other => panic!("expected a conflict on the member, got {other:?}"),
    }
    assert!(library.events("book-dune").await?.is_empty(), "the book's events were not written");
    assert_eq!(library.probe.head().await?.get(), 1, "only the meddler's event");
    Ok(())
}

async fn the_retry_limit_is_the_smallest_of_the_repositories_unless_set<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    let strict = Repository::<Member, _>::new(library.probe.clone()).with_max_retries(0);
    library.probe.meddle_once(Member::stream_id("ada")?, foreign(&MemberEvent::Borrowed { book: "emma".into() }));
    let outcome = lend(&library.books, &strict, "dune", "ada", &no_context()).await;
    assert!(matches!(outcome, Err(CommandError::Store(Error::WrongExpectedVersion { .. }))), "{outcome:?}");

    library.probe.meddle_once(Member::stream_id("ada")?, foreign(&MemberEvent::Borrowed { book: "emma".into() }));
    let unit = UnitOfWork::new((library.books.target("dune"), strict.target("ada"))).with_max_retries(1);
    unit.execute(&no_context(), |(book, member)| -> Result<(), LendError> {
        book.handle(BookCommand::Lend { member: "ada".into() })?;
        member.handle(MemberCommand::Borrow { book: "dune".into() })?;
        Ok(())
    })
    .await?;
    assert_eq!(library.members.load("ada").await?.state.books, ["emma", "emma", "dune"]);
    Ok(())
}

const BOOKS: [&str; 3] = ["dune", "emma", "ulysses"];
const TASKS: usize = 16;
const ROUNDS: usize = 6;

async fn concurrent_loans_of_a_few_books_never_lend_a_book_twice_nor_lose_one<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let library = Arc::new(Library::new(store));
    library.probe.yield_before_appends();
    let books = Arc::new(Repository::<Book, _>::new(library.probe.clone()).with_max_retries(1_000));
    let members = Arc::new(Repository::<Member, _>::new(library.probe.clone()).with_max_retries(1_000));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (books, members) = (books.clone(), members.clone());
        tasks.push(tokio::spawn(async move {
            let member = format!("m{task}");
            let (mut lent, mut failed_returns) = (0, Vec::new());
            for round in 0..ROUNDS {
                let book = BOOKS[(task + round) % BOOKS.len()];
                match lend(&books, &members, book, &member, &no_context()).await {
                    Ok(_) => {
                        lent += 1;
                        tokio::task::yield_now().await;
                        if let Err(error) = give_back(&books, &members, book, &member, &no_context()).await {
                            failed_returns.push(format!("{member} could not return {book}: {error:?}"));
                        }
                    }
                    Err(CommandError::Rejected(LendError::Book(BookError::AlreadyLent { .. }))) => {}
                    Err(other) => return Err(other),
                }
            }
            Ok::<_, CommandError<LendError>>((lent, failed_returns))
        }));
    }
    let (mut lent, mut failed_returns) = (0, Vec::new());
    for task in tasks {
        let (task_lent, task_failed) = task.await??;
        lent += task_lent;
        failed_returns.extend(task_failed);
    }
    assert!(lent > 0);

    // The log, event by event: every loan and return is a book event followed, in the same commit,
    // by the matching member event; each book alternates between lent and back on the shelf.
    let log: Vec<_> = library.probe.read_log(ReadLog::from_start()).try_collect().await?;
    let mut holder: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut loans = 0;
    let mut pairs = log.chunks(2);
    for pair in &mut pairs {
        let [book_event, member_event] = pair else { panic!("a lone event: {pair:?}") };
        assert_eq!(book_event.recorded_at, member_event.recorded_at, "one commit");
        let book = book_event.stream.as_str().trim_start_matches("book-").to_owned();
        let member = member_event.stream.as_str().trim_start_matches("member-").to_owned();
        let held = holder.entry(book.clone()).or_default();
        match (BookEvent::from_recorded(book_event)?, MemberEvent::from_recorded(member_event)?) {
            (BookEvent::Lent { member: to }, MemberEvent::Borrowed { book: took }) => {
                assert_eq!((&to, &took), (&member, &book));
                assert_eq!(*held, None, "{book} lent to {member} while {held:?} had it");
                *held = Some(member);
                loans += 1;
            }
            (BookEvent::Returned { member: from }, MemberEvent::BroughtBack { book: gave }) => {
                assert_eq!((&from, &gave), (&member, &book));
                assert_eq!(held.as_deref(), Some(member.as_str()), "{book} returned by who did not have it");
                *held = None;
            }
            other => panic!("events that do not pair: {other:?}"),
        }
    }
    assert_eq!(loans, lent, "every loan the tasks saw succeed is in the log, once");
    assert!(failed_returns.is_empty(), "{failed_returns:?}");
    assert!(library.probe.take_conflicts() > 0, "the tasks raced, and the conflicts were retried");
    for book in BOOKS {
        let loaded = books.load(book).await?;
        assert_eq!(loaded.state.lent_to, None);
        assert_eq!(
            loaded.state.loans,
            log.iter().filter(|e| e.stream.as_str() == format!("book-{book}")).count() as u64 / 2
        );
    }
    for task in 0..TASKS {
        assert!(members.load(&format!("m{task}")).await?.state.books.is_empty());
    }
    Ok(())
}

async fn snapshots_are_taken_and_used_per_each_repositorys_policy<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    let books = Repository::<Book, _>::new(library.probe.clone()).with_snapshots(SnapshotPolicy::every(2));
    let members = Repository::<Member, _>::new(library.probe.clone()).with_snapshots(SnapshotPolicy::every(3));
    for _ in 0..3 {
        lend(&books, &members, "dune", "ada", &no_context()).await?;
        give_back(&books, &members, "dune", "ada", &no_context()).await?;
    }
    lend(&books, &members, "dune", "ada", &no_context()).await?;
    let saved = library.probe.take_snapshots();
    let at = |stream: &str| -> Vec<u64> {
        saved.iter().filter(|(s, _)| s.as_str() == stream).map(|(_, v)| v.get()).collect()
    };
    assert_eq!(at("book-dune"), [2, 4, 6], "every 2 for books");
    assert_eq!(at("member-ada"), [3, 6], "every 3 for members");

    // A unit of work without a cache loads each aggregate from its newest snapshot: version 6 of
    // each stream, then only version 7.
    library.probe.take_read();
    let back = give_back(&books, &members, "dune", "ada", &no_context()).await?;
    assert_eq!(library.probe.take_read(), 2, "versions 7 of the book and of the member only");
    assert_eq!((back.committed.0.version.get(), back.committed.1.version.get()), (8, 8));
    assert_eq!(library.probe.take_snapshots().len(), 1, "the book's at 8");
    let book = books.load("dune").await?;
    assert_eq!((book.state.applied, book.state.loans, book.state.lent_to), (8, 4, None));
    Ok(())
}

async fn a_snapshot_that_cannot_be_saved_does_not_fail_the_committed_command<S: EventStore + Clone>(
    store: S,
) -> TestResult {
    let library = Library::new(store);
    let books = Repository::<Book, _>::new(library.probe.clone()).with_snapshots(SnapshotPolicy::every(2));
    let members = Repository::<Member, _>::new(library.probe.clone()).with_snapshots(SnapshotPolicy::every(2));
    lend(&books, &members, "dune", "ada", &no_context()).await?;
    // The disk fills up: the commit that reaches version 2 of both streams goes through, the
    // snapshots due then do not, and the command answers what it committed (a caller that saw an
    // error would give the book back twice).
    library.probe.fail_snapshot_saves(true);
    let back = give_back(&books, &members, "dune", "ada", &no_context()).await?;
    assert_eq!((back.committed.0.version.get(), back.committed.1.version.get()), (2, 2));
    assert!(library.probe.take_snapshots().is_empty(), "no snapshot was saved");
    library.probe.fail_snapshot_saves(false);
    let book = books.load("dune").await?;
    assert_eq!((book.version.get(), book.state.lent_to), (2, None), "loaded by replay, without the snapshot");
    lend(&books, &members, "dune", "ada", &no_context()).await?;
    lend_again_is_refused(&books, &members).await;
    Ok(())
}

async fn lend_again_is_refused<S: EventStore>(books: &Repository<Book, S>, members: &Repository<Member, S>) {
    let again = lend(books, members, "dune", "ada", &no_context()).await;
    assert!(matches!(again, Err(CommandError::Rejected(_))), "the book is lent: {again:?}");
}

async fn the_cache_serves_a_unit_of_work_until_a_stream_moves<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    let books = Repository::<Book, _>::new(library.probe.clone()).with_cache(16);
    let members = Repository::<Member, _>::new(library.probe.clone()).with_cache(16);
    lend(&books, &members, "dune", "ada", &no_context()).await?;
    library.probe.take_read();
    give_back(&books, &members, "dune", "ada", &no_context()).await?;
    assert_eq!(library.probe.take_read(), 0, "both came from the cache");

    // Another writer moves the member: only the member is loaded again.
    library.members.execute("ada", MemberCommand::Suspend, &no_context()).await?;
    library.probe.take_read();
    let refused = lend(&books, &members, "dune", "ada", &no_context()).await;
    assert!(matches!(refused, Err(CommandError::Rejected(LendError::Member(MemberError::Suspended)))), "{refused:?}");
    assert_eq!(library.probe.take_read(), 3, "the member's three events, not the book's two");
    Ok(())
}

async fn the_context_metadata_is_on_every_event_of_every_stream<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    let context = CommandContext::new().correlation_id("desk-3").causation_id("cmd-9").header("librarian", "lin");
    lend(&library.books, &library.members, "dune", "ada", &context).await?;
    give_back(&library.books, &library.members, "dune", "ada", &context).await?;
    let log: Vec<_> = library.probe.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(log.len(), 4);
    for event in log {
        assert_eq!(&event.metadata, context.metadata(), "{} of {}", event.event_type, event.stream);
    }
    Ok(())
}

async fn a_basket_of_books_is_lent_in_one_append_or_not_at_all<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    let basket = |ids: &[&str]| ids.iter().map(|id| library.books.target(*id)).collect::<Vec<_>>();
    let checkout = |ids: &[&str]| UnitOfWork::new((library.members.target("ada"), basket(ids)));
    let decide = |(member, books): &mut (Staged<Member>, Vec<Staged<Book>>)| -> Result<usize, LendError> {
        for book in books.iter_mut() {
            book.handle(BookCommand::Lend { member: member.id().to_owned() })?;
            member.handle(MemberCommand::Borrow { book: book.id().to_owned() })?;
        }
        Ok(books.len())
    };
    let done = checkout(&["dune", "emma"]).execute(&no_context(), decide).await?;
    assert_eq!(done.value, 2);
    assert_eq!(library.probe.take_appends(), 1);
    let (member, books) = &done.committed;
    assert_eq!(member.version, Version::new(2));
    assert_eq!(books.iter().map(|c| c.stream.as_str()).collect::<Vec<_>>(), ["book-dune", "book-emma"]);

    // Two more would pass the limit on the second: neither is lent.
    let refused = checkout(&["ulysses", "walden"]).execute(&no_context(), decide).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(LendError::Member(MemberError::TooMany(LIMIT))))),
        "{refused:?}"
    );
    assert!(library.events("book-ulysses").await?.is_empty());
    assert_eq!(library.members.load("ada").await?.state.books, ["dune", "emma"]);
    Ok(())
}

async fn a_decision_without_events_appends_nothing<S: EventStore + Clone>(store: S) -> TestResult {
    let library = Library::new(store);
    lend(&library.books, &library.members, "dune", "ada", &no_context()).await?;
    library.probe.take_appends();
    let unit = UnitOfWork::new((library.books.target("dune"), library.members.target("ada")));
    let done = unit
        .execute(&no_context(), |(book, member)| {
            Ok::<_, LendError>(book.state().lent_to.as_deref() == Some(member.id()))
        })
        .await?;
    assert!(done.value);
    assert_eq!(done.last_position(), None);
    assert!(done.committed.0.events.is_empty());
    assert_eq!((done.committed.0.version, done.committed.1.version), (Version::new(1), Version::new(1)));
    assert_eq!(library.probe.take_appends(), 0);
    Ok(())
}

async fn a_target_named_twice_or_invalid_is_refused_before_anything_is_loaded<S: EventStore + Clone>(
    store: S,
) -> TestResult {
    let library = Library::new(store);
    let called = AtomicUsize::new(0);
    let twice = UnitOfWork::new((library.books.target("dune"), library.books.target("dune")))
        .execute(&no_context(), |_| Ok::<_, LendError>(called.fetch_add(1, Ordering::SeqCst)))
        .await;
    assert!(
        matches!(&twice, Err(CommandError::Store(Error::DuplicateStreamInAppend { stream })) if stream.as_str() == "book-dune"),
        "{twice:?}"
    );
    let invalid = UnitOfWork::new((library.books.target("du\nne"), library.members.target("ada")))
        .execute(&no_context(), |_| Ok::<_, LendError>(called.fetch_add(1, Ordering::SeqCst)))
        .await;
    assert!(matches!(invalid, Err(CommandError::Store(Error::InvalidStreamId { .. }))), "{invalid:?}");
    assert_eq!(called.load(Ordering::SeqCst), 0);
    assert_eq!(library.probe.take_read(), 0);
    Ok(())
}
