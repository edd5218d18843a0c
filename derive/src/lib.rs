//! Derive macros for [`annals`](https://docs.rs/annals).
//!
//! Do not depend on this crate directly: `annals` re-exports every macro under the name of the trait it
//! implements, behind its default `derive` feature.
