//! `annals log`: the whole log, filtered by type and stream prefix, bounded by a position or a time.

use annals::{EventStore, Position, ReadLog};
use futures_util::TryStreamExt;

use crate::cli::LogArgs;
use crate::failure::Failure;
use crate::output::Output;
use crate::time::UntilArg;

pub(super) async fn run(store: &dyn EventStore, args: LogArgs, out: &mut Output) -> Result<(), Failure> {
    let mut read = ReadLog::from(args.from.unwrap_or(Position::FIRST)).filter(args.filter.filter());
    if let Some(limit) = args.limit {
        read = read.limit(limit);
    }
    read = match (args.until, args.occurred) {
        (None, _) => read,
        (Some(UntilArg::Position(_)), true) => {
            return Err(Failure::Usage("--occurred needs a time for --until, not a position".to_owned()));
        }
        (Some(UntilArg::Position(position)), false) => read.until_position(position),
        (Some(UntilArg::Time(at)), false) => read.until_recorded(at),
        (Some(UntilArg::Time(at)), true) => read.until_occurred(at),
    };
    let mut events = store.read_log(read);
    while let Some(event) = events.try_next().await? {
        out.event(&event)?;
    }
    Ok(())
}
