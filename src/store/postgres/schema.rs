//! The tables of a [`PostgresStore`](super::PostgresStore): created on first open, versioned in
//! `<schema>.meta`, migrated forward one step at a time, refused when newer than this code.
//! `docs/storage-format.md` describes every table, column and index.

use tokio_postgres::Client;

use super::fault::pg_error;
use crate::error::{Error, Result};

/// The version of the PostgreSQL schema this code creates and migrates to; a schema at a newer
/// version is refused with [`Error::UnsupportedSchema`].
pub const SCHEMA_VERSION: u32 = 3;

/// The steps from an empty schema to [`SCHEMA_VERSION`]: step `i` takes version `i` to `i + 1`.
/// `{s}` is the quoted schema name. A step is never changed once released: new versions add steps.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // 0 -> 1: the log, its streams and head, checkpoints and snapshots.
    r#"
    CREATE TABLE {s}.head (
        id smallint PRIMARY KEY CHECK (id = 1),
        position bigint NOT NULL CHECK (position >= 0),
        recorded_us bigint NOT NULL
    );
    INSERT INTO {s}.head (id, position, recorded_us) VALUES (1, 0, -9223372036854775808);
    CREATE TABLE {s}.events (
        position bigint PRIMARY KEY CHECK (position > 0),
        id uuid NOT NULL UNIQUE,
        stream text COLLATE "C" NOT NULL,
        version bigint NOT NULL CHECK (version > 0),
        event_type text COLLATE "C" NOT NULL,
        schema_version integer NOT NULL,
        recorded_us bigint NOT NULL,
        occurred_us bigint NOT NULL,
        metadata text NOT NULL,
        payload text NOT NULL,
        UNIQUE (stream, version)
    );
    CREATE INDEX events_type ON {s}.events (event_type, position);
    CREATE INDEX events_recorded ON {s}.events (recorded_us, position);
    CREATE TABLE {s}.streams (
        stream text COLLATE "C" PRIMARY KEY,
        version bigint NOT NULL CHECK (version > 0)
    );
    CREATE TABLE {s}.checkpoints (
        name text COLLATE "C" PRIMARY KEY,
        position bigint NOT NULL CHECK (position >= 0),
        state text,
        updated_us bigint NOT NULL
    );
    CREATE TABLE {s}.snapshots (
        stream text COLLATE "C" NOT NULL,
        version bigint NOT NULL,
        schema_version integer NOT NULL,
        state text NOT NULL,
        taken_us bigint NOT NULL,
        PRIMARY KEY (stream, version)
    );
    "#,
    // 1 -> 2: partition leases, so competing consumers in several processes share a subscription.
    r#"
    CREATE TABLE {s}.leases (
        subscription text COLLATE "C" NOT NULL,
        partition integer NOT NULL CHECK (partition >= 0),
        owner text,
        expires_at timestamptz NOT NULL DEFAULT '-infinity',
        PRIMARY KEY (subscription, partition)
    );
    CREATE TABLE {s}.members (
        subscription text COLLATE "C" NOT NULL,
        member text NOT NULL,
        joined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (subscription, member)
    );
    "#,
    // 2 -> 3: the life of a stream. A stream's row keeps its last version ever written (NULL: a
    // stream hard-deleted before it was ever written), its truncation point, its tombstone and its
    // soft deletions; `scavenged` records the ranges of positions whose events a scavenge removed,
    // so that log reads tell those gaps from damage.
    r#"
    ALTER TABLE {s}.streams ALTER COLUMN version DROP NOT NULL;
    ALTER TABLE {s}.streams ADD COLUMN truncated_before bigint NOT NULL DEFAULT 1 CHECK (truncated_before > 0);
    ALTER TABLE {s}.streams ADD COLUMN tombstone boolean NOT NULL DEFAULT false;
    ALTER TABLE {s}.streams ADD COLUMN deleted_next bigint[] NOT NULL DEFAULT '{}';
    ALTER TABLE {s}.streams ADD COLUMN deleted_us bigint[] NOT NULL DEFAULT '{}';
    CREATE TABLE {s}.scavenged (
        first_position bigint PRIMARY KEY CHECK (first_position > 0),
        last_position bigint NOT NULL,
        CHECK (last_position >= first_position)
    );
    "#,
];

/// The schema name quoted as an SQL identifier (the name is checked: letters, digits, `_`).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Creates the schema when missing and brings it to [`SCHEMA_VERSION`]; refuses a newer one. Runs in
/// one transaction under an advisory lock, so processes opening the store at once do not race.
pub(crate) async fn migrate(client: &mut Client, schema: &str, stop_at: u32) -> Result<u32> {
    let s = quoted(schema);
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('annals schema ' || $1::text))", &[&schema])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);"
    ))
    .await
    .map_err(pg_error)?;
    let found: u32 = match tx
        .query_opt(&format!("SELECT value FROM {s}.meta WHERE key = 'schema_version'"), &[])
        .await
        .map_err(pg_error)?
    {
        None => 0,
        Some(row) => {
            let value: String = row.try_get(0).map_err(pg_error)?;
            value.parse().map_err(|_| Error::UnsupportedSchema {
                schema: schema.to_owned(),
                found: 0,
                supported: SCHEMA_VERSION,
            })?
        }
    };
    if found > SCHEMA_VERSION {
        return Err(Error::UnsupportedSchema { schema: schema.to_owned(), found, supported: SCHEMA_VERSION });
    }
    let target = stop_at.min(SCHEMA_VERSION);
    for step in found..target {
        tx.batch_execute(&MIGRATIONS[step as usize].replace("{s}", &s)).await.map_err(pg_error)?;
    }
    if target > found {
        tx.execute(
            &format!(
                "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            &[&target.to_string()],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(found.max(target))
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// The page that describes the schema.
    const PAGE: &str = include_str!("../../../docs/storage-format.md");

    /// `text` with every run of white space made one space.
    fn squeezed(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_storage_format_page_shows_the_step_to_version_3_statement_by_statement() {
        let page = squeezed(PAGE);
        let step = MIGRATIONS[2].replace("{s}", "<schema>");
        let statements: Vec<String> = step
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .split(';')
            .map(squeezed)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(statements.len(), 6);
        for statement in statements {
            assert!(page.contains(&format!("{statement};")), "docs/storage-format.md lacks `{statement};`");
        }
        assert!(page.contains("# Storage format of the PostgreSQL store (schema version 3)"));
    }
}
