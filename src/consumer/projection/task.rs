//! The running projector: one task that follows the log for the live projection and, during a
//! rebuild, for its shadow copy; commits checkpoints; and swaps a caught-up shadow in.

use std::sync::Arc;

use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch, RwLock};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::saved::{consumer_error, history_key, history_prefix, Keep, Run, Settings, Shadow};
use super::{handler_error, Projection};
use crate::consumer::follow::{Batch, Follower, Phase};
use crate::consumer::telemetry::{self, PROJECTION};
use crate::consumer::{occurred_before, sleep_until, Pending, Progress};
use crate::envelope::RecordedEvent;
use crate::error::{ConsumerProblem, Result};
use crate::position::Position;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, HeadWatch, LogFilter};

pub(super) enum Command {
    Rebuild(oneshot::Sender<Result<()>>),
    Stop,
}

/// The running projector.
pub(super) struct Task<S, P> {
    pub(super) name: String,
    pub(super) live_key: String,
    pub(super) shadow_key: String,
    pub(super) state: Arc<RwLock<P>>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) ready: watch::Sender<bool>,
    pub(super) settings: Settings<S, P>,
    /// The store's head, for the lag gauge.
    pub(super) head: HeadWatch,
}

/// One follower with its projection: the live one (in the shared lock) or a shadow (private).
struct Lane<S, P> {
    pub(super) follower: Follower<Arc<S>>,
    pub(super) occurred_from: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) pending: Pending,
    pub(super) instance: Target<P>,
    /// Set once it has caught up with the head.
    pub(super) caught_up: bool,
    /// The `annals.projection.rebuild` span of a shadow, open until it is swapped in or dropped.
    pub(super) rebuild: Option<Span>,
}

enum Target<P> {
    Live(Arc<RwLock<P>>),
    Shadow(Box<P>),
}

