//! One worker of a subscription: follows the log for the partitions it holds, hands their events to
//! its handler with retries, parks what keeps failing, and commits checkpoints in batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::coordinator::Coordinator;
use super::{
    drop_parked, partition_key, partition_of, Handler, OnFailure, Parked, ParkedReplay, SavedPartition, Setup,
};
use crate::consumer::follow::{Batch, Follower, Phase};
use crate::consumer::telemetry::{self, SUBSCRIPTION};
use crate::consumer::{occurred_before, sleep_until, HandlerError, Pending, ProgressWatch, Running};
use crate::envelope::RecordedEvent;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, LogFilter};

pub(crate) enum Command {
    Parked(oneshot::Sender<Vec<Parked>>),
    ReplayParked(oneshot::Sender<Result<ParkedReplay>>),
    SkipParked(Position, oneshot::Sender<Result<bool>>),
    Stop,
}

/// A running worker of a subscription. Dropping every clone of the handle stops the worker, as
/// [`stop`](SubscriptionHandle::stop) does.
#[derive(Clone)]
pub struct SubscriptionHandle {
    worker: u64,
    coordinator: Arc<Coordinator>,
    watch: ProgressWatch,
    commands: mpsc::Sender<Command>,
    running: Running,
    /// Closed when the worker's task ends.
    alive: watch::Receiver<()>,
}

impl std::fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let progress = self.watch.now();
        f.debug_struct("SubscriptionHandle")
            .field("name", &self.coordinator.name)
            .field("worker", &self.worker)
            .field("position", &progress.processed)
            .field("checkpoint", &progress.checkpoint)
            .finish_non_exhaustive()
    }
}

impl SubscriptionHandle {
    pub(crate) fn new(
        worker: u64,
        coordinator: Arc<Coordinator>,
        commands: mpsc::Sender<Command>,
        task: JoinHandle<Result<()>>,
        alive: watch::Receiver<()>,
    ) -> Self {
        let watch = coordinator.watch();
        let running = Running::new(coordinator.name.clone(), task);
        SubscriptionHandle { worker, coordinator, watch, commands, running, alive }
    }

    /// Resolves when the worker's task has ended.
    async fn ended(&self) {
        let mut alive = self.alive.clone();
        while alive.changed().await.is_ok() {}
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.coordinator.name
    }

    /// This worker's id in its group.
    pub fn worker_id(&self) -> u64 {
        self.worker
    }

    /// Waits until the subscription (every partition) has caught up with the head once, and returns
    /// that head: events before it came as catch-up, events after it come live.
    ///
    /// # Errors
    /// [`Error::Consumer`] when it stopped first.
    pub async fn caught_up(&self) -> Result<Position> {
        tokio::select! {
            biased;
            result = self.watch.caught_up() => result,
            () = self.ended() => Err(self.stopped()),
        }
    }

