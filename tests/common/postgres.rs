//! The throwaway PostgreSQL cluster of a test binary (`annals-testkit`), and a fresh schema per store.
//! A test that cannot start the cluster fails with the reason; it never skips.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The URL of the test binary's cluster, started on first use.
pub fn url() -> Result<String, annals::Error> {
    match annals_testkit::shared() {
        Ok(cluster) => Ok(cluster.url()),
        Err(error) => Err(annals::Error::Storage(Box::new(error))),
    }
}

/// A schema name no other store of this cluster uses.
pub fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A [`PostgresConfig`](annals::PostgresConfig) for a fresh schema of the cluster.
pub fn fresh_config() -> Result<annals::PostgresConfig, annals::Error> {
    Ok(annals::PostgresConfig::new(url()?).schema(fresh_schema()).pool_size(4))
}
