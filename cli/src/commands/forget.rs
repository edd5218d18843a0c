//! `annals forget`: erase the personal data of a subject by destroying its key
//! ([`annals::personal::PersonalStore::forget`]).

use annals::personal::PersonalStore;
use serde_json::json;

use crate::cli::ForgetArgs;
use crate::failure::Failure;
use crate::output::Output;
use crate::store::OpenStore;

/// `forget SUBJECT --yes`.
pub(super) async fn run(open: &OpenStore, args: ForgetArgs, out: &mut Output) -> Result<(), Failure> {
    let store = PersonalStore::new(open.shared());
    let subject = args.subject.as_str();
    let already = store.is_forgotten(subject).await?;
    if !args.yes {
        let what = if already {
            "it is forgotten already, so nothing would change".to_owned()
        } else {
            "its keys would be destroyed for good, and every personal field of its events would read as erased"
                .to_owned()
        };
        return Err(Failure::Usage(format!(
            "not forgetting subject {subject:?} without --yes: {what}; add --yes to forget it"
        )));
    }
    let forgotten = store.forget(subject).await?;
    let now = store.is_forgotten(subject).await?;
    if out.json() {
        out.json_line(&json!({
            "subject": forgotten.subject,
            "keys_destroyed": forgotten.keys_destroyed,
            "forgotten": now,
        }))?;
        return Ok(());
    }
    let line = match (forgotten.keys_destroyed, already || now) {
        (0, true) => format!("subject {subject:?} is forgotten already: nothing changed"),
        (0, false) => format!("subject {subject:?} has no personal data in the store: nothing changed"),
        (keys, _) => format!(
            "forgot subject {subject:?}: destroyed {keys} key(s); its personal fields read as erased from now on \
             (read models built from them keep their copies: rebuild them)"
        ),
    };
    Ok(out.line(line)?)
}
