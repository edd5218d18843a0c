//! The stores the conformance suite runs against. A PostgreSQL store would add a `Postgres` backend
//! that creates a fresh schema in `open` and keeps its guard in the fixture.

use annals::{Error, MemoryStore, SledConfig, SledStore};

use super::{Backend, Fixture};

/// [`MemoryStore`].
pub(crate) struct Memory;

impl Backend for Memory {
    type Store = MemoryStore;

    async fn open(max_event_size: Option<usize>) -> Result<Fixture<MemoryStore>, Error> {
        let store = max_event_size.map_or_else(MemoryStore::new, MemoryStore::with_max_event_size);
        Ok(Fixture { store, _keep: None })
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
}
