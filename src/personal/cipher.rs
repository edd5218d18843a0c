//! Encrypting and decrypting the personal fields of a payload, in place in its JSON text.
//!
//! A personal field's value (its JSON text, whatever its type) is encrypted with ChaCha20-Poly1305
//! under a fresh random 96-bit nonce, with associated data that binds the ciphertext to its place
//! (event id and type, field name, subject), and stored as the JSON string
//! `base64(nonce || ciphertext)`. Only the bytes of the field's value change: the rest of the
//! payload text stays byte for byte, so decrypting gives back exactly the original text.

use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::keys::Key;
use crate::error::{Error, Result};
use crate::position::Position;

/// The bytes of a nonce.
const NONCE_LEN: usize = 12;

/// What a personal field's place in the stored payload says about it.
pub(crate) struct Place<'a> {
    pub(crate) id: Uuid,
    pub(crate) event_type: &'a str,
    pub(crate) subject: &'a str,
}

impl Place<'_> {
    /// The associated data of `field`: every part length-prefixed, so that no two places share it.
    fn associated_data(&self, field: &str) -> Vec<u8> {
        let id = self.id.as_bytes();
        let parts: [&[u8]; 5] =
            [b"annals-personal-v1", id, self.event_type.as_bytes(), field.as_bytes(), self.subject.as_bytes()];
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for part in parts {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// Why a payload's fields could not be found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FieldProblem {
    /// The payload is not a JSON object.
    NotAnObject,
    /// The field is not in the payload.
    Missing(String),
    /// The field is in the payload twice.
    Twice(String),
}

/// The byte range of the value of each of `fields` in the JSON object `payload`, in the order of
/// `fields`.
pub(crate) fn field_ranges(payload: &str, fields: &[String]) -> Result<Vec<Range<usize>>, FieldProblem> {
    let members = serde_json::from_str::<Members<'_>>(payload).map_err(|_| FieldProblem::NotAnObject)?;
    let base = payload.as_ptr() as usize;
    let mut ranges = Vec::with_capacity(fields.len());
    for field in fields {
        let mut found = members.0.iter().filter(|(name, _)| name == field);
        let Some((_, value)) = found.next() else { return Err(FieldProblem::Missing(field.clone())) };
        if found.next().is_some() {
            return Err(FieldProblem::Twice(field.clone()));
        }
        let text = value.get();
        let start = (text.as_ptr() as usize).wrapping_sub(base);
        let range = start..start + text.len();
        // The raw value borrows from `payload`; check it, rather than trust the arithmetic.
        if payload.get(range.clone()) != Some(text) {
            return Err(FieldProblem::NotAnObject);
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// `payload` with each range replaced by its text (ranges in any order, not overlapping).
pub(crate) fn splice(payload: &str, mut replacements: Vec<(Range<usize>, String)>) -> String {
    replacements.sort_by_key(|(range, _)| range.start);
    let extra: usize = replacements.iter().map(|(_, text)| text.len()).sum();
    let mut out = String::with_capacity(payload.len() + extra);
    let mut at = 0;
    for (range, text) in replacements {
        out.push_str(payload.get(at..range.start).unwrap_or_default());
        out.push_str(&text);
        at = range.end;
    }
    out.push_str(payload.get(at..).unwrap_or_default());
    out
}

/// The JSON string that stores `plaintext` (a field's JSON text) encrypted under `key`.
///
/// # Errors
/// [`Error::Storage`] when the random number generator fails.
pub(crate) fn encrypt(key: &Key, place: &Place<'_>, field: &str, plaintext: &str) -> Result<String> {
    let cipher = ChaCha20Poly1305::new(key);
    let nonce = Nonce::try_generate().map_err(Error::storage)?;
    let aad = place.associated_data(field);
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: &aad })
        .map_err(|_| Error::storage(std::io::Error::other("a personal field is too long to encrypt")))?;
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    Ok(format!("\"{}\"", STANDARD.encode(bytes)))
}

/// The JSON text a stored field (`stored`, the JSON string [`encrypt`] wrote) holds.
///
/// # Errors
/// [`Error::Corrupt`] at `position` when it is not such a string, or does not decrypt with `key`
/// at this place (tampered bytes, another key, or a ciphertext moved from elsewhere).
pub(crate) fn decrypt(key: &Key, place: &Place<'_>, field: &str, stored: &str, position: Position) -> Result<String> {
    let corrupt = |reason| Error::Corrupt { what: "personal field", position, reason };
    let text = stored
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or(corrupt("the stored field is not a string"))?;
    let bytes = STANDARD.decode(text.as_bytes()).map_err(|_| corrupt("the stored field is not base64"))?;
    if bytes.len() < NONCE_LEN {
        return Err(corrupt("the stored field is shorter than a nonce"));
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| corrupt("the stored field is shorter than a nonce"))?;
    let aad = place.associated_data(field);
    let plain = ChaCha20Poly1305::new(key)
        .decrypt(&nonce, Payload { msg: sealed, aad: &aad })
        .map_err(|_| corrupt("the stored field does not decrypt with its subject's key"))?;
    String::from_utf8(plain).map_err(|_| corrupt("the decrypted field is not UTF-8"))
}

/// The top-level members of a JSON object, each name with its value as it is in the text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(id: Uuid) -> Place<'static> {
        Place { id, event_type: "Joined", subject: "m-1" }
    }

    #[test]
    fn fields_are_found_where_they_are_in_the_text() {
        let payload = r#"{ "a" : 1, "b":{"x":[1,2]} ,"c\"":"s"}"#;
        let fields = vec!["b".to_owned(), "c\"".to_owned()];
        let ranges = field_ranges(payload, &fields).unwrap_or_default();
        let values: Vec<&str> = ranges.iter().map(|r| payload.get(r.clone()).unwrap_or("?")).collect();
        assert_eq!(values, [r#"{"x":[1,2]}"#, r#""s""#]);
        assert_eq!(field_ranges("[1]", &fields), Err(FieldProblem::NotAnObject));
        assert_eq!(field_ranges("{\"a\":", &fields), Err(FieldProblem::NotAnObject));
        assert_eq!(field_ranges(r#"{"b":1}"#, &fields), Err(FieldProblem::Missing("c\"".into())));
        assert_eq!(field_ranges(r#"{"b":1,"b":2}"#, &fields[..1]), Err(FieldProblem::Twice("b".into())));
    }

    #[test]
    fn a_field_decrypts_only_with_its_key_at_its_place() -> Result<()> {
        let (key, _) = super::super::keys::new_key()?;
        let (other, _) = super::super::keys::new_key()?;
        let id = Uuid::now_v7();
        let stored = encrypt(&key, &place(id), "email", r#""ada@example.com""#)?;
        assert!(!stored.contains("ada"));
        let at = Position::new(4);
        assert_eq!(decrypt(&key, &place(id), "email", &stored, at)?, r#""ada@example.com""#);
        for wrong in [
            decrypt(&other, &place(id), "email", &stored, at),
            decrypt(&key, &place(id), "name", &stored, at),
            decrypt(&key, &place(Uuid::now_v7()), "email", &stored, at),
            decrypt(&key, &Place { subject: "m-2", ..place(id) }, "email", &stored, at),
            decrypt(&key, &Place { event_type: "Left", ..place(id) }, "email", &stored, at),
            decrypt(&key, &place(id), "email", "\"AAAA\"", at),
            decrypt(&key, &place(id), "email", "12", at),
        ] {
            assert!(matches!(wrong, Err(Error::Corrupt { what: "personal field", position, .. }) if position == at));
        }
        Ok(())
    }

    #[test]
    fn splicing_keeps_everything_else() {
        let payload = r#"{"a":1,"b":2,"c":3}"#;
        let out = splice(payload, vec![(17..18, "null".into()), (5..6, "\"x\"".into())]);
        assert_eq!(out, r#"{"a":"x","b":2,"c":null}"#);
    }
}
