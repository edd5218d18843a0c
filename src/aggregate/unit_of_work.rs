//! The [`UnitOfWork`]: one command over aggregates of several types, committed in one atomic append.
//!
//! A unit of work is built from a tuple of [`Target`]s (`books.target("b-1")`), each naming an
//! aggregate through its own [`Repository`]; a `Vec` of targets of one type is one part of the tuple
//! too. [`UnitOfWork::execute`] loads every target through its repository (cache and snapshots as
//! for a single command), hands the decision a tuple of [`Staged`] aggregates of the same shape, and
//! appends every stream that got events in one [`append_multi`](EventStore::append_multi), each at
//! the version it was loaded at. A conflict reloads everything and decides again.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;

use tracing::field::Empty;
use tracing::Instrument;

use crate::aggregate::repository::{
    finish, to_new_event, CommandContext, CommandError, Committed, Loaded, Repository, DEFAULT_MAX_RETRIES,
};
use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::{AppendResult, EventStore, StreamAppend};
use crate::stream_id::StreamId;

/// One aggregate a [`UnitOfWork`] works on: the instance `id` of the repository's type. Made by
/// [`Repository::target`].
pub struct Target<'r, A: Aggregate, S> {
    repository: &'r Repository<A, S>,
    id: String,
}

impl<A: Aggregate, S> fmt::Debug for Target<'_, A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("aggregate", &A::TYPE).field("id", &self.id).finish()
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// The aggregate `id` as one part of a [`UnitOfWork`]: it is loaded through this repository
    /// (its cache and snapshots), and after the commit this repository caches it and takes a
    /// snapshot as its policy says, exactly as after [`execute`](Repository::execute).
    ///
    /// The id is checked when the unit of work runs: an invalid one fails it with
    /// [`Error::InvalidStreamId`] before anything is loaded.
    pub fn target(&self, id: impl Into<String>) -> Target<'_, A, S> {
        Target { repository: self, id: id.into() }
    }
}

/// An aggregate loaded into a unit of work, as its decision sees it: the state, and the events the
/// decision has staged for it so far (already applied to the state).
///
/// The events are written only if the whole decision succeeds, together with every other staged
/// aggregate's, at the version this one was loaded at.
pub struct Staged<A: Aggregate> {
    id: String,
    stream: StreamId,
    loaded_version: Version,
    state: A,
    events: Vec<A::Event>,
}

impl<A: Aggregate> fmt::Debug for Staged<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staged")
            .field("stream", &self.stream)
            .field("loaded_version", &self.loaded_version)
            .field("events", &self.events.len())
            .finish()
    }
}

impl<A: Aggregate> Staged<A> {
    /// Runs `command` against the current state (with the events staged so far applied), and stages
    /// the events it decides: they are applied to the state at once and written at the commit. A
    /// later command on the same aggregate in the same decision sees them.
    ///
    /// # Errors
    /// The aggregate's business error when it refuses; nothing is staged then. Return it (or your
    /// own error made from it) from the decision to reject the whole unit of work.
    pub fn handle(&mut self, command: A::Command) -> Result<&[A::Event], A::Error> {
        let events = self.state.handle(command)?;
        for event in &events {
            self.state.apply(event);
        }
        let from = self.events.len();
        self.events.extend(events);
        Ok(&self.events[from..])
    }

    /// The state: as loaded, with the events staged so far applied.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The aggregate's id (what was passed to [`Repository::target`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The aggregate's stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The version the aggregate was loaded at: the commit expects its stream still to be there.
    pub fn loaded_version(&self) -> Version {
        self.loaded_version
    }

    /// The events staged so far, in order.
    pub fn events(&self) -> &[A::Event] {
        &self.events
    }
}

mod sealed {
    /// Keeps [`Part`](super::Part) and [`Parts`](super::Parts) implemented only here.
    #[allow(unreachable_pub)] // public in a private module: the sealed-trait pattern
    pub trait Sealed {}
}

/// What a unit of work learns about its targets before it loads them.
#[doc(hidden)]
#[allow(missing_debug_implementations)] // internal, behind hidden methods
pub struct Plan<'a, S> {
    streams: Vec<StreamId>,
    aggregates: Vec<&'static str>,
    ids: Vec<&'a str>,
    store: Option<&'a S>,
    max_retries: Option<u32>,
}

