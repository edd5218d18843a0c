//! [`RelayError`]: what can go wrong between a store and a broker.

use crate::error::Error;

/// An error of a relay (out or in).
///
/// Broker errors are kept apart from the store's [`Error`], which is wrapped as [`RelayError::Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The store failed. See [`Error`] for how to handle each kind; a relay retries the retryable
    /// ones ([`Error::is_retryable`]) on its own.
    #[error(transparent)]
    Store(#[from] Error),

    /// The broker could not be reached or did not acknowledge in time. Transient: a running relay
    /// retries with backoff and shows the error in its status; check the address and that the
    /// broker is up.
    #[error("cannot reach the broker {broker}: {detail}")]
    Unreachable {
        /// The broker, as it was configured (host and port, or a URL).
        broker: String,
        /// What the client library said.
        detail: String,
    },

    /// The broker refused a record or a request (unknown topic, record too large, not authorised).
    /// A running relay retries it with backoff, since an operator can fix the broker's side (create
    /// the topic, raise a limit) without stopping the relay.
    #[error("the broker {broker} refused {what}: {detail}")]
    Rejected {
        /// The broker, as configured.
        broker: String,
        /// What was refused, e.g. `records for topic "orders"`.
        what: String,
        /// What the broker or client said.
        detail: String,
    },

    /// A setting is invalid (an empty topic, a client option the client library refuses). A caller
    /// bug: fix the configuration.
    #[error("invalid relay setting {setting}: {problem}")]
    Config {
        /// The setting.
        setting: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A wait on a running relay ran out of time. Nothing is wrong with it; wait again, or report
    /// it as lagging.
    #[error("the relay {name} did not get there within {waited:?}")]
    TimedOut {
        /// The relay's name.
        name: String,
        /// How long the wait lasted.
        waited: std::time::Duration,
    },

    /// The relay was stopped, or its task ended, before the call could complete.
    #[error("the relay {name} is stopped")]
    Stopped {
        /// The relay's name.
        name: String,
    },
}

impl RelayError {
    /// Whether trying again later can succeed without a change by the caller.
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::Store(error) => error.is_retryable(),
            RelayError::Unreachable { .. } | RelayError::Rejected { .. } | RelayError::TimedOut { .. } => true,
            RelayError::Config { .. } | RelayError::Stopped { .. } => false,
        }
    }

    /// A short, stable name of the kind of error, for metrics labels.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            RelayError::Store(_) => "Store",
            RelayError::Unreachable { .. } => "Unreachable",
            RelayError::Rejected { .. } => "Rejected",
            RelayError::Config { .. } => "Config",
            RelayError::TimedOut { .. } => "TimedOut",
            RelayError::Stopped { .. } => "Stopped",
        }
    }
}
