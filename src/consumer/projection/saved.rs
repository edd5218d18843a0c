//! What a projector keeps in the store: its saved state and position under its keys, the copies of
//! its history, the shadow of a rebuild; and the settings its task runs with.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Projection;
use crate::consumer::{CheckpointPolicy, Start};
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::{Checkpoint, EventStore};

/// How a projector keeps a projection between runs.
pub(super) enum Keep<P> {
    /// Nothing: every run replays from its start.
    Nothing,
    /// Its position only (outside effects: at-least-once).
    Position,
    /// Its state and position, in one atomic write (exactly-once).
    State { encode: fn(&P) -> serde_json::Result<String>, decode: fn(&str) -> serde_json::Result<P> },
}

impl<P> Keep<P> {
    /// How the projection is kept, in a word, for `Debug`.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Keep::Nothing => "in memory",
            Keep::Position => "checkpointed",
            Keep::State { .. } => "persisted",
        }
    }
}

/// What a projector was built with, owned by its running task (the builder is consumed by
/// [`Projector::run`](super::Projector::run)).
pub(super) struct Settings<S, P> {
    pub(super) store: Arc<S>,
    /// Makes a fresh, empty instance.
    pub(super) factory: Arc<dyn Fn() -> P + Send + Sync>,
    pub(super) keep: Keep<P>,
    /// Where a projection with no checkpoint starts.
    pub(super) start: Start,
    pub(super) policy: CheckpointPolicy,
    /// Keep a copy of the state every this many positions (persisted projectors only).
    pub(super) history_every: Option<u64>,
}

impl<S: EventStore + 'static, P: Projection> Settings<S, P> {
    /// Decides where the live projection stands, and whether a rebuild must run first.
    pub(super) async fn restore(&self, first: P) -> Result<Restored<P>> {
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
    pub(super) fn encode(&self, name: &str, version: u32, instance: &P) -> Result<String> {
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

pub(super) fn history_prefix(name: &str, version: u32) -> String {
    format!("projection-history/{name}/v{version}/")
}

pub(super) fn history_key(prefix: &str, multiple: u64) -> String {
    format!("{prefix}{multiple:020}")
}

pub(super) fn live_key(name: &str) -> String {
    format!("projection/{name}")
}

pub(super) fn shadow_key(name: &str) -> String {
    format!("projection-rebuild/{name}")
}

pub(super) fn consumer_error(name: &str, problem: ConsumerProblem) -> Error {
    Error::Consumer { consumer: name.to_owned(), problem }
}

/// The JSON a projector saves in a checkpoint's state.
#[derive(Deserialize)]
struct Saved {
    pub(super) version: u32,
    #[serde(default)]
    pub(super) state: Option<Box<RawValue>>,
}

pub(super) struct Decoded {
    pub(super) version: u32,
    pub(super) state: Option<String>,
}

pub(super) fn decode_saved(name: &str, checkpoint: &Checkpoint) -> Result<Decoded> {
    let text = checkpoint.state.as_deref().unwrap_or(r#"{"version":0}"#);
    let saved: Saved = serde_json::from_str(text)
        .map_err(|source| consumer_error(name, ConsumerProblem::ForeignCheckpoint { kind: "projection", source }))?;
    Ok(Decoded { version: saved.version, state: saved.state.map(|raw| raw.get().to_owned()) })
}

/// Where a run reads from.
pub(super) struct Run {
    pub(super) from: Position,
    pub(super) occurred_from: Option<chrono::DateTime<chrono::Utc>>,
}

impl Run {
    pub(super) fn at(from: Position, occurred_from: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        Run { from, occurred_from }
    }
}

pub(super) struct Shadow<P> {
    pub(super) instance: P,
    pub(super) run: Run,
    pub(super) committed: Position,
}

pub(super) struct Restored<P> {
    pub(super) name_key: String,
    pub(super) live: P,
    pub(super) live_from: Run,
    pub(super) committed: Position,
    pub(super) ready: bool,
    pub(super) rebuild: Option<Shadow<P>>,
}
