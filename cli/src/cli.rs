//! The command line: every command, argument and help text (clap's derive API).

mod lifecycle;

use std::path::PathBuf;

use annals::Position;
use chrono::{DateTime, Utc};
use clap::{ArgAction, Args, Parser, Subcommand};

pub(crate) use self::lifecycle::{
    DeleteArgs, ForgetArgs, InfoArgs, RetentionCommand, RetentionScopeArgs, RetentionSetArgs, ScavengeArgs,
    TruncateArgs,
};
use self::lifecycle::{DELETE_LONG, FORGET_LONG, INFO_LONG, RETENTION_LONG, SCAVENGE_LONG, TRUNCATE_LONG};
use crate::time::{parse_position, parse_time, parse_until, UntilArg};

const ABOUT_LONG: &str = "\
Inspect, export, import, copy and verify an Annals event store: a sled directory, or a schema of a
PostgreSQL database. Relay its log to a Kafka or Pulsar topic. Look after the life of its streams:
delete and truncate them, set retention rules, scavenge what reads no longer show, and erase a
subject's personal data.

The store is named by --store DIR|URL (or -s, or the ANNALS_STORE environment variable): a
directory for a sled store, or a postgres:// (or postgresql://) URL for a PostgreSQL store, in the
schema --schema NAME (or ANNALS_SCHEMA; default annals). Only the import commands (and copy, for
its target) create a store; every other command fails if there is none.

A sled store is open in one process at a time: stop the application that uses it first, or the
command fails with \"locked\". A PostgreSQL store is shared: every command works while applications
append, and tail -f shows their events as they commit.

Output is for people by default. With --json, commands that list things (streams, read, log, tail,
the subscription list, relay and scavenge progress, status, parked records and retention rules)
print JSON lines, one object per line; commands that report (stats, one subscription, requeue,
skip, verify, imports, export, copy, info, delete, truncate, retention set, forget) print one JSON
document.

The destructive commands (delete, truncate, scavenge, forget) do nothing without --yes: they fail
(exit code 1) with a message saying what they would do.

Times are RFC 3339 (2013-01-01T00:00:00Z, 2013-01-01T01:00:00+01:00) or plain dates (2013-01-01,
midnight UTC).

With -v (-vv, -vvv) the tool logs what it and the library do to stderr at info (debug, trace)
level; RUST_LOG directives (annals=trace,tokio_postgres=debug) refine that filter. Without -v
nothing is logged, whatever RUST_LOG says.

