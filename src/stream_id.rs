//! Stream names.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::name::check_name;

/// The name of a stream: the events of one aggregate instance, e.g. `order-42`.
///
/// A valid name is 1 to [`StreamId::MAX_LEN`] bytes of UTF-8 without control characters or
/// bidirectional controls: the rule every name in Annals follows, described at
/// [`InvalidName`](crate::InvalidName). The part before the first `-` is the stream's *category*
/// (`order` for `order-42`), which log reads and subscriptions can filter on.
///
/// ```
/// use annals::StreamId;
///
/// let id = StreamId::new("order-42")?;
/// assert_eq!(id.category(), "order");
/// assert!(StreamId::new("").is_err());
/// assert!(StreamId::new("invoice-\u{202e}fdp.exe").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// The longest stream name, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Checks `name` and wraps it.
    ///
    /// Stream names follow the same rule as event types and checkpoint names, described at
    /// [`InvalidName`](crate::InvalidName): non-empty, at most [`StreamId::MAX_LEN`] bytes, no control
    /// character and no bidirectional control.
    ///
    /// # Errors
    /// [`Error::InvalidStreamId`] when the name breaks that rule; its `reason` says how.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        match check_name(&name, Self::MAX_LEN) {
            Ok(()) => Ok(StreamId(name)),
            Err(reason) => Err(Error::InvalidStreamId { name, reason }),
        }
    }

    /// A name read back from a store: it passed the name rule of the version that wrote it. Earlier
    /// versions allowed C1 controls and bidirectional controls, so only what every version refused
    /// (empty, too long, C0 controls and DEL) makes a stored name undecodable; `None` then.
    pub(crate) fn stored(name: &str) -> Option<Self> {
        Self::is_stored(name).then(|| StreamId(name.to_owned()))
    }

    /// Whether `name` is a stream name read back from a store that [`StreamId::stored`] takes.
    pub(crate) fn is_stored(name: &str) -> bool {
        !name.is_empty() && name.len() <= Self::MAX_LEN && !name.bytes().any(|b| b < 0x20 || b == 0x7f)
    }

    /// Replaces this name with `name`, read back from a store, in the same buffer when it is large
    /// enough; returns `false` and changes nothing when [`StreamId::stored`] would refuse `name`.
    pub(crate) fn assign_stored(&mut self, name: &str) -> bool {
        if !Self::is_stored(name) {
            return false;
        }
        self.0.clear();
        self.0.push_str(name);
        true
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part of the name before the first `-`, or the whole name when it has none.
    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(category, _)| category)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        StreamId::new(name).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self, Error> {
        StreamId::new(name)
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;

    fn try_from(name: String) -> Result<Self, Error> {
        StreamId::new(name)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::InvalidName;

    #[test]
    fn names_read_back_from_a_store_pass_if_an_earlier_version_could_write_them() {
        // Earlier versions accepted C1 and bidirectional controls in stream names.
        assert!(StreamId::new("a\u{85}b").is_err());
        assert_eq!(StreamId::stored("a\u{85}b").map(|s| s.0), Some("a\u{85}b".to_owned()));
        assert!(StreamId::stored("a\u{202e}b").is_some());
        // What no version accepted stays undecodable.
        assert!(StreamId::stored("").is_none());
        assert!(StreamId::stored("a\nb").is_none());
        assert!(StreamId::stored(&"x".repeat(StreamId::MAX_LEN + 1)).is_none());
    }

    #[test]
    fn names_are_checked() {
        assert!(StreamId::new("order-1").is_ok());
        assert!(StreamId::new("é-ü").is_ok());
        assert!(StreamId::new("a".repeat(StreamId::MAX_LEN)).is_ok());
        let cases = [
            (String::new(), InvalidName::Empty),
            ("a".repeat(StreamId::MAX_LEN + 1), InvalidName::TooLong { len: 257, max: 256 }),
            ("a\0b".to_owned(), InvalidName::ControlCharacter { at: 1 }),
            ("ab\n".to_owned(), InvalidName::ControlCharacter { at: 2 }),
            ("é\u{85}".to_owned(), InvalidName::ControlCharacter { at: 2 }),
            ("ab\u{202e}".to_owned(), InvalidName::BidiControl { at: 2 }),
        ];
        for (name, expected) in cases {
            match StreamId::new(name.clone()) {
                Err(Error::InvalidStreamId { reason, .. }) => assert_eq!(reason, expected, "{name:?}"),
                other => unreachable!("{name:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        let cases = [("order-1", "order"), ("order", "order"), ("a-b-c", "a"), ("-x", "")];
        for (name, category) in cases {
            assert_eq!(StreamId::new(name).map(|s| s.category().to_owned()).ok(), Some(category.to_owned()));
        }
    }
}