impl<'a, S: EventStore> Plan<'a, S> {
    fn add<A: Aggregate>(&mut self, target: &'a Target<'a, A, S>) -> Result<()> {
        let stream = A::stream_id(&target.id)?;
        self.streams.push(stream);
        if !self.aggregates.contains(&A::TYPE) {
            self.aggregates.push(A::TYPE);
        }
        self.ids.push(&target.id);
        self.store.get_or_insert(target.repository.store());
        let retries = target.repository.max_retries();
        self.max_retries = Some(self.max_retries.map_or(retries, |r| r.min(retries)));
        Ok(())
    }

    /// [`Error::DuplicateStreamInAppend`] when two targets name the same aggregate.
    fn check_distinct(&self) -> Result<()> {
        let mut seen = HashSet::new();
        match self.streams.iter().find(|stream| !seen.insert(*stream)) {
            Some(stream) => Err(Error::DuplicateStreamInAppend { stream: stream.clone() }),
            None => Ok(()),
        }
    }
}

/// One part of a [`UnitOfWork`]: a [`Target`] (the decision gets a [`Staged`] aggregate, the
/// result a [`Committed`]), or a `Vec` of targets of one type (a `Vec` of each). Implemented only by
/// those two.
pub trait Part: sealed::Sealed + Send + Sync {
    /// The store of the part's repository.
    type Store: EventStore;
    /// What the decision works on: `Staged<A>`, or `Vec<Staged<A>>`.
    type Staged: Send;
    /// What the part committed: `Committed<A::Event>`, or `Vec<Committed<A::Event>>`.
    type Committed: Send;

    #[doc(hidden)]
    fn plan<'a>(&'a self, plan: &mut Plan<'a, Self::Store>) -> Result<()>;

    #[doc(hidden)]
    fn load(&self) -> impl Future<Output = Result<Self::Staged>> + Send;

    #[doc(hidden)]
    fn appends(staged: &Self::Staged, context: &CommandContext, out: &mut Vec<StreamAppend>) -> Result<()>;

    #[doc(hidden)]
    fn commit(
        &self,
        staged: Self::Staged,
        results: &mut std::vec::IntoIter<AppendResult>,
    ) -> impl Future<Output = Result<Self::Committed>> + Send;
}

impl<A: Aggregate, S: EventStore> sealed::Sealed for Target<'_, A, S> {}

impl<A: Aggregate, S: EventStore> Part for Target<'_, A, S> {
    type Store = S;
    type Staged = Staged<A>;
    type Committed = Committed<A::Event>;

    fn plan<'a>(&'a self, plan: &mut Plan<'a, S>) -> Result<()> {
        plan.add(self)
    }

    async fn load(&self) -> Result<Staged<A>> {
        let stream = A::stream_id(&self.id)?;
        let Loaded { state, version } = self.repository.load_stream(&stream).await?;
        Ok(Staged { id: self.id.clone(), stream, loaded_version: version, state, events: Vec::new() })
    }

    fn appends(staged: &Staged<A>, context: &CommandContext, out: &mut Vec<StreamAppend>) -> Result<()> {
        if !staged.events.is_empty() {
            let events = staged.events.iter().map(|e| to_new_event(e, context)).collect::<Result<Vec<_>>>()?;
            let expected = ExpectedVersion::Exact(staged.loaded_version);
            out.push(StreamAppend::new(staged.stream.clone(), expected, events));
        }
        Ok(())
    }

    async fn commit(
        &self,
        staged: Staged<A>,
        results: &mut std::vec::IntoIter<AppendResult>,
    ) -> Result<Committed<A::Event>> {
        let Staged { stream, loaded_version, state, events, .. } = staged;
        if events.is_empty() {
            return Ok(Committed { stream, events: Vec::new(), version: loaded_version });
        }
        // The results come in the order of the appends, which follow the parts' order.
        let result = results.next().ok_or_else(|| Error::EmptyAppend { stream: stream.to_string() })?;
        let loaded = Loaded { state, version: result.version };
        self.repository.after_commit(&stream, &loaded, loaded_version).await?;
        Ok(Committed::from_append(stream, events, &result))
    }
}

impl<A: Aggregate, S: EventStore> sealed::Sealed for Vec<Target<'_, A, S>> {}

