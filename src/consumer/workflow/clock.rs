//! [`Clock`]: the business time deadlines come due by, and how a workflow waits for it.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The business time a workflow's deadlines come due by.
///
/// A deadline fires once `now()` is at or past its due time. The workflow waits with
/// `sleep_until` between checks, so a clock may wake it early (it checks `now()` again and waits
/// again) but should not sleep long past `at`. [`SystemClock`] is the wall clock; [`ManualClock`]
/// is moved by hand, for tests and simulations; any other source (a clock read from a file, a
/// service's time) implements the trait.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current business time.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves when `now()` may have reached `at` (at the latest soon after it has). Returning
    /// earlier is allowed: the workflow checks `now()` and waits again.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The wall clock: `Utc::now()`, waited on with tokio's timer.
///
/// It sleeps at most a minute at a time and then looks at the time again, so a system clock
/// changed meanwhile (NTP, a manual change) delays a deadline by a minute at most.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        const LONGEST: std::time::Duration = std::time::Duration::from_secs(60);
        if let Ok(left) = (at - Utc::now()).to_std() {
            tokio::time::sleep(left.min(LONGEST)).await;
        }
    }
}

/// A clock moved by hand: it stays where it is put, and every waiter whose time has come wakes up
/// when it is moved. Clones share one time, so a test keeps one and gives a clone to the workflow.
///
/// ```
/// use annals::{Clock, ManualClock};
/// use chrono::{Duration, TimeZone, Utc};
///
/// let start = Utc.with_ymd_and_hms(2024, 3, 1, 9, 0, 0).single().ok_or("no such time")?;
/// let clock = ManualClock::new(start);
/// let theirs = clock.clone();
/// clock.advance(Duration::days(14));
/// assert_eq!(theirs.now(), start + Duration::days(14));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    time: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock { time: Arc::new(watch::Sender::new(start)) }
    }

    /// Puts the clock at `at` (forwards or back) and wakes the waiters whose time has come.
    pub fn set(&self, at: DateTime<Utc>) {
        self.time.send_replace(at);
    }

    /// Moves the clock by `by` (negative: back) and wakes the waiters whose time has come.
    pub fn advance(&self, by: chrono::Duration) {
        self.time.send_modify(|now| *now += by);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.time.borrow()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut time = self.time.subscribe();
        // The sender lives as long as `self`, so the wait ends only when the time has come.
        let _ = time.wait_for(|now| *now >= at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_waiters_only_when_their_time_comes() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let clock = ManualClock::new(start);
        let at = start + chrono::Duration::hours(1);
        let waiter = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at).await }
        });
        clock.advance(chrono::Duration::minutes(59));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "woke a minute early");
        clock.advance(chrono::Duration::minutes(1));
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(woke, Ok(Ok(()))), "did not wake at its time: {woke:?}");
    }
}