Exit codes: 0 success; 1 an error (one line on stderr, starting with \"error:\"), including a bad
command line; 2 the store is damaged (verify found problems, or a record did not decode); 130 a
scavenge stopped by Ctrl-C or SIGTERM (run it again to resume).

Example:
  annals -s data/events stats
  ANNALS_STORE=data/events annals log --type OrderPlaced --limit 20 --json
  annals -s postgres://shop@db.internal/shop --schema orders tail -f
  annals copy --from data/events --to postgres://shop@db.internal/shop --to-schema orders
  annals -s postgres://shop@db.internal/shop relay kafka --brokers kafka:9092 --topic orders
  annals -s data/events delete cart-7 --yes && annals -s data/events scavenge --yes";

/// The `annals` command line.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about = "Inspect, export, import, copy and verify an Annals event store")]
#[command(long_about = ABOUT_LONG, propagate_version = true)]
pub(crate) struct Cli {
    /// The store: a sled directory, or a postgres:// URL (postgres://user@host:port/database).
    #[arg(short, long, global = true, env = "ANNALS_STORE", hide_env_values = true, value_name = "DIR|URL")]
    pub(crate) store: Option<PathBuf>,
    /// The schema of a PostgreSQL store.
    #[arg(long, global = true, env = "ANNALS_SCHEMA", value_name = "NAME", default_value = "annals")]
    pub(crate) schema: String,
    /// How long to wait for a PostgreSQL server to accept a connection, in seconds; also how long
    /// `relay` waits for a broker to answer its first check (Kafka) or connection (Pulsar).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) connect_timeout: u64,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Log what the tool and the library do to stderr: -v info, -vv debug, -vvv trace (RUST_LOG
    /// directives, if set, are added on top). Without it nothing is logged.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub(crate) verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List streams with their versions.
    #[command(long_about = STREAMS_LONG)]
    Streams(StreamsArgs),
    /// Read the events of one stream.
    #[command(long_about = READ_LONG)]
    Read(ReadArgs),
    /// Read the whole log, filtered and bounded.
    #[command(long_about = LOG_LONG)]
    Log(LogArgs),
    /// Show the last events of the log, and follow new ones with -f.
    #[command(long_about = TAIL_LONG)]
    Tail(TailArgs),
    /// Count events, streams and event types; show the size on disk (or in the database).
    #[command(long_about = STATS_LONG)]
    Stats(StatsArgs),
    /// List subscriptions, show one with its parked events, requeue or skip them.
    #[command(long_about = SUBSCRIPTIONS_LONG)]
    Subscriptions(SubscriptionsArgs),
    /// Import events: a CSV event log, or a JSON-lines export.
    #[command(subcommand, long_about = IMPORT_LONG)]
    Import(ImportCommand),
    /// Export the whole store (events and checkpoints) as JSON lines.
    #[command(subcommand, long_about = EXPORT_LONG)]
    Export(ExportCommand),
    /// Copy a whole store into an empty one: events, checkpoints and snapshots.
    #[command(long_about = COPY_LONG)]
    Copy(CopyArgs),
    /// Check every byte of a sled store, or the log of a PostgreSQL store.
    #[command(long_about = VERIFY_LONG)]
    Verify,
    /// Rewrite a closed sled store into a fresh copy, giving back the space a scavenge freed.
    #[command(long_about = COMPACT_LONG)]
    Compact(CompactArgs),
    /// Publish the log to a Kafka or Pulsar topic; list relays and the records a relay in parked.
    #[command(subcommand, long_about = RELAY_LONG)]
    Relay(RelayCommand),
    /// List workflows (process managers) and their instances, or the pending deadlines of one.
    #[command(long_about = WORKFLOWS_LONG)]
    Workflows(WorkflowsArgs),
    /// Show the life of a stream: versions, truncation, deletions, retention rules.
    #[command(long_about = INFO_LONG)]
    Info(InfoArgs),
    /// Delete a stream, softly (it can start again) or with --hard for good (needs --yes).
    #[command(long_about = DELETE_LONG)]
    Delete(DeleteArgs),
    /// Hide the events of a stream below a version from reads (needs --yes).
    #[command(long_about = TRUNCATE_LONG)]
    Truncate(TruncateArgs),
    /// Set, list or remove retention rules: how long streams keep their events.
    #[command(subcommand, long_about = RETENTION_LONG)]
    Retention(RetentionCommand),
    /// Remove for good what reads no longer show, applying retention rules first (needs --yes).
    #[command(long_about = SCAVENGE_LONG)]
    Scavenge(ScavengeArgs),
    /// Erase the personal data of a subject by destroying its key (needs --yes).
    #[command(long_about = FORGET_LONG)]
    Forget(ForgetArgs),
}

const WORKFLOWS_LONG: &str = "\
Without a name: list every workflow saved in the store (found by its checkpoint and its instance
streams) with its checkpoint, its lag (head minus checkpoint), how many instances it has and how
many completed, how many deadlines are pending and when the next one is due (business time).

With a name: list that workflow's pending deadlines by due time: the instance, the deadline's name
and its id. A deadline leaves the list when it fires or is cancelled.

--json prints JSON lines.

Example:
  annals -s data/library workflows
  annals -s data/library workflows reminders --json";

const COMPACT_LONG: &str = "\
Copy every key of a closed sled store into a fresh sled database beside it and swap the two
directories (the library's SledStore::compact). sled gives back the space of scavenged events only
when whole segments of its file empty; the fresh copy holds only what is live. Positions, versions,
checkpoints, snapshots and retention rules are unchanged. A crash at any point leaves the old store
or the new one, complete: the next open finishes or undoes the swap.

The store must be closed (an open one is refused, exit 1) and there must be free space for a copy
of what is live. Prints the size before and after. Destructive in place: --yes is required.

Example:
  annals -s data/events compact --yes
  annals -s data/events compact --yes --json";

/// `compact --yes`.
#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    /// Confirm rewriting the store in place.
    #[arg(long)]
    pub(crate) yes: bool,
}

/// `workflows [NAME]`.
#[derive(Debug, Args)]
pub(crate) struct WorkflowsArgs {
    /// The workflow whose pending deadlines to list.
    pub(crate) name: Option<String>,
}

