//! A bank account with the derive macros: open, deposit, withdraw and an atomic transfer between two
//! accounts, on the embedded sled store, with snapshots every 5 events and an upcaster that reads
//! deposits an older version stored in euros.
//!
//! Run it with `cargo run --release --example bank_account`; its given / when / then tests run with
//! `cargo test --example bank_account` (and with `cargo test --workspace`).

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::error::Error;

use annals::{
    Aggregate, CommandContext, CommandError, Event, EventStore, ExpectedVersion, NewEvent, Repository, SledStore,
    SnapshotPolicy, StreamId, Upcasters, Upcasting,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What happens to an account. `Deposited` is at schema version 2: version 1 stored euros.
#[derive(Event, Clone, Debug, PartialEq)]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// Its owner.
        owner: String,
    },
    /// Money came in.
    #[event(version = 2)]
    Deposited {
        /// In cents.
        amount_cents: u64,
    },
    /// Money went out.
    Withdrawn {
        /// In cents.
        amount_cents: u64,
    },
}

/// What an account can be asked to do.
#[derive(Clone, Debug)]
pub enum AccountCommand {
    /// Open it for `owner`.
    Open {
        /// The owner.
        owner: String,
    },
    /// Put money in.
    Deposit {
        /// In cents.
        amount_cents: u64,
    },
    /// Take money out.
    Withdraw {
        /// In cents.
        amount_cents: u64,
    },
}

/// Why an account refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    /// Opening twice.
    #[error("the account is already open")]
    AlreadyOpen,
    /// Using an account that was never opened.
    #[error("the account is not open")]
    NotOpen,
    /// Taking out more than there is.
    #[error("insufficient funds: {balance_cents} cents, {asked_cents} asked")]
    InsufficientFunds {
        /// The balance.
        balance_cents: u64,
        /// The amount asked.
        asked_cents: u64,
    },
}

/// The state of an account.
#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = AccountCommand, event = AccountEvent, error = AccountError)]
pub struct Account {
    owner: Option<String>,
    balance_cents: u64,
}

impl Account {
    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { .. } if self.owner.is_some() => Err(AccountError::AlreadyOpen),
            AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened { owner }]),
            _ if self.owner.is_none() => Err(AccountError::NotOpen),
            AccountCommand::Deposit { amount_cents } => Ok(vec![AccountEvent::Deposited { amount_cents }]),
            AccountCommand::Withdraw { amount_cents } if amount_cents > self.balance_cents => {
                Err(AccountError::InsufficientFunds { balance_cents: self.balance_cents, asked_cents: amount_cents })
            }
            AccountCommand::Withdraw { amount_cents } => Ok(vec![AccountEvent::Withdrawn { amount_cents }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount_cents } => self.balance_cents += amount_cents,
            AccountEvent::Withdrawn { amount_cents } => self.balance_cents -= amount_cents,
        }
    }
}

