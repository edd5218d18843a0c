//! The commands: each module runs one, given the open store and the output.

mod compact;
mod copy;
mod forget;
mod import_csv;
mod lifecycle;
mod log;
mod read;
mod relay;
mod retention;
mod scavenge;
mod stats;
mod streams;
mod subscriptions;
mod tail;
mod transfer;
mod verify;
mod workflows;

use std::path::Path;
use std::time::Duration;

use crate::cli::{Cli, Command, ExportCommand, ImportCommand, RelayCommand};
use crate::failure::Failure;
use crate::output::Output;
use crate::store::{Create, Location, OpenStore, Pending};

/// Opens the store and runs the command: a sled store before the runtime starts (opening it
/// blocks), a PostgreSQL store inside it.
pub(crate) fn run(cli: Cli, out: &mut Output) -> Result<(), Failure> {
    let connect_timeout = Duration::from_secs(cli.connect_timeout);
    if let Command::Copy(args) = &cli.command {
        tracing::debug!(command = "copy", "annals copy");
        return copy::run(args, &cli.schema, connect_timeout, out);
    }
    if let Command::Compact(args) = &cli.command {
        tracing::debug!(command = "compact", "annals compact");
        let location = Location::from_option(cli.store.as_deref(), &cli.schema, connect_timeout)?;
        return compact::run(&location, args, out);
    }
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
    let location = Location::from_option(cli.store.as_deref(), &cli.schema, connect_timeout)?;
    tracing::debug!(
        command = cli.command.name(),
        store = location.kind(),
        "annals {} on the {} store {}",
        cli.command.name(),
        location.kind(),
        location.describe()
    );
    let pending = location.prepare(create)?;
    if let (Pending::Ready(OpenStore::Sled(store)), Command::Verify) = (&pending, &cli.command) {
        // sled's byte check blocks: no runtime needed.
        return verify::run_sled(store, out);
    }
    runtime()?.block_on(async {
        let store = pending.open().await?;
        dispatch(&store, cli.command, connect_timeout, out).await
    })
}

/// The runtime commands run on: one thread is plenty for a tool.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::io("cannot start the async runtime", e))
}

async fn dispatch(
    store: &OpenStore,
    command: Command,
    connect_timeout: Duration,
    out: &mut Output,
) -> Result<(), Failure> {
    let events = store.events();
    match command {
        Command::Streams(args) => streams::run(events, args, out).await,
        Command::Read(args) => read::run(events, args, out).await,
        Command::Log(args) => log::run(events, args, out).await,
        Command::Tail(args) => tail::run(events, args, out).await,
        Command::Stats(args) => stats::run(store, args, out).await,
        Command::Subscriptions(args) => subscriptions::run(events, args, out).await,
        Command::Workflows(args) => workflows::run(events, args, out).await,
        Command::Import(ImportCommand::Csv(args)) => import_csv::run(events, args, out).await,
        Command::Import(ImportCommand::Jsonl(args)) => transfer::import(events, args, out).await,
        Command::Export(ExportCommand::Jsonl(args)) => transfer::export(events, args, out).await,
        Command::Verify => match store {
            OpenStore::Sled(store) => verify::run_sled(store, out),
            OpenStore::Postgres { store, .. } => verify::run_logical(store, out).await,
        },
        Command::Relay(RelayCommand::Kafka(args)) => relay::kafka(store, args, connect_timeout, out).await,
        Command::Relay(RelayCommand::Pulsar(args)) => relay::pulsar(store, args, connect_timeout, out).await,
        Command::Relay(RelayCommand::Status) => relay::status(events, out).await,
        Command::Relay(RelayCommand::Parked(args)) => relay::parked(events, args, out).await,
        Command::Info(args) => lifecycle::info(events, args, out).await,
        Command::Delete(args) => lifecycle::delete(events, args, out).await,
        Command::Truncate(args) => lifecycle::truncate(events, args, out).await,
        Command::Retention(command) => retention::run(events, command, out).await,
        Command::Scavenge(args) => scavenge::run(events, args, out).await,
        Command::Forget(args) => forget::run(store, args, out).await,
        Command::Copy(_) => Err(Failure::Usage("copy opens its own stores".to_owned())),
        Command::Compact(_) => Err(Failure::Usage("compact works on a closed store".to_owned())),
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
