//! SQL read models on PostgreSQL: a projection's tables and its checkpoint move in one transaction,
//! so every event is applied exactly once across stops, restarts and competing projectors of the
//! same name, a failing batch leaves tables and checkpoint untouched, and another connection (another
//! process) reads the model with plain SQL.
#![cfg(feature = "postgres")]
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/postgres.rs"]
mod postgres_support;

use std::time::Duration;

use annals::tokio_postgres::{NoTls, Transaction};
use annals::{
    Error, EventStore, ExpectedVersion, HandlerError, LogFilter, NewEvent, PostgresStore, RecordedEvent, SqlProjection,
    SqlProjector, StreamId,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(20);

/// Sums each account's deposits into `<table>`, and counts how often each event was applied in
/// `<table>_applied` (a second application of one event would show there).
struct Balances {
    table: String,
    /// Fail on the event with this amount.
    poison: Option<i64>,
}

#[async_trait::async_trait]
impl SqlProjection for Balances {
    fn name(&self) -> &str {
        &self.table
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["Deposited"])
    }

    async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        let t = &self.table;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (account text PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS {t}_applied (position bigint PRIMARY KEY, times int NOT NULL);"
        ))
        .await?;
        Ok(())
    }

    async fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let amount: i64 = event.payload_as::<serde_json::Value>()?["amount"].as_i64().ok_or("no amount")?;
        let t = &self.table;
        tx.execute(
            &format!(
                "INSERT INTO {t} (account, balance) VALUES ($1, $2) \
                 ON CONFLICT (account) DO UPDATE SET balance = {t}.balance + excluded.balance"
            ),
            &[&event.stream.as_str(), &amount],
        )
        .await?;
        tx.execute(
            &format!(
                "INSERT INTO {t}_applied (position, times) VALUES ($1, 1) \
                 ON CONFLICT (position) DO UPDATE SET times = {t}_applied.times + 1"
            ),
            &[&(event.position.get() as i64)],
        )
        .await?;
        if self.poison == Some(amount) {
            return Err(format!("amount {amount} is poison").into());
        }
        Ok(())
    }
}

fn balances(table: &str) -> Balances {
    Balances { table: table.to_owned(), poison: None }
}

/// Deposits `amount` into `account`, with an event the filter leaves out in between.
async fn deposit(store: &PostgresStore, account: &str, amount: i64) -> Result<annals::Position, Error> {
    let stream = StreamId::new(account)?;
    let deposit = NewEvent::json("Deposited", &serde_json::json!({ "amount": amount }))?;
    let noise = NewEvent::raw("Viewed", "{}");
    Ok(store.append(&stream, ExpectedVersion::Any, vec![deposit, noise]).await?.last_position)
}

/// What a separate connection (as another process would) reads of the model: balances by account,
/// and the most times any event was applied.
async fn read_model(table: &str) -> Result<(Vec<(String, i64)>, i32), Box<dyn std::error::Error>> {
    let (client, connection) = annals::tokio_postgres::connect(&postgres_support::url()?, NoTls).await?;
    tokio::spawn(connection);
    let rows = client.query(&format!("SELECT account, balance FROM {table} ORDER BY account"), &[]).await?;
    let balances = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let most = client.query_one(&format!("SELECT coalesce(max(times), 0) FROM {table}_applied"), &[]).await?.get(0);
    Ok((balances, most))
}

fn expected(deposits: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for (account, amount) in deposits {
        *sums.entry((*account).to_owned()).or_default() += amount;
    }
    sums.into_iter().collect()
}