impl Command {
    /// The command's name as typed, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Streams(_) => "streams",
            Command::Read(_) => "read",
            Command::Log(_) => "log",
            Command::Tail(_) => "tail",
            Command::Stats(_) => "stats",
            Command::Subscriptions(_) => "subscriptions",
            Command::Import(ImportCommand::Csv(_)) => "import csv",
            Command::Import(ImportCommand::Jsonl(_)) => "import jsonl",
            Command::Export(ExportCommand::Jsonl(_)) => "export jsonl",
            Command::Copy(_) => "copy",
            Command::Verify => "verify",
            Command::Compact(_) => "compact",
            Command::Relay(RelayCommand::Kafka(_)) => "relay kafka",
            Command::Relay(RelayCommand::Pulsar(_)) => "relay pulsar",
            Command::Relay(RelayCommand::Status) => "relay status",
            Command::Relay(RelayCommand::Parked(_)) => "relay parked",
            Command::Workflows(_) => "workflows",
            Command::Info(_) => "info",
            Command::Delete(_) => "delete",
            Command::Truncate(_) => "truncate",
            Command::Retention(RetentionCommand::Set(_)) => "retention set",
            Command::Retention(RetentionCommand::List) => "retention list",
            Command::Retention(RetentionCommand::Remove(_)) => "retention remove",
            Command::Scavenge(_) => "scavenge",
            Command::Forget(_) => "forget",
        }
    }
}

/// Which clock a time bound is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axis {
    /// When the store recorded the event (`recorded_at`).
    Recorded,
    /// When it happened in the business domain (`occurred_at`).
    Occurred,
}

impl Axis {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Axis::Recorded => "recorded",
            Axis::Occurred => "occurred",
        }
    }
}

/// `--as-of TIME [--occurred | --recorded]`.
#[derive(Debug, Args)]
pub(crate) struct AsOfArgs {
    /// Only events at or before this time (RFC 3339 or a date).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) as_of: Option<DateTime<Utc>>,
    /// Apply --as-of to the business time (`occurred_at`).
    #[arg(long, requires = "as_of", conflicts_with = "recorded")]
    pub(crate) occurred: bool,
    /// Apply --as-of to the time the store recorded the event (`recorded_at`); the default.
    #[arg(long, requires = "as_of")]
    pub(crate) recorded: bool,
}

impl AsOfArgs {
    /// The bound and its axis, if one was given.
    pub(crate) fn bound(&self) -> Option<(DateTime<Utc>, Axis)> {
        self.as_of.map(|at| (at, if self.occurred { Axis::Occurred } else { Axis::Recorded }))
    }
}

/// `--type T ... --prefix P ...`.
#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "TYPE", action = ArgAction::Append)]
    pub(crate) types: Vec<String>,
    /// Only events of streams whose name starts with this (repeat for several).
    #[arg(long = "prefix", value_name = "PREFIX", action = ArgAction::Append)]
    pub(crate) prefixes: Vec<String>,
}

impl FilterArgs {
    pub(crate) fn filter(&self) -> annals::LogFilter {
        let mut filter = annals::LogFilter::all().event_types(self.types.iter().cloned());
        for prefix in &self.prefixes {
            filter = filter.stream_prefix(prefix.clone());
        }
        filter
    }
}

const STREAMS_LONG: &str = "\
List streams with their versions, ordered by name.

With --as-of, only a stream's events at or before that time count: recorded by then (the default,
--recorded), or that occurred by then (--occurred). VERSION is the highest version among them and
EVENTS how many they are; the two differ on the business-time axis when history was entered late
(a stream whose only event that occurred by then is its third is at version 3 with 1 event).
Streams with no such event are left out.

--json prints JSON lines: {\"stream\": \"order-1\", \"version\": 3}, with \"events\" too under --as-of.

Example:
  annals -s data/events streams --prefix order-
  annals -s data/events streams --as-of 2013-01-01 --occurred";

/// `streams`.
#[derive(Debug, Args)]
pub(crate) struct StreamsArgs {
    /// Only streams whose name starts with this.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
    #[command(flatten)]
    pub(crate) as_of: AsOfArgs,
}

const READ_LONG: &str = "\
Read the events of one stream, oldest first (or newest first with --backward), each with its whole
envelope: position, version, type, schema version, recorded and occurred times, id, correlation and
causation ids, headers and payload.

A soft-deleted or truncated stream shows what it holds now; --history shows every event of it the
store still holds, the deleted and truncated ones too (until a scavenge removes them). A
hard-deleted stream cannot be read: the command fails (exit code 1).

--json prints JSON lines, one event envelope per line.

Example:
  annals -s data/events read order-42
  annals -s data/events read cart-7 --history
  annals -s data/events read order-42 --backward --limit 1 --json
  annals -s data/events read order-42 --as-of 2013-06-30T12:00:00Z --occurred";

/// `read`.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The stream.
    pub(crate) stream: String,
    /// Start at this version (inclusive).
    #[arg(long, value_name = "VERSION")]
    pub(crate) from: Option<u64>,
    /// Print at most this many events.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,
    /// Newest first.
    #[arg(long)]
    pub(crate) backward: bool,
    /// Every event still stored, deleted and truncated ones too.
    #[arg(long)]
    pub(crate) history: bool,
    #[command(flatten)]
    pub(crate) as_of: AsOfArgs,
}

