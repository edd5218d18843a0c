//! `annals`, the command-line tool of the Annals event store, on a sled directory or a PostgreSQL
//! schema: list streams, read a stream or the whole log (filtered, bounded, as of a time), tail it
//! (following other processes' appends on PostgreSQL), count what is in it, look after
//! subscriptions and their parked events, import a CSV event log, export and import a whole store
//! as JSON lines, copy a whole store into another, verify a store, relay its log to a Kafka or
//! Pulsar topic, and look after the life of its streams (delete, truncate, retention, scavenge,
//! forget a subject's personal data).
//!
//! Run `annals --help` for the manual. Exit codes: 0 success, 1 an error (one line on stderr), 2 a
//! damaged store, 130 a scavenge stopped by Ctrl-C or SIGTERM.
//!
//! The tool prints by writing to locked standard output and error (the workspace forbids the print
//! macros, which panic when the reader goes away); a closed pipe (`annals log | head`) ends it
//! quietly with success.

mod cli;
mod commands;
mod failure;
mod logging;
mod output;
mod postgres;
mod signals;
mod store;
mod time;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::output::Output;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to standard output with success; a bad command line is an error
            // like any other (exit code 1), so that 2 always means a damaged store.
            let _ = error.print();
            return if error.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    logging::init(cli.verbose);
    let mut out = Output::new(cli.json);
    let result = commands::run(cli, &mut out).and_then(|()| out.flush().map_err(Into::into));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.is_broken_pipe() => ExitCode::SUCCESS,
        Err(failure) => {
            // Whatever was printed before the failure goes out first.
            let _ = out.flush();
            let _ = writeln!(std::io::stderr().lock(), "error: {}", failure.one_line());
            failure.exit_code()
        }
    }
}
