//! `annals compact --yes`: [`SledStore::compact`] on a closed sled store, with its sizes.

use annals::SledStore;
use serde_json::json;

use crate::cli::CompactArgs;
use crate::failure::Failure;
use crate::output::{bytes, Output};
use crate::store::Location;

/// Compacts the sled store at `location` (it blocks: no runtime needed) and prints the sizes.
pub(super) fn run(location: &Location, args: &CompactArgs, out: &mut Output) -> Result<(), Failure> {
    let Location::Sled(path) = location else {
        return Err(Failure::Usage("compact works on a sled store; PostgreSQL gives space back itself".to_owned()));
    };
    if !args.yes {
        return Err(Failure::Usage("compact rewrites the store in place: add --yes to confirm".to_owned()));
    }
    let report = SledStore::compact(path)?;
    if out.json() {
        out.json_line(&json!({
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
            "keys": report.keys,
        }))?;
    } else {
        out.line(format!(
            "compacted: {} before, {} after ({} keys copied)",
            bytes(report.bytes_before),
            bytes(report.bytes_after),
            report.keys
        ))?;
    }
    Ok(())
}
