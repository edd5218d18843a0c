//! `annals verify`: the library's full check of a sled store's bytes, or a logical check of a
//! PostgreSQL store through the event store's API, with exit code 2 for damage.

use std::collections::{HashMap, HashSet};

use annals::{EventStore, Position, ReadLog, SledStore, StreamId, StreamInfo, Version};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde_json::json;

use crate::failure::Failure;
use crate::output::{table, Output};

/// Runs [`SledStore::verify`] (it blocks: no runtime needed) and prints its report.
pub(super) fn run_sled(store: &SledStore, out: &mut Output) -> Result<(), Failure> {
    let report = store.verify()?;
    if out.json() {
        let problems: Vec<_> =
            report.problems.iter().map(|p| json!({ "position": p.position.get(), "what": p.what })).collect();
        out.json_line(&json!({
            "ok": report.is_ok(),
            "events": report.events,
            "records": report.records,
            "streams": report.streams,
            "index_entries": report.index_entries,
            "checkpoints": report.checkpoints,
            "snapshots": report.snapshots,
            "scavenged": report.scavenged,
            "deleted_streams": report.deleted_streams,
            "truncated_streams": report.truncated_streams,
            "problems": problems,
        }))?;
    } else {
        let mut rows: Vec<Vec<String>> = [
            ("events:", report.events),
            ("log records:", report.records),
            ("streams:", report.streams),
            ("index entries:", report.index_entries),
            ("checkpoints:", report.checkpoints),
            ("snapshots:", report.snapshots),
        ]
        .map(|(name, n)| vec![name.to_owned(), n.to_string()])
        .to_vec();
        // The life of streams: information, not damage (shown only when there is some).
        let lifecycle = [
            ("scavenged:", report.scavenged, "event(s) removed by scavenges, which reads skip (not damage)"),
            ("deleted streams:", report.deleted_streams, "hard- or soft-deleted (not damage)"),
            ("truncated streams:", report.truncated_streams, "reads start past version 1 (not damage)"),
        ];
        for (name, n, what) in lifecycle.into_iter().filter(|(_, n, _)| *n > 0) {
            rows.push(vec![name.to_owned(), format!("{n} {what}")]);
        }
        for line in table(&rows) {
            out.line(line)?;
        }
        if report.is_ok() {
            out.line("no problems found")?;
        } else {
            out.line(format!("{} problem(s):", report.problems.len()))?;
            for problem in &report.problems {
                out.line(format!("  {problem}"))?;
            }
        }
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(Failure::Damaged { problems: report.problems.len() })
    }
}

/// What the logical check of a store found.
#[derive(Default)]
struct Logical {
    head: Position,
    events: u64,
    streams: u64,
    checkpoints: u64,
    snapshots: u64,
    /// Positions up to the head with no event: events a scavenge removed (the store's reader answers
    /// [`annals::Error::Corrupt`] for any other missing event).
    scavenged: u64,
    /// How many runs of removed positions there are.
    gaps: u64,
    /// Streams with events in the log that reads show nothing of: hard-deleted, soft-deleted (and
    /// not started again) or truncated to their end.
    deleted: u64,
    /// Each problem: where (`Position::ZERO`: not about one event) and what.
    problems: Vec<(Position, String)>,
}

/// A run of versions of one stream the log walk did not see, to be judged against the stream's
/// life once the walk is over.
struct VersionGap {
    stream: StreamId,
    /// The position of the event after the gap.
    position: u64,
    /// The version expected there.
    expected: u64,
    /// The version found.
    found: u64,
}

impl Logical {
    fn problem(&mut self, position: u64, what: String) {
        self.problems.push((Position::new(position), what));
    }
}

/// Checks the store through the [`EventStore`] API only (for PostgreSQL, whose bytes the database
/// looks after), and prints the report like [`run_sled`].
pub(super) async fn run_logical(store: &dyn EventStore, out: &mut Output) -> Result<(), Failure> {
    let report = check(store).await?;
    if out.json() {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|(position, what)| json!({ "position": position.get(), "what": what }))
            .collect();
        out.json_line(&json!({
            "ok": report.problems.is_empty(),
            "check": "logical",
            "head": report.head.get(),
            "events": report.events,
            "streams": report.streams,
            "checkpoints": report.checkpoints,
            "snapshots": report.snapshots,
            "scavenged": report.scavenged,
            "gaps": report.gaps,
            "deleted_streams": report.deleted,
            "problems": problems,
        }))?;
    } else {
        out.line(format!("logical check of the log up to position {} (through the event store's API)", report.head))?;
        let mut rows: Vec<Vec<String>> = [
            ("events:", report.events),
            ("streams:", report.streams),
            ("checkpoints:", report.checkpoints),
            ("snapshots:", report.snapshots),
        ]
        .map(|(name, n)| vec![name.to_owned(), n.to_string()])
        .to_vec();
        rows.extend(lifecycle_rows(&report));
        for line in table(&rows) {
            out.line(line)?;
        }
        if report.problems.is_empty() {
            out.line("no problems found")?;
        } else {
            out.line(format!("{} problem(s):", report.problems.len()))?;
            for (position, what) in &report.problems {
                out.line(format!("  position {position}: {what}"))?;
            }
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Damaged { problems: report.problems.len() })
    }
}

