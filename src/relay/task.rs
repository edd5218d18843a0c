//! What the relay out and the relay in share about their background tasks: stopping one and
//! waiting for it, and the backoff between failed attempts.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::RelayError;
use crate::error::Error;

/// Asks the task to stop and waits for it; a panic in it comes back as
/// [`Error::HandlerPanicked`], never as a panic of the caller.
pub(super) async fn stop_and_join(
    name: &str,
    stop: &watch::Sender<bool>,
    join: JoinHandle<Result<(), RelayError>>,
) -> Result<(), RelayError> {
    let _ = stop.send(true);
    match join.await {
        Ok(result) => result,
        Err(join) => Err(RelayError::Store(Error::HandlerPanicked {
            consumer: name.to_owned(),
            message: Some(join.to_string()),
        })),
    }
}

/// The wait after the `failures`-th failure in a row: `first`, doubled each time, at most `max`.
pub(super) fn backoff(first: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    first.saturating_mul(factor).min(max)
}
