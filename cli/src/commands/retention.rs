//! `annals retention set|list|remove`: the retention rules saved in a store.

use annals::{EventStore, RetentionPolicy, RetentionRule, RetentionScope, StreamId};
use serde_json::{json, Value};

use crate::cli::{RetentionCommand, RetentionScopeArgs, RetentionSetArgs};
use crate::failure::Failure;
use crate::output::{table, Output};
use crate::time::format_duration;

pub(super) async fn run(store: &dyn EventStore, command: RetentionCommand, out: &mut Output) -> Result<(), Failure> {
    match command {
        RetentionCommand::Set(args) => set(store, args, out).await,
        RetentionCommand::List => list(store, out).await,
        RetentionCommand::Remove(args) => remove(store, args, out).await,
    }
}

/// The scope `--stream` or `--prefix` names (clap makes sure there is exactly one).
fn scope(args: &RetentionScopeArgs) -> Result<RetentionScope, Failure> {
    match (&args.stream, &args.prefix) {
        (Some(stream), None) => Ok(RetentionScope::Stream(StreamId::new(stream.as_str())?)),
        (None, Some(prefix)) => Ok(RetentionScope::Prefix(prefix.clone())),
        _ => Err(Failure::Usage("give one of --stream and --prefix".to_owned())),
    }
}

/// What a policy keeps, for people: `max age 30d, max count 10000`.
pub(super) fn describe_policy(policy: &RetentionPolicy) -> String {
    let age = policy.max_age.map(|age| format!("max age {}", format_duration(age)));
    let count = policy.max_count.map(|count| format!("max count {count}"));
    let parts: Vec<String> = age.into_iter().chain(count).collect();
    if parts.is_empty() {
        "keeps everything".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A rule as `--json` prints it: `{"stream": ...}` or `{"prefix": ...}`, with the age (as typed
/// and in seconds) and the count.
pub(super) fn rule_json(rule: &RetentionRule) -> Value {
    let mut value = match &rule.scope {
        RetentionScope::Stream(stream) => json!({ "stream": stream.as_str() }),
        RetentionScope::Prefix(prefix) => json!({ "prefix": prefix }),
    };
    value["max_age"] = json!(rule.policy.max_age.map(format_duration));
    value["max_age_seconds"] = json!(rule.policy.max_age.map(|age| age.as_secs()));
    value["max_count"] = json!(rule.policy.max_count);
    value
}

async fn set(store: &dyn EventStore, args: RetentionSetArgs, out: &mut Output) -> Result<(), Failure> {
    let scope = scope(&args.scope)?;
    let policy = RetentionPolicy { max_age: args.max_age, max_count: args.max_count };
    let rule = RetentionRule::new(scope, policy);
    store.set_retention(rule.clone()).await?;
    if out.json() {
        return Ok(out.json_line(&rule_json(&rule))?);
    }
    Ok(out.line(format!(
        "retention of {}: {}; `annals scavenge` applies it",
        rule.scope,
        describe_policy(&rule.policy)
    ))?)
}

async fn list(store: &dyn EventStore, out: &mut Output) -> Result<(), Failure> {
    let mut rules = store.retention_rules().await?;
    // Streams first, then prefixes, each by name (the store lists them by checkpoint name).
    rules.sort_by(|a, b| a.scope.cmp(&b.scope));
    if out.json() {
        for rule in &rules {
            out.json_line(&rule_json(rule))?;
        }
        return Ok(());
    }
    if rules.is_empty() {
        return Ok(out.line("(no retention rules)")?);
    }
    let mut rows = vec![["SCOPE", "MAX AGE", "MAX COUNT"].map(str::to_owned).to_vec()];
    for rule in &rules {
        let dash = || "-".to_owned();
        rows.push(vec![
            rule.scope.to_string(),
            rule.policy.max_age.map_or_else(dash, format_duration),
            rule.policy.max_count.map_or_else(dash, |n| n.to_string()),
        ]);
    }
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}

async fn remove(store: &dyn EventStore, args: RetentionScopeArgs, out: &mut Output) -> Result<(), Failure> {
    let scope = scope(&args)?;
    if !store.remove_retention(&scope).await? {
        return Err(Failure::Usage(format!("there is no retention rule for {scope}: nothing removed")));
    }
    if out.json() {
        let mut removed = rule_json(&RetentionRule::new(scope, RetentionPolicy::default()));
        if let Some(fields) = removed.as_object_mut() {
            fields.retain(|key, _| key == "stream" || key == "prefix");
            fields.insert("removed".to_owned(), json!(true));
        }
        return Ok(out.json_line(&removed)?);
    }
    Ok(out.line(format!("removed the retention rule of {scope}"))?)
}
