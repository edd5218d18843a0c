//! Paths used by the code that `annals-derive` generates. Not public API: it may change in any
//! release.

pub use serde;
pub use serde_json;

pub use crate::aggregate::Aggregate;
pub use crate::envelope::PersonalData;
pub use crate::event::{DecodeError, Event};
