//! The one rule for names: stream names, event types and checkpoint names.

/// Why a stream name, event type or checkpoint name was rejected.
///
/// A name is valid when it is non-empty, at most its kind's maximum length in bytes
/// ([`StreamId::MAX_LEN`], [`MAX_EVENT_TYPE_LEN`], [`MAX_CHECKPOINT_NAME_LEN`]), and holds no control
/// character (U+0000 to U+001F, U+007F, U+0080 to U+009F: what [`char::is_control`] says) and no
/// bidirectional control (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069), which would
/// make the name display differently from what it is. Any other Unicode, spaces included, is allowed.
///
/// [`StreamId::MAX_LEN`]: crate::StreamId::MAX_LEN
/// [`MAX_EVENT_TYPE_LEN`]: crate::MAX_EVENT_TYPE_LEN
/// [`MAX_CHECKPOINT_NAME_LEN`]: crate::MAX_CHECKPOINT_NAME_LEN
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// The name is empty.
    #[error("it is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("it is {len} bytes long, over the maximum of {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The name holds a control character (C0, DEL or C1).
    #[error("it holds a control character at byte {at}")]
    ControlCharacter {
        /// The byte offset of the first one.
        at: usize,
    },
    /// The name holds a bidirectional control (an override, embedding, isolate or mark), which would
    /// make it display differently from what it is.
    #[error("it holds a bidirectional control character at byte {at}")]
    BidiControl {
        /// The byte offset of the first one.
        at: usize,
    },
}

/// Checks a name against the rule of [`InvalidName`]: non-empty, at most `max` bytes, no control
/// character and no bidirectional control. The first offending character is reported, by its byte
/// offset.
pub(crate) fn check_name(name: &str, max: usize) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > max {
        return Err(InvalidName::TooLong { len: name.len(), max });
    }
    for (at, c) in name.char_indices() {
        if c.is_control() {
            return Err(InvalidName::ControlCharacter { at });
        }
        if is_bidi_control(c) {
            return Err(InvalidName::BidiControl { at });
        }
    }
    Ok(())
}

/// The characters of Unicode's `Bidi_Control` property.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_unicode_and_spaces_are_allowed() {
        for name in ["order-7", "café-42", "order 7", "注文-1", "é", " ", "a\u{a0}b", "emoji-🦀", "a\u{200b}b"] {
            assert_eq!(check_name(name, 64), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn empty_and_too_long_are_refused_and_the_length_is_in_bytes() {
        assert_eq!(check_name("", 8), Err(InvalidName::Empty));
        assert_eq!(check_name("abcdefgh", 8), Ok(()));
        assert_eq!(check_name("abcdefghi", 8), Err(InvalidName::TooLong { len: 9, max: 8 }));
        // Four characters, eight bytes.
        assert_eq!(check_name("éééé", 8), Ok(()));
        assert_eq!(check_name("ééééé", 8), Err(InvalidName::TooLong { len: 10, max: 8 }));
    }

    #[test]
    fn every_control_character_is_refused_at_its_byte_offset() {
        let controls = ('\u{0}'..='\u{1f}').chain(['\u{7f}']).chain('\u{80}'..='\u{9f}');
        for c in controls {
            let name = format!("é-{c}");
            assert_eq!(check_name(&name, 64), Err(InvalidName::ControlCharacter { at: 3 }), "{c:?}");
        }
    }

    #[test]
    fn every_bidi_control_is_refused_at_its_byte_offset() {
        let bidi = ['\u{061c}', '\u{200e}', '\u{200f}']
            .into_iter()
            .chain('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}');
        for c in bidi {
            let name = format!("é-{c}x");
            assert_eq!(check_name(&name, 64), Err(InvalidName::BidiControl { at: 3 }), "{c:?}");
        }
        // Neighbours of the ranges are ordinary characters.
        for c in ['\u{061b}', '\u{061d}', '\u{200d}', '\u{2010}', '\u{2029}', '\u{202f}', '\u{2065}', '\u{206a}'] {
            assert!(!is_bidi_control(c), "{c:?}");
        }
    }

    #[test]
    fn the_first_offending_character_is_reported() {
        assert_eq!(check_name("a\u{202e}b\n", 64), Err(InvalidName::BidiControl { at: 1 }));
        assert_eq!(check_name("a\u{85}b\u{2066}", 64), Err(InvalidName::ControlCharacter { at: 1 }));
    }

    #[test]
    fn messages_are_lower_case_and_name_the_byte() {
        assert_eq!(
            InvalidName::BidiControl { at: 4 }.to_string(),
            "it holds a bidirectional control character at byte 4"
        );
        assert_eq!(InvalidName::ControlCharacter { at: 0 }.to_string(), "it holds a control character at byte 0");
    }
}
