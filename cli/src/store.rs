//! Opening the store named on the command line: a sled directory, or a schema of a PostgreSQL
//! database named by a `postgres://` URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, PostgresStore, SledConfig, SledStore};

use crate::failure::Failure;
use crate::postgres::{self, Database};

/// Whether a command may create a store where there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// Read commands, and the source of a copy: a missing store is an error.
    No,
    /// Imports, and the target of a copy: create the directory and the store, or the schema.
    IfMissing,
}

/// Where a store is.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// A sled store's directory.
    Sled(PathBuf),
    /// A schema of a PostgreSQL database.
    Postgres(Database),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL (with `schema`), or else a directory.
    pub(crate) fn new(store: &Path, schema: &str, connect_timeout: Duration) -> Location {
        match store.to_str() {
            Some(url) if postgres::is_url(url) => Location::Postgres(Database::new(url, schema, connect_timeout)),
            _ => Location::Sled(store.to_owned()),
        }
    }

    /// The location of `--store` (or `ANNALS_STORE`).
    pub(crate) fn from_option(
        store: Option<&Path>,
        schema: &str,
        connect_timeout: Duration,
    ) -> Result<Location, Failure> {
        let store = store
            .ok_or_else(|| Failure::Usage("no store given: pass --store DIR|URL or set ANNALS_STORE".to_owned()))?;
        Ok(Location::new(store, schema, connect_timeout))
    }

    /// The kind of store, as the library's `store` label names it: `sled` or `postgresql`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Location::Sled(_) => "sled",
            Location::Postgres(_) => "postgresql",
        }
    }

    /// The store's directory, or its schema and server (never the password), for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Location::Sled(dir) => format!("{:?}", dir.display().to_string()),
            Location::Postgres(database) => database.describe(),
        }
    }

    /// The first step of opening, before the runtime starts: a sled store opens now (sled blocks
    /// while it recovers); a PostgreSQL store opens in [`Pending::open`], inside the runtime.
    pub(crate) fn prepare(self, create: Create) -> Result<Pending, Failure> {
        match self {
            Location::Sled(dir) => Ok(Pending::Ready(OpenStore::Sled(open_sled(&dir, create)?))),
            Location::Postgres(database) => Ok(Pending::Postgres(database, create)),
        }
    }

    /// Opens the store from inside the runtime: a sled store on a blocking thread of the runtime's
    /// pool (sled blocks while it recovers).
    pub(crate) async fn open(self, create: Create) -> Result<OpenStore, Failure> {
        match self {
            Location::Sled(dir) => {
                let opened = tokio::task::spawn_blocking(move || open_sled(&dir, create))
                    .await
                    .map_err(|e| Failure::io("cannot open the store", std::io::Error::other(e)))?;
                Ok(OpenStore::Sled(opened?))
            }
            Location::Postgres(database) => Pending::Postgres(database, create).open().await,
        }
    }
}

/// A store on its way to being open: see [`Location::prepare`].
#[derive(Debug)]
pub(crate) enum Pending {
    /// Open already.
    Ready(OpenStore),
    /// To be opened inside the runtime.
    Postgres(Database, Create),
}

impl Pending {
    /// Opens the store, on the current tokio runtime. Without [`Create::IfMissing`] a schema that
    /// holds no store is an error, and stays as it was.
    pub(crate) async fn open(self) -> Result<OpenStore, Failure> {
        let (database, create) = match self {
            Pending::Ready(store) => return Ok(store),
            Pending::Postgres(database, create) => (database, create),
        };
        if create == Create::No && !database.has_store().await? {
            return Err(Failure::Usage(format!(
                "no store in {}: only import and copy create one",
                database.describe()
            )));
        }
        let store = database.config().open().await?;
        Ok(OpenStore::Postgres { store, database })
    }
}

/// An open store of either backend.
#[derive(Debug)]
pub(crate) enum OpenStore {
    /// A sled store, open in this process only.
    Sled(SledStore),
    /// A PostgreSQL store, shared with every process that uses the schema.
    Postgres {
        /// The store.
        store: PostgresStore,
        /// Where it is, for what the tool reads from the catalog itself.
        database: Database,
    },
}

impl OpenStore {
    /// The store, for everything commands do through the [`EventStore`] trait.
    pub(crate) fn events(&self) -> &dyn EventStore {
        match self {
            OpenStore::Sled(store) => store,
            OpenStore::Postgres { store, .. } => store,
        }
    }

    /// The store as an owned handle, for what runs in the background (a relay): a clone of
    /// the same store, sharing its connections or its open database.
    pub(crate) fn shared(&self) -> Arc<dyn EventStore> {
        match self {
            OpenStore::Sled(store) => Arc::new(store.clone()),
            OpenStore::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }
}

/// Opens the sled store in `dir`. Blocks while sled recovers it; call it before starting the runtime.
fn open_sled(dir: &Path, create: Create) -> Result<SledStore, Failure> {
    let store = SledConfig::new(dir).create_if_missing(create == Create::IfMissing).open()?;
    Ok(store)
}