const LOG_LONG: &str = "\
Read the whole log in order, from the first event or --from a position, keeping the events of the
given types (--type, repeatable) in streams with the given prefixes (--prefix, repeatable).

--until stops at a position (a number) or a time: recorded by then, or with --occurred, skipping
events that occurred after it (business time need not grow along the log, so the read goes on to
the end).

--json prints JSON lines, one event envelope per line.

Example:
  annals -s data/events log --type OrderPlaced --type OrderPaid --prefix order- --limit 100
  annals -s data/events log --from 1000 --until 2000 --json
  annals -s data/events log --until 2013-01-01 --occurred";

/// `log`.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Start at this position (inclusive).
    #[arg(long, value_name = "POSITION", value_parser = parse_position)]
    pub(crate) from: Option<Position>,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Print at most this many events.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,
    /// Stop at this position, or at this time (RFC 3339 or a date). `--as-of` is the same option,
    /// under the name the other commands use.
    #[arg(long, visible_alias = "as-of", value_name = "POSITION|TIME", value_parser = parse_until)]
    pub(crate) until: Option<UntilArg>,
    /// Apply a --until (--as-of) time to the business time (`occurred_at`) instead of `recorded_at`.
    #[arg(long, requires = "until")]
    pub(crate) occurred: bool,
}

const TAIL_LONG: &str = "\
Show the last events of the log (10 unless -n says otherwise), or every event from --from on,
keeping only the given types and stream prefixes. With -f, keep waiting and print new events as
they are appended, until Ctrl-C (which ends with exit code 0).

On a PostgreSQL store, -f shows the events of every process as they commit: follow running
applications with it. A sled store is open in one process at a time, so while `tail -f` runs no
application can open it: -f then shows the appends of nothing but this process, which makes it
useful mainly to wait at the end of the log in scripts.

--json prints JSON lines, one event envelope per line.

Example:
  annals -s data/events tail -n 20 --type OrderPlaced
  annals -s data/events tail --from 500 --prefix order-
  annals -s postgres://shop@db.internal/shop tail -f --type OrderPlaced";

/// `tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// How many of the last events to show.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10, conflicts_with = "from")]
    pub(crate) lines: usize,
    /// Show every event from this position on instead of the last ones.
    #[arg(long, value_name = "POSITION", value_parser = parse_position)]
    pub(crate) from: Option<Position>,
    /// Keep printing new events until Ctrl-C.
    #[arg(short, long)]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
}

const STATS_LONG: &str = "\
Count the events, streams and events of each type, show the head position, the first and last
recorded times and the store's size on disk: for a sled store its directory's, for a PostgreSQL
store the space of its schema's tables with their indexes (pg_total_relation_size). Reads the whole
log, up to the head it shows: on a PostgreSQL store in use, later events are left out.

With --as-of, count only events at or before that time: recorded by then (the default, --recorded)
or that occurred by then (--occurred). The size on disk is always today's.

--json prints one JSON document.

Example:
  annals -s data/events stats
  annals -s data/events stats --as-of 2013-01-01 --occurred --json";

/// `stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    pub(crate) as_of: AsOfArgs,
}

const SUBSCRIPTIONS_LONG: &str = "\
Without a name: list every subscription saved in the store (found by its checkpoints) with its
checkpoint (every event at or before it was handled), its lag (head minus checkpoint, counting the
events its filter leaves out too) and its number of parked events.

With a name: show that subscription, its partitions and each parked event with its error.

`NAME requeue` marks parked events to be handled again: the next worker of the subscription hands
them to its handler before going on (they leave the list if that works). `NAME skip` drops parked
events without handling them. Both need --position P (one event) or --all. Work on a stopped
subscription: a running one would overwrite the change (and on a sled store holds its lock anyway;
a PostgreSQL store lets the tool in while it runs, so stop its workers first).

--json prints JSON lines for the list, one JSON document otherwise.

Example:
  annals -s data/events subscriptions
  annals -s data/events subscriptions emails
  annals -s data/events subscriptions emails requeue --all
  annals -s data/events subscriptions emails skip --position 1234";