/// The whole check: the log up to the head as it is now, then the stream table, the checkpoints
/// and the snapshots. A record that does not decode ends it with the store's error
/// ([`annals::Error::Corrupt`], exit code 2).
async fn check(store: &dyn EventStore) -> Result<Logical, Failure> {
    let mut report = Logical { head: store.head().await?, ..Logical::default() };
    let (versions, gaps) = check_log(store, &mut report).await?;
    check_version_gaps(store, &mut report, gaps).await?;
    let listed = store.list_streams("").await?;
    // Applications may have appended since the head was read: then a stream may be listed past the
    // events read, or listed without any.
    let grew = store.head().await? != report.head;
    check_streams(store, &mut report, &versions, &listed, grew).await?;
    report.streams = versions.len() as u64;
    report.checkpoints = store.list_checkpoints("").await?.len() as u64;
    for (stream, _) in &listed {
        let mut at = Some(Version::MAX);
        while let Some(version) = at {
            let Some(snapshot) = store.load_snapshot(stream, version).await? else { break };
            report.snapshots += 1;
            at = snapshot.version.get().checked_sub(1).map(Version::new);
        }
    }
    Ok(report)
}

/// What the check saw of the life of streams (none of it is damage), as rows after the counts.
fn lifecycle_rows(report: &Logical) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if report.scavenged > 0 {
        rows.push(vec![
            "scavenged:".to_owned(),
            format!(
                "{} event(s) removed by scavenges, in {} gap(s), which reads skip (not damage)",
                report.scavenged, report.gaps
            ),
        ]);
    }
    if report.deleted > 0 {
        rows.push(vec![
            "deleted streams:".to_owned(),
            format!("{} with events in the log until a scavenge (not damage)", report.deleted),
        ]);
    }
    rows
}

/// Reads the log up to the report's head: positions never going back (a gap is what a scavenge
/// removed: the store's reader refuses any other), recorded times never going back, unique ids,
/// each stream's versions from 1 without a gap but for the gaps [`check_version_gaps`] judges.
/// Returns each stream's last version read, and those gaps.
async fn check_log(
    store: &dyn EventStore,
    report: &mut Logical,
) -> Result<(HashMap<StreamId, u64>, Vec<VersionGap>), Failure> {
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut gaps = Vec::new();
    let mut ids = HashSet::new();
    let mut next = 1;
    let mut last_recorded: Option<DateTime<Utc>> = None;
    let mut events = store.read_log(ReadLog::from_start().until_position(report.head));
    while let Some(event) = events.try_next().await? {
        let position = event.position.get();
        if position > next {
            report.scavenged += position - next;
            report.gaps += 1;
        } else if position < next {
            report.problem(position, format!("comes after position {}: out of order", next - 1));
        }
        next = position + 1;
        if last_recorded.is_some_and(|last| event.recorded_at < last) {
            report.problem(position, "recorded_at goes back in time".to_owned());
        }
        last_recorded = Some(event.recorded_at);
        if !ids.insert(event.id) {
            report.problem(position, format!("event id {} is stored twice", event.id));
        }
        let version = versions.entry(event.stream.clone()).or_insert(0);
        let (expected, found) = (*version + 1, event.version.get());
        if found > expected {
            gaps.push(VersionGap { stream: event.stream.clone(), position, expected, found });
        } else if found < expected {
            report.problem(position, format!("{} version {found}, expected {expected}", event.stream));
        }
        *version = found;
        report.events += 1;
    }
    if next <= report.head.get() {
        // The last events up to the head were removed.
        report.scavenged += report.head.get() + 1 - next;
        report.gaps += 1;
    }
    Ok((versions, gaps))
}

/// Versions missing from a stream are what a scavenge removed when they are below its truncation
/// point, or when it is hard-deleted; any other missing version is damage.
async fn check_version_gaps(
    store: &dyn EventStore,
    report: &mut Logical,
    gaps: Vec<VersionGap>,
) -> Result<(), Failure> {
    let mut lives: HashMap<StreamId, StreamInfo> = HashMap::new();
    for gap in gaps {
        let info = match lives.get(&gap.stream) {
            Some(info) => info,
            None => {
                let info = store.stream_info(&gap.stream).await?;
                lives.entry(gap.stream.clone()).or_insert(info)
            }
        };
        let last_missing = Version::new(gap.found - 1);
        if !info.is_removable(last_missing) {
            report.problem(gap.position, format!("{} version {}, expected {}", gap.stream, gap.found, gap.expected));
        }
    }
    Ok(())
}

/// The stream table against the log: every stream of the log listed at the version read, but for
/// those hard-deleted, soft-deleted or truncated to their end; and no other (when the store `grew`
/// meanwhile, listed versions may be ahead and new streams listed).
async fn check_streams(
    store: &dyn EventStore,
    report: &mut Logical,
    versions: &HashMap<StreamId, u64>,
    listed: &[(StreamId, Version)],
    grew: bool,
) -> Result<(), Failure> {
    for (stream, version) in listed {
        match versions.get(stream) {
            None if !grew => {
                report.problem(0, format!("stream {stream} is listed at version {version} but has no events"))
            }
            Some(read) if version.get() < *read || (!grew && version.get() != *read) => {
                report.problem(0, format!("stream {stream} is listed at version {version}, its events reach {read}"))
            }
            _ => {}
        }
    }
    let listed: HashSet<&StreamId> = listed.iter().map(|(stream, _)| stream).collect();
    let mut missing: Vec<&StreamId> = versions.keys().filter(|stream| !listed.contains(stream)).collect();
    missing.sort();
    for stream in missing {
        let info = store.stream_info(stream).await?;
        if info.tombstone || info.is_empty() {
            report.deleted += 1;
        } else {
            report.problem(0, format!("stream {stream} has events but is not listed"));
        }
    }
    Ok(())
}
