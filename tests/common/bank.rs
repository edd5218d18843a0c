//! A bank account written by hand against the traits (no derive), shared by the domain-layer tests.

use annals::{Aggregate, DecodeError, Event};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount_cents: u64 },
    Withdrawn { amount_cents: u64 },
}

#[derive(Serialize, Deserialize)]
struct Owner {
    owner: String,
}

#[derive(Serialize, Deserialize)]
struct Amount {
    amount_cents: u64,
}

impl Event for AccountEvent {
    fn event_types() -> &'static [&'static str] {
        &["Opened", "Deposited", "Withdrawn"]
    }

    fn current_version(event_type: &str) -> Option<u32> {
        match event_type {
            "Opened" | "Withdrawn" => Some(1),
            // v1 stored `amount` in euros; v2 stores cents (see the upcasting tests and fixtures).
            "Deposited" => Some(2),
            _ => None,
        }
    }

    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }

    fn schema_version(&self) -> u32 {
        Self::current_version(self.event_type()).unwrap_or(1)
    }

    fn to_payload(&self) -> Result<String, serde_json::Error> {
        match self {
            AccountEvent::Opened { owner } => serde_json::to_string(&Owner { owner: owner.clone() }),
            AccountEvent::Deposited { amount_cents } | AccountEvent::Withdrawn { amount_cents } => {
                serde_json::to_string(&Amount { amount_cents: *amount_cents })
            }
        }
    }

    fn from_payload(event_type: &str, payload: &str) -> Result<Self, DecodeError> {
        let amount = || serde_json::from_str::<Amount>(payload).map(|a| a.amount_cents).map_err(DecodeError::Json);
        match event_type {
            "Opened" => {
                let Owner { owner } = serde_json::from_str(payload).map_err(DecodeError::Json)?;
                Ok(AccountEvent::Opened { owner })
            }
            "Deposited" => Ok(AccountEvent::Deposited { amount_cents: amount()? }),
            "Withdrawn" => Ok(AccountEvent::Withdrawn { amount_cents: amount()? }),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AccountCommand {
    Open {
        owner: String,
    },
    Deposit {
        amount_cents: u64,
    },
    Withdraw {
        amount_cents: u64,
    },
    /// Does nothing: produces no events.
    Noop,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub balance_cents: u64,
    pub applied: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { .. } if self.owner.is_some() => Err(AccountError::AlreadyOpen),
            AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened { owner }]),
            _ if self.owner.is_none() => Err(AccountError::NotOpen),
            AccountCommand::Deposit { amount_cents } => Ok(vec![AccountEvent::Deposited { amount_cents }]),
            AccountCommand::Withdraw { amount_cents } if amount_cents > self.balance_cents => {
                Err(AccountError::InsufficientFunds { balance: self.balance_cents, asked: amount_cents })
            }
            AccountCommand::Withdraw { amount_cents } => Ok(vec![AccountEvent::Withdrawn { amount_cents }]),
            AccountCommand::Noop => Ok(Vec::new()),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.applied += 1;
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount_cents } => self.balance_cents += amount_cents,
            AccountEvent::Withdrawn { amount_cents } => self.balance_cents -= amount_cents,
        }
    }
}
