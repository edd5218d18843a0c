//! `annals read`: the events of one stream with their envelopes.

use annals::{EventStore, ReadStream, StreamId, Version};
use futures_util::TryStreamExt;

use crate::cli::{Axis, ReadArgs};
use crate::failure::Failure;
use crate::output::Output;

pub(super) async fn run(store: &dyn EventStore, args: ReadArgs, out: &mut Output) -> Result<(), Failure> {
    let stream = StreamId::new(args.stream.as_str())?;
    if store.stream_version(&stream).await?.is_none() {
        return Err(Failure::Usage(format!("stream {:?} has no events", args.stream)));
    }
    let mut options = if args.backward { ReadStream::backward() } else { ReadStream::forward() };
    if let Some(version) = args.from {
        options = options.from(Version::new(version));
    }
    if let Some(limit) = args.limit {
        options = options.limit(limit);
    }
    options = match args.as_of.bound() {
        None => options,
        Some((at, Axis::Recorded)) => options.until_recorded(at),
        Some((at, Axis::Occurred)) => options.until_occurred(at),
    };
    let mut events = store.read_stream(&stream, options);
    while let Some(event) = events.try_next().await? {
        out.event(&event)?;
    }
    Ok(())
}