impl<A: Aggregate, S: EventStore> Part for Vec<Target<'_, A, S>> {
    type Store = S;
    type Staged = Vec<Staged<A>>;
    type Committed = Vec<Committed<A::Event>>;

    fn plan<'a>(&'a self, plan: &mut Plan<'a, S>) -> Result<()> {
        self.iter().try_for_each(|target| plan.add(target))
    }

    async fn load(&self) -> Result<Vec<Staged<A>>> {
        let mut staged = Vec::with_capacity(self.len());
        for target in self {
            staged.push(target.load().await?);
        }
        Ok(staged)
    }

    fn appends(staged: &Vec<Staged<A>>, context: &CommandContext, out: &mut Vec<StreamAppend>) -> Result<()> {
        staged.iter().try_for_each(|one| <Target<'_, A, S> as Part>::appends(one, context, out))
    }

    async fn commit(
        &self,
        staged: Vec<Staged<A>>,
        results: &mut std::vec::IntoIter<AppendResult>,
    ) -> Result<Vec<Committed<A::Event>>> {
        let mut committed = Vec::with_capacity(staged.len());
        for (target, one) in self.iter().zip(staged) {
            committed.push(target.commit(one, results).await?);
        }
        Ok(committed)
    }
}

/// The parts of a [`UnitOfWork`]: a tuple of 1 to 6 [`Part`]s ([`Target`]s, or `Vec`s of them)
/// over one store type. The decision gets the tuple of their [`Staged`] forms, the result the tuple
/// of what each committed. Implemented only for those tuples.
pub trait Parts: sealed::Sealed + Send + Sync {
    /// The store every part's repository is over.
    type Store: EventStore;
    /// What the decision works on: `(Staged<A>, Staged<B>, ...)`.
    type Staged: Send;
    /// What the unit of work committed: `(Committed<A::Event>, Committed<B::Event>, ...)`.
    type Committed: Send;

    #[doc(hidden)]
    fn plan<'a>(&'a self, plan: &mut Plan<'a, Self::Store>) -> Result<()>;

    #[doc(hidden)]
    fn load(&self) -> impl Future<Output = Result<Self::Staged>> + Send;

    #[doc(hidden)]
    fn appends(staged: &Self::Staged, context: &CommandContext) -> Result<Vec<StreamAppend>>;

    #[doc(hidden)]
    fn commit(
        &self,
        staged: Self::Staged,
        results: Vec<AppendResult>,
    ) -> impl Future<Output = Result<Self::Committed>> + Send;
}

macro_rules! tuple_parts {
    ($(($part:ident, $value:ident)),+) => {
        impl<$($part: Part),+> sealed::Sealed for ($($part,)+) {}

        impl<S: EventStore, $($part: Part<Store = S>),+> Parts for ($($part,)+) {
            type Store = S;
            type Staged = ($($part::Staged,)+);
            type Committed = ($($part::Committed,)+);

            fn plan<'a>(&'a self, plan: &mut Plan<'a, S>) -> Result<()> {
                let ($($value,)+) = self;
                $($value.plan(plan)?;)+
                Ok(())
            }

            fn load(&self) -> impl Future<Output = Result<Self::Staged>> + Send {
                async move {
                    let ($($value,)+) = self;
                    Ok(($($value.load().await?,)+))
                }
            }

            fn appends(staged: &Self::Staged, context: &CommandContext) -> Result<Vec<StreamAppend>> {
                let mut out = Vec::new();
                let ($($value,)+) = staged;
                $($part::appends($value, context, &mut out)?;)+
                Ok(out)
            }

            fn commit(
                &self,
                staged: Self::Staged,
                results: Vec<AppendResult>,
            ) -> impl Future<Output = Result<Self::Committed>> + Send {
                async move {
                    let mut results = results.into_iter();
                    let parts = self;
                    let ($($value,)+) = staged;
                    let ($($part,)+) = parts;
                    Ok(($($part.commit($value, &mut results).await?,)+))
                }
            }
        }
    };
}

// The type parameters double as the names of the parts in `commit`.
#[allow(non_snake_case)]
mod tuples {
    use super::*;

    tuple_parts!((P1, s1));
    tuple_parts!((P1, s1), (P2, s2));
    tuple_parts!((P1, s1), (P2, s2), (P3, s3));
    tuple_parts!((P1, s1), (P2, s2), (P3, s3), (P4, s4));
    tuple_parts!((P1, s1), (P2, s2), (P3, s3), (P4, s4), (P5, s5));
    tuple_parts!((P1, s1), (P2, s2), (P3, s3), (P4, s4), (P5, s5), (P6, s6));
}

/// What a [`UnitOfWork`] committed.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedWork<C, R> {
    /// What the decision returned.
    pub value: R,
    /// What each part committed, in the order of the parts: a tuple of [`Committed`] (a `Vec` of
    /// them for a `Vec` of targets). A target without events has an empty [`Committed`] at the
    /// version it was loaded at.
    pub committed: C,
    last_position: Option<Position>,
}

