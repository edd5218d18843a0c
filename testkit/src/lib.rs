//! Test support for Annals: a throwaway PostgreSQL cluster started from the server binaries.
//! TEMPORARY SHIM (replaced by the real harness): reads ANNALS_PG_URL.
#![allow(missing_docs, clippy::print_stderr, missing_debug_implementations)]

pub struct PgCluster {
    url: String,
}
#[derive(Debug)]
pub struct TestkitError(String);
impl std::fmt::Display for TestkitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TestkitError {}
impl PgCluster {
    pub fn url(&self) -> String {
        self.url.clone()
    }
}
pub fn shared() -> Result<&'static PgCluster, TestkitError> {
    static C: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
    let url = std::env::var("ANNALS_PG_URL").map_err(|_| TestkitError("no ANNALS_PG_URL".into()))?;
    Ok(C.get_or_init(|| PgCluster { url }))
}
