//! The repository runs commands: load, handle, append with `Exact`, retry on conflicts, pass the
//! command context onto every event, append nothing for no events, keep business refusals apart from
//! store faults, and commit several aggregates atomically. Each property runs on both stores.

#![allow(clippy::panic)] // failing the test with the unexpected outcome is the point

mod common;

use std::sync::atomic::Ordering;

use annals::{
    CommandContext, CommandError, Error, EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadLog, ReadStream,
    Repository, SledStore, StreamId, Version,
};
use common::bank::{Account, AccountCommand, AccountError, AccountEvent};
use common::counting::Counting;
use futures_util::TryStreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open { owner: owner.into() }
}

fn deposit(amount_cents: u64) -> AccountCommand {
    AccountCommand::Deposit { amount_cents }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $name() -> super::TestResult {
                    super::$name(annals::MemoryStore::new()).await
                }
            )*
        }
        mod sled_store {
            $(
                #[tokio::test]
                async fn $name() -> super::TestResult {
                    let dir = tempfile::tempdir()?;
                    super::$name(annals::SledStore::open(dir.path())?).await
                }
            )*
        }
    };
}

on_both_stores!(
    a_new_aggregate_loads_as_default_at_version_zero,
    commands_append_events_and_report_versions_and_positions,
    the_context_metadata_is_on_every_produced_event,
    a_command_without_events_appends_nothing,
    a_business_refusal_is_rejected_and_writes_nothing,
    a_conflict_is_retried_on_the_reloaded_state,
    without_retries_a_conflict_is_a_store_error,
    concurrent_commands_on_one_aggregate_all_land_through_retries,
    an_atomic_command_over_two_aggregates_writes_both_or_neither,
    an_unknown_stored_event_type_is_a_typed_error_naming_the_event,
    a_payload_that_does_not_fit_is_a_typed_error_and_the_data_stays,
    an_event_from_a_newer_schema_is_a_typed_error,
);

async fn a_new_aggregate_loads_as_default_at_version_zero<S: EventStore>(store: S) -> TestResult {
    let repository = Repository::<Account, _>::new(store);
    let loaded = repository.load("nobody").await?;
    assert_eq!((loaded.state, loaded.version), (Account::default(), Version::ZERO));
    Ok(())
}

async fn commands_append_events_and_report_versions_and_positions<S: EventStore>(store: S) -> TestResult {
    let repository = Repository::<Account, _>::new(store);
    let context = CommandContext::new();
    let opened = repository.execute("a1", open("ada"), &context).await?;
    assert_eq!(opened.stream.as_str(), "account-a1");
    assert_eq!(opened.version, Version::new(1));
    assert_eq!(opened.events.len(), 1);
    assert_eq!(opened.events[0].event, AccountEvent::Opened { owner: "ada".into() });
    assert_eq!((opened.events[0].version.get(), opened.events[0].position.get()), (1, 1));
    let deposited = repository.execute("a1", deposit(250), &context).await?;
    assert_eq!((deposited.version.get(), deposited.last_position().map(|p| p.get())), (2, Some(2)));
    let loaded = repository.load("a1").await?;
    assert_eq!(loaded.version, Version::new(2));
    assert_eq!(loaded.state.balance_cents, 250);
    assert_eq!(loaded.state.owner.as_deref(), Some("ada"));
    Ok(())
}

async fn the_context_metadata_is_on_every_produced_event<S: EventStore>(store: S) -> TestResult {
    let repository = Repository::<Account, _>::new(store);
    let context = CommandContext::new().correlation_id("req-9").causation_id("cmd-3").header("user", "grace");
    repository.execute("a1", open("grace"), &context).await?;
    repository.execute("a1", deposit(5), &context).await?;
    let events: Vec<_> = repository.store().read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(events.len(), 2);
    for event in events {
        assert_eq!(&event.metadata, context.metadata(), "{}", event.event_type);
    }
    Ok(())
}

