//! `annals info`, `annals delete` and `annals truncate`: the life of one stream, shown and changed.

use annals::{DeleteMode, EventStore, StreamId, StreamInfo, Version};
use serde_json::json;

use super::retention::{describe_policy, rule_json};
use crate::cli::{DeleteArgs, InfoArgs, TruncateArgs};
use crate::failure::Failure;
use crate::output::{self, table, Output};

/// `info STREAM`.
pub(super) async fn info(store: &dyn EventStore, args: InfoArgs, out: &mut Output) -> Result<(), Failure> {
    let stream = StreamId::new(args.stream.as_str())?;
    let info = store.stream_info(&stream).await?;
    let mut rules: Vec<_> = store.retention_rules().await?.into_iter().filter(|r| r.scope.covers(&stream)).collect();
    rules.sort_by(|a, b| a.scope.cmp(&b.scope));
    let version = |v: Option<Version>| v.map(Version::get);
    if out.json() {
        let deletions: Vec<_> = info
            .soft_deletions
            .iter()
            .map(|d| json!({ "next_version": d.next_version.get(), "at": output::time(d.at) }))
            .collect();
        out.json_line(&json!({
            "stream": stream.as_str(),
            "last_version": version(info.last_version),
            "current_version": version(info.current_version()),
            "truncated_before": info.truncated_before.get(),
            "soft_deletions": deletions,
            "tombstone": info.tombstone,
            "retention": rules.iter().map(rule_json).collect::<Vec<_>>(),
        }))?;
        return Ok(());
    }
    let or_none = |v: Option<Version>, none: &str| v.map_or_else(|| none.to_owned(), |v| v.to_string());
    let current = if info.tombstone {
        "none (hard-deleted)".to_owned()
    } else if info.last_version.is_none() {
        "none (never written)".to_owned()
    } else if info.soft_deletions.last().is_some_and(|d| d.next_version > info.last_version.unwrap_or(Version::ZERO)) {
        "none (deleted)".to_owned()
    } else {
        or_none(info.current_version(), "none (truncated to its end)")
    };
    let truncated = if info.truncated_before == Version::FIRST {
        "1 (nothing truncated)".to_owned()
    } else {
        info.truncated_before.to_string()
    };
    let mut rows = vec![
        vec!["last version:".to_owned(), or_none(info.last_version, "none (never written)")],
        vec!["current version:".to_owned(), current],
        vec!["truncated before:".to_owned(), truncated],
    ];
    if info.soft_deletions.is_empty() {
        rows.push(vec!["soft deleted:".to_owned(), "never".to_owned()]);
    }
    for deletion in &info.soft_deletions {
        let last = deletion.next_version.get().saturating_sub(1);
        rows.push(vec![
            "soft deleted:".to_owned(),
            format!(
                "{}, at version {last} (the next life starts at {})",
                output::time(deletion.at),
                deletion.next_version
            ),
        ]);
    }
    let tombstone = if info.tombstone { "yes (a tombstone: reads and appends fail)" } else { "no" };
    rows.push(vec!["hard-deleted:".to_owned(), tombstone.to_owned()]);
    if rules.is_empty() {
        rows.push(vec!["retention:".to_owned(), "no rule".to_owned()]);
    }
    for rule in &rules {
        rows.push(vec!["retention:".to_owned(), format!("{}: {}", rule.scope, describe_policy(&rule.policy))]);
    }
    out.line(format!("stream {stream:?}"))?;
    for line in table(&rows) {
        out.line(format!("  {line}"))?;
    }
    Ok(())
}

/// The name of a deletion mode, as `--json` prints it.
fn mode_name(mode: DeleteMode) -> &'static str {
    match mode {
        DeleteMode::Soft => "soft",
        DeleteMode::Hard => "hard",
    }
}

