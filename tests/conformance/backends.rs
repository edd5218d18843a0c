//! The stores the conformance suite runs against. The PostgreSQL backend opens each store in a fresh
//! schema of one throwaway cluster per test binary (`annals-testkit`).

use annals::{Error, MemoryStore, SledConfig, SledStore, SnapshotRetention};

use super::{Backend, Fixture};

/// [`MemoryStore`].
pub(crate) struct Memory;

impl Backend for Memory {
    type Store = MemoryStore;

    async fn open(max_event_size: Option<usize>) -> Result<Fixture<MemoryStore>, Error> {
        let store = max_event_size.map_or_else(MemoryStore::new, MemoryStore::with_max_event_size);
        Ok(Fixture { store, _keep: None })
    }

    async fn open_with_snapshot_retention(retention: SnapshotRetention) -> Result<Fixture<MemoryStore>, Error> {
        Ok(Fixture { store: MemoryStore::new().with_snapshot_retention(retention), _keep: None })
    }
}

/// [`SledStore`] in a fresh temporary directory, with the default config (`Fsync` durability).
pub(crate) struct Sled;

impl Backend for Sled {
    type Store = SledStore;

    async fn open(max_event_size: Option<usize>) -> Result<Fixture<SledStore>, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Storage(Box::new(e)))?;
        let mut config = SledConfig::new(dir.path());
        if let Some(max) = max_event_size {
            config = config.max_event_size(max);
        }
        Ok(Fixture { store: config.open()?, _keep: Some(dir) })
    }

    async fn open_with_snapshot_retention(retention: SnapshotRetention) -> Result<Fixture<SledStore>, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Storage(Box::new(e)))?;
        let store = SledConfig::new(dir.path()).snapshot_retention(retention).open()?;
        Ok(Fixture { store, _keep: Some(dir) })
    }
}

/// [`PostgresStore`](annals::PostgresStore) in a fresh schema of the test binary's throwaway cluster.
#[cfg(feature = "postgres")]
pub(crate) struct Postgres;

#[cfg(feature = "postgres")]
impl Backend for Postgres {
    type Store = annals::PostgresStore;

    async fn open(max_event_size: Option<usize>) -> Result<Fixture<annals::PostgresStore>, Error> {
        let mut config = annals::PostgresConfig::new(crate::common::postgres::url()?)
            .schema(crate::common::postgres::fresh_schema())
            .pool_size(4);
        if let Some(max) = max_event_size {
            config = config.max_event_size(max);
        }
        Ok(Fixture { store: config.open().await?, _keep: None })
    }

    async fn open_with_snapshot_retention(
        retention: SnapshotRetention,
    ) -> Result<Fixture<annals::PostgresStore>, Error> {
        let config = annals::PostgresConfig::new(crate::common::postgres::url()?)
            .schema(crate::common::postgres::fresh_schema())
            .pool_size(4)
            .snapshot_retention(retention);
        Ok(Fixture { store: config.open().await?, _keep: None })
    }
}