    /// Waits until every partition has handled `position` (read-your-writes: pass the position an
    /// append returned), for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it did not get there in time; [`Error::Consumer`] when it stopped.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<()> {
        tokio::select! {
            biased;
            result = self.watch.wait_for(position, timeout) => result,
            () = self.ended() => Err(self.stopped()),
        }
    }

    /// How many events the subscription (its slowest partition) is behind the head.
    pub fn lag(&self) -> u64 {
        self.watch.lag()
    }

    /// Every event up to this position has been handled (in every partition).
    pub fn position(&self) -> Position {
        self.watch.now().processed
    }

    /// The committed checkpoint (the lowest over the partitions): a restart resumes after it.
    pub fn checkpoint(&self) -> Position {
        self.watch.now().checkpoint
    }

    /// The events this worker's partitions have parked, by position.
    ///
    /// # Errors
    /// [`Error::Consumer`] when the worker stopped.
    pub async fn parked(&self) -> Result<Vec<Parked>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Parked(reply)).await?;
        answer.await.map_err(|_| self.stopped())
    }

    /// Hands every event this worker's partitions parked to the handler once more: those it now
    /// handles leave the list, the others stay with their new error. Commits the result.
    ///
    /// # Errors
    /// [`Error::Consumer`] when the worker stopped; store errors.
    pub async fn replay_parked(&self) -> Result<ParkedReplay> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::ReplayParked(reply)).await?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Drops the parked event at `position` without handling it; `false` when no such event is parked
    /// in this worker's partitions. Commits the result.
    ///
    /// # Errors
    /// [`Error::Consumer`] when the worker stopped; store errors.
    pub async fn skip_parked(&self, position: Position) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SkipParked(position, reply)).await?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Stops the worker after the event it is on, commits its checkpoints, leaves the group (its
    /// partitions go to the other workers), and returns how it ended: the error that stopped it
    /// earlier, if one did.
    ///
    /// # Errors
    /// The worker's error ([`Error::Handler`] under [`OnFailure::Stop`], store errors);
    /// [`Error::HandlerPanicked`] when its handler panicked.
    pub async fn stop(self) -> Result<()> {
        self.running.stop(&self.commands, Command::Stop).await
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands.send(command).await.map_err(|_| self.stopped())
    }

    fn stopped(&self) -> Error {
        Error::Consumer { consumer: self.coordinator.name.clone(), problem: ConsumerProblem::Stopped }
    }
}

/// A partition a worker holds.
#[derive(Debug)]
struct Held {
    /// The saved checkpoint.
    committed: Position,
    /// Every event of the partition up to here was handled.
    through: Position,
    parked: Vec<Parked>,
    /// The parked list changed since the last commit.
    dirty: bool,
}

/// Leaves the group when the worker's task ends, however it ends.
struct Membership {
    worker: u64,
    coordinator: Arc<Coordinator>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.coordinator.leave(self.worker);
    }
}

pub(crate) struct Worker<S, H> {
    id: u64,
    setup: Arc<Setup<S>>,
    coordinator: Arc<Coordinator>,
    handler: H,
    held: BTreeMap<u32, Held>,
    follower: Option<Follower<Arc<S>>>,
    pending: Pending,
    /// This worker's name among the members of its group on a shared store.
    member: String,
}