async fn a_command_without_events_appends_nothing<S: EventStore>(store: S) -> TestResult {
    let repository = Repository::<Account, _>::new(store);
    let context = CommandContext::new();
    repository.execute("a1", open("ada"), &context).await?;
    let committed = repository.execute("a1", AccountCommand::Noop, &context).await?;
    assert!(committed.events.is_empty());
    assert_eq!(committed.version, Version::new(1));
    assert_eq!(committed.last_position(), None);
    assert_eq!(repository.store().head().await?.get(), 1);
    Ok(())
}

async fn a_business_refusal_is_rejected_and_writes_nothing<S: EventStore>(store: S) -> TestResult {
    let repository = Repository::<Account, _>::new(store);
    let context = CommandContext::new();
    repository.execute("a1", open("ada"), &context).await?;
    repository.execute("a1", deposit(100), &context).await?;
    let refused = repository.execute("a1", AccountCommand::Withdraw { amount_cents: 101 }, &context).await;
    match refused {
        Err(CommandError::Rejected(error)) => {
            assert_eq!(error, AccountError::InsufficientFunds { balance: 100, asked: 101 });
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(repository.store().head().await?.get(), 2);
    let never_opened = repository.execute("b2", deposit(1), &context).await;
    assert!(matches!(never_opened, Err(CommandError::Rejected(AccountError::NotOpen))), "{never_opened:?}");
    Ok(())
}

async fn a_conflict_is_retried_on_the_reloaded_state<S: EventStore + Clone>(store: S) -> TestResult {
    let store = Counting::new(store);
    let repository = Repository::<Account, _>::new(store.clone());
    let context = CommandContext::new();
    repository.execute("a1", open("ada"), &context).await?;
    store.interfere_once.store(true, Ordering::SeqCst);
    let committed = repository.execute("a1", deposit(10), &context).await?;
    // The sneaky writer's deposit of 1 landed at version 2, ours after it.
    assert_eq!(committed.version, Version::new(3));
    assert_eq!(repository.load("a1").await?.state.balance_cents, 11);
    Ok(())
}

async fn without_retries_a_conflict_is_a_store_error<S: EventStore + Clone>(store: S) -> TestResult {
    let store = Counting::new(store);
    let repository = Repository::<Account, _>::new(store.clone()).with_max_retries(0);
    let context = CommandContext::new();
    repository.execute("a1", open("ada"), &context).await?;
    store.interfere_once.store(true, Ordering::SeqCst);
    let outcome = repository.execute("a1", deposit(10), &context).await;
    match outcome {
        Err(CommandError::Store(Error::WrongExpectedVersion { stream, expected, actual })) => {
            assert_eq!(stream.as_str(), "account-a1");
            assert_eq!(expected, ExpectedVersion::Exact(Version::new(1)));
            assert_eq!(actual, Some(Version::new(2)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    Ok(())
}

async fn concurrent_commands_on_one_aggregate_all_land_through_retries<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let repository = std::sync::Arc::new(Repository::<Account, _>::new(store).with_max_retries(1000));
    repository.execute("hot", open("ada"), &CommandContext::new()).await?;
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let repository = repository.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u64 {
                repository.execute("hot", deposit(task * 100 + i), &CommandContext::new()).await?;
            }
            Ok::<_, CommandError<AccountError>>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let loaded = repository.load("hot").await?;
    let expected: u64 = (0..8u64).flat_map(|t| (0..10u64).map(move |i| t * 100 + i)).sum();
    assert_eq!((loaded.version.get(), loaded.state.balance_cents), (81, expected));
    Ok(())
}

async fn an_atomic_command_over_two_aggregates_writes_both_or_neither<S: EventStore>(store: S) -> TestResult {
    let repository = Repository::<Account, _>::new(store);
    let context = CommandContext::new();
    repository.execute("from", open("ada"), &context).await?;
    repository.execute("from", deposit(500), &context).await?;
    repository.execute("to", open("bob"), &context).await?;
    let transfer = |amount_cents| {
        vec![
            ("from".to_owned(), AccountCommand::Withdraw { amount_cents }),
            ("to".to_owned(), AccountCommand::Deposit { amount_cents }),
        ]
    };
    let committed = repository.execute_atomic(transfer(200), &context).await?;
    assert_eq!(committed.len(), 2);
    let positions: Vec<_> = committed.iter().flat_map(|c| &c.events).map(|e| e.position.get()).collect();
    assert_eq!(positions, [4, 5], "one atomic append takes contiguous positions");
    let refused = repository.execute_atomic(transfer(301), &context).await;
    assert!(matches!(refused, Err(CommandError::Rejected(AccountError::InsufficientFunds { .. }))), "{refused:?}");
    assert_eq!(repository.store().head().await?.get(), 5, "a refused transfer writes neither side");
    assert_eq!(repository.load("from").await?.state.balance_cents, 300);
    assert_eq!(repository.load("to").await?.state.balance_cents, 200);
    Ok(())
}

async fn an_unknown_stored_event_type_is_a_typed_error_naming_the_event<S: EventStore>(store: S) -> TestResult {
    let stream = StreamId::new("account-x")?;
    store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::raw("Opened", r#"{"owner":"x"}"#)]).await?;
    store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Frozen", "{}")]).await?;
    let repository = Repository::<Account, _>::new(store);
    match repository.load("x").await {
        Err(Error::UnknownEventType { stream, version, event_type }) => {
            assert_eq!((stream.as_str(), version.get(), event_type.as_str()), ("account-x", 2, "Frozen"));
        }
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
    Ok(())
}

async fn a_payload_that_does_not_fit_is_a_typed_error_and_the_data_stays<S: EventStore>(store: S) -> TestResult {
    let stream = StreamId::new("account-x")?;
    let odd = NewEvent::raw("Opened", r#"{"owner":42}"#);
    store.append(&stream, ExpectedVersion::NoStream, vec![odd]).await?;
    let repository = Repository::<Account, _>::new(store);
    match repository.load("x").await {
        Err(Error::Deserialize { stream, version, event_type, .. }) => {
            assert_eq!((stream.as_str(), version.get(), event_type.as_str()), ("account-x", 1, "Opened"));
        }
        other => panic!("expected Deserialize, got {other:?}"),
    }
    let stored: Vec<_> = repository.store().read_stream(&stream, ReadStream::forward()).try_collect().await?;
    assert_eq!(stored[0].payload, r#"{"owner":42}"#, "the stored payload is untouched");
    Ok(())
}

async fn an_event_from_a_newer_schema_is_a_typed_error<S: EventStore>(store: S) -> TestResult {
    let stream = StreamId::new("account-x")?;
    let newer = NewEvent::raw("Opened", r#"{"owner":"x","kyc":true}"#).with_schema_version(7);
    store.append(&stream, ExpectedVersion::NoStream, vec![newer]).await?;
    let repository = Repository::<Account, _>::new(store);
    match repository.load("x").await {
        Err(Error::SchemaVersion { found, expected, version, .. }) => {
            assert_eq!((found, expected, version.get()), (7, 1, 1));
        }
        other => panic!("expected SchemaVersion, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_same_aggregate_type_on_both_stores_gives_the_same_history() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sled = Repository::<Account, _>::new(SledStore::open(dir.path())?);
    let memory = Repository::<Account, _>::new(MemoryStore::new());
    let context = CommandContext::new();
    for command in [open("ada"), deposit(3), AccountCommand::Withdraw { amount_cents: 2 }, deposit(9)] {
        let a = sled.execute("s", command.clone(), &context).await?;
        let b = memory.execute("s", command, &context).await?;
        assert_eq!((a.version, &a.events), (b.version, &b.events));
    }
    assert_eq!(sled.load("s").await?, memory.load("s").await?);
    Ok(())
}
