//! The live signal across processes: a task that `LISTEN`s on the store's channel and moves the
//! head watch when another process commits. Writers `NOTIFY` inside their transaction, so the
//! notification arrives only once the commit did. A notification is only a hint: the task then reads
//! the committed head from the head row, so it never announces a position that is not committed. It
//! reconnects when its connection drops and reads the head again, so nothing committed meanwhile is
//! missed.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::fault::{count, pg_error};
use crate::error::{Error, Result};
use crate::position::Position;

/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Moves `head` forward to `position` (never back).
pub(super) fn raise(head: &watch::Sender<Position>, position: Position) {
    head.send_if_modified(|current| {
        let moved = position > *current;
        *current = (*current).max(position);
        moved
    });
}

/// Listens until the task is aborted (when the store's last handle goes).
pub(super) async fn run(
    config: tokio_postgres::Config,
    schema: String,
    channel: String,
    head: watch::Sender<Position>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        if let Ok(true) = listen_once(&config, &schema, &channel, &head).await {
            backoff = Duration::from_millis(20);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `LISTEN`, read the head, then re-read it on every notification. Returns
/// `Ok(true)` when it had listened before the connection ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    schema: &str,
    channel: &str,
    head: &watch::Sender<Position>,
) -> Result<bool> {
    let (client, mut connection) = super::fault::connect(config).await.map_err(Error::storage)?;
    let (hints, mut hinted) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(_) = message {
                if hints.send(()).is_err() {
                    break;
                }
            }
        }
    });
    let read_head =
        client.prepare(&format!("SELECT position FROM {schema}.head WHERE id = 1")).await.map_err(pg_error)?;
    client.batch_execute(&format!("LISTEN \"{channel}\"")).await.map_err(pg_error)?;
    let outcome = async {
        loop {
            let row = client.query_one(&read_head, &[]).await.map_err(pg_error)?;
            raise(head, Position::new(count(row.try_get(0).map_err(pg_error)?, "head row", 0)?));
            if hinted.recv().await.is_none() {
                return Ok(true);
            }
            // Several commits may have been announced meanwhile: one read covers them all.
            while hinted.try_recv().is_ok() {}
        }
    }
    .await;
    driver.abort();
    outcome
}