impl<S: EventStore + 'static, H: Handler> Worker<S, H> {
    pub(crate) fn new(id: u64, setup: Arc<Setup<S>>, coordinator: Arc<Coordinator>, handler: H) -> Self {
        Worker {
            id,
            setup,
            coordinator,
            handler,
            held: BTreeMap::new(),
            follower: None,
            pending: Pending::new(Position::ZERO),
            member: format!("pid{}-w{id}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        }
    }

    /// Runs the worker until it is stopped or fails; reports the error (or panic) that stopped it.
    pub(crate) async fn run(self, inbox: mpsc::Receiver<Command>, running: watch::Sender<()>) -> Result<()> {
        let coordinator = Arc::clone(&self.coordinator);
        let position = || coordinator.watch().now().processed;
        telemetry::reporting_stop(&coordinator.name, position, self.work(inbox, running)).await
    }

    async fn work(mut self, mut inbox: mpsc::Receiver<Command>, _running: watch::Sender<()>) -> Result<()> {
        let _membership = Membership { worker: self.id, coordinator: Arc::clone(&self.coordinator) };
        let mut changed = self.coordinator.changed.subscribe();
        let shared = self.setup.store.partition_leases().is_some();
        let mut beat = tokio::time::interval(self.setup.config.lease_ttl / 3);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        let outcome = self.rebalance().await;
        self.recover_or_stop(outcome, shared).await?;
        loop {
            let deadline = self.pending.deadline(&self.setup.config.policy);
            let outcome = tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Stop) | None => break,
                    Some(command) => {
                        self.command(command).await;
                        Ok(())
                    }
                },
                change = changed.changed() => {
                    if change.is_err() {
                        break;
                    }
                    self.rebalance().await
                }
                _ = beat.tick(), if shared => self.rebalance().await,
                batch = next_batch(self.follower.as_mut()) => match batch {
                    Ok(batch) => {
                        let span = telemetry::batch_span(&self.setup.config.name, SUBSCRIPTION, &batch);
                        let started = std::time::Instant::now();
                        let outcome = self.apply(batch).instrument(span).await;
                        telemetry::batch_done(&self.setup.config.name, SUBSCRIPTION, started);
                        outcome
                    }
                    Err(error) => Err(error),
                },
                () = sleep_until(deadline) => self.commit().await,
            };
            self.recover_or_stop(outcome, shared).await?;
        }
        let outcome = self.commit().await;
        if let Some(leases) = self.setup.store.partition_leases() {
            // Best effort: a worker that cannot say goodbye loses its partitions when its leases expire.
            let _ = leases.leave(&self.setup.config.name, &self.member).await;
        }
        outcome
    }

    /// On a shared store, a storage failure (the database restarting, a dropped connection) does not
    /// stop the worker: it forgets what it had not committed, waits, and takes its partitions up
    /// again from their checkpoints (events after them come again: at-least-once). Other errors stop it.
    async fn recover_or_stop(&mut self, outcome: Result<()>, shared: bool) -> Result<()> {
        let mut outcome = outcome;
        while let Err(error) = outcome {
            if !(shared && error.is_retryable()) {
                return Err(error);
            }
            telemetry::recovering(&self.setup.config.name, &error);
            self.held.clear();
            self.follower = None;
            self.pending.clear();
            self.coordinator.set_held(self.id, &[]);
            self.sync_parked();
            tokio::time::sleep(self.setup.config.lease_ttl / 6).await;
            outcome = self.rebalance().await;
        }
        Ok(())
    }

    /// Hands over the partitions meant for others (committing them first) and takes the free ones
    /// meant for this worker; then reads from the earliest position one of them needs.
    async fn rebalance(&mut self) -> Result<()> {
        let store = Arc::clone(&self.setup.store);
        let acquired = match store.partition_leases() {
            Some(leases) => self.rebalance_shared(leases).await?,
            None => {
                let release = self.coordinator.to_release(self.id);
                if !release.is_empty() {
                    self.commit().await?;
                    for p in &release {
                        self.held.remove(p);
                    }
                    self.coordinator.release(self.id, &release);
                    self.handed_over(&release);
                }
                self.coordinator.acquire(self.id)
            }
        };
        if !acquired.is_empty() {
            tracing::info!(
                annals.consumer = self.setup.config.name.as_str(),
                annals.partitions = ?acquired,
                "took over partitions"
            );
        }
        let mut restart = None;
        for p in acquired {
            let name = partition_key(&self.setup.config.name, p);
            let (committed, parked) = match store.load_checkpoint(&name).await? {
                Some(saved) => {
                    (saved.position, SavedPartition::decode(&self.setup.config.name, saved.state.as_deref())?.parked)
                }
                None => (Position::new(self.setup.from.get() - 1), Vec::new()),
            };
            self.held.insert(p, Held { committed, through: committed, parked, dirty: false });
            let from = Position::new(committed.get() + 1);
            restart = Some(restart.map_or(from, |r: Position| r.min(from)));
        }
        self.sync_parked();
        if self.held.values().any(|held| held.parked.iter().any(|p| p.requeued)) {
            self.replay_parked(true).await?;
        }
        if self.held.is_empty() {
            self.follower = None;
        } else if let Some(from) = restart {
            let reading = self.follower.as_ref().map(|f| Position::new(f.through().get() + 1));
            if reading.is_none_or(|next| from < next) {
                let filter = self.setup.config.filter.clone();
                self.follower = Some(Follower::new(Arc::clone(&store), from, filter));
            }
        }
        Ok(())
    }

    /// On a shared store: renews this worker's membership, hands over (after committing) the
    /// partitions now meant for others, renews the ones it keeps (dropping, uncommitted, any it lost
    /// meanwhile), and claims the free or expired ones meant for it. Partitions go to the live
    /// members in joining order, round robin. Returns the partitions newly taken.
    async fn rebalance_shared(&mut self, leases: &dyn crate::store::PartitionLeases) -> Result<Vec<u32>> {
        let config = &self.setup.config;
        let members = leases.heartbeat(&config.name, &self.member, config.lease_ttl).await?;
        let targets: Vec<u32> = match members.iter().position(|m| *m == self.member) {
            Some(index) => (0..config.partitions).filter(|p| *p as usize % members.len() == index).collect(),
            None => Vec::new(),
        };
        let release: Vec<u32> = self.held.keys().copied().filter(|p| !targets.contains(p)).collect();
        if !release.is_empty() {
            self.commit().await?;
            for p in &release {
                self.held.remove(p);
            }
            leases.release(&self.setup.config.name, &self.member, &release).await?;
            self.handed_over(&release);
        }
        let config = &self.setup.config;
        let now_held = leases.claim(&config.name, &self.member, &targets, config.lease_ttl).await?;
        self.held.retain(|p, _| now_held.contains(p));
        self.sync_parked();
        self.coordinator.set_held(self.id, &now_held);
        let acquired: Vec<u32> = now_held.iter().copied().filter(|p| !self.held.contains_key(p)).collect();
        refresh_others(&self.setup, &self.coordinator).await?;
        Ok(acquired)
    }

    /// Hands a page's events of the held partitions to the handler, then notes the progress.
    /// Commits within the page once `checkpoint_every` events were handled.
    async fn apply(&mut self, batch: Batch) -> Result<()> {
        let partitions = self.coordinator.partitions;
        for event in &batch.events {
            let partition = partition_of(event.stream.as_str(), partitions);
            let Some(held) = self.held.get_mut(&partition) else { continue };
            if event.position <= held.through {
                continue;
            }
            if !occurred_before(event, self.setup.occurred_from) {
                let name = &self.setup.config.name;
                let outcome = deliver(&mut self.handler, name, &self.setup.config.retry, event, batch.phase).await;
                if let Err((source, attempts)) = outcome {
                    match self.setup.config.on_failure {
                        OnFailure::Park => {
                            report_parked(name, event, &source, attempts);
                            held.parked.push(parked(event, &source, attempts));
                            held.dirty = true;
                            self.sync_parked();
                        }
                        OnFailure::Stop => {
                            // Save what was handled before it; the event itself comes again on restart.
                            self.advance(Position::new(event.position.get() - 1), 0);
                            let _ = self.commit().await;
                            let consumer = self.setup.config.name.clone();
                            return Err(Error::Handler { consumer, position: event.position, attempts, source });
                        }
                    }
                }
                self.advance(event.position, 1);
                if self.pending.full(&self.setup.config.policy) {
                    self.commit().await?;
                }
            }
        }
        self.advance(batch.through, 0);
        self.coordinator.report(&self.processed(), &[], batch.caught_up.then_some(batch.through));
        if self.pending.full(&self.setup.config.policy) || batch.caught_up {
            self.commit().await?;
        }
        if let Some(follower) = self.follower.as_mut() {
            follower.recycle(batch.events);
        }
        Ok(())
    }

    /// Notes that every event of the held partitions up to `through` was handled (`handled` of them
    /// just now). Events in between belong to other partitions or were left out by the filter.
    fn advance(&mut self, through: Position, handled: u64) {
        let mut moved = false;
        for held in self.held.values_mut() {
            held.through = held.through.max(through);
            moved |= held.through > held.committed || held.dirty;
        }
        if moved {
            self.pending.note(handled);
        }
    }

    /// Reports partitions handed over to other workers.
    fn handed_over(&self, partitions: &[u32]) {
        tracing::info!(
            annals.consumer = self.setup.config.name.as_str(),
            annals.partitions = ?partitions,
            "handed over partitions"
        );
    }

    /// Tells the coordinator how many parked events this worker holds now (the `annals.parked` gauge).
    fn sync_parked(&self) {
        let count = self.held.values().map(|held| held.parked.len()).sum();
        self.coordinator.set_parked(self.id, count);
    }

    fn processed(&self) -> Vec<(u32, Position)> {
        self.held.iter().map(|(&p, held)| (p, held.through)).collect()
    }

    /// Saves the checkpoint of every held partition that moved or whose parked list changed, in one
    /// atomic write.
    async fn commit(&mut self) -> Result<()> {
        self.pending.clear();
        loop {
            let (partitions, writes) = self.checkpoint_writes()?;
            if writes.is_empty() {
                return Ok(());
            }
            let store = Arc::clone(&self.setup.store);
            let name = &self.setup.config.name;
            let lowest = self.held.values().map(|held| held.through).min().unwrap_or(Position::ZERO);
            let started = std::time::Instant::now();
            let lost = async {
                match store.partition_leases() {
                    Some(leases) => leases.save_checkpoints_held(name, &self.member, &partitions, writes).await,
                    None => store.save_checkpoints(writes).await.map(|()| Vec::new()),
                }
            }
            .instrument(telemetry::checkpoint_span(name, lowest))
            .await?;
            telemetry::checkpoint_done(name, SUBSCRIPTION, started);
            if lost.is_empty() {
                break;
            }
            // Another worker took these over (this one's leases expired): its progress there is not
            // ours to save. Drop them and save the rest.
            for p in &lost {
                self.held.remove(p);
            }
            let held: Vec<u32> = self.held.keys().copied().collect();
            self.coordinator.set_held(self.id, &held);
            self.sync_parked();
        }
        let mut committed = Vec::with_capacity(self.held.len());
        for (&p, held) in &mut self.held {
            held.committed = held.through;
            held.dirty = false;
            committed.push((p, held.committed));
        }
        self.coordinator.report(&[], &committed, None);
        Ok(())
    }

    /// The checkpoint of every held partition that moved or whose parked list changed.
    fn checkpoint_writes(&self) -> Result<(Vec<u32>, Vec<CheckpointWrite>)> {
        let name = &self.setup.config.name;
        let partitions = self.coordinator.partitions;
        let mut numbers = Vec::new();
        let mut writes = Vec::new();
        for (&p, held) in &self.held {
            if held.through > held.committed || held.dirty {
                let saved = SavedPartition { partitions, parked: held.parked.clone() };
                let state = serde_json::to_string(&saved).map_err(Error::storage)?;
                let checkpoint = Checkpoint::new(partition_key(name, p), held.through).with_state(state);
                numbers.push(p);
                writes.push(CheckpointWrite::Save(checkpoint));
            }
        }
        Ok((numbers, writes))
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Parked(reply) => {
                let mut parked: Vec<Parked> = self.held.values().flat_map(|h| h.parked.iter().cloned()).collect();
                parked.sort_by_key(|p| p.position);
                let _ = reply.send(parked);
            }
            Command::ReplayParked(reply) => {
                let result = self.replay_parked(false).await;
                let _ = reply.send(result);
            }
            Command::SkipParked(position, reply) => {
                let mut found = false;
                for held in self.held.values_mut() {
                    if drop_parked(&mut held.parked, Some(position)) > 0 {
                        held.dirty = true;
                        found = true;
                    }
                }
                self.sync_parked();
                let result = if found { self.commit().await.map(|()| true) } else { Ok(false) };
                let _ = reply.send(result);
            }
            Command::Stop => {}
        }
    }

    /// Hands parked events of the held partitions to the handler again (only those marked
    /// `requeued` when `requeued_only`); those it handles leave the list.
    async fn replay_parked(&mut self, requeued_only: bool) -> Result<ParkedReplay> {
        let mut outcome = ParkedReplay::default();
        let store = Arc::clone(&self.setup.store);
        for held in self.held.values_mut() {
            let mut still = Vec::new();
            for mut entry in std::mem::take(&mut held.parked) {
                if requeued_only && !entry.requeued {
                    still.push(entry);
                    continue;
                }
                held.dirty = true;
                entry.requeued = false;
                let chunk = store.read_log_chunk(entry.position, 1, &LogFilter::all()).await?;
                let Some(event) = chunk.events.into_iter().find(|e| e.position == entry.position) else {
                    entry.error = "the event is no longer in the log".into();
                    outcome.failed.push(entry.position);
                    still.push(entry);
                    continue;
                };
                match self.handler.handle(&event, Phase::CatchUp).await {
                    Ok(()) => outcome.handled.push(entry.position),
                    Err(error) => {
                        entry.error = error.to_string();
                        entry.attempts += 1;
                        entry.parked_at = Utc::now().trunc_subsecs(6);
                        outcome.failed.push(entry.position);
                        still.push(entry);
                    }
                }
            }
            held.parked = still;
        }
        self.sync_parked();
        self.commit().await?;
        Ok(outcome)
    }
}