/// `subscriptions`.
#[derive(Debug, Args)]
pub(crate) struct SubscriptionsArgs {
    /// The subscription to show or change.
    pub(crate) name: Option<String>,
    /// What to do with its parked events.
    #[command(subcommand)]
    pub(crate) action: Option<ParkedAction>,
}

/// `subscriptions NAME requeue|skip`.
#[derive(Debug, Subcommand)]
pub(crate) enum ParkedAction {
    /// Mark parked events to be handled again by the subscription's next worker.
    #[command(long_about = REQUEUE_LONG)]
    Requeue(WhichParked),
    /// Drop parked events without handling them.
    #[command(long_about = SKIP_LONG)]
    Skip(WhichParked),
}

const REQUEUE_LONG: &str = "\
Mark parked events of a stopped subscription to be handled again: the next worker to hold each
one's partition hands it to its handler before going on; it leaves the list if that works and
stays parked otherwise.

Example:
  annals -s data/events subscriptions emails requeue --all
  annals -s data/events subscriptions emails requeue --position 1234";

const SKIP_LONG: &str = "\
Drop parked events of a stopped subscription without handling them.

Example:
  annals -s data/events subscriptions emails skip --position 1234
  annals -s data/events subscriptions emails skip --all";

/// `--position P | --all`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct WhichParked {
    /// Only the parked event at this position.
    #[arg(long, value_name = "POSITION", value_parser = parse_position)]
    pub(crate) position: Option<Position>,
    /// Every parked event of the subscription.
    #[arg(long)]
    pub(crate) all: bool,
}

const IMPORT_LONG: &str = "\
Import events into the store, creating it if there is none (a directory, or a PostgreSQL schema
and its tables): a CSV event log (one event per row), or a JSON-lines export made by
`annals export jsonl`.

Example:
  annals -s data/events import csv tickets.csv --stream-column case --type-column activity --time-column timestamp
  annals -s data/copy import jsonl backup.jsonl
  annals -s postgres://shop@db.internal/shop import jsonl backup.jsonl";

/// `import csv|jsonl`.
#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Import a CSV event log: one event per row, one stream per case.
    #[command(long_about = IMPORT_CSV_LONG)]
    Csv(ImportCsvArgs),
    /// Load a JSON-lines export into the store (empty, or holding a prefix of the same log).
    #[command(long_about = IMPORT_JSONL_LONG)]
    Jsonl(ImportJsonlArgs),
}

const IMPORT_CSV_LONG: &str = "\
Import a CSV event log: each row becomes one event. The stream is the --stream-column value after
--stream-prefix, the event type the --type-column value, the occurred time the --time-column value
(RFC 3339 by default, or a chrono strftime --time-format: with %z or %:z it carries its offset,
without one it is taken as UTC), and the payload a JSON object of the --payload-columns (default:
every other column), each value a string. Creates the store if there is none.

Rows are appended --batch rows at a time, each batch atomically. Event ids are derived from the
rows, so running the same import again (after a crash, or on purpose) stores nothing twice: the
summary counts the events already present.

A bad row (wrong field count, empty case or activity, a time that does not parse, an invalid name)
aborts the import before anything is written (--abort-on-bad-rows, the default), or is left out and
listed with its line number (--skip-bad-rows).

Large files show a progress bar on stderr when it is a terminal (not with --json). --json prints
the summary as one JSON document. FILE may be - for standard input.

Example:
  annals -s data/events import csv tickets.csv --stream-column case --stream-prefix ticket- \\
      --type-column activity --time-column timestamp --time-format '%Y/%m/%d %H:%M:%S' \\
      --payload-columns resource,cost --skip-bad-rows";

