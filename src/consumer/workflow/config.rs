//! A workflow's settings: where it starts, how it retries, how often it checkpoints.

use std::time::Duration;

use crate::consumer::subscription::RetryPolicy;
use crate::consumer::{CheckpointPolicy, Start};

/// A workflow's settings. Start with [`WorkflowConfig::new`].
///
/// ```
/// use annals::{RetryPolicy, Start, WorkflowConfig};
/// use std::time::Duration;
///
/// let config = WorkflowConfig::new()
///     .start(Start::Beginning)
///     .retry(RetryPolicy::attempts(5).backoff(Duration::from_millis(50), Duration::from_secs(2)))
///     .checkpoint_every(100);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct WorkflowConfig {
    pub(crate) start: Start,
    pub(crate) retry: RetryPolicy,
    pub(crate) policy: CheckpointPolicy,
    pub(crate) max_conflicts: u32,
}

impl WorkflowConfig {
    /// From the beginning of the log, with [`RetryPolicy::default`] (three attempts), checkpoints
    /// every 1,000 events or 200 ms, and up to 10 conflicts per reaction.
    pub fn new() -> Self {
        WorkflowConfig {
            start: Start::Beginning,
            retry: RetryPolicy::default(),
            policy: CheckpointPolicy::default(),
            max_conflicts: 10,
        }
    }

    /// Where a workflow without a checkpoint starts reading the log (default: the beginning).
    /// Events before it are never reacted to.
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// How often a failing reaction (a handler error, or a retryable store error) is tried before
    /// the workflow stops.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many conflicts one reaction goes through before the workflow stops with the last one
    /// (default 10): another writer moved a stream a command of the reaction expected, or the
    /// instance's stream. Each conflict reloads and decides again.
    pub fn max_conflicts(mut self, conflicts: u32) -> Self {
        self.max_conflicts = conflicts;
        self
    }

    /// Save the checkpoint after this many events at most (default 1,000). A restart reads the
    /// events after the checkpoint again, and skips those its instances already reacted to.
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.policy.every = events.max(1);
        self
    }

    /// Save progress at most this long after it was made (default 200 ms).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.policy.interval = interval;
        self
    }
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig::new()
    }
}
