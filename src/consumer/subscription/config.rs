//! A subscription's settings: what it reads, where it starts, how it retries, what it does with an
//! event that keeps failing, and how its work is partitioned.

use std::time::Duration;

use crate::consumer::{CheckpointPolicy, Start};
use crate::store::LogFilter;

/// How often a failing event is tried, and how long to wait between tries (doubling each time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl RetryPolicy {
    /// Try each event up to `max_attempts` times (at least once), waiting 100 ms after the first
    /// failure, doubling up to 5 s.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Try each event once.
    pub fn never() -> Self {
        RetryPolicy::attempts(1)
    }

    /// Wait `first` after the first failure, doubling each time up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// How many times an event is tried.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait after the `failures`-th failure.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms then 200 ms apart.
    fn default() -> Self {
        RetryPolicy::attempts(3)
    }
}

/// What a subscription does with an event its handler still fails on after every retry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnFailure {
    /// Park it (the dead-letter list, saved with the checkpoint) and go on with the next event.
    /// Parked events can be listed, replayed and skipped. The default.
    #[default]
    Park,
    /// Stop the worker with [`Error::Handler`](crate::Error::Handler); its checkpoint stays before the event, which is
    /// handled again when the subscription restarts.
    Stop,
}

/// A subscription's settings. Start with [`SubscriptionConfig::new`].
///
/// ```
/// use annals::{LogFilter, OnFailure, RetryPolicy, Start, SubscriptionConfig};
/// use std::time::Duration;
///
/// let config = SubscriptionConfig::new("stock")
///     .filter(LogFilter::all().event_types(["OrderPlaced"]))
///     .start(Start::Beginning)
///     .retry(RetryPolicy::attempts(5).backoff(Duration::from_millis(50), Duration::from_secs(2)))
///     .on_failure(OnFailure::Park)
///     .checkpoint_every(500)
///     .partitions(4);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct SubscriptionConfig {
    pub(crate) name: String,
    pub(crate) filter: LogFilter,
    pub(crate) start: Start,
    pub(crate) retry: RetryPolicy,
    pub(crate) on_failure: OnFailure,
    pub(crate) policy: CheckpointPolicy,
    pub(crate) partitions: u32,
    pub(crate) lease_ttl: Duration,
}

impl SubscriptionConfig {
    /// A subscription named `name` (its checkpoints are saved under it) to the whole log, from the
    /// beginning, with [`RetryPolicy::default`], [`OnFailure::Park`], one partition, and checkpoints
    /// every 1,000 events or 200 ms.
    pub fn new(name: impl Into<String>) -> Self {
        SubscriptionConfig {
            name: name.into(),
            filter: LogFilter::all(),
            start: Start::Beginning,
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Park,
            policy: CheckpointPolicy::default(),
            partitions: 1,
            lease_ttl: Duration::from_secs(10),
        }
    }

    /// Only the events this filter admits (event types, stream categories).
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Where a subscription without a checkpoint starts (default: the beginning of the log).
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// How a failing event is retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// What happens to an event that still fails after every retry.
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// Commit checkpoints after this many events at most (default 1,000).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.policy.every = events.max(1);
        self
    }

    /// Commit progress at most this long after it was made (default 200 ms).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.policy.interval = interval;
        self
    }

    /// Split the log into this many partitions by stream (default 1), so that several workers can
    /// share it while each stream's events stay in order. Fixed for the life of the subscription.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// On a store shared by several processes (PostgreSQL): how long a worker's membership and
    /// partitions outlive its last renewal (default 10 s, at least 300 ms). Workers renew every third
    /// of it, so a worker that dies without leaving (SIGKILL, a lost network) hands its partitions
    /// to the survivors between `ttl` and `ttl * 4/3` after its last renewal; a joining or leaving
    /// worker is seen within a third of it. Stores open in one process ignore it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