/// `import csv`.
#[derive(Debug, Args)]
pub(crate) struct ImportCsvArgs {
    /// The CSV file (- for standard input).
    pub(crate) file: PathBuf,
    /// The column naming each row's case: its stream.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) stream_column: String,
    /// Put this before every stream name (e.g. ticket-).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub(crate) stream_prefix: String,
    /// The column naming each row's activity: its event type.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) type_column: String,
    /// The column with each row's time: its occurred time.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) time_column: String,
    /// rfc3339 (the default), or a chrono strftime format such as '%Y-%m-%d %H:%M:%S'.
    #[arg(long, value_name = "FORMAT", default_value = "rfc3339")]
    pub(crate) time_format: String,
    /// The columns that go into the payload, comma-separated (default: every other column).
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub(crate) payload_columns: Option<Vec<String>>,
    /// Leave bad rows out and list them in the summary.
    #[arg(long, conflicts_with = "abort_on_bad_rows")]
    pub(crate) skip_bad_rows: bool,
    /// Write nothing if any row is bad (the default).
    #[arg(long)]
    pub(crate) abort_on_bad_rows: bool,
    /// Rows per atomic append; keep it the same when running an import again.
    #[arg(long, value_name = "ROWS", default_value_t = annals::import::DEFAULT_BATCH_SIZE)]
    pub(crate) batch: usize,
    /// The field delimiter: one ASCII character, or \"tab\".
    #[arg(long, value_name = "CHAR", default_value = ",", value_parser = parse_delimiter)]
    pub(crate) delimiter: u8,
}

fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if text.len() == 1 && text.is_ascii() => Ok(text.as_bytes()[0]),
        _ => Err(format!("{text:?} is not one ASCII character (or \"tab\")")),
    }
}

const IMPORT_JSONL_LONG: &str = "\
Load an export made by `annals export jsonl` into the store, creating it if there is none. The store
must be empty or hold a prefix of the same log: an interrupted import can be run again, events
already there are recognised by their ids and skipped. Events keep their ids, positions, versions
and both times; checkpoints (subscriptions, projections) come along.

--json prints the summary as one JSON document. FILE may be - for standard input.

Example:
  annals -s data/events export jsonl backup.jsonl
  annals -s data/copy import jsonl backup.jsonl
  annals -s data/events export jsonl | annals -s data/copy import jsonl -";

/// `import jsonl`.
#[derive(Debug, Args)]
pub(crate) struct ImportJsonlArgs {
    /// The export (- for standard input).
    pub(crate) file: PathBuf,
}

const EXPORT_LONG: &str = "\
Export the whole store as JSON lines: every event with its whole envelope, in log order, then every
checkpoint. `annals import jsonl` loads it back losslessly.

Example:
  annals -s data/events export jsonl backup.jsonl
  annals -s data/events export jsonl - | gzip > backup.jsonl.gz";

/// `export jsonl`.
#[derive(Debug, Subcommand)]
pub(crate) enum ExportCommand {
    /// Write every event and checkpoint as JSON lines.
    #[command(long_about = EXPORT_JSONL_LONG)]
    Jsonl(ExportJsonlArgs),
}

const EXPORT_JSONL_LONG: &str = "\
Write every event of the store (in log order, with its whole envelope) and then every checkpoint
to FILE (created or replaced) or to standard output (- or nothing), one JSON object per line. With
--snapshots, every aggregate snapshot too (otherwise the importing store rebuilds them as commands
run). The summary goes to standard output when writing to a file, to standard error otherwise;
--json makes it one JSON document.

Example:
  annals -s data/events export jsonl backup.jsonl
  annals -s data/events export jsonl --snapshots > backup.jsonl";

/// `export jsonl [FILE|-]`.
#[derive(Debug, Args)]
pub(crate) struct ExportJsonlArgs {
    /// Where to write (- or nothing: standard output).
    #[arg(default_value = "-")]
    pub(crate) file: PathBuf,
    /// Write the aggregates' snapshots too.
    #[arg(long)]
    pub(crate) snapshots: bool,
}

const VERIFY_LONG: &str = "\
Check the whole store. On a sled store, a check of its bytes: every log record decodes (checksums
included), positions run from 1 to the head without a gap, recorded times never decrease, every
event decodes with a unique id and the next version of its stream, the stream index covers every
event exactly once, and every checkpoint and snapshot decodes. Reads everything, about as long as a
full replay.

On a PostgreSQL store, a logical check through the event store's API (the database looks after its
own bytes): the log up to the head when the check starts decodes, positions run from 1 to that head
without a gap but those a scavenge removed (the store's reader refuses any other), recorded times
never decrease, ids are unique, each stream's versions run from 1 without a gap (but below its
truncation point, or in a hard-deleted stream) and the stream table agrees, and every checkpoint
and snapshot decodes. Applications
may append meanwhile; their new events are left for the next check.

What the life of streams leaves is information, not damage: positions a scavenge removed (gaps
that reads skip), the versions missing below a stream's truncation point, hard-deleted streams
(tombstones) and soft-deleted or truncated ones whose events are still in the log. Verify counts
them after the other counts.

Prints the counts, then each problem as `position N: what` (position 0: not about one event). Exit
code 0: healthy; 2: damaged (also when the store is too damaged to open); 1: the check could not run
(no store, locked, unreachable, I/O error). --json prints one JSON document.

