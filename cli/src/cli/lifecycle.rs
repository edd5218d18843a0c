//! The command line of the life of a stream: delete, truncate, retention, scavenge, forget and info,
//! with their help texts.

use std::time::Duration;

use annals::{ExpectedVersion, Version};
use clap::{ArgGroup, Args, Subcommand};

use crate::time::parse_duration;

pub(crate) const DELETE_LONG: &str = "\
Delete a stream. Refused without --yes: the error then says what would be deleted, and nothing
changes.

By default the deletion is soft: reads of the stream answer that it has no events, it is left out
of `streams`, its snapshots are deleted, and an append (with no-stream or any) starts it again at
the version after its last one (versions are never reused). `log`, `read --history` and time travel
to a moment before the deletion still see the old events, until `annals scavenge` removes them.
A soft delete of a stream with nothing to show changes nothing.

With --hard the stream gets a tombstone: every read of it and every append to it fails from then
on, forever; its events stay in the log until `annals scavenge` removes them.

--expected-version makes the deletion conditional, as an append's check is: N (the stream is at
version N), any (the default), no-stream, or exists. A stream at another version is left as it is
and the command fails.

--json prints one JSON document.

Example:
  annals -s data/events delete cart-7 --yes
  annals -s data/events delete cart-7 --expected-version 12 --yes
  annals -s postgres://shop@db.internal/shop delete customer-42 --hard --yes --json";

/// `delete STREAM [--hard] [--expected-version V] --yes`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The stream.
    pub(crate) stream: String,
    /// A tombstone: reads and appends of the stream fail forever after.
    #[arg(long)]
    pub(crate) hard: bool,
    /// Delete only if the stream is at this version: N, any, no-stream or exists.
    #[arg(long, value_name = "N|any|no-stream|exists", default_value = "any", value_parser = parse_expected)]
    pub(crate) expected_version: ExpectedVersion,
    /// Do it: without this flag the command only says what it would delete.
    #[arg(long)]
    pub(crate) yes: bool,
}

/// `N`, `any`, `no-stream` or `exists`.
fn parse_expected(text: &str) -> Result<ExpectedVersion, String> {
    match text.trim() {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        number => number
            .parse::<u64>()
            .map(|n| ExpectedVersion::Exact(Version::new(n)))
            .map_err(|_| format!("{text:?} is not a version (a whole number), any, no-stream or exists")),
    }
}

pub(crate) const TRUNCATE_LONG: &str = "\
Hide the events of a stream below version --before from reads: afterwards `read` starts at that
version, and loads of an aggregate start there (truncate below a snapshot, or the aggregate is
rebuilt from the first event kept). The events stay in the log until `annals scavenge` removes them.
The truncation point only moves forward: a --before at or below the current one changes nothing.
--before may be the version after the last one, which hides every event of the stream. Refused
without --yes: the error then says what would be hidden, and nothing changes.

--json prints one JSON document.

Example:
  annals -s data/events truncate sensor-7 --before 1000 --yes
  annals -s postgres://shop@db.internal/shop truncate order-42 --before 3 --yes --json";

/// `truncate STREAM --before V --yes`.
#[derive(Debug, Args)]
pub(crate) struct TruncateArgs {
    /// The stream.
    pub(crate) stream: String,
    /// The first version to keep: every earlier one is hidden.
    #[arg(long, value_name = "VERSION", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) before: u64,
    /// Do it: without this flag the command only says what it would hide.
    #[arg(long)]
    pub(crate) yes: bool,
}

pub(crate) const RETENTION_LONG: &str = "\
Retention rules say how long the events of a stream, or of every stream whose name starts with a
prefix, are kept: by age (--max-age: events recorded longer ago go) and by count (--max-count: only
the newest N events of each stream stay), or both (an event goes when either says so). Like Kafka's
retention.ms and KurrentDB's $maxAge and $maxCount. When several rules cover a stream, each applies.

Rules are saved in the store (as checkpoints named retention/...) and applied by `annals scavenge`:
each run first truncates every covered stream before the first event it keeps, then removes what
reads no longer show. Between runs, expired events are still read.

Example:
  annals -s data/events retention set --prefix reading- --max-age 30d --max-count 10000
  annals -s data/events retention list
  annals -s data/events retention remove --prefix reading-
  annals -s data/events scavenge --yes";

/// `retention set|list|remove`.
#[derive(Debug, Subcommand)]
pub(crate) enum RetentionCommand {
    /// Set the rule of a stream or a prefix, replacing the one it had.
    #[command(long_about = RETENTION_SET_LONG)]
    Set(RetentionSetArgs),
    /// List every retention rule.
    #[command(long_about = RETENTION_LIST_LONG)]
    List,
    /// Remove the rule of a stream or a prefix.
    #[command(long_about = RETENTION_REMOVE_LONG)]
    Remove(RetentionScopeArgs),
}

const RETENTION_SET_LONG: &str = "\
Set the retention rule of one stream (--stream) or of every stream whose name starts with a prefix
(--prefix), replacing the rule it had. Give --max-age, --max-count or both. Nothing is removed now:
`annals scavenge` applies the rules.

--max-age is a number and a unit: s (seconds), m (minutes), h (hours), d (days) or w (weeks), and
may chain them: 30d, 12h, 90m, 1d12h.

--json prints the rule as one JSON document.

Example:
  annals -s data/events retention set --prefix reading- --max-age 30d
  annals -s data/events retention set --stream audit-log --max-count 100000
  annals -s data/events retention set --prefix session- --max-age 12h --max-count 50 --json";

