//! Opening the store named on the command line.

use std::path::{Path, PathBuf};

use annals::{SledConfig, SledStore};

use crate::failure::Failure;

/// Whether a command may create a store where there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// Read commands: a missing store is an error ([`annals::Error::NotFound`]).
    No,
    /// Imports: create the directory and the store.
    IfMissing,
}

/// Opens the store in `dir` (from `--store` or `ANNALS_STORE`). Blocks while sled recovers it; call
/// it before starting the runtime.
pub(crate) fn open(dir: Option<&Path>, create: Create) -> Result<SledStore, Failure> {
    let dir: PathBuf = dir
        .ok_or_else(|| Failure::Usage("no store given: pass --store DIR or set ANNALS_STORE".to_owned()))?
        .to_owned();
    let store = SledConfig::new(dir).create_if_missing(create == Create::IfMissing).open()?;
    Ok(store)
}
