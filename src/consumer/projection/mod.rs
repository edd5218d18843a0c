//! Projections: read models built by replaying the log, kept up to date live, rebuilt in a shadow copy.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch, RwLock, RwLockReadGuard};

use crate::consumer::follow::{Batch, Follower, Phase};
use crate::consumer::{
    occurred_before, sleep_until, CheckpointPolicy, HandlerError, Pending, Progress, ProgressWatch, Running, Start,
};
use crate::envelope::RecordedEvent;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, LogCursor, LogFilter, Until};

/// A read model: it handles the events it asks for, in log order, and is rebuilt by replaying them.
///
/// A projection has a [`name`](Projection::name) (the key of its checkpoint) and a
/// [`version`](Projection::version): bump the version when the code changes what it computes, and the
/// next [`Projector::run`] rebuilds it from the start in a shadow copy. Its
/// [`filter`](Projection::filter) lets the runner skip unwanted events without decoding them.
///
/// `handle` is called once per event for a projection kept in the store with its state
/// ([`Projector::persisted`]: exactly-once), and at least once for one with outside effects
/// ([`Projector::checkpointed`]): after a crash, the events after its last checkpoint come again. The
/// [`Phase`] says whether an event is a replay (catch-up) or live, so side effects can be skipped
/// during replays.
///
/// ```
/// use annals::{HandlerError, LogFilter, Phase, Projection, RecordedEvent};
/// use std::collections::BTreeMap;
///
/// /// How many orders each customer placed.
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct OrdersPerCustomer(BTreeMap<String, u64>);
///
/// #[async_trait::async_trait]
/// impl Projection for OrdersPerCustomer {
///     fn name(&self) -> &str {
///         "orders-per-customer"
///     }
///
///     fn filter(&self) -> LogFilter {
///         LogFilter::all().event_types(["OrderPlaced"])
///     }
///
///     async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
///         #[derive(serde::Deserialize)]
///         struct Placed {
///             customer: String,
///         }
///         let placed: Placed = event.payload_as()?;
///         *self.0.entry(placed.customer).or_default() += 1;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's stable, unique name: its checkpoint is saved under it.
    fn name(&self) -> &str;

    /// The version of what it computes (default 1). A saved projection of another version is rebuilt.
    fn version(&self) -> u32 {
        1
    }

    /// The events it wants (default: all). Others are skipped cheaply, without being decoded.
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    /// Handles one event, in log order. An error stops the projector before the event (its checkpoint
    /// stays before it) with [`Error::Handler`].
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError>;
}

/// Replays the log into `projection` from `start` up to `until` (inclusive bounds; [`Until::default`]
/// for the head as it is now), and returns it. Nothing is saved and no running projector is touched:
/// this answers "what did the read model look like then?" on a fresh instance.
///
/// ```
/// # use annals::{HandlerError, Phase, Projection, RecordedEvent};
/// # #[derive(Default)]
/// # struct Count(u64);
/// # #[async_trait::async_trait]
/// # impl Projection for Count {
/// #     fn name(&self) -> &str { "count" }
/// #     async fn handle(&mut self, _: &RecordedEvent, _: Phase) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
/// # }
/// use annals::{replay, EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, Start, StreamId, Until};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let stream = StreamId::new("order-1")?;
/// for _ in 0..5 {
///     store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Touched", "{}")]).await?;
/// }
/// let until_3 = Until { position: Some(Position::new(3)), ..Until::default() };
/// let count = replay(&store, Count::default(), Start::Position(Position::new(2)), until_3).await?;
/// assert_eq!(count.0, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Handler`] when the projection fails on an event; read errors.
pub async fn replay<S, P>(store: &S, mut projection: P, start: Start, until: Until) -> Result<P>
where
    S: EventStore + ?Sized,
    P: Projection,
{
    let (from, occurred_from) = start.resolve(store).await?;
    // A cursor driven to its bound: the store's one paging loop, without per-event stream machinery.
    let mut cursor = LogCursor::new(store, from, projection.filter());
    loop {
        if until.position.is_some_and(|bound| cursor.next() > bound) {
            return Ok(projection);
        }
        let chunk = cursor.read_page().await?;
        for event in &chunk.events {
            if until.is_past(event) {
                return Ok(projection);
            }
            if !until.admits(event) || occurred_before(event, occurred_from) {
                continue;
            }
            if let Err(source) = projection.handle(event, Phase::CatchUp).await {
                return Err(handler_error(&projection, event, source));
            }
        }
        if chunk.end {
            return Ok(projection);
        }
    }
}