/// Version 1 of `Deposited` held `amount` in euros.
fn euros_to_cents(payload: Value) -> Result<Value, String> {
    let euros = payload.get("amount").and_then(Value::as_u64).ok_or("amount is not a whole number of euros")?;
    Ok(json!({ "amount_cents": euros * 100 }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;

    // History written by the previous version of this program: a deposit in euros.
    let old = StreamId::new("account-legacy")?;
    let opened = NewEvent::raw("Opened", r#"{"owner":"legacy"}"#);
    let deposit_v1 = NewEvent::raw("Deposited", r#"{"amount":42}"#).with_schema_version(1);
    store.append(&old, ExpectedVersion::NoStream, vec![opened, deposit_v1]).await?;

    // Register the upcaster once, check the chain at start-up, and read through it everywhere.
    let upcasters = Upcasters::new().upgrade("Deposited", 1, euros_to_cents);
    upcasters.check::<AccountEvent>()?;
    let store = Upcasting::new(store, upcasters);
    let accounts = Repository::<Account, _>::new(store).with_snapshots(SnapshotPolicy::every(5)).with_cache(1024);

    let context = CommandContext::new().correlation_id("example-session").header("user", "teller-1");
    accounts.execute("alice", AccountCommand::Open { owner: "Alice".into() }, &context).await?;
    accounts.execute("bob", AccountCommand::Open { owner: "Bob".into() }, &context).await?;
    for amount_cents in [1000, 2550, 450, 6000, 100, 900] {
        let committed = accounts.execute("alice", AccountCommand::Deposit { amount_cents }, &context).await?;
        println!("alice: deposited {amount_cents:>5} cents -> version {}", committed.version);
    }
    let refused = accounts.execute("bob", AccountCommand::Withdraw { amount_cents: 1 }, &context).await;
    if let Err(CommandError::Rejected(reason)) = &refused {
        println!("bob: withdrawal refused: {reason}");
    }

    // A transfer touches two accounts: both streams are written in one atomic append, or neither.
    let transfer = vec![
        ("alice".to_owned(), AccountCommand::Withdraw { amount_cents: 3000 }),
        ("bob".to_owned(), AccountCommand::Deposit { amount_cents: 3000 }),
    ];
    let committed = accounts.execute_atomic(transfer, &context).await?;
    for side in &committed {
        let position = side.last_position().map_or(0, |p| p.get());
        println!("transfer: {} -> version {} at position {position}", side.stream, side.version);
    }
    let too_much = vec![
        ("alice".to_owned(), AccountCommand::Withdraw { amount_cents: 100_000 }),
        ("bob".to_owned(), AccountCommand::Deposit { amount_cents: 100_000 }),
    ];
    if let Err(CommandError::Rejected(reason)) = accounts.execute_atomic(too_much, &context).await {
        println!("transfer refused, nothing written: {reason}");
    }

    for id in ["alice", "bob", "legacy"] {
        let account = accounts.load(id).await?;
        println!("{id}: {} cents at version {}", account.state.balance_cents, account.version);
    }
    let snapshot = accounts.store().load_snapshot(&Account::stream_id("alice")?, annals::Version::MAX).await?;
    println!("alice's newest snapshot: {:?}", snapshot.map(|s| s.version));
    let legacy = accounts.load("legacy").await?;
    assert_eq!(legacy.state.balance_cents, 4200, "the v1 deposit of 42 euros reads as 4200 cents");
    Ok(())
}

#[cfg(test)]
mod tests {
    use annals::testing::given;

    use super::*;

    fn opened() -> AccountEvent {
        AccountEvent::Opened { owner: "Alice".into() }
    }

    #[test]
    fn an_account_opens_once() {
        given::<Account>([]).when(AccountCommand::Open { owner: "Alice".into() }).then([opened()]);
        given::<Account>([opened()])
            .when(AccountCommand::Open { owner: "Eve".into() })
            .then_error(AccountError::AlreadyOpen);
    }

    #[test]
    fn deposits_and_withdrawals_move_the_balance() {
        let account = given::<Account>([opened(), AccountEvent::Deposited { amount_cents: 500 }])
            .when(AccountCommand::Withdraw { amount_cents: 200 })
            .then([AccountEvent::Withdrawn { amount_cents: 200 }]);
        assert_eq!(account.balance_cents, 300);
    }

    #[test]
    fn a_withdrawal_beyond_the_balance_is_refused() {
        given::<Account>([opened(), AccountEvent::Deposited { amount_cents: 100 }])
            .when(AccountCommand::Withdraw { amount_cents: 101 })
            .then_error(AccountError::InsufficientFunds { balance_cents: 100, asked_cents: 101 });
    }

    #[test]
    fn a_closed_account_refuses_money() {
        given::<Account>([]).when(AccountCommand::Deposit { amount_cents: 1 }).then_error(AccountError::NotOpen);
    }

    #[test]
    fn the_upcaster_turns_euros_into_cents() {
        assert_eq!(euros_to_cents(json!({ "amount": 42 })), Ok(json!({ "amount_cents": 4200 })));
        assert!(euros_to_cents(json!({ "amount": "many" })).is_err());
    }
}
