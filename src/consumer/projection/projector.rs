//! The [`Projector`] builder: how a projection is kept, where it starts, when it checkpoints; and
//! starting it, or asking it about the past.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch, RwLock};

use super::handle::ProjectionHandle;
use super::saved::{decode_saved, history_key, history_prefix, live_key, shadow_key, Keep, Settings};
use super::task::Task;
use super::{replay, Projection};
use crate::consumer::telemetry::{self, PROJECTION};
use crate::consumer::{CheckpointPolicy, Progress, ProgressWatch, Running, Start};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::store::{EventStore, Until};

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
    settings: Settings<S, P>,
}

impl<S, P> std::fmt::Debug for Projector<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = &self.settings;
        f.debug_struct("Projector")
            .field("keep", &settings.keep.describe())
            .field("start", &settings.start)
            .field("policy", &settings.policy)
            .field("history_every", &settings.history_every)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore + 'static, P: Projection> Projector<S, P> {
    fn with(store: S, factory: impl Fn() -> P + Send + Sync + 'static, keep: Keep<P>) -> Self {
        Projector {
            settings: Settings {
                store: Arc::new(store),
                factory: Arc::new(factory),
                keep,
                start: Start::Beginning,
                policy: CheckpointPolicy::default(),
                history_every: None,
            },
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
        self.settings.start = start;
        self
    }

    /// Commit the checkpoint after this many events at most (default 1,000).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.settings.policy.every = events.max(1);
        self
    }

    /// Commit progress at most this long after it was made (default 200 ms).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.settings.policy.interval = interval;
        self
    }

    /// Also keep the state as it was every `events` positions (a persisted projector only): at the
    /// first checkpoint at or after each multiple of `events`, a copy of the state is saved in the same
    /// atomic write, under `projection-history/<name>/v<version>/<multiple>`. [`as_of`](Self::as_of)
    /// then starts from the nearest copy instead of the beginning of the log.
    pub fn keep_history_every(mut self, events: u64) -> Self {
        self.settings.history_every = Some(events.max(1));
        self
    }

    /// The projection as of `until`, on a fresh instance, without touching a running one: a replay
    /// from the nearest saved copy of its state at or before the bound (see
    /// [`keep_history_every`](Self::keep_history_every)), or from its start. A bound on occurred time
    /// always replays from the start, since a saved state may hold events that occurred later.
    /// [`ProjectionHandle::as_of`] asks the same of a running projection.
    ///
    /// # Errors
    /// As [`replay`].
    pub async fn as_of(&self, until: Until) -> Result<P> {
        self.past().as_of(until).await
    }

    /// What answering [`as_of`](Self::as_of) needs, shared with the handles of a run.
    fn past(&self) -> Past<S, P> {
        let settings = &self.settings;
        let decode = match settings.keep {
            Keep::State { decode, .. } => Some(decode),
            Keep::Nothing | Keep::Position => None,
        };
        Past {
            store: Arc::clone(&settings.store),
            factory: Arc::clone(&settings.factory),
            decode,
            start: settings.start,
            history_every: settings.history_every,
        }
    }

    /// Loads the saved checkpoint (or starts fresh), starts the projection on a tokio task, and returns
    /// its handle. Dropping every handle stops it, as [`ProjectionHandle::stop`] does.
    ///
    /// # Errors
    /// [`Error::Consumer`] when the saved state does not decode into `P` at the same version;
    /// [`Error::Config`] for [`keep_history_every`](Self::keep_history_every) on a projector that is
    /// not persisted; store errors.
    pub async fn run(self) -> Result<ProjectionHandle<P>> {
        if self.settings.history_every.is_some() && !matches!(self.settings.keep, Keep::State { .. }) {
            return Err(Error::Config {
                setting: "keep_history_every",
                expected: "used on a persisted projector only",
            });
        }
        telemetry::describe();
        let past: Arc<dyn PastStates<P>> = Arc::new(self.past());
        let first = (self.settings.factory)();
        let name = first.name().to_owned();
        let restored = self.settings.restore(first).await?;
        let head = self.settings.store.watch_head();
        telemetry::progress(&name, PROJECTION, restored.committed, restored.committed, head.current());
        let ready = restored.ready;
        let progress = Progress { processed: restored.committed, checkpoint: restored.committed, caught_up: None };
        let (progress_tx, progress_rx) = watch::channel(progress);
        let (ready_tx, ready_rx) = watch::channel(ready);
        let (commands, inbox) = mpsc::channel(8);
        let state = Arc::new(RwLock::new(restored.live));
        let watch = ProgressWatch { name: name.clone(), progress: progress_rx, head: self.settings.store.watch_head() };
        let running_name = name.clone();
        let task = Task {
            name,
            live_key: live_key(&restored.name_key),
            shadow_key: shadow_key(&restored.name_key),
            state: Arc::clone(&state),
            progress: progress_tx,
            ready: ready_tx,
            settings: self.settings,
            head,
        };
        let handle = tokio::spawn(task.run(restored.live_from, restored.rebuild, inbox));
        Ok(ProjectionHandle {
            state,
            watch,
            ready: ready_rx,
            commands,
            running: Running::new(running_name, handle),
            past,
        })
    }
}

/// A projection's past states: a replay into a fresh instance, from the nearest copy of its state
/// that a persisted projector kept at or before the bound, or from its start. Owns what it needs
/// (the store, the factory, the settings that shape a replay), so that a running projector's handles
/// answer it too without touching the running task.
pub(super) struct Past<S, P> {
    store: Arc<S>,
    factory: Arc<dyn Fn() -> P + Send + Sync>,
    /// How a saved state decodes, for a persisted projector.
    decode: Option<fn(&str) -> serde_json::Result<P>>,
    start: Start,
    history_every: Option<u64>,
}

/// [`Past`] without its store type, for [`ProjectionHandle`], which names only the projection.
#[async_trait]
pub(super) trait PastStates<P>: Send + Sync {
    /// The projection as of `until` (see [`Projector::as_of`]).
    async fn as_of(&self, until: Until) -> Result<P>;
}

#[async_trait]
impl<S: EventStore + 'static, P: Projection> PastStates<P> for Past<S, P> {
    async fn as_of(&self, until: Until) -> Result<P> {
        let fresh = (self.factory)();
        if let (Some(every), Some(decode), None) = (self.history_every, self.decode, until.occurred) {
            let bound = position_bound(&*self.store, until).await?;
            let prefix = history_prefix(fresh.name(), fresh.version());
            // The copy for a multiple may have been saved past the bound: look a few multiples back.
            for multiple in (0..=bound.get() / every).rev().take(4) {
                let Some(saved) = self.store.load_checkpoint(&history_key(&prefix, multiple)).await? else {
                    continue;
                };
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