Example:
  annals -s data/events verify
  annals -s data/events verify --json || echo \"exit $?\"
  annals -s postgres://shop@db.internal/shop --schema orders verify";

const COPY_LONG: &str = "\
Copy the whole store --from into the empty store --to, losslessly, whatever their kinds: every
event with its whole envelope (id, position, version, both times, metadata, payload), every
checkpoint and every snapshot. Each of --from and --to is a sled directory or a postgres:// URL;
--store is not used. The schema of a PostgreSQL side is --from-schema or --to-schema, or else
--schema (default annals).

The target is created if there is none (a directory, or the schema); it must hold no events, or the
copy is refused before anything is written, a second copy into the same target included. A copy
that fails part-way leaves some events and no checkpoint in the target: empty it (a new directory,
DROP SCHEMA ... CASCADE) and copy again.

The source may be a PostgreSQL store in use: the copy takes its checkpoints, then its events up to
its head as the copy starts, then the snapshots up to the copied versions; later events stay behind.

Prints what was copied; --json prints one JSON document.

Example:
  annals copy --from data/events --to postgres://shop@db.internal/shop --to-schema orders
  annals copy --from postgres://shop@db.internal/shop --from-schema orders --to data/backup --json";

/// `copy --from SRC --to DST`.
#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The store to copy: a sled directory or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) from: PathBuf,
    /// The empty store to copy into (created if missing): a sled directory or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) to: PathBuf,
    /// The schema of a PostgreSQL source (default: --schema).
    #[arg(long, value_name = "NAME")]
    pub(crate) from_schema: Option<String>,
    /// The schema of a PostgreSQL target (default: --schema).
    #[arg(long, value_name = "NAME")]
    pub(crate) to_schema: Option<String>,
}

const RELAY_LONG: &str = "\
The relay out: publish the store's log, or the part of it that --type and --prefix keep, to a Kafka
or Pulsar topic, from the relay's checkpoint on, then live as events are appended. Each event is one
record: key = its stream, value = its JSON payload, headers = its envelope (annals-id, annals-type,
annals-position, ...). The relay saves its checkpoint (relay/NAME, in the store) only after the
broker acknowledged every record of a page: stopped or killed at any point, it resumes from there,
skipping nothing; the records of the page in flight may be published twice (consumers deduplicate
by the annals-id header).

Run it next to the application: on a PostgreSQL store it publishes the application's events as they
commit. A sled store is open in one process at a time, so on sled the relay runs while the
application is stopped (or the application runs the relay itself, through annals::relay).

`relay status` lists every relay saved in the store; `relay parked NAME` lists the records a relay
in (annals::relay::KafkaInbound, run by an application) could not store.

Example:
  annals -s postgres://shop@db.internal/shop relay kafka --brokers kafka:9092 --topic orders
  annals -s data/events relay pulsar --url pulsar://pulsar:6650 --topic orders --until-caught-up
  annals -s postgres://shop@db.internal/shop relay status";

/// `relay kafka|pulsar|status|parked`.
#[derive(Debug, Subcommand)]
pub(crate) enum RelayCommand {
    /// Publish the log to a Kafka topic until Ctrl-C (or until caught up).
    #[command(long_about = RELAY_KAFKA_LONG)]
    Kafka(RelayKafkaArgs),
    /// Publish the log to a Pulsar topic until Ctrl-C (or until caught up).
    #[command(long_about = RELAY_PULSAR_LONG)]
    Pulsar(RelayPulsarArgs),
    /// List every relay saved in the store with its checkpoint, lag and destination.
    #[command(long_about = RELAY_STATUS_LONG)]
    Status,
    /// List the records a relay in parked (could not store), with the reasons.
    #[command(long_about = RELAY_PARKED_LONG)]
    Parked(RelayParkedArgs),
}

const RELAY_KAFKA_LONG: &str = "\
Publish the log to a Kafka topic through the bootstrap servers --brokers, with acks=all and the
idempotent producer, from the relay's checkpoint on; then follow the log, publishing new events as
they are appended, until Ctrl-C or SIGTERM, which stop the relay, print a summary and exit with 0.
With --until-caught-up it stops by itself as soon as everything up to the store's head as it was at
the start is published (exit code 0), or when the relay stops on an error (exit code 1).

The relay is named --name (default kafka-TOPIC); its checkpoint is relay/NAME in the store, so the
same name resumes where it stopped, and a new name publishes the log from the start. --option sets
a librdkafka producer property (repeatable), e.g. --option compression.type=lz4.

