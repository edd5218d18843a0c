//! The life of data in a gym's membership service, on an embedded sled store:
//!
//! - members join with their name and e-mail address, fields marked `#[event(personal)]`: the store
//!   keeps them encrypted with a key per member (`annals::personal::PersonalStore`);
//! - each check-in goes to the member's `checkin-` stream, and a retention rule keeps the last three
//!   per member;
//! - an abandoned trial is soft-deleted (it can start again, at its next version), and an account
//!   opened by fraud is hard-deleted (a tombstone: every later append is refused);
//! - Grace leaves and asks to be forgotten: `forget` destroys her key, and from then on every read,
//!   replay, export and look into the past shows her personal fields erased, while her plan, her
//!   check-ins and every position stay;
//! - a scavenge removes what reads no longer show, `verify` finds the store sound, and none of the
//!   store's files holds a member's name or address in clear.
//!
//! Run it with `cargo run --example data_lifecycle` (add a directory to keep the store:
//! `cargo run --example data_lifecycle -- /tmp/gym`, on a new directory). Its test,
//! `cargo test --example data_lifecycle`, checks the story the output tells.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use annals::personal::PersonalStore;
use annals::{
    export_jsonl, replay, scavenge, Aggregate, AsOf, CommandContext, DeleteMode, Event, EventStore, ExpectedVersion,
    HandlerError, LogFilter, NewEvent, Phase, Projection, RecordedEvent, Repository, RetentionPolicy, RetentionRule,
    RetentionScope, ScavengeOptions, SledStore, Start, StreamId, Until, Version,
};
use futures_util::TryStreamExt;

// ---------------------------------------------------------------------------------------------------
// The member aggregate. Its personal fields are `Option`s: once erased, they read back as `None`.

/// What happens to a membership.
#[derive(Event, Clone, Debug, PartialEq)]
enum MemberEvent {
    /// Someone joined.
    Joined {
        /// The member's id: whose personal data the marked fields are (stored in clear).
        #[event(subject)]
        member: String,
        /// Their name.
        #[event(personal)]
        name: Option<String>,
        /// Their e-mail address.
        #[event(personal)]
        email: Option<String>,
        /// The plan they chose.
        plan: String,
    },
    /// They gave a new address.
    EmailChanged {
        /// The member's id.
        #[event(subject)]
        member: String,
        /// The new address.
        #[event(personal)]
        email: Option<String>,
    },
}

/// What a member can be asked to do.
#[derive(Clone, Debug)]
enum MemberCommand {
    Join { member: String, name: String, email: String, plan: String },
    ChangeEmail { email: String },
}

/// Why a member refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
enum MemberError {
    #[error("already a member")]
    AlreadyJoined,
    #[error("not a member")]
    NotAMember,
}

/// A membership as the gym sees it.
#[derive(Aggregate, Clone, Debug, Default)]
#[aggregate(command = MemberCommand, event = MemberEvent, error = MemberError)]
struct Member {
    id: Option<String>,
    name: Option<String>,
    email: Option<String>,
    plan: Option<String>,
}

