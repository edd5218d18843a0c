//! Time travel for aggregates: an aggregate's state at a version, as of a recorded time, as of an
//! occurred (business) time, or both at once. [`guide::time_travel`](crate::guide::time_travel) gives the semantics with worked
//! examples.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use crate::aggregate::repository::{Loaded, Repository};
use crate::aggregate::Aggregate;
use crate::error::Result;
use crate::event::Event;
use crate::position::Version;
use crate::store::{Direction, EventStore, ReadStream, StreamView};
use crate::stream_id::StreamId;

/// A point in an aggregate's past. See [`guide::time_travel`](crate::guide::time_travel) for the semantics on each time axis.
///
/// - `Version(v)`: the state after the events up to version `v`.
/// - `Recorded(t)`: what the system knew at `t`: the events recorded at or before `t`.
/// - `Occurred(t)`: what was true at business time `t`: the events that occurred at or before `t`,
///   whenever they were recorded, applied in stream order.
/// - `Bitemporal { occurred, recorded }`: what was true at business time `occurred` according to what
///   had been recorded by `recorded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsOf {
    /// After the events up to this version.
    Version(Version),
    /// After the events recorded at or before this time.
    Recorded(DateTime<Utc>),
    /// After the events that occurred at or before this time.
    Occurred(DateTime<Utc>),
    /// After the events that occurred at or before `occurred` among those recorded at or before
    /// `recorded`.
    Bitemporal {
        /// The business time.
        occurred: DateTime<Utc>,
        /// The knowledge time.
        recorded: DateTime<Utc>,
    },
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// Loads the aggregate `id` as it was at a point in its past. The answer's `version` is that of
    /// the last event applied (`Version::ZERO` when none was).
    ///
    /// At a version or a recorded time, the load starts from the newest usable snapshot at or before
    /// the point, so its cost is bounded by the snapshot interval (plus an O(log n) search for the
    /// version a recorded time stands for). Occurred times need not follow the stream's order, so an
    /// occurred-time load reads the stream from the start (up to the recorded bound for
    /// `Bitemporal`), applying only the events that occurred in time.
    ///
    /// ```
    /// # use annals::{Aggregate, Event};
    /// # #[derive(Event, Clone, Debug, PartialEq)]
    /// # enum CounterEvent { Added { n: u64 } }
    /// # #[derive(Aggregate, Clone, Debug, Default)]
    /// # #[aggregate(command = u64, event = CounterEvent, error = std::convert::Infallible)]
    /// # struct Counter { total: u64 }
    /// # impl Counter {
    /// #     fn handle(&self, n: u64) -> Result<Vec<CounterEvent>, std::convert::Infallible> { Ok(vec![CounterEvent::Added { n }]) }
    /// #     fn apply(&mut self, event: &CounterEvent) { let CounterEvent::Added { n } = event; self.total += n; }
    /// # }
    /// use annals::{AsOf, CommandContext, MemoryStore, Repository, Version};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let counters = Repository::<Counter, _>::new(MemoryStore::new());
    /// for n in [1, 2, 3] {
    ///     counters.execute("c", n, &CommandContext::new()).await?;
    /// }
    /// let then = counters.load_as_of("c", AsOf::Version(Version::new(2))).await?;
    /// assert_eq!((then.state.total, then.version), (3, Version::new(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Repository::load`].
    pub async fn load_as_of(&self, id: &str, at: AsOf) -> Result<Loaded<A>> {
        let stream = A::stream_id(id)?;
        // A soft-deleted stream had several lives: each point in the past reads the life it was in.
        let info = self.store().stream_info(&stream).await?;
        match at {
            AsOf::Version(version) => self.fold_through(&stream, info.life_start_of(version), version).await,
            AsOf::Recorded(recorded) => {
                let version = last_version_recorded_by(self.store(), &stream, recorded).await?;
                self.fold_through(&stream, info.life_start_at(recorded), version).await
            }
            AsOf::Occurred(occurred) => {
                self.fold_occurred(&stream, info.life_start_at(Utc::now()), Version::MAX, occurred).await
            }
            AsOf::Bitemporal { occurred, recorded } => {
                let version = last_version_recorded_by(self.store(), &stream, recorded).await?;
                self.fold_occurred(&stream, info.life_start_at(recorded), version, occurred).await
            }
        }
    }

    /// The state after the events `start ..= version`, from the nearest usable snapshot.
    async fn fold_through(&self, stream: &StreamId, start: Version, version: Version) -> Result<Loaded<A>> {
        if version < start {
            return Ok(Loaded { state: A::default(), version: Version::ZERO });
        }
        let (mut state, mut at) = match self.usable_snapshot(stream, version).await? {
            Some((state, at)) if at.next() >= start => (state, at),
            _ => (A::default(), Version::ZERO),
        };
        let options = ReadStream::forward().from(at.next().max(start)).until_version(version).view(StreamView::History);
        let mut events = self.store().read_stream(stream, options);
        while let Some(recorded) = events.try_next().await? {
            state.apply(&A::Event::from_recorded(&recorded)?);
            at = recorded.version;
        }
        Ok(Loaded { state, version: at })
    }

    /// The state after the events `start ..= version` that occurred at or before `occurred`.
    async fn fold_occurred(
        &self,
        stream: &StreamId,
        start: Version,
        version: Version,
        occurred: DateTime<Utc>,
    ) -> Result<Loaded<A>> {
        let mut state = A::default();
        let mut at = Version::ZERO;
        if version < start {
            return Ok(Loaded { state, version: at });
        }
        let options =
            ReadStream::forward().from(start).until_version(version).until_occurred(occurred).view(StreamView::History);
        let mut events = self.store().read_stream(stream, options);
        while let Some(recorded) = events.try_next().await? {
            state.apply(&A::Event::from_recorded(&recorded)?);
            at = recorded.version;
        }
        Ok(Loaded { state, version: at })
    }
}

/// The last version of `stream` recorded at or before `at` (`Version::ZERO` when none was): a
/// binary search over versions, since `recorded_at` never decreases along the log.
pub(crate) async fn last_version_recorded_by<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    at: DateTime<Utc>,
) -> Result<Version> {
    let Some(current) = store.stream_info(stream).await?.last_version else { return Ok(Version::ZERO) };
    // Invariant: versions below `low` were recorded by `at`; versions at or above `high` were not.
    let (mut low, mut high) = (1, current.get() + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let probe =
            store.read_stream_chunk(stream, Version::new(middle), Direction::Forward, 1, StreamView::History).await?;
        match probe.first() {
            Some(event) if event.recorded_at <= at => low = middle + 1,
            _ => high = middle,
        }
    }
    Ok(Version::new(low - 1))
}
