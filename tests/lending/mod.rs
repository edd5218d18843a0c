//! A lending library: books and members, two aggregate types that one command ("lend book X to
//! member Y") changes together, with a store wrapper that watches and meddles. Shared by the unit of
//! work and back-dated command tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod probe;

use annals::{
    Aggregate, CommandContext, CommandError, Committed, CommittedWork, Event, EventStore, Repository, UnitOfWork,
};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, PartialEq)]
pub enum BookEvent {
    Lent { member: String },
    Returned { member: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum BookCommand {
    Lend { member: String },
    Return,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BookError {
    #[error("the book is lent to {to}")]
    AlreadyLent { to: String },
    #[error("the book is not lent")]
    NotLent,
}

/// A book: on the shelf or lent to one member.
#[derive(Aggregate, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(command = BookCommand, event = BookEvent, error = BookError)]
pub struct Book {
    pub lent_to: Option<String>,
    pub loans: u64,
    /// Every event applied, through snapshots too: proves where a state came from.
    pub applied: u64,
}

impl Book {
    fn handle(&self, command: BookCommand) -> Result<Vec<BookEvent>, BookError> {
        match (command, &self.lent_to) {
            (BookCommand::Lend { .. }, Some(to)) => Err(BookError::AlreadyLent { to: to.clone() }),
            (BookCommand::Lend { member }, None) => Ok(vec![BookEvent::Lent { member }]),
            (BookCommand::Return, Some(member)) => Ok(vec![BookEvent::Returned { member: member.clone() }]),
            (BookCommand::Return, None) => Err(BookError::NotLent),
        }
    }

    fn apply(&mut self, event: &BookEvent) {
        self.applied += 1;
        match event {
            BookEvent::Lent { member } => {
                self.lent_to = Some(member.clone());
                self.loans += 1;
            }
            BookEvent::Returned { .. } => self.lent_to = None,
        }
    }
}

#[derive(Event, Clone, Debug, PartialEq)]
pub enum MemberEvent {
    Borrowed { book: String },
    BroughtBack { book: String },
    Suspended,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MemberCommand {
    Borrow { book: String },
    BringBack { book: String },
    Suspend,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MemberError {
    #[error("the member is suspended")]
    Suspended,
    #[error("the member has {0} books already")]
    TooMany(usize),
    #[error("the member does not have {0}")]
    NotBorrowed(String),
}

/// The most books a member may hold.
pub const LIMIT: usize = 3;

/// A member: the books they hold, and whether they may borrow.
#[derive(Aggregate, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(command = MemberCommand, event = MemberEvent, error = MemberError)]
pub struct Member {
    pub books: Vec<String>,
    pub suspended: bool,
    pub applied: u64,
}

impl Member {
    fn handle(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, MemberError> {
        match command {
            MemberCommand::Borrow { .. } if self.suspended => Err(MemberError::Suspended),
            MemberCommand::Borrow { .. } if self.books.len() >= LIMIT => Err(MemberError::TooMany(self.books.len())),
            MemberCommand::Borrow { book } => Ok(vec![MemberEvent::Borrowed { book }]),
            MemberCommand::BringBack { book } if self.books.contains(&book) => {
                Ok(vec![MemberEvent::BroughtBack { book }])
            }
            MemberCommand::BringBack { book } => Err(MemberError::NotBorrowed(book)),
            MemberCommand::Suspend => Ok(vec![MemberEvent::Suspended]),
        }
    }

    fn apply(&mut self, event: &MemberEvent) {
        self.applied += 1;
        match event {
            MemberEvent::Borrowed { book } => self.books.push(book.clone()),
            MemberEvent::BroughtBack { book } => self.books.retain(|b| b != book),
            MemberEvent::Suspended => self.suspended = true,
        }
    }
}

/// Why a loan or a return is refused: the book's or the member's business error.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum LendError {
    #[error(transparent)]
    Book(#[from] BookError),
    #[error(transparent)]
    Member(#[from] MemberError),
}

pub type Loan = CommittedWork<(Committed<BookEvent>, Committed<MemberEvent>), ()>;

/// Lends `book` to `member`, both or neither.
pub async fn lend<S: EventStore>(
    books: &Repository<Book, S>,
    members: &Repository<Member, S>,
    book: &str,
    member: &str,
    context: &CommandContext,
) -> Result<Loan, CommandError<LendError>> {
    UnitOfWork::new((books.target(book), members.target(member)))
        .execute(context, |(book, member)| -> Result<(), LendError> {
            book.handle(BookCommand::Lend { member: member.id().to_owned() })?;
            member.handle(MemberCommand::Borrow { book: book.id().to_owned() })?;
            Ok(())
        })
        .await
}

/// Takes `book` back from whoever has it: the book and that member, both or neither.
pub async fn give_back<S: EventStore>(
    books: &Repository<Book, S>,
    members: &Repository<Member, S>,
    book: &str,
    member: &str,
    context: &CommandContext,
) -> Result<Loan, CommandError<LendError>> {
    UnitOfWork::new((books.target(book), members.target(member)))
        .execute(context, |(book, member)| -> Result<(), LendError> {
            book.handle(BookCommand::Return)?;
            member.handle(MemberCommand::BringBack { book: book.id().to_owned() })?;
            Ok(())
        })
        .await
}