/// Which streams a rule covers: `--stream S` or `--prefix P`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["stream", "prefix"])))]
pub(crate) struct RetentionScopeArgs {
    /// One stream.
    #[arg(long, value_name = "STREAM")]
    pub(crate) stream: Option<String>,
    /// Every stream whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,
}

/// `retention set (--stream S | --prefix P) [--max-age D] [--max-count N]`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("policy").required(true).multiple(true).args(["max_age", "max_count"])))]
pub(crate) struct RetentionSetArgs {
    #[command(flatten)]
    pub(crate) scope: RetentionScopeArgs,
    /// Keep events recorded within this long: 30d, 12h, 90m, 1d12h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_age: Option<Duration>,
    /// Keep only the newest N events of each stream.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_count: Option<u64>,
}

const RETENTION_LIST_LONG: &str = "\
List every retention rule: streams first, then prefixes, each by name, with the age and count they
keep.

--json prints JSON lines: {\"stream\": \"audit-log\", \"max_age\": null, \"max_age_seconds\": null,
\"max_count\": 100000}, or with \"prefix\" instead of \"stream\".

Example:
  annals -s data/events retention list
  annals -s postgres://shop@db.internal/shop retention list --json";

const RETENTION_REMOVE_LONG: &str = "\
Remove the retention rule of one stream (--stream) or of a prefix (--prefix): the streams it
covered keep their events from then on (what a scavenge already removed stays removed). Fails when
there is no such rule.

Example:
  annals -s data/events retention remove --prefix reading-
  annals -s data/events retention remove --stream audit-log";

pub(crate) const SCAVENGE_LONG: &str = "\
Reclaim the space of what reads no longer show, for good: first apply every retention rule
(truncating each covered stream before the first event it keeps; --no-retention skips this), then
walk the log and remove the events of hard-deleted streams and the events below each stream's
truncation point (truncated, soft-deleted, expired). Refused without --yes: the error then says
what would be removed, and nothing changes.

Positions never change and are never reused: a removed event leaves a gap that every read of the
log skips, and `verify` reports such gaps as information, not damage. The ids of removed events are
forgotten: an append that reuses one is a new event.

The walk goes --chunk events at a time (default 10000); each step is atomic and durable, and saves
the position reached as the checkpoint scavenge/progress. The command prints its progress after the
first step, then at most once a second: the phase, the position reached and the head it ends at, the
events examined and removed, and the bytes removed. Ctrl-C or SIGTERM stops it after the current step (a second one at once);
it then prints where it stopped and exits with code 130. Run it again to resume from there: it says
\"resuming from position N\". A crash or a kill resumes the same way.

Readers, writers and consumers keep working while it runs (on PostgreSQL; a sled store is open in
one process at a time). Run one scavenge at a time.

--json prints JSON lines: {\"type\": \"start\", ...}, {\"type\": \"progress\", ...} and
{\"type\": \"summary\", ...}.

Example:
  annals -s data/events scavenge --yes
  annals -s data/events scavenge --yes --chunk 1000 --no-retention
  annals -s postgres://shop@db.internal/shop scavenge --yes --json";

/// `scavenge --yes [--chunk N] [--no-retention]`.
#[derive(Debug, Args)]
pub(crate) struct ScavengeArgs {
    /// Do it: without this flag the command only says what it would remove.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Events looked at per step: one atomic, durable write and one saved checkpoint each.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) chunk: u64,
    /// Do not apply the retention rules: only remove what deletes and truncations already hid.
    #[arg(long)]
    pub(crate) no_retention: bool,
}

pub(crate) const FORGET_LONG: &str = "\
Erase the personal data of a subject (crypto-shredding): destroy for good the keys that encrypt the
personal fields of its events (annals::personal::PersonalStore::forget: the key stream
$personal-SUBJECT is deleted and its events removed at once). Afterwards the stored ciphertext can
no longer be decrypted: every read, replay, projection rebuild, export and time-travel query through
a PersonalStore shows those fields as erased (null), while the rest of each event, its position and
the log stay intact. Read models built before keep their copies: rebuild them. The keys are removed
durably before the command returns. Refused without --yes: the error then names the subject, and
nothing changes. Forgetting a subject already forgotten, or one without personal data, changes
nothing; events of the subject appended later get a new key.

This tool's read commands (read, log, export, ...) show the store as stored: personal fields as
ciphertext.

--json prints one JSON document.

Example:
  annals -s data/events forget member-42 --yes
  annals -s postgres://shop@db.internal/shop forget customer-7 --yes --json";

/// `forget SUBJECT --yes`.
#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// The subject whose personal data to erase, as the application keys it (a member id, ...).
    pub(crate) subject: String,
    /// Do it: without this flag the command only says what it would erase.
    #[arg(long)]
    pub(crate) yes: bool,
}

pub(crate) const INFO_LONG: &str = "\
Show the life of one stream: its last version ever written, its current version (what reads show;
none when it is deleted or truncated to its end), its truncation point, each soft deletion with its
time and the version its next life starts at, whether it is hard-deleted (a tombstone), and the
retention rules that cover it. Works for deleted streams too; a stream never written shows as such.

--json prints one JSON document.

Example:
  annals -s data/events info order-42
  annals -s postgres://shop@db.internal/shop info reading-7 --json";

/// `info STREAM`.
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// The stream.
    pub(crate) stream: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_parse() {
        assert_eq!(parse_expected("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected("no-stream"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse_expected("exists"), Ok(ExpectedVersion::StreamExists));
        assert_eq!(parse_expected("12"), Ok(ExpectedVersion::Exact(Version::new(12))));
        assert!(parse_expected("-1").is_err());
        assert!(parse_expected("latest").is_err());
    }
}
