//! `annals read`: the events of one stream with their envelopes.

use annals::{EventStore, ReadStream, StreamId, StreamView, Version};
use futures_util::TryStreamExt;

use crate::cli::{Axis, ReadArgs};
use crate::failure::Failure;
use crate::output::{self, Output};

pub(super) async fn run(store: &dyn EventStore, args: ReadArgs, out: &mut Output) -> Result<(), Failure> {
    let stream = StreamId::new(args.stream.as_str())?;
    let version = match store.stream_version(&stream).await {
        Err(annals::Error::StreamDeleted { .. }) => {
            return Err(Failure::Usage(format!(
                "stream {stream:?} is hard-deleted (a tombstone): it cannot be read; `annals info {stream}` shows its \
                 life"
            )));
        }
        version => version?,
    };
    if version.is_none() && !args.history {
        return Err(no_events(store, &stream).await?);
    }
    let mut options = if args.backward { ReadStream::backward() } else { ReadStream::forward() };
    if args.history {
        options = options.view(StreamView::History);
    }
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

/// Why a stream shows no events: never written, deleted or truncated.
async fn no_events(store: &dyn EventStore, stream: &StreamId) -> Result<Failure, Failure> {
    let info = store.stream_info(stream).await?;
    let deleted = info.soft_deletions.last().filter(|d| Some(d.next_version) > info.last_version);
    let message = match (info.last_version, deleted) {
        (None, _) => format!("stream {:?} has no events", stream.as_str()),
        (Some(_), Some(deletion)) => format!(
            "stream {stream:?} has no events: it was deleted at {}; --history shows the events the store still holds",
            output::time(deletion.at)
        ),
        (Some(last), None) => format!(
            "stream {stream:?} has no events: it is truncated before version {}, after its last ({last}); --history \
             shows the events the store still holds",
            info.truncated_before
        ),
    };
    Ok(Failure::Usage(message))
}
