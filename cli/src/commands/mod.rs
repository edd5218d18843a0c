//! The commands: each module runs one, given the open store and the output.

mod import_csv;
mod log;
mod read;
mod stats;
mod streams;
mod subscriptions;
mod tail;
mod transfer;
mod verify;

use std::path::Path;

use annals::SledStore;

use crate::cli::{Cli, Command, ExportCommand, ImportCommand};
use crate::failure::Failure;
use crate::output::Output;
use crate::store::{self, Create};

/// Opens the store and runs the command.
pub(crate) fn run(cli: Cli, out: &mut Output) -> Result<(), Failure> {
    let create = match &cli.command {
        Command::Import(ImportCommand::Csv(args)) => {
            check_input(&args.file)?;
            Create::IfMissing
        }
        Command::Import(ImportCommand::Jsonl(args)) => {
            check_input(&args.file)?;
            Create::IfMissing
        }
        _ => Create::No,
    };
    let store = store::open(cli.store.as_deref(), create)?;
    if let Command::Verify = cli.command {
        return verify::run(&store, out);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::io("cannot start the async runtime", e))?;
    runtime.block_on(dispatch(&store, cli.command, out))
}

async fn dispatch(store: &SledStore, command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Streams(args) => streams::run(store, args, out).await,
        Command::Read(args) => read::run(store, args, out).await,
        Command::Log(args) => log::run(store, args, out).await,
        Command::Tail(args) => tail::run(store, args, out).await,
        Command::Stats(args) => stats::run(store, args, out).await,
        Command::Subscriptions(args) => subscriptions::run(store, args, out).await,
        Command::Import(ImportCommand::Csv(args)) => import_csv::run(store, args, out).await,
        Command::Import(ImportCommand::Jsonl(args)) => transfer::import(store, args, out).await,
        Command::Export(ExportCommand::Jsonl(args)) => transfer::export(store, args, out).await,
        Command::Verify => verify::run(store, out),
    }
}

/// Whether `path` means standard input or output.
pub(crate) fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Fails before an import creates a store when its input cannot be opened.
fn check_input(path: &Path) -> Result<(), Failure> {
    if is_stdio(path) {
        return Ok(());
    }
    std::fs::File::open(path).map(drop).map_err(|e| Failure::io(format!("cannot open {}", path.display()), e))
}
