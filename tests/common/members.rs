//! The personal data tests' domain: members whose e-mail address and name are personal data of the
//! member id, an aggregate to load them (and travel in time), and a read model of them.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use annals::personal::ERASED_HEADER;
use annals::{Aggregate, Event, HandlerError, Phase, Projection, RecordedEvent};

#[derive(Event, Debug, Clone, PartialEq)]
pub enum MemberEvent {
    Joined {
        #[event(subject)]
        member_id: String,
        #[event(personal)]
        email: Option<String>,
        #[event(personal)]
        name: Option<String>,
        plan: String,
    },
    Upgraded {
        member_id: String,
        plan: String,
    },
}

impl MemberEvent {
    pub fn joined(member_id: &str, email: &str, name: &str, plan: &str) -> Self {
        MemberEvent::Joined {
            member_id: member_id.into(),
            email: Some(email.into()),
            name: Some(name.into()),
            plan: plan.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum MemberCommand {
    Join { member_id: String, email: String, name: String, plan: String },
    Upgrade { plan: String },
}

#[derive(Debug, thiserror::Error)]
#[error("the member has not joined")]
pub struct NotJoined;

/// A member as the aggregate knows it.
#[derive(Aggregate, Default, Debug, Clone, PartialEq)]
#[aggregate(command = MemberCommand, event = MemberEvent, error = NotJoined)]
pub struct Member {
    pub id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub plan: Option<String>,
}

impl Member {
    fn handle(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, NotJoined> {
        match command {
            MemberCommand::Join { member_id, email, name, plan } => {
                Ok(vec![MemberEvent::Joined { member_id, email: Some(email), name: Some(name), plan }])
            }
            MemberCommand::Upgrade { plan } => match &self.id {
                Some(id) => Ok(vec![MemberEvent::Upgraded { member_id: id.clone(), plan }]),
                None => Err(NotJoined),
            },
        }
    }

    fn apply(&mut self, event: &MemberEvent) {
        match event {
            MemberEvent::Joined { member_id, email, name, plan } => {
                self.id = Some(member_id.clone());
                self.email = email.clone();
                self.name = name.clone();
                self.plan = Some(plan.clone());
            }
            MemberEvent::Upgraded { plan, .. } => self.plan = Some(plan.clone()),
        }
    }
}

/// One member in the directory: what the events said, and which fields were erased.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub email: Option<String>,
    pub name: Option<String>,
    pub plan: Option<String>,
    pub erased: Option<String>,
}

/// A read model of every member, rebuilt by replaying the log.
#[derive(Debug, Default)]
pub struct Directory(pub BTreeMap<String, Entry>);

#[async_trait::async_trait]
impl Projection for Directory {
    fn name(&self) -> &str {
        "member-directory"
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        match MemberEvent::from_recorded(event)? {
            MemberEvent::Joined { member_id, email, name, plan } => {
                let erased = event.metadata.headers.get(ERASED_HEADER).cloned();
                self.0.insert(member_id, Entry { email, name, plan: Some(plan), erased });
            }
            MemberEvent::Upgraded { member_id, plan } => {
                self.0.entry(member_id).or_default().plan = Some(plan);
            }
        }
        Ok(())
    }
}
