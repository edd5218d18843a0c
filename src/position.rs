//! Where an event stands: its [`Version`] inside a stream, its [`Position`] in the whole log, and the
//! [`ExpectedVersion`] an append is conditioned on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of an event inside its stream: the first event of a stream has version 1, the next 2,
/// and so on without gaps.
///
/// `Version::ZERO` is the version of a stream that has no events yet, which is what a fresh aggregate
/// starts at; [`ExpectedVersion::Exact`]`(Version::ZERO)` means the same as [`ExpectedVersion::NoStream`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The version of an empty stream, before its first event.
    pub const ZERO: Version = Version(0);
    /// The version of the first event of a stream.
    pub const FIRST: Version = Version(1);
    /// The largest version; reading a stream backwards from here starts at its last event.
    pub const MAX: Version = Version(u64::MAX);

    /// Wraps a raw version number.
    pub const fn new(version: u64) -> Self {
        Version(version)
    }

    /// The raw version number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one, saturating at [`Version::MAX`].
    pub const fn next(self) -> Self {
        Version(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Version {
    fn from(version: u64) -> Self {
        Version(version)
    }
}

/// The global position of an event in the whole log: gap-free, starting at 1, assigned in commit order.
///
/// `Position::ZERO` is "before the first event": the head of an empty store, and the checkpoint of a
/// consumer that has handled nothing yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(u64);

impl Position {
    /// Before the first event.
    pub const ZERO: Position = Position(0);
    /// The position of the first event in the log.
    pub const FIRST: Position = Position(1);
    /// The largest position.
    pub const MAX: Position = Position(u64::MAX);

    /// Wraps a raw position.
    pub const fn new(position: u64) -> Self {
        Position(position)
    }

    /// The raw position.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The position after this one, saturating at [`Position::MAX`].
    pub const fn next(self) -> Self {
        Position(self.0.saturating_add(1))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Position {
    fn from(position: u64) -> Self {
        Position(position)
    }
}

/// The condition an append puts on the current version of its stream (optimistic concurrency).
///
/// When the condition does not hold, the append fails with [`Error::WrongExpectedVersion`] and writes
/// nothing.
///
/// [`Error::WrongExpectedVersion`]: crate::Error::WrongExpectedVersion
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No condition: append whatever the stream's version is.
    Any,
    /// The stream must not exist yet (have no events).
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream must be exactly at this version. `Exact(Version::ZERO)` is the same as `NoStream`.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream whose current version is `current` (`None`: no stream) satisfies this condition.
    pub fn accepts(self, current: Option<Version>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::StreamExists => current.is_some(),
            ExpectedVersion::Exact(v) => current.unwrap_or(Version::ZERO) == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_match_the_documented_table() {
        let cases = [
            (ExpectedVersion::Any, None, true),
            (ExpectedVersion::Any, Some(Version::new(3)), true),
            (ExpectedVersion::NoStream, None, true),
            (ExpectedVersion::NoStream, Some(Version::FIRST), false),
            (ExpectedVersion::StreamExists, None, false),
            (ExpectedVersion::StreamExists, Some(Version::FIRST), true),
            (ExpectedVersion::Exact(Version::ZERO), None, true),
            (ExpectedVersion::Exact(Version::ZERO), Some(Version::FIRST), false),
            (ExpectedVersion::Exact(Version::new(2)), Some(Version::new(2)), true),
            (ExpectedVersion::Exact(Version::new(2)), Some(Version::new(3)), false),
        ];
        for (expected, current, accepted) in cases {
            assert_eq!(expected.accepts(current), accepted, "{expected} against {current:?}");
        }
    }
}