Before starting, the relay asks the broker about the topic: an unreachable broker or a missing topic
is a warning on stderr, and the relay starts anyway, retrying with backoff until it gets through.

About once a second it prints its progress: its state (starting, publishing, caught up, retrying
with the error), the events published since it started, its checkpoint, the store's head and the
lag (head minus checkpoint, counting the events --type and --prefix leave out too). --json prints
them as JSON lines, {\"type\": \"progress\", ...}, and the summary as {\"type\": \"summary\", ...}.

Example:
  annals -s postgres://shop@db.internal/shop relay kafka --brokers kafka:9092 --topic orders \\
      --prefix order- --option compression.type=lz4
  annals -s data/events relay kafka --brokers 127.0.0.1:9092 --topic log --until-caught-up --json";

/// What `relay kafka` and `relay pulsar` share: the name, filter, pages and when to stop.
#[derive(Debug, Args)]
pub(crate) struct RelayRunArgs {
    /// The relay's name, under which its checkpoint is saved (default: kafka-TOPIC, pulsar-TOPIC).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// At most this many events per page: one acknowledgement wait and one checkpoint per page.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch: u64,
    /// Stop (with exit code 0) once everything up to the store's head at the start is published.
    #[arg(long)]
    pub(crate) until_caught_up: bool,
}

/// `relay kafka`.
#[derive(Debug, Args)]
pub(crate) struct RelayKafkaArgs {
    /// The bootstrap servers: HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) brokers: String,
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) topic: String,
    /// A librdkafka producer property, KEY=VALUE (repeat for several).
    #[arg(long = "option", value_name = "KEY=VALUE", action = ArgAction::Append, value_parser = parse_key_value)]
    pub(crate) options: Vec<(String, String)>,
    #[command(flatten)]
    pub(crate) run: RelayRunArgs,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

const RELAY_PULSAR_LONG: &str = "\
Publish the log to a Pulsar topic of the broker at --url (pulsar:// or pulsar+ssl://), each
message's send receipt awaited, from the relay's checkpoint on; then follow the log until Ctrl-C or
SIGTERM, which stop the relay, print a summary and exit with 0. With --until-caught-up it stops by
itself once everything up to the store's head as it was at the start is published (exit code 0), or
when the relay stops on an error (exit code 1).

The relay is named --name (default pulsar-TOPIC, the topic as given); its checkpoint is relay/NAME
in the store. It connects when it first publishes; a broker that is down only delays it: it retries
with backoff, and its progress shows the error. Progress and --json are as for `relay kafka`.

Example:
  annals -s postgres://shop@db.internal/shop relay pulsar --url pulsar://pulsar:6650 \\
      --topic persistent://public/default/orders --name orders-to-pulsar
  annals -s data/events relay pulsar --url pulsar://127.0.0.1:6650 --topic log --until-caught-up";

/// `relay pulsar`.
#[derive(Debug, Args)]
pub(crate) struct RelayPulsarArgs {
    /// The broker's service URL: pulsar://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub(crate) url: String,
    /// The topic (a name, or persistent://TENANT/NAMESPACE/NAME).
    #[arg(long, value_name = "TOPIC")]
    pub(crate) topic: String,
    #[command(flatten)]
    pub(crate) run: RelayRunArgs,
}

const RELAY_STATUS_LONG: &str = "\
List every relay out saved in the store (found by its checkpoint relay/NAME) with its checkpoint
(every event at or before it was acknowledged by the broker), its lag (head minus checkpoint) and
the destination it last published to. A relay that never finished a page is not listed yet.

--json prints JSON lines: {\"name\": ..., \"checkpoint\": ..., \"head\": ..., \"lag\": ...,
\"destination\": ...}.

Example:
  annals -s data/events relay status
  annals -s postgres://shop@db.internal/shop relay status --json";

const RELAY_PARKED_LONG: &str = "\
List the records the relay in NAME (annals::relay::KafkaInbound, run by an application) parked
because it could not store them: topic, partition, offset, key, value, headers, the reason and when.
A relay in that parked nothing (or an unknown name) lists nothing.

--json prints JSON lines, one parked record per line.

Example:
  annals -s data/stock relay parked orders-in
  annals -s postgres://shop@db.internal/shop --schema stock relay parked orders-in --json";

/// `relay parked NAME`.
#[derive(Debug, Args)]
pub(crate) struct RelayParkedArgs {
    /// The relay in's name.
    pub(crate) name: String,
}