impl<S: EventStore + 'static, P: Projection> Task<S, P> {
    /// Runs the projector until it is stopped or fails; reports the error (or panic) that stopped it.
    pub(super) async fn run(
        self,
        live_from: Run,
        rebuild: Option<Shadow<P>>,
        inbox: mpsc::Receiver<Command>,
    ) -> Result<()> {
        let name = self.name.clone();
        let progress = self.progress.subscribe();
        let position = || progress.borrow().processed;
        telemetry::reporting_stop(&name, position, self.work(live_from, rebuild, inbox)).await
    }

    async fn work(self, live_from: Run, rebuild: Option<Shadow<P>>, mut inbox: mpsc::Receiver<Command>) -> Result<()> {
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
                        let (from, occurred) = match self.settings.start.resolve(&*self.settings.store).await {
                            Ok(start) => start,
                            Err(error) => break Err(error),
                        };
                        let committed = Position::new(from.get().saturating_sub(1));
                        let fresh =
                            Shadow { instance: (self.settings.factory)(), run: Run::at(from, occurred), committed };
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
            follower: Follower::new(Arc::clone(&self.settings.store), run.from, filter.clone()),
            occurred_from: run.occurred_from,
            pending: Pending::new(committed),
            instance,
            caught_up: false,
            rebuild: None,
        }
    }

    fn shadow_lane(&self, shadow: Shadow<P>, filter: &LogFilter) -> Lane<S, P> {
        let mut lane = self.lane(shadow.run, shadow.committed, Target::Shadow(Box::new(shadow.instance)), filter);
        let span = tracing::info_span!(
            "annals.projection.rebuild",
            annals.consumer = self.name.as_str(),
            annals.position = Empty
        );
        lane.rebuild = Some(span);
        lane
    }

    /// Changes the live projection's progress with `update`: first the consumer gauges, then what
    /// the handles see (so that a handle that saw the progress finds the gauges set too).
    fn report(&self, update: impl FnOnce(&mut Progress)) {
        let mut progress = *self.progress.borrow();
        update(&mut progress);
        telemetry::progress(&self.name, PROJECTION, progress.processed, progress.checkpoint, self.head.current());
        self.progress.send_replace(progress);
    }

    /// Waits for the next page, a command or the checkpoint deadline, and acts on it.
    async fn step(&self, lane: &mut Lane<S, P>, inbox: &mut mpsc::Receiver<Command>) -> Result<Step> {
        let deadline = lane.pending.deadline(&self.settings.policy);
        tokio::select! {
            command = inbox.recv() => Ok(match command {
                Some(Command::Rebuild(reply)) => Step::Rebuild(reply),
                Some(Command::Stop) | None => Step::Stop,
            }),
            batch = lane.follower.next_batch() => {
                let batch = batch?;
                // A shadow's pages are children of its rebuild span.
                let span = match &lane.rebuild {
                    Some(rebuild) => rebuild.in_scope(|| telemetry::batch_span(&self.name, PROJECTION, &batch)),
                    None => telemetry::batch_span(&self.name, PROJECTION, &batch),
                };
                let started = Instant::now();
                self.apply(lane, batch).instrument(span).await?;
                telemetry::batch_done(&self.name, PROJECTION, started);
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
            let room = self.settings.policy.every.saturating_sub(lane.pending.events).max(1);
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
                if !rest.is_empty() && lane.pending.full(&self.settings.policy) {
                    self.commit(lane, last.position).await?;
                }
            }
        }
        lane.pending.progress(batch.through, 0);
        if batch.caught_up {
            lane.caught_up = true;
        }
        match lane.instance {
            Target::Live(_) => {
                self.report(|p| {
                    p.processed = batch.through;
                    if batch.caught_up {
                        p.caught_up.get_or_insert(batch.through);
                    }
                });
                if batch.caught_up {
                    self.ready.send_replace(true);
                }
            }
            Target::Shadow(_) => {
                metrics::gauge!("annals.projection.rebuild.position", "consumer" => self.name.clone())
                    .set(batch.through.get() as f64);
            }
        }
        if lane.pending.full(&self.settings.policy) || batch.caught_up {
            self.commit(lane, batch.through).await?;
        }
        lane.follower.recycle(batch.events);
        Ok(())
    }

    /// Saves the lane's checkpoint at `through` (and its state) if it moved; a shadow saves under its
    /// own key. Every event up to `through` must have been handled.
    async fn commit(&self, lane: &mut Lane<S, P>, through: Position) -> Result<()> {
        if matches!(self.settings.keep, Keep::Nothing) || through <= lane.pending.committed {
            lane.pending.committed(through.max(lane.pending.committed));
            return Ok(());
        }
        let (key, saved) = match &lane.instance {
            Target::Live(state) => (&self.live_key, self.saved(&*state.read().await)?),
            Target::Shadow(instance) => (&self.shadow_key, self.saved(instance)?),
        };
        let mut writes = Vec::with_capacity(2);
        if let (Target::Live(state), Some(every)) = (&lane.instance, self.settings.history_every) {
            // Crossing a multiple of `every` since the last commit: keep a copy of this state too.
            let multiple = through.get() / every;
            if multiple > lane.pending.committed.get() / every {
                let prefix = history_prefix(&self.name, state.read().await.version());
                let copy = Checkpoint::new(history_key(&prefix, multiple), through).with_state(saved.clone());
                writes.push(CheckpointWrite::Save(copy));
            }
        }
        writes.push(CheckpointWrite::Save(Checkpoint::new(key.clone(), through).with_state(saved)));
        let started = Instant::now();
        self.settings
            .store
            .save_checkpoints(writes)
            .instrument(telemetry::checkpoint_span(&self.name, through))
            .await?;
        telemetry::checkpoint_done(&self.name, PROJECTION, started);
        lane.pending.committed(through);
        if let Target::Live(_) = lane.instance {
            self.report(|p| p.checkpoint = through);
        }
        Ok(())
    }

    fn saved(&self, instance: &P) -> Result<String> {
        self.settings.encode(&self.name, instance.version(), instance)
    }

    /// Swaps a caught-up shadow in: one atomic write makes it the saved projection and drops the
    /// shadow's key; then readers see it at once. A live lane is live already and comes back as it is.
    async fn swap(&self, lane: Lane<S, P>, filter: &LogFilter) -> Result<Lane<S, P>> {
        let instance = match lane.instance {
            Target::Shadow(instance) => instance,
            Target::Live(state) => return Ok(Lane { instance: Target::Live(state), ..lane }),
        };
        let through = lane.follower.through();
        let rebuild = lane.rebuild.unwrap_or_else(Span::none);
        rebuild.record("annals.position", through.get());
        let swap = tracing::info_span!(
            parent: &rebuild,
            "annals.projection.swap",
            annals.consumer = self.name.as_str(),
            annals.position = through.get()
        );
        async {
            if !matches!(self.settings.keep, Keep::Nothing) {
                let checkpoint = Checkpoint::new(self.live_key.clone(), through).with_state(self.saved(&instance)?);
                let writes = vec![CheckpointWrite::Save(checkpoint), CheckpointWrite::Delete(self.shadow_key.clone())];
                self.settings.store.save_checkpoints(writes).await?;
            }
            Ok::<(), crate::error::Error>(())
        }
        .instrument(swap)
        .await?;
        *self.state.write().await = *instance;
        metrics::counter!("annals.projection.rebuilds", "consumer" => self.name.clone()).increment(1);
        self.report(|p| {
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

pub(super) async fn handle_all<P: Projection>(
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
            telemetry::handler_failed(projection.name(), PROJECTION);
            return Err(handler_error(projection, event, source));
        }
    }
    Ok(())
}
