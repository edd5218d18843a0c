//! Why a command failed, its one-line message and its exit code.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::process::ExitCode;

/// A failed command.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The library said no.
    Store(annals::Error),
    /// A CSV import stopped on its input (the store's errors are `Store`).
    Import(annals::import::ImportError),
    /// A relay stopped on a broker's error, or a relay setting is invalid (the store's errors are
    /// `Store`).
    Relay(annals::relay::RelayError),
    /// Reading an input or writing the output failed.
    Io {
        /// What was being done, e.g. `cannot create "backup.jsonl"`.
        doing: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The command line asks for something that cannot be done (an unknown subscription, ...).
    Usage(String),
    /// `verify` found damage; the report has been printed.
    Damaged {
        /// How many problems it found.
        problems: usize,
    },
    /// Ctrl-C or SIGTERM stopped a command that had not finished (a scavenge), saying what to do.
    Interrupted(String),
}

impl Failure {
    pub(crate) fn io(doing: impl Into<String>, source: io::Error) -> Self {
        Failure::Io { doing: doing.into(), source }
    }

    /// 2 when the store is damaged, 130 (128 + SIGINT, as shells say) when interrupted, 1 for every
    /// other failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Damaged { .. } => ExitCode::from(2),
            Failure::Interrupted(_) => ExitCode::from(130),
            Failure::Store(annals::Error::Corrupt { .. } | annals::Error::LogTruncated { .. }) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    /// Whether the failure is only that the reader of our output went away (`annals log | head`):
    /// not an error worth a message.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = match self {
            Failure::Store(error) => Some(error),
            Failure::Import(error) => Some(error),
            Failure::Relay(error) => Some(error),
            Failure::Io { source, .. } => Some(source),
            Failure::Usage(_) | Failure::Damaged { .. } | Failure::Interrupted(_) => None,
        };
        while let Some(error) = source {
            let io = error.downcast_ref::<io::Error>().map(io::Error::kind);
            // serde_json wraps the I/O errors of the writer it serializes to.
            let json = error.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind);
            if io.or(json) == Some(io::ErrorKind::BrokenPipe) {
                return true;
            }
            source = error.source();
        }
        false
    }

    /// The message and every source under it, joined with ": ", on one line.
    pub(crate) fn one_line(&self) -> String {
        let mut line = self.to_string();
        let mut source = match self {
            Failure::Store(error) => error.source(),
            Failure::Import(error) => error.source(),
            Failure::Relay(error) => error.source(),
            Failure::Io { source, .. } => Some(source as &(dyn std::error::Error + 'static)),
            Failure::Usage(_) | Failure::Damaged { .. } | Failure::Interrupted(_) => None,
        };
        while let Some(error) = source {
            line.push_str(": ");
            line.push_str(&error.to_string());
            source = error.source();
        }
        line.replace('\n', " ")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Store(error) => error.fmt(f),
            Failure::Import(error) => error.fmt(f),
            Failure::Relay(error) => error.fmt(f),
            Failure::Io { doing, .. } => f.write_str(doing),
            Failure::Usage(message) | Failure::Interrupted(message) => f.write_str(message),
            Failure::Damaged { problems } => write!(f, "the store is damaged: verify found {problems} problem(s)"),
        }
    }
}

impl From<annals::Error> for Failure {
    fn from(error: annals::Error) -> Self {
        Failure::Store(error)
    }
}

impl From<annals::import::ImportError> for Failure {
    fn from(error: annals::import::ImportError) -> Self {
        match error {
            annals::import::ImportError::Store(error) => Failure::Store(error),
            input => Failure::Import(input),
        }
    }
}

impl From<annals::relay::RelayError> for Failure {
    fn from(error: annals::relay::RelayError) -> Self {
        match error {
            annals::relay::RelayError::Store(error) => Failure::Store(error),
            relay => Failure::Relay(relay),
        }
    }
}

/// Writing to standard output failed.
impl From<io::Error> for Failure {
    fn from(source: io::Error) -> Self {
        Failure::io("cannot write the output", source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_joins_the_source_chain_on_one_line() {
        let failure = Failure::io("cannot open \"x.csv\"", io::Error::new(io::ErrorKind::NotFound, "no such\nfile"));
        assert_eq!(failure.one_line(), "cannot open \"x.csv\": no such file");
        assert!(!failure.is_broken_pipe());
        assert!(Failure::from(io::Error::from(io::ErrorKind::BrokenPipe)).is_broken_pipe());
        let json = serde_json::Error::io(io::Error::from(io::ErrorKind::BrokenPipe));
        let export = annals::Error::Storage(Box::new(json));
        assert!(Failure::from(export).is_broken_pipe());
    }
}
