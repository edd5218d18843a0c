//! Ctrl-C and SIGTERM, for the commands that run until stopped (`relay`) or stop cleanly between
//! steps (`scavenge`).

use crate::failure::Failure;

/// Ctrl-C (SIGINT) and SIGTERM, listened for from the moment [`Interrupts::listen`] returns.
#[cfg(unix)]
pub(crate) struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Interrupts {
    pub(crate) fn listen() -> Result<Self, Failure> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| signal(kind).map_err(|e| Failure::io("cannot listen for Ctrl-C and SIGTERM", e));
        Ok(Interrupts { interrupt: listen(SignalKind::interrupt())?, terminate: listen(SignalKind::terminate())? })
    }

    /// The next Ctrl-C or SIGTERM.
    pub(crate) async fn next(&mut self) -> std::io::Result<()> {
        tokio::select! {
            _ = self.interrupt.recv() => Ok(()),
            _ = self.terminate.recv() => Ok(()),
        }
    }
}

/// Ctrl-C, where there is no SIGTERM.
#[cfg(not(unix))]
pub(crate) struct Interrupts;

#[cfg(not(unix))]
impl Interrupts {
    pub(crate) fn listen() -> Result<Self, Failure> {
        Ok(Interrupts)
    }

    /// The next Ctrl-C.
    pub(crate) async fn next(&mut self) -> std::io::Result<()> {
        tokio::signal::ctrl_c().await
    }
}