/// Notes how far the partitions no worker of this process holds got, from their saved checkpoints,
/// so that lag and catch-up cover the whole subscription (on a shared store).
async fn refresh_others<S: EventStore>(setup: &Setup<S>, coordinator: &Coordinator) -> Result<()> {
    let others: Vec<(u32, Position)> = super::saved_partitions(&*setup.store, &setup.config.name)
        .await?
        .into_iter()
        .filter(|(p, _)| !coordinator.held_here(*p))
        .map(|(p, c)| (p, c.position))
        .collect();
    if !others.is_empty() {
        let head = setup.store.head().await?;
        coordinator.report(&others, &others, Some(head));
    }
    Ok(())
}

/// The follower's next page, or never when the worker holds no partition.
async fn next_batch<S: EventStore>(follower: Option<&mut Follower<Arc<S>>>) -> Result<Batch> {
    match follower {
        Some(follower) => follower.next_batch().await,
        None => std::future::pending().await,
    }
}

/// Hands an event to the handler, retrying with backoff; on final failure, the last error and the
/// number of attempts.
async fn deliver<H: Handler>(
    handler: &mut H,
    consumer: &str,
    retry: &super::RetryPolicy,
    event: &RecordedEvent,
    phase: Phase,
) -> Result<(), (HandlerError, u32)> {
    let mut attempt = 1;
    loop {
        match handler.handle(event, phase).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                telemetry::handler_failed(consumer, SUBSCRIPTION);
                if attempt >= retry.max_attempts() {
                    return Err((error, attempt));
                }
                tracing::warn!(
                    annals.consumer = consumer,
                    annals.position = event.position.get(),
                    annals.event.id = %event.id,
                    "annals.event.type" = event.event_type.as_str(),
                    annals.attempt = attempt,
                    "error.message" = %error,
                    "handler failed, will retry"
                );
                metrics::counter!("annals.handler.retries", "consumer" => consumer.to_owned()).increment(1);
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// Reports an event parked after `attempts` failed attempts.
fn report_parked(consumer: &str, event: &RecordedEvent, error: &HandlerError, attempts: u32) {
    tracing::error!(
        annals.consumer = consumer,
        annals.position = event.position.get(),
        annals.event.id = %event.id,
        "annals.event.type" = event.event_type.as_str(),
        annals.attempts = attempts,
        "error.message" = %error,
        "event parked"
    );
    metrics::counter!("annals.parked.total", "consumer" => consumer.to_owned()).increment(1);
}

fn parked(event: &RecordedEvent, error: &HandlerError, attempts: u32) -> Parked {
    Parked {
        position: event.position,
        stream: event.stream.to_string(),
        event_type: event.event_type.clone(),
        error: error.to_string(),
        attempts,
        parked_at: Utc::now().trunc_subsecs(6),
        requeued: false,
    }
}
