//! Shared test domain and helpers.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bank;
pub mod child;
pub mod counting;
pub mod log_checks;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod raw_sled;
