//! What the benchmarks share: the event payload, sled's cache size, scratch directories and the
//! runtime. Included by each bench with `mod support;` (a directory, so Cargo does not take it for a
//! benchmark of its own).
#![allow(dead_code)]

use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Bytes of every event payload.
pub(crate) const PAYLOAD_LEN: usize = 200;

/// sled's page cache in bytes, for the store and every baseline alike: the store's default of 64 MiB,
/// or `ANNALS_BENCH_CACHE_MB` (e.g. 1024 to see reads of the 1M-event log from a cache that holds it).
pub(crate) fn cache() -> u64 {
    std::env::var("ANNALS_BENCH_CACHE_MB").ok().and_then(|mb| mb.parse::<u64>().ok()).unwrap_or(64) << 20
}

/// A 200-byte JSON object, the payload of every event.
pub(crate) fn payload() -> String {
    let mut json =
        String::from(r#"{"order":"order-000042","customer":"customer-17","total":1250,"currency":"EUR","note":""#);
    json.extend(std::iter::repeat_n('x', PAYLOAD_LEN - json.len() - 2));
    json.push_str("\"}");
    assert_eq!(json.len(), PAYLOAD_LEN);
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    json
}

/// A directory on the same disk as the build (never a tmpfs, so `fsync` means something).
pub(crate) fn scratch_dir() -> TempDir {
    tempfile::Builder::new().prefix("annals-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A tokio runtime with two worker threads (the machine's two cores).
pub(crate) fn multi_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