fn handler_error<P: Projection>(projection: &P, event: &RecordedEvent, source: HandlerError) -> Error {
    Error::Handler { consumer: projection.name().to_owned(), position: event.position, attempts: 1, source }
}

/// How a projector keeps a projection between runs.
enum Keep<P> {
    /// Nothing: every run replays from its start.
    Nothing,
    /// Its position only (outside effects: at-least-once).
    Position,
    /// Its state and position, in one atomic write (exactly-once).
    State { encode: fn(&P) -> serde_json::Result<String>, decode: fn(&str) -> serde_json::Result<P> },
}

/// Runs a [`Projection`]: catches it up from its checkpoint, keeps it live, saves its checkpoint, and
/// rebuilds it in a shadow copy when its version changes or on request.
///
/// ```
/// # use annals::{HandlerError, Phase, Projection, RecordedEvent};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)]
/// # struct Count(u64);
/// # #[async_trait::async_trait]
/// # impl Projection for Count {
/// #     fn name(&self) -> &str { "count" }
/// #     async fn handle(&mut self, _: &RecordedEvent, _: Phase) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
/// # }
/// use annals::{EventStore, ExpectedVersion, NewEvent, Projector, SledStore, StreamId};
/// use std::time::Duration;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let store = SledStore::open(dir.path())?;
/// let counter = Projector::persisted(store.clone(), Count::default).run().await?;
///
/// let stream = StreamId::new("order-1")?;
/// let appended = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Placed", "{}")]).await?;
/// // Read your writes: wait until the projection has handled the append.
/// counter.wait_for(appended.last_position, Duration::from_secs(5)).await?;
/// assert_eq!(counter.read().await?.0, 1);
/// counter.stop().await?; // saves the state and the position together
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Projector<S, P> {
    store: Arc<S>,
    factory: Arc<dyn Fn() -> P + Send + Sync>,
    keep: Keep<P>,
    start: Start,
    policy: CheckpointPolicy,
    history_every: Option<u64>,
}