/// `delete STREAM [--hard] [--expected-version V] --yes`.
pub(super) async fn delete(store: &dyn EventStore, args: DeleteArgs, out: &mut Output) -> Result<(), Failure> {
    let stream = StreamId::new(args.stream.as_str())?;
    let mode = if args.hard { DeleteMode::Hard } else { DeleteMode::Soft };
    let before = store.stream_info(&stream).await?;
    if before.tombstone {
        return Err(annals::Error::StreamDeleted { stream }.into());
    }
    if !args.yes {
        return Err(refuse_delete(&stream, &before, mode));
    }
    store.delete_stream(&stream, args.expected_version, mode).await?;
    let after = store.stream_info(&stream).await?;
    let changed = after != before;
    let version = before.current_version();
    let deletion = after.soft_deletions.last().filter(|_| changed && mode == DeleteMode::Soft);
    if out.json() {
        out.json_line(&json!({
            "stream": stream.as_str(),
            "mode": mode_name(mode),
            "changed": changed,
            "version": version.map(Version::get),
            "next_version": deletion.map(|d| d.next_version.get()),
            "at": deletion.map(|d| output::time(d.at)),
        }))?;
        return Ok(());
    }
    let kept = "its events stay in the log until `annals scavenge` removes them";
    let at = version.map_or_else(String::new, |v| format!(" at version {v}"));
    let line = match (mode, deletion) {
        (DeleteMode::Hard, _) => {
            format!("hard-deleted stream {stream:?}{at}: reads of it and appends to it fail from now on; {kept}")
        }
        (DeleteMode::Soft, Some(deletion)) => format!(
            "soft-deleted stream {stream:?}{at}: reads show no events; an append starts it again at version {}; {kept}",
            deletion.next_version
        ),
        (DeleteMode::Soft, None) => format!("stream {stream:?} has no events to delete: nothing changed"),
    };
    Ok(out.line(line)?)
}

/// Why `delete` without `--yes` does nothing, saying what it would do.
fn refuse_delete(stream: &StreamId, info: &StreamInfo, mode: DeleteMode) -> Failure {
    let what = match (mode, info.current_version()) {
        (DeleteMode::Soft, None) => "it has no events now, so nothing would change".to_owned(),
        (DeleteMode::Soft, Some(version)) => format!(
            "it would be soft-deleted at version {version}: its events hidden from reads, kept in the log until a \
             scavenge"
        ),
        (DeleteMode::Hard, version) => format!(
            "it would be hard-deleted{}, for good: a tombstone, every read and append of it failing from then on",
            version.map_or_else(String::new, |v| format!(" at version {v}"))
        ),
    };
    Failure::Usage(format!("not deleting stream {stream:?} without --yes: {what}; add --yes to delete it"))
}

/// `truncate STREAM --before V --yes`.
pub(super) async fn truncate(store: &dyn EventStore, args: TruncateArgs, out: &mut Output) -> Result<(), Failure> {
    let stream = StreamId::new(args.stream.as_str())?;
    let before = Version::new(args.before);
    let info = store.stream_info(&stream).await?;
    if info.tombstone {
        return Err(annals::Error::StreamDeleted { stream }.into());
    }
    let end = info.last_version.unwrap_or(Version::ZERO).next();
    if before > end {
        return Err(annals::Error::InvalidTruncation { stream, before, last: info.last_version }.into());
    }
    if !args.yes {
        let what = if before <= info.truncated_before {
            format!("it is truncated before version {} already, so nothing would change", info.truncated_before)
        } else {
            format!(
                "versions {} to {} would be hidden from reads, kept in the log until a scavenge",
                info.truncated_before,
                before.get() - 1
            )
        };
        return Err(Failure::Usage(format!(
            "not truncating stream {stream:?} without --yes: {what}; add --yes to truncate it"
        )));
    }
    store.truncate_stream(&stream, before).await?;
    let after = store.stream_info(&stream).await?;
    let changed = after.truncated_before != info.truncated_before;
    if out.json() {
        out.json_line(&json!({
            "stream": stream.as_str(),
            "changed": changed,
            "truncated_before": after.truncated_before.get(),
            "last_version": after.last_version.map(Version::get),
        }))?;
        return Ok(());
    }
    let line = if changed {
        format!(
            "stream {stream:?} now starts at version {}: versions {} to {} are hidden from reads and stay in the log \
             until `annals scavenge` removes them",
            after.truncated_before,
            info.truncated_before,
            after.truncated_before.get() - 1
        )
    } else {
        format!("stream {stream:?} is truncated before version {} already: nothing changed", after.truncated_before)
    };
    Ok(out.line(line)?)
}