impl Member {
    fn handle(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, MemberError> {
        match (command, &self.id) {
            (MemberCommand::Join { .. }, Some(_)) => Err(MemberError::AlreadyJoined),
            (MemberCommand::ChangeEmail { .. }, None) => Err(MemberError::NotAMember),
            (MemberCommand::Join { member, name, email, plan }, None) => {
                Ok(vec![MemberEvent::Joined { member, name: Some(name), email: Some(email), plan }])
            }
            (MemberCommand::ChangeEmail { email }, Some(member)) => {
                Ok(vec![MemberEvent::EmailChanged { member: member.clone(), email: Some(email) }])
            }
        }
    }

    fn apply(&mut self, event: &MemberEvent) {
        match event {
            MemberEvent::Joined { member, name, email, plan } => {
                self.id = Some(member.clone());
                self.name = name.clone();
                self.email = email.clone();
                self.plan = Some(plan.clone());
            }
            MemberEvent::EmailChanged { email, .. } => self.email = email.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// A read model: the member directory, rebuilt from the log.

/// Every member with what the log says of them.
#[derive(Default)]
struct Directory {
    members: BTreeMap<String, (Option<String>, Option<String>, String)>,
}

#[async_trait::async_trait]
impl Projection for Directory {
    fn name(&self) -> &str {
        "directory"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(MemberEvent::event_types().iter().copied())
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        match MemberEvent::from_recorded(event)? {
            MemberEvent::Joined { member, name, email, plan } => {
                self.members.insert(member, (name, email, plan));
            }
            MemberEvent::EmailChanged { member, email } => {
                if let Some(entry) = self.members.get_mut(&member) {
                    entry.1 = email;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The story.

/// The store: sled, with personal fields encrypted on the way in and decrypted (or erased) on the
/// way out.
type Store = Arc<PersonalStore<SledStore>>;

/// What the story found, for its test.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the test
struct Outcome {
    directory: BTreeMap<String, (Option<String>, Option<String>, String)>,
    grace_at_version_1: Member,
    checkins_kept: Vec<u64>,
    trial_restarted_at: u64,
    fraud_refused: bool,
    removed: u64,
    export_mentions_grace_address: bool,
    files_mention_any_address: bool,
    verify_ok: bool,
    scavenged: u64,
}

async fn check_in(store: &Store, member: &str, visit: u32) -> Result<(), Box<dyn Error>> {
    let stream = StreamId::new(format!("checkin-{member}"))?;
    let event = NewEvent::json("CheckedIn", &serde_json::json!({ "visit": visit }))?;
    store.append(&stream, ExpectedVersion::Any, vec![event]).await?;
    Ok(())
}

async fn run(dir: &Path) -> Result<Outcome, Box<dyn Error>> {
    let store: Store = Arc::new(PersonalStore::new(SledStore::open(dir)?));
    let members = Repository::<Member, _>::new(Arc::clone(&store));
    let desk = CommandContext::new();

    println!("== Members join; their names and addresses are stored encrypted");
    for (name, email, plan) in [
        ("Ada", "ada@example.org", "yearly"),
        ("Grace", "grace@example.org", "monthly"),
        ("Linus", "linus@example.org", "yearly"),
    ] {
        let id = name.to_lowercase();
        let join =
            MemberCommand::Join { member: id.clone(), name: name.into(), email: email.into(), plan: plan.into() };
        members.execute(&id, join, &desk).await?;
        for visit in 1..=5 {
            check_in(&store, &id, visit).await?;
        }
        println!("   {name} joined ({plan}) and checked in 5 times");
    }
    members.execute("grace", MemberCommand::ChangeEmail { email: "grace@home.example".into() }, &desk).await?;

    println!("== Check-ins are kept by a rule: the last 3 per member");
    let rule = RetentionRule::new(RetentionScope::Prefix("checkin-".into()), RetentionPolicy::max_count(3));
    store.set_retention(rule).await?;

    println!("== An abandoned trial is soft-deleted, then started again");
    let trial = StreamId::new("trial-7")?;
    store.append(&trial, ExpectedVersion::NoStream, vec![NewEvent::raw("TrialStarted", "{}")]).await?;
    store.append(&trial, ExpectedVersion::Any, vec![NewEvent::raw("TrialVisit", "{}")]).await?;
    store.delete_stream(&trial, ExpectedVersion::Exact(Version::new(2)), DeleteMode::Soft).await?;
    let restarted = store.append(&trial, ExpectedVersion::NoStream, vec![NewEvent::raw("TrialStarted", "{}")]).await?;
    println!("   trial-7 reads as new and starts again at version {}", restarted.version);

    println!("== An account opened by fraud is deleted for good");
    let fraud = StreamId::new("member-mallory")?;
    store.append(&fraud, ExpectedVersion::NoStream, vec![NewEvent::raw("Suspicious", "{}")]).await?;
    store.delete_stream(&fraud, ExpectedVersion::Any, DeleteMode::Hard).await?;
    let refused = store.append(&fraud, ExpectedVersion::Any, vec![NewEvent::raw("Again", "{}")]).await;
    let fraud_refused = matches!(refused, Err(annals::Error::StreamDeleted { .. }));
    println!("   appending again: {}", refused.err().map_or("accepted".to_owned(), |e| e.to_string()));

    println!("== Grace leaves and asks to be forgotten");
    let forgotten = store.forget("grace").await?;
    println!("   {} key(s) destroyed", forgotten.keys_destroyed);

    println!("== A scavenge removes what reads no longer show");
    let report = scavenge(&store, ScavengeOptions::new(), |progress| {
        println!("   {:?} at {} of {}: {} removed", progress.phase, progress.position, progress.head, progress.removed);
    })
    .await?;
    println!(
        "   looked at {} events, removed {} ({} bytes), truncated {} streams by retention",
        report.examined, report.removed, report.bytes_removed, report.streams_truncated
    );

    println!("== What the log says now");
    let directory = replay(&store, Directory::default(), Start::Beginning, Until::default()).await?.members;
    for (member, (name, email, plan)) in &directory {
        let show = |field: &Option<String>| field.clone().unwrap_or_else(|| "(erased)".to_owned());
        println!("   {member}: {} <{}>, {plan}", show(name), show(email));
    }
    let grace_at_version_1 = members.load_as_of("grace", AsOf::Version(Version::FIRST)).await?.state;
    println!(
        "   Grace as she joined, read from the past: name {:?}, plan {:?}",
        grace_at_version_1.name, grace_at_version_1.plan
    );
    let checkins: Vec<RecordedEvent> =
        store.read_stream(&StreamId::new("checkin-ada")?, Default::default()).try_collect().await?;
    let checkins_kept = checkins.iter().map(|e| e.version.get()).collect::<Vec<_>>();
    println!("   Ada's check-ins kept: versions {checkins_kept:?}");
    let mut export = Vec::new();
    export_jsonl(store.as_ref(), &mut export).await?;
    let export = String::from_utf8(export)?;
    let export_mentions_grace_address = export.contains("grace@");

    drop(members);
    let store = Arc::try_unwrap(store).map_err(|_| "the store is still shared")?.into_inner();
    let check = store.verify()?;
    println!(
        "== verify: {} events, {} scavenged, {} deleted streams, {} truncated streams, {} problems",
        check.events,
        check.scavenged,
        check.deleted_streams,
        check.truncated_streams,
        check.problems.len()
    );
    drop(store);
    let files_mention_any_address = files_contain(dir, &["@example.org", "grace@home", "Grace", "Linus"])?;
    println!("   the store's files hold a name or an address in clear: {files_mention_any_address}");

    Ok(Outcome {
        directory,
        grace_at_version_1,
        checkins_kept,
        trial_restarted_at: restarted.version.get(),
        fraud_refused,
        removed: report.removed,
        export_mentions_grace_address,
        files_mention_any_address,
        verify_ok: check.is_ok(),
        scavenged: check.scavenged,
    })
}

/// Whether any file under `dir` contains one of `needles`.
fn files_contain(dir: &Path, needles: &[&str]) -> Result<bool, Box<dyn Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if files_contain(&path, needles)? {
                return Ok(true);
            }
        } else {
            let bytes = std::fs::read(&path)?;
            if needles.iter().any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes())) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| temp.path().join("gym"));
    run(&dir).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_story_holds() -> Result<(), Box<dyn Error>> {
        let temp = tempfile::tempdir()?;
        let outcome = tokio::runtime::Runtime::new()?.block_on(run(&temp.path().join("gym")))?;
        let ada = outcome.directory.get("ada").ok_or("no ada")?;
        assert_eq!(ada, &(Some("Ada".into()), Some("ada@example.org".into()), "yearly".into()));
        let grace = outcome.directory.get("grace").ok_or("no grace")?;
        assert_eq!(grace, &(None, None, "monthly".into()), "erased, and the plan kept");
        assert_eq!((outcome.grace_at_version_1.name, outcome.grace_at_version_1.plan), (None, Some("monthly".into())));
        assert_eq!(outcome.checkins_kept, [3, 4, 5]);
        assert_eq!(outcome.trial_restarted_at, 3, "versions are never reused");
        assert!(outcome.fraud_refused);
        // 3 members x 2 expired check-ins, the trial's first life, the fraud's event (Grace's key
        // went at once, with `forget`).
        assert_eq!(outcome.removed, 6 + 2 + 1);
        assert!(!outcome.export_mentions_grace_address);
        assert!(!outcome.files_mention_any_address);
        assert!(outcome.verify_ok);
        assert!(outcome.scavenged >= outcome.removed);
        Ok(())
    }
}