impl<C, R> CommittedWork<C, R> {
    /// The position of the last event written, to wait on for read-your-writes (`None` when the
    /// decision staged no events, and nothing was appended).
    pub fn last_position(&self) -> Option<Position> {
        self.last_position
    }
}

/// One command over aggregates of several types (a `Book` and a `Member`), committed in one atomic
/// append: every stream's events are stored, or none.
///
/// Build it from a tuple of [`Target`]s, one per aggregate, each made by its own repository
/// ([`Repository::target`]); a `Vec` of targets of one type is one element of the tuple too (all the
/// books of a basket). The repositories must be over one store: clones of one `MemoryStore`, one
/// `Arc<SledStore>`, one `PostgresStore`.
///
/// [`execute`](UnitOfWork::execute):
///
/// 1. loads every target through its repository, exactly as [`Repository::execute`] does (the
///    cache when the stream has not moved, else the newest usable snapshot and the events after it);
/// 2. runs the decision on a tuple of [`Staged`] aggregates of the same shape as the targets: it
///    reads their states, runs commands on them ([`Staged::handle`]) and returns a value, or rejects
///    with its own business error;
/// 3. appends the events of every aggregate that got some in one
///    [`append_multi`](EventStore::append_multi), each stream expected at the version it was loaded
///    at, with the context's metadata and business time on every event;
/// 4. on a conflict (any of the streams moved), reloads everything and decides again, up to the
///    retry limit: [`with_max_retries`](UnitOfWork::with_max_retries), or else the smallest of the
///    repositories' own limits;
/// 5. after the commit, lets each repository cache its aggregate and take a snapshot as its policy
///    says, as after a single command.
///
/// ```
/// # use annals::{Aggregate, Event};
/// # #[derive(Event, Clone, Debug, PartialEq)]
/// # enum BookEvent { Lent { member: String } }
/// # #[derive(Event, Clone, Debug, PartialEq)]
/// # enum MemberEvent { Borrowed { book: String } }
/// # #[derive(Debug, thiserror::Error)]
/// # enum BookError { #[error("the book is lent")] AlreadyLent }
/// # #[derive(Debug, thiserror::Error)]
/// # enum MemberError { #[error("the member has three books")] TooMany }
/// # #[derive(Aggregate, Clone, Default)]
/// # #[aggregate(command = String, event = BookEvent, error = BookError)]
/// # struct Book { lent_to: Option<String> }
/// # impl Book {
/// #     fn handle(&self, member: String) -> Result<Vec<BookEvent>, BookError> {
/// #         if self.lent_to.is_some() { return Err(BookError::AlreadyLent) }
/// #         Ok(vec![BookEvent::Lent { member }])
/// #     }
/// #     fn apply(&mut self, BookEvent::Lent { member }: &BookEvent) { self.lent_to = Some(member.clone()) }
/// # }
/// # #[derive(Aggregate, Clone, Default)]
/// # #[aggregate(command = String, event = MemberEvent, error = MemberError)]
/// # struct Member { books: Vec<String> }
/// # impl Member {
/// #     fn handle(&self, book: String) -> Result<Vec<MemberEvent>, MemberError> {
/// #         if self.books.len() >= 3 { return Err(MemberError::TooMany) }
/// #         Ok(vec![MemberEvent::Borrowed { book }])
/// #     }
/// #     fn apply(&mut self, MemberEvent::Borrowed { book }: &MemberEvent) { self.books.push(book.clone()) }
/// # }
/// use annals::{CommandContext, CommandError, MemoryStore, Repository, UnitOfWork};
///
/// /// Why a loan is refused: the book's or the member's business error.
/// #[derive(Debug, thiserror::Error)]
/// enum LendError {
///     #[error(transparent)]
///     Book(#[from] BookError),
///     #[error(transparent)]
///     Member(#[from] MemberError),
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let books = Repository::<Book, _>::new(store.clone()).with_cache(1_000);
/// let members = Repository::<Member, _>::new(store.clone());
///
/// let lend = UnitOfWork::new((books.target("dune"), members.target("ada")));
/// let context = CommandContext::new().correlation_id("desk-1");
/// let done = lend
///     .execute(&context, |(book, member)| -> Result<(), LendError> {
///         book.handle(member.id().to_owned())?;
///         member.handle(book.id().to_owned())?;
///         Ok(())
///     })
///     .await?;
/// let (book_committed, member_committed) = done.committed;
/// assert_eq!((book_committed.version.get(), member_committed.version.get()), (1, 1));
///
/// // Lending it again is refused by the book, and writes nothing to either stream.
/// let again = lend.execute(&context, |(book, member)| -> Result<(), LendError> {
///     book.handle(member.id().to_owned())?;
///     member.handle(book.id().to_owned())?;
///     Ok(())
/// });
/// assert!(matches!(again.await, Err(CommandError::Rejected(LendError::Book(BookError::AlreadyLent)))));
/// assert_eq!(members.load("ada").await?.state.books, ["dune"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct UnitOfWork<T> {
    parts: T,
    max_retries: Option<u32>,
}