fn table_name() -> String {
    postgres_support::fresh_schema().replace('t', "rm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_applied_exactly_once_across_stops_and_restarts() -> TestResult {
    let store = postgres_support::fresh_config()?.open().await?;
    let table = table_name();
    let mut deposits = Vec::new();
    for i in 0..30i64 {
        let account = ["acct-a", "acct-b", "acct-c"][i as usize % 3];
        deposit(&store, account, i + 1).await?;
        deposits.push((account, i + 1));
    }
    let projector = SqlProjector::start(store.clone(), balances(&table)).await?;
    projector.caught_up().await?;
    // Live, then stopped while appends go on, then restarted: it goes on from its checkpoint.
    let last = deposit(&store, "acct-a", 100).await?;
    deposits.push(("acct-a", 100));
    projector.wait_for(last, WAIT).await?;
    projector.stop().await?;
    let mut last = last;
    for i in 0..20i64 {
        last = deposit(&store, "acct-d", 1000 + i).await?;
        deposits.push(("acct-d", 1000 + i));
    }
    let again = SqlProjector::start(store.clone(), balances(&table)).await?;
    again.wait_for(last, WAIT).await?;
    let (model, most) = read_model(&table).await?;
    assert_eq!(model, expected(&deposits), "the model equals a sum computed apart");
    assert_eq!(most, 1, "some event was applied more than once");
    again.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_of_one_name_never_apply_an_event_twice() -> TestResult {
    let config = postgres_support::fresh_config()?;
    let first_store = config.clone().open().await?;
    // A second store handle opens its own connections, as another process does.
    let second_store = config.open().await?;
    let table = table_name();
    let first = SqlProjector::start(first_store.clone(), balances(&table)).await?;
    let second = SqlProjector::start(second_store.clone(), balances(&table)).await?;
    let mut deposits = Vec::new();
    let mut last = annals::Position::ZERO;
    for i in 0..120i64 {
        let account = format!("acct-{}", i % 7);
        let store = if i % 2 == 0 { &first_store } else { &second_store };
        last = deposit(store, &account, i).await?;
        deposits.push((account, i));
    }
    first.wait_for(last, WAIT).await?;
    second.wait_for(last, WAIT).await?;
    let deposits: Vec<(&str, i64)> = deposits.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let (model, most) = read_model(&table).await?;
    assert_eq!(model, expected(&deposits));
    assert_eq!(most, 1, "both projectors applied one event");
    first.stop().await?;
    second.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_batch_leaves_tables_and_checkpoint_untouched_and_stops_the_projector() -> TestResult {
    let store = postgres_support::fresh_config()?.open().await?;
    let table = table_name();
    let before = deposit(&store, "acct-a", 5).await?;
    let projector = SqlProjector::start(store.clone(), balances(&table)).await?;
    projector.wait_for(before, WAIT).await?;
    // Stopped before the poison is appended, so that only the poisoned projector ever sees it.
    projector.stop().await?;
    // The poisoned deposit's batch also holds a good one before it: neither may show.
    let stream = StreamId::new("acct-b")?;
    let good = NewEvent::json("Deposited", &serde_json::json!({ "amount": 7 }))?;
    let poison = NewEvent::json("Deposited", &serde_json::json!({ "amount": 666 }))?;
    let last = store.append(&stream, ExpectedVersion::Any, vec![good, poison]).await?.last_position;
    let poisoned = SqlProjector::start(store.clone(), Balances { table: table.clone(), poison: Some(666) }).await?;
    // It tries the batch five times, then stops: the wait ends with the stop, not the position.
    let waited = poisoned.wait_for(last, WAIT).await;
    assert!(matches!(waited, Err(Error::Consumer { .. })), "{waited:?}");
    assert_eq!(poisoned.position(), before);
    let error = poisoned.stop().await.expect_err("the projector gave up on the poisoned batch");
    assert!(
        matches!(&error, Error::Handler { position, attempts, .. } if position.get() == before.get() + 2 && *attempts == 5),
        "{error:?}"
    );
    let (model, most) = read_model(&table).await?;
    assert_eq!(model, vec![("acct-a".to_owned(), 5)], "the failed batch changed the model");
    assert_eq!(most, 1);
    let saved = store.load_checkpoint(&format!("sql-projection/{table}")).await?.expect("a checkpoint");
    assert_eq!(saved.position, before, "the checkpoint moved past the failed batch");
    Ok(())
}