impl<S: EventStore + 'static, P: Projection> Projector<S, P> {
    fn with(store: S, factory: impl Fn() -> P + Send + Sync + 'static, keep: Keep<P>) -> Self {
        Projector {
            store: Arc::new(store),
            factory: Arc::new(factory),
            keep,
            start: Start::Beginning,
            policy: CheckpointPolicy::default(),
            history_every: None,
        }
    }

    /// A projection kept only in memory: each run replays it from [`start_from`](Self::start_from).
    /// `factory` makes a fresh, empty instance.
    pub fn in_memory(store: S, factory: impl Fn() -> P + Send + Sync + 'static) -> Self {
        Projector::with(store, factory, Keep::Nothing)
    }

    /// A projection with outside effects (another database, a file, a message): its position is
    /// checkpointed, and events after the last checkpoint are handled again after a crash
    /// (at-least-once).
    pub fn checkpointed(store: S, factory: impl Fn() -> P + Send + Sync + 'static) -> Self {
        Projector::with(store, factory, Keep::Position)
    }

    /// A projection whose state is kept in the store, saved together with its position in one atomic
    /// write: after any crash its state reflects exactly the events up to its checkpoint
    /// (exactly-once). The state is serialized as JSON at every checkpoint.
    pub fn persisted(store: S, factory: impl Fn() -> P + Send + Sync + 'static) -> Self
    where
        P: Serialize + DeserializeOwned,
    {
        let encode = |p: &P| serde_json::to_string(p);
        let decode = |s: &str| serde_json::from_str(s);
        Projector::with(store, factory, Keep::State { encode, decode })
    }

    /// Where a projection with no checkpoint starts (default: the beginning of the log).
    pub fn start_from(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Commit the checkpoint after this many events at most (default 1,000).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.policy.every = events.max(1);
        self
    }

    /// Commit progress at most this long after it was made (default 200 ms).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.policy.interval = interval;
        self
    }

    /// Also keep the state as it was every `events` positions (a persisted projector only): at the
    /// first checkpoint at or after each multiple of `events`, a copy of the state is saved in the same
    /// atomic write, under `projection-history/<name>/v<version>/<multiple>`. [`as_of`](Self::as_of)
    /// then starts from the nearest copy instead of the beginning of the log.
    pub fn keep_history_every(mut self, events: u64) -> Self {
        self.history_every = Some(events.max(1));
        self
    }

    /// The projection as of `until`, on a fresh instance, without touching a running one: a replay
    /// from the nearest saved copy of its state at or before the bound (see
    /// [`keep_history_every`](Self::keep_history_every)), or from its start. A bound on occurred time
    /// always replays from the start, since a saved state may hold events that occurred later.
    ///
    /// # Errors
    /// As [`replay`].
    pub async fn as_of(&self, until: Until) -> Result<P> {
        let fresh = (self.factory)();
        if let (Some(every), Keep::State { decode, .. }, None) = (self.history_every, &self.keep, until.occurred) {
            let bound = position_bound(&*self.store, until).await?;
            let prefix = history_prefix(fresh.name(), fresh.version());
            // The copy for a multiple may have been saved past the bound: look a few multiples back.
            for multiple in (0..=bound.get() / every).rev().take(4) {
                let Some(saved) = self.store.load_checkpoint(&history_key(&prefix, multiple)).await? else { continue };
                if saved.position > bound {
                    continue;
                }
                let stored = decode_saved(fresh.name(), &saved)?;
                if let Some(instance) = stored.state.as_deref().and_then(|state| decode(state).ok()) {
                    let from = Start::Position(Position::new(saved.position.get() + 1));
                    return replay(&*self.store, instance, from, until).await;
                }
            }
        }
        replay(&*self.store, fresh, self.start, until).await
    }

    /// Loads the saved checkpoint (or starts fresh), starts the projection on a tokio task, and returns
    /// its handle. Dropping every handle stops it, as [`ProjectionHandle::stop`] does.
    ///
    /// # Errors
    /// [`Error::Consumer`] when the saved state does not decode into `P` at the same version;
    /// [`Error::Config`] for [`keep_history_every`](Self::keep_history_every) on a projector that is
    /// not persisted; store errors.
    pub async fn run(self) -> Result<ProjectionHandle<P>> {
        if self.history_every.is_some() && !matches!(self.keep, Keep::State { .. }) {
            return Err(Error::Config("keep_history_every needs a persisted projector"));
        }
        let first = (self.factory)();
        let name = first.name().to_owned();
        let restored = self.restore(first).await?;
        let ready = restored.ready;
        let progress = Progress { processed: restored.committed, checkpoint: restored.committed, caught_up: None };
        let (progress_tx, progress_rx) = watch::channel(progress);
        let (ready_tx, ready_rx) = watch::channel(ready);
        let (commands, inbox) = mpsc::channel(8);
        let state = Arc::new(RwLock::new(restored.live));
        let watch = ProgressWatch { name: name.clone(), progress: progress_rx, head: self.store.watch_head() };
        let running_name = name.clone();
        let task = Task {
            name,
            live_key: live_key(&restored.name_key),
            shadow_key: shadow_key(&restored.name_key),
            state: Arc::clone(&state),
            progress: progress_tx,
            ready: ready_tx,
            runner: self,
        };
        let handle = tokio::spawn(task.run(restored.live_from, restored.rebuild, inbox));
        Ok(ProjectionHandle { state, watch, ready: ready_rx, commands, running: Running::new(running_name, handle) })
    }

    /// Decides where the live projection stands, and whether a rebuild must run first.
    async fn restore(&self, first: P) -> Result<Restored<P>> {
        let name_key = first.name().to_owned();
        let version = first.version();
        let fresh = |first: P, from: Position, occurred: Option<_>| Restored {
            name_key: name_key.clone(),
            live: first,
            live_from: Run::at(from, occurred),
            committed: Position::new(from.get().saturating_sub(1)),
            ready: false,
            rebuild: None,
        };
        if matches!(self.keep, Keep::Nothing) {
            let (from, occurred) = self.start.resolve(&*self.store).await?;
            return Ok(fresh(first, from, occurred));
        }
        let saved = self.store.load_checkpoint(&live_key(&name_key)).await?;
        let Some(saved) = saved else {
            let (from, occurred) = self.start.resolve(&*self.store).await?;
            // Saved from the first commit on; the first catch-up is visible only once complete.
            return Ok(fresh(first, from, occurred));
        };
        let stored = decode_saved(&name_key, &saved)?;
        let restored_state = self.decode_state(&name_key, stored.state.as_deref(), first)?;
        let live_from = Run::at(Position::new(saved.position.get() + 1), None);
        if stored.version == version {
            let live =
                restored_state.ok_or_else(|| consumer_error(&name_key, ConsumerProblem::SavedStateUndecodable))?;
            return Ok(Restored { name_key, live, live_from, committed: saved.position, ready: true, rebuild: None });
        }
        // Another version was saved: rebuild it in the shadow. Readers keep the old state if it still
        // decodes; otherwise they wait for the rebuild.
        let shadow = self.restore_shadow(&name_key, version).await?;
        let ready = restored_state.is_some();
        let live = restored_state.unwrap_or_else(|| (self.factory)());
        Ok(Restored { name_key, live, live_from, committed: saved.position, ready, rebuild: Some(shadow) })
    }

    /// The shadow of an interrupted rebuild of this version, or a fresh one.
    async fn restore_shadow(&self, name: &str, version: u32) -> Result<Shadow<P>> {
        if let Some(saved) = self.store.load_checkpoint(&shadow_key(name)).await? {
            let stored = decode_saved(name, &saved)?;
            if stored.version == version {
                if let Some(instance) = self.decode_state(name, stored.state.as_deref(), (self.factory)())? {
                    let from = Run::at(Position::new(saved.position.get() + 1), None);
                    return Ok(Shadow { instance, run: from, committed: saved.position });
                }
            }
        }
        let (from, occurred) = self.start.resolve(&*self.store).await?;
        let committed = Position::new(from.get().saturating_sub(1));
        Ok(Shadow { instance: (self.factory)(), run: Run::at(from, occurred), committed })
    }

    /// The instance a saved state stands for: decoded for a persisted projection, a fresh one for a
    /// checkpointed one. `None` when the state does not decode.
    fn decode_state(&self, name: &str, state: Option<&str>, fresh: P) -> Result<Option<P>> {
        match (&self.keep, state) {
            (Keep::State { decode, .. }, Some(state)) => Ok(decode(state).ok()),
            (Keep::State { .. }, None) => Err(consumer_error(name, ConsumerProblem::SavedWithoutState)),
            _ => Ok(Some(fresh)),
        }
    }

    /// The saved form of an instance: `{"version": V, "state": ...}`.
    fn encode(&self, name: &str, version: u32, instance: &P) -> Result<String> {
        match &self.keep {
            Keep::State { encode, .. } => {
                let state =
                    encode(instance).map_err(|e| consumer_error(name, ConsumerProblem::StateDoesNotEncode(e)))?;
                Ok(format!(r#"{{"version":{version},"state":{state}}}"#))
            }
            _ => Ok(format!(r#"{{"version":{version}}}"#)),
        }
    }
}

/// The last position `until` admits by position and recorded time (the head when unbounded).
async fn position_bound<S: EventStore + ?Sized>(store: &S, until: Until) -> Result<Position> {
    let mut bound = store.head().await?;
    if let Some(position) = until.position {
        bound = bound.min(position);
    }
    if let Some(recorded) = until.recorded {
        let after = recorded + chrono::Duration::microseconds(1);
        if let Some(first_after) = store.seek_recorded(after).await? {
            bound = bound.min(Position::new(first_after.get() - 1));
        }
    }
    Ok(bound)
}

fn history_prefix(name: &str, version: u32) -> String {
    format!("projection-history/{name}/v{version}/")
}

fn history_key(prefix: &str, multiple: u64) -> String {
    format!("{prefix}{multiple:020}")
}

fn live_key(name: &str) -> String {
    format!("projection/{name}")
}

fn shadow_key(name: &str) -> String {
    format!("projection-rebuild/{name}")
}

fn consumer_error(name: &str, problem: ConsumerProblem) -> Error {
    Error::Consumer { consumer: name.to_owned(), problem }
}

/// The JSON a projector saves in a checkpoint's state.
#[derive(Deserialize)]
struct Saved {
    version: u32,
    #[serde(default)]
    state: Option<Box<RawValue>>,
}

struct Decoded {
    version: u32,
    state: Option<String>,
}

fn decode_saved(name: &str, checkpoint: &Checkpoint) -> Result<Decoded> {
    let text = checkpoint.state.as_deref().unwrap_or(r#"{"version":0}"#);
    let saved: Saved = serde_json::from_str(text)
        .map_err(|source| consumer_error(name, ConsumerProblem::ForeignCheckpoint { kind: "projection", source }))?;
    Ok(Decoded { version: saved.version, state: saved.state.map(|raw| raw.get().to_owned()) })
}

/// Where a run reads from.
struct Run {
    from: Position,
    occurred_from: Option<chrono::DateTime<chrono::Utc>>,
}

impl Run {
    fn at(from: Position, occurred_from: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        Run { from, occurred_from }
    }
}

struct Shadow<P> {
    instance: P,
    run: Run,
    committed: Position,
}

struct Restored<P> {
    name_key: String,
    live: P,
    live_from: Run,
    committed: Position,
    ready: bool,
    rebuild: Option<Shadow<P>>,
}

enum Command {
    Rebuild(oneshot::Sender<Result<()>>),
    Stop,
}

/// The running projector.
struct Task<S, P> {
    name: String,
    live_key: String,
    shadow_key: String,
    state: Arc<RwLock<P>>,
    progress: watch::Sender<Progress>,
    ready: watch::Sender<bool>,
    runner: Projector<S, P>,
}

/// One follower with its projection: the live one (in the shared lock) or a shadow (private).
struct Lane<S, P> {
    follower: Follower<Arc<S>>,
    occurred_from: Option<chrono::DateTime<chrono::Utc>>,
    pending: Pending,
    instance: Target<P>,
    /// Set once it has caught up with the head.
    caught_up: bool,
}

enum Target<P> {
    Live(Arc<RwLock<P>>),
    Shadow(Box<P>),
}

impl<S: EventStore + 'static, P: Projection> Task<S, P> {
    async fn run(self, live_from: Run, rebuild: Option<Shadow<P>>, mut inbox: mpsc::Receiver<Command>) -> Result<()> {
        let filter = self.state.read().await.filter();
        let mut live = self.lane(
            live_from,
            Position::new(self.progress.borrow().checkpoint.get()),
            Target::Live(Arc::clone(&self.state)),
            &filter,
        );
        let mut shadow = rebuild.map(|s| self.shadow_lane(s, &filter));
        let mut waiting_rebuild: Vec<oneshot::Sender<Result<()>>> = Vec::new();
        let result = loop {
            let step = match shadow.as_mut() {
                Some(lane) => self.step(lane, &mut inbox).await,
                None => self.step(&mut live, &mut inbox).await,
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Stop) => break Ok(()),
                Ok(Step::Rebuild(reply)) => {
                    if shadow.is_none() {
                        let (from, occurred) = match self.runner.start.resolve(&*self.runner.store).await {
                            Ok(start) => start,
                            Err(error) => break Err(error),
                        };
                        let committed = Position::new(from.get().saturating_sub(1));
                        let fresh =
                            Shadow { instance: (self.runner.factory)(), run: Run::at(from, occurred), committed };
                        shadow = Some(self.shadow_lane(fresh, &filter));
                    }
                    waiting_rebuild.push(reply);
                }
                Err(error) => break Err(error),
            }
            if shadow.as_ref().is_some_and(|lane| lane.caught_up) {
                if let Some(lane) = shadow.take() {
                    match self.swap(lane, &filter).await {
                        Ok(lane) => live = lane,
                        Err(error) => break Err(error),
                    }
                    for reply in waiting_rebuild.drain(..) {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        };
        let result = match result {
            Ok(()) => {
                let through = live.follower.through();
                self.commit(&mut live, through).await
            }
            Err(error) => Err(error),
        };
        for reply in waiting_rebuild {
            let _ = reply.send(Err(consumer_error(&self.name, ConsumerProblem::StoppedBeforeRebuilt)));
        }
        result
    }

    fn lane(&self, run: Run, committed: Position, instance: Target<P>, filter: &LogFilter) -> Lane<S, P> {
        Lane {
            follower: Follower::new(Arc::clone(&self.runner.store), run.from, filter.clone()),
            occurred_from: run.occurred_from,
            pending: Pending::new(committed),
            instance,
            caught_up: false,
        }
    }

    fn shadow_lane(&self, shadow: Shadow<P>, filter: &LogFilter) -> Lane<S, P> {
        self.lane(shadow.run, shadow.committed, Target::Shadow(Box::new(shadow.instance)), filter)
    }

    /// Waits for the next page, a command or the checkpoint deadline, and acts on it.
    async fn step(&self, lane: &mut Lane<S, P>, inbox: &mut mpsc::Receiver<Command>) -> Result<Step> {
        let deadline = lane.pending.deadline(&self.runner.policy);
        tokio::select! {
            command = inbox.recv() => Ok(match command {
                Some(Command::Rebuild(reply)) => Step::Rebuild(reply),
                Some(Command::Stop) | None => Step::Stop,
            }),
            batch = lane.follower.next_batch() => {
                self.apply(lane, batch?).await?;
                Ok(Step::Continue)
            }
            () = sleep_until(deadline) => {
                let through = lane.follower.through();
                self.commit(lane, through).await?;
                Ok(Step::Continue)
            }
        }
    }

    /// Hands a page to the lane's projection, then commits if the policy says so.
    async fn apply(&self, lane: &mut Lane<S, P>, batch: Batch) -> Result<()> {
        // Slices of at most what the checkpoint policy has room for, so that a checkpoint is committed
        // after `every` events even within a page.
        let mut rest = batch.events.as_slice();
        while !rest.is_empty() {
            let room = self.runner.policy.every.saturating_sub(lane.pending.events).max(1);
            let (slice, after) = rest.split_at(rest.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
            match &mut lane.instance {
                Target::Live(state) => {
                    let mut guard = state.write().await;
                    handle_all(&mut *guard, slice, batch.phase, lane.occurred_from).await?;
                }
                Target::Shadow(instance) => handle_all(&mut **instance, slice, batch.phase, lane.occurred_from).await?,
            }
            rest = after;
            if let Some(last) = slice.last() {
                lane.pending.progress(last.position, slice.len() as u64);
                if !rest.is_empty() && lane.pending.full(&self.runner.policy) {
                    self.commit(lane, last.position).await?;
                }
            }
        }
        lane.pending.progress(batch.through, 0);
        if batch.caught_up {
            lane.caught_up = true;
        }
        if let Target::Live(_) = lane.instance {
            self.progress.send_modify(|p| {
                p.processed = batch.through;
                if batch.caught_up {
                    p.caught_up.get_or_insert(batch.through);
                }
            });
            if batch.caught_up {
                self.ready.send_replace(true);
            }
        }
        if lane.pending.full(&self.runner.policy) || batch.caught_up {
            self.commit(lane, batch.through).await?;
        }
        Ok(())
    }

    /// Saves the lane's checkpoint at `through` (and its state) if it moved; a shadow saves under its
    /// own key. Every event up to `through` must have been handled.
    async fn commit(&self, lane: &mut Lane<S, P>, through: Position) -> Result<()> {
        if matches!(self.runner.keep, Keep::Nothing) || through <= lane.pending.committed {
            lane.pending.committed(through.max(lane.pending.committed));
            return Ok(());
        }
        let (key, saved) = match &lane.instance {
            Target::Live(state) => (&self.live_key, self.saved(&*state.read().await)?),
            Target::Shadow(instance) => (&self.shadow_key, self.saved(instance)?),
        };
        let mut writes = Vec::with_capacity(2);
        if let (Target::Live(state), Some(every)) = (&lane.instance, self.runner.history_every) {
            // Crossing a multiple of `every` since the last commit: keep a copy of this state too.
            let multiple = through.get() / every;
            if multiple > lane.pending.committed.get() / every {
                let prefix = history_prefix(&self.name, state.read().await.version());
                let copy = Checkpoint::new(history_key(&prefix, multiple), through).with_state(saved.clone());
                writes.push(CheckpointWrite::Save(copy));
            }
        }
        writes.push(CheckpointWrite::Save(Checkpoint::new(key.clone(), through).with_state(saved)));
        self.runner.store.save_checkpoints(writes).await?;
        lane.pending.committed(through);
        if let Target::Live(_) = lane.instance {
            self.progress.send_modify(|p| p.checkpoint = through);
        }
        Ok(())
    }

    fn saved(&self, instance: &P) -> Result<String> {
        self.runner.encode(&self.name, instance.version(), instance)
    }

    /// Swaps a caught-up shadow in: one atomic write makes it the saved projection and drops the
    /// shadow's key; then readers see it at once. A live lane is live already and comes back as it is.
    async fn swap(&self, lane: Lane<S, P>, filter: &LogFilter) -> Result<Lane<S, P>> {
        let instance = match lane.instance {
            Target::Shadow(instance) => instance,
            Target::Live(state) => return Ok(Lane { instance: Target::Live(state), ..lane }),
        };
        let through = lane.follower.through();
        if !matches!(self.runner.keep, Keep::Nothing) {
            let checkpoint = Checkpoint::new(self.live_key.clone(), through).with_state(self.saved(&instance)?);
            let writes = vec![CheckpointWrite::Save(checkpoint), CheckpointWrite::Delete(self.shadow_key.clone())];
            self.runner.store.save_checkpoints(writes).await?;
        }
        *self.state.write().await = *instance;
        self.progress.send_modify(|p| {
            p.processed = through;
            p.checkpoint = through;
            p.caught_up.get_or_insert(through);
        });
        self.ready.send_replace(true);
        let mut live = self.lane(
            Run::at(Position::new(through.get() + 1), lane.occurred_from),
            through,
            Target::Live(Arc::clone(&self.state)),
            filter,
        );
        live.caught_up = true;
        // Keep the shadow's follower: it is live already and knows where it stands.
        live.follower = lane.follower;
        Ok(live)
    }
}

enum Step {
    Continue,
    Stop,
    Rebuild(oneshot::Sender<Result<()>>),
}

async fn handle_all<P: Projection>(
    projection: &mut P,
    events: &[RecordedEvent],
    phase: Phase,
    occurred_from: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    for event in events {
        if occurred_before(event, occurred_from) {
            continue;
        }
        if let Err(source) = projection.handle(event, phase).await {
            return Err(handler_error(projection, event, source));
        }
    }
    Ok(())
}

/// A running projection: read its state, wait for it to reach a position, rebuild it, stop it.
/// Cloning gives another handle; when the last one is dropped, the projector stops.
pub struct ProjectionHandle<P> {
    state: Arc<RwLock<P>>,
    watch: ProgressWatch,
    ready: watch::Receiver<bool>,
    commands: mpsc::Sender<Command>,
    running: Running,
}

impl<P> Clone for ProjectionHandle<P> {
    fn clone(&self) -> Self {
        ProjectionHandle {
            state: Arc::clone(&self.state),
            watch: self.watch.clone(),
            ready: self.ready.clone(),
            commands: self.commands.clone(),
            running: self.running.clone(),
        }
    }
}

impl<P: Projection> ProjectionHandle<P> {
    /// The projection's state, once it is complete: restored from its saved state, or caught up with
    /// the head once. During a rebuild, readers keep the previous complete state (if the saved one
    /// still decodes) until the shadow copy has caught up and is swapped in; they never see a
    /// half-built one.
    ///
    /// # Errors
    /// [`Error::Consumer`] when the projector stopped before the state was complete.
    pub async fn read(&self) -> Result<RwLockReadGuard<'_, P>> {
        let mut ready = self.ready.clone();
        if ready.wait_for(|ready| *ready).await.is_err() {
            return Err(consumer_error(&self.watch.name, ConsumerProblem::StoppedBeforeComplete));
        }
        Ok(self.state.read().await)
    }

    /// The last position handled (events the filter skips count as handled).
    pub fn position(&self) -> Position {
        self.watch.now().processed
    }

    /// The last position saved in the store.
    pub fn checkpoint(&self) -> Position {
        self.watch.now().checkpoint
    }

    /// How many events the projection is behind the head.
    pub fn lag(&self) -> u64 {
        self.watch.lag()
    }

    /// Waits until the projection has handled `position` (read-your-writes: pass the position an
    /// append returned), for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it did not get there in time; [`Error::Consumer`] when it stopped.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<()> {
        self.watch.wait_for(position, timeout).await
    }

    /// Waits until the projection has caught up with the head once, and returns that head.
    ///
    /// # Errors
    /// [`Error::Consumer`] when it stopped first.
    pub async fn caught_up(&self) -> Result<Position> {
        self.watch.caught_up().await
    }

    /// Rebuilds the projection from its start in a shadow copy, while readers keep the current state;
    /// returns once the copy has caught up and was swapped in (atomically, also in the store).
    ///
    /// # Errors
    /// [`Error::Consumer`] when the projector stopped first; the rebuild's errors.
    pub async fn rebuild(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let stopped = || consumer_error(&self.watch.name, ConsumerProblem::Stopped);
        self.commands.send(Command::Rebuild(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stops the projector after the page it is on, saves its checkpoint, and returns how it ended:
    /// the error that stopped it earlier, if one did.
    ///
    /// # Errors
    /// The projector's error ([`Error::Handler`], store errors); [`Error::HandlerPanicked`] when the
    /// projection's `handle` panicked.
    pub async fn stop(self) -> Result<()> {
        self.running.stop(&self.commands, Command::Stop).await
    }
}
