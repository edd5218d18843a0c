//! [`ProjectionHandle`]: reading a running projection, waiting for it, asking it about the past,
//! rebuilding and stopping it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, RwLock, RwLockReadGuard};

use super::projector::PastStates;
use super::saved::consumer_error;
use super::task::Command;
use super::Projection;
use crate::consumer::{ProgressWatch, Running};
use crate::error::{ConsumerProblem, Result};
use crate::position::Position;
use crate::store::Until;

/// A running projection: read its state, wait for it to reach a position, ask for its state at a
/// past point, rebuild it, stop it.
/// Cloning gives another handle; when the last one is dropped, the projector stops.
pub struct ProjectionHandle<P> {
    pub(super) state: Arc<RwLock<P>>,
    pub(super) watch: ProgressWatch,
    pub(super) ready: watch::Receiver<bool>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) running: Running,
    /// Answers [`as_of`](ProjectionHandle::as_of) by replay, apart from the running task.
    pub(super) past: Arc<dyn PastStates<P>>,
}

impl<P> std::fmt::Debug for ProjectionHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let progress = self.watch.now();
        f.debug_struct("ProjectionHandle")
            .field("name", &self.watch.name)
            .field("position", &progress.processed)
            .field("checkpoint", &progress.checkpoint)
            .finish_non_exhaustive()
    }
}

impl<P> Clone for ProjectionHandle<P> {
    fn clone(&self) -> Self {
        ProjectionHandle {
            state: Arc::clone(&self.state),
            watch: self.watch.clone(),
            ready: self.ready.clone(),
            commands: self.commands.clone(),
            running: self.running.clone(),
            past: Arc::clone(&self.past),
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
    /// [`Error::Consumer`](crate::Error::Consumer) when the projector stopped before the state was complete.
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
    /// [`Error::Timeout`](crate::Error::Timeout) when it did not get there in time; [`Error::Consumer`](crate::Error::Consumer) when it stopped.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<()> {
        self.watch.wait_for(position, timeout).await
    }

    /// Waits until the projection has caught up with the head once, and returns that head.
    ///
    /// # Errors
    /// [`Error::Consumer`](crate::Error::Consumer) when it stopped first.
    pub async fn caught_up(&self) -> Result<Position> {
        self.watch.caught_up().await
    }

    /// The projection as of `until`: a recorded time, a position, a business (occurred) time, or
    /// several at once. The answer is a fresh instance replayed from the log, exactly as
    /// [`Projector::as_of`](super::Projector::as_of) gives it: from the nearest copy of its state
    /// the projector keeps at or before the bound
    /// ([`keep_history_every`](super::Projector::keep_history_every)), or from its start. The
    /// running projection goes on meanwhile: the replay reads the store on its own, holds no lock on
    /// the live state and sends nothing to the projector's task, so readers, waiters and the live
    /// catch-up are not held up, and a bound past what the live projection has handled is answered
    /// from the log all the same. It works the same after the projector stopped.
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
    /// use annals::{EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, Projector, StreamId, Until};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let store = MemoryStore::new();
    /// let counter = Projector::persisted(store.clone(), Count::default).keep_history_every(100).run().await?;
    /// let stream = StreamId::new("order-1")?;
    /// for _ in 0..5 {
    ///     store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Placed", "{}")]).await?;
    /// }
    /// counter.wait_for(Position::new(5), Duration::from_secs(5)).await?;
    ///
    /// let then = counter.as_of(Until { position: Some(Position::new(3)), ..Until::default() }).await?;
    /// assert_eq!((then.0, counter.read().await?.0), (3, 5));
    /// # counter.stop().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`replay`](crate::replay): [`Error::Handler`](crate::Error::Handler) when the projection
    /// fails on an event, read errors.
    pub async fn as_of(&self, until: Until) -> Result<P> {
        self.past.as_of(until).await
    }

    /// Rebuilds the projection from its start in a shadow copy, while readers keep the current state;
    /// returns once the copy has caught up and was swapped in (atomically, also in the store).
    ///
    /// # Errors
    /// [`Error::Consumer`](crate::Error::Consumer) when the projector stopped first; the rebuild's errors.
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
    /// The projector's error ([`Error::Handler`](crate::Error::Handler), store errors); [`Error::HandlerPanicked`](crate::Error::HandlerPanicked) when the
    /// projection's `handle` panicked.
    pub async fn stop(self) -> Result<()> {
        self.running.stop(&self.commands, Command::Stop).await
    }
}