impl<T: Parts> UnitOfWork<T> {
    /// A unit of work over `parts`: a tuple of [`Target`]s, or of `Vec`s of them.
    pub fn new(parts: T) -> Self {
        UnitOfWork { parts, max_retries: None }
    }

    /// How many times the whole unit of work is retried after a conflict (0: never). By default,
    /// the smallest [`with_max_retries`](Repository::with_max_retries) of its repositories.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Loads every target, runs `decide` on them, and appends every stream it staged events for in
    /// one atomic append, retrying the whole on conflicts (see [`UnitOfWork`]). `decide` may run
    /// several times, each time on freshly loaded aggregates; only the events of its last,
    /// committed run are written. A decision that stages no events appends nothing.
    ///
    /// A target the decision reads but stages no events for is not part of the append, so its
    /// version is not checked at the commit: a rule that must hold on it at the commit belongs in a
    /// command on it that emits an event.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] with the decision's error when it rejects: nothing is written.
    /// [`CommandError::Store`] for store errors: [`Error::WrongExpectedVersion`] when a stream kept
    /// changing through every retry (nothing is written), [`Error::DuplicateStreamInAppend`] when
    /// two targets name the same aggregate and [`Error::InvalidStreamId`] for a bad id (both before
    /// anything is loaded), load errors (an event that does not decode), and a failure to save a
    /// snapshot after the commit (the events are written then, as with
    /// [`Repository::execute`]).
    pub async fn execute<R, E, F>(
        &self,
        context: &CommandContext,
        decide: F,
    ) -> Result<CommittedWork<T::Committed, R>, CommandError<E>>
    where
        F: FnMut(&mut T::Staged) -> Result<R, E>,
    {
        let mut plan =
            Plan { streams: Vec::new(), aggregates: Vec::new(), ids: Vec::new(), store: None, max_retries: None };
        if let Err(error) = self.parts.plan(&mut plan).and_then(|()| plan.check_distinct()) {
            return Err(CommandError::Store(error));
        }
        let label = plan.aggregates.join(",");
        let span = tracing::debug_span!(
            "annals.command",
            annals.aggregate = label.as_str(),
            annals.id = plan.ids.join(",").as_str(),
            annals.retries = Empty,
            annals.outcome = Empty,
            annals.position.last = Empty,
        );
        let max_retries = self.max_retries.or(plan.max_retries).unwrap_or(DEFAULT_MAX_RETRIES);
        let mut retries = 0;
        let result = self
            .execute_retrying(plan.store, context, decide, max_retries, &label, &mut retries)
            .instrument(span.clone())
            .await;
        let last = result.as_ref().ok().and_then(CommittedWork::last_position);
        finish(&span, label, retries, last, &result);
        result
    }

    async fn execute_retrying<R, E, F>(
        &self,
        store: Option<&T::Store>,
        context: &CommandContext,
        mut decide: F,
        max_retries: u32,
        label: &str,
        retries: &mut u32,
    ) -> Result<CommittedWork<T::Committed, R>, CommandError<E>>
    where
        F: FnMut(&mut T::Staged) -> Result<R, E>,
    {
        loop {
            let mut staged = self.parts.load().await?;
            let value = decide(&mut staged).map_err(CommandError::Rejected)?;
            let appends = T::appends(&staged, context)?;
            // Every target has a store, so staged events always find one.
            let results = match store {
                Some(store) if !appends.is_empty() => store.append_multi(appends).await,
                _ => Ok(Vec::new()),
            };
            match results {
                Err(Error::WrongExpectedVersion { .. }) if *retries < max_retries => {
                    *retries += 1;
                    metrics::counter!("annals.repository.conflicts", "aggregate" => label.to_owned()).increment(1);
                }
                Err(error) => return Err(CommandError::Store(error)),
                Ok(results) => {
                    let last_position = results.iter().map(|r| r.last_position).max();
                    let committed = self.parts.commit(staged, results).await?;
                    return Ok(CommittedWork { value, committed, last_position });
                }
            }
        }
    }
}
