//! Importing history: a tabular event log (CSV) turned into events, one stream per case.
//!
//! Process-mining logs, audit exports and spreadsheets record history as rows: *which case* (a ticket,
//! an order), *what happened* (an activity) and *when*, plus attributes. [`CsvImport`] appends one
//! event per row:
//!
//! - the **stream** is the case column's value, after an optional prefix (`"ticket-"` with the case
//!   `Case 7` gives the stream `ticket-Case 7`, the stream of the aggregate `Case 7` whose
//!   [`Aggregate::TYPE`](crate::Aggregate::TYPE) is `ticket`);
//! - the **event type** is the activity column's value;
//! - the **occurred time** (`occurred_at`) is the time column's value, parsed as its [`TimeFormat`]
//!   says; the events' `recorded_at` is the time of the import;
//! - the **payload** is a JSON object of the other columns (or those chosen with
//!   [`CsvImport::payload_columns`]), each column's name mapped to its value as a string, in the
//!   header's order.
//!
//! # Re-running an import
//!
//! Every event's id is a UUID v5 of the row's line number and of the event it makes (stream, type,
//! occurred time, payload), so the same file imported with the same options gives the same ids, and
//! the rows are appended in the same batches. The store recognises a batch it already holds as a
//! retry ([`AppendResult::already_appended`](crate::AppendResult::already_appended)) and stores
//! nothing twice: running an import again, after a crash or on purpose, completes it. The summary
//! tells the events written from those already present.
//!
//! A batch that is only partly stored (the file grew since the last run, a skipped row was fixed, or
//! the batch size changed) is resolved stream by stream, then event by event, at a slower pace but
//! still without duplicates. A row that was fixed or added lands at the end of its stream.
//!
//! # Batches and bad rows
//!
//! Rows are appended [`batch_size`](CsvImport::batch_size) rows read at a time, each batch in one
//! atomic [`append_multi`](crate::EventStore::append_multi) (one part per stream, rows in file
//! order, [`ExpectedVersion::Any`](crate::ExpectedVersion::Any)): a crash leaves whole batches, never part of one. A bad row (a
//! field count other than the header's, an empty case or activity, a time that does not parse, a name
//! the store refuses, an event over the [maximum size](CsvImport::max_event_size), a quoted field
//! that is never closed or has text after its closing quote) is reported with its line number and
//! reason ([`BadRow`]). With [`BadRows::Abort`] (the default) the whole input is checked before
//! anything is written, and any bad row fails the import with [`ImportError::Input`] listing them
//! all; with [`BadRows::Skip`] bad rows are left out and listed in [`ImportSummary::skipped`].
//!
//! The library never prints: a progress callback receives an [`ImportProgress`] after every batch.
//!
//! Input is read on the calling task, one buffered batch at a time (a thousand rows of a local file
//! take well under a millisecond to parse); the store's writes run on its own writer.

mod batch;
mod quotes;
mod rows;
mod time_format;

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use tracing::Instrument;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{EventStore, DEFAULT_MAX_EVENT_SIZE};
use crate::stream_id::StreamId;

use self::batch::append_batch;
pub use self::rows::{BadRow, BadRowReason};
use self::rows::{Build, ReadBatch, RowReader};
pub use self::time_format::TimeFormat;

/// How many rows go into one atomic append unless [`CsvImport::batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;

/// The namespace of imported event ids unless [`CsvImport::id_namespace`] says otherwise.
pub const DEFAULT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7d2e_8cdd_d60a_4f1e_9ff3_6e67_6045_f3cd);

/// The options of a CSV import, and the import itself.
///
/// Name the case, activity and time columns; everything else has a default: no stream prefix, RFC
/// 3339 times, every other column in the payload, batches of [`DEFAULT_BATCH_SIZE`] rows,
/// [`BadRows::Abort`], comma-separated.
///
/// ```
/// use annals::import::{BadRows, CsvImport};
/// use annals::{EventStore, MemoryStore, ReadStream, StreamId};
/// use futures_util::TryStreamExt;
///
/// let csv = "\
/// case,activity,timestamp,resource
/// Case 7,Take in charge ticket,2013-11-25T08:18:07+00:00,Ada
/// Case 7,Closed,2013-12-10T08:57:37+00:00,\"Lovelace, Ada\"
/// ";
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let import = CsvImport::new("case", "activity", "timestamp").stream_prefix("ticket-").bad_rows(BadRows::Abort);
/// let summary = import.import_reader(&store, csv.as_bytes(), |_progress| {}).await?;
/// assert_eq!((summary.rows, summary.events_written, summary.streams), (2, 2, 1));
///
/// let ticket = StreamId::new("ticket-Case 7")?;
/// let events: Vec<_> = store.read_stream(&ticket, ReadStream::forward()).try_collect().await?;
/// assert_eq!(events[1].event_type, "Closed");
/// assert_eq!(events[1].payload, r#"{"resource":"Lovelace, Ada"}"#);
/// assert_eq!(events[1].occurred_at.to_rfc3339(), "2013-12-10T08:57:37+00:00");
///
/// // Importing it again stores nothing twice.
/// let again = import.import_reader(&store, csv.as_bytes(), |_progress| {}).await?;
/// assert_eq!((again.events_written, again.already_present), (0, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvImport {
    stream_column: String,
    stream_prefix: String,
    type_column: String,
    time_column: String,
    time_format: TimeFormat,
    payload_columns: Option<Vec<String>>,
    batch_size: usize,
    bad_rows: BadRows,
    id_namespace: Uuid,
    delimiter: u8,
    max_event_size: usize,
}

/// What an import does with a bad row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRows {
    /// Check the whole input first; write nothing and fail with [`ImportError::Input`] if any row is bad.
    #[default]
    Abort,
    /// Leave bad rows out, list them in [`ImportSummary::skipped`], import the others.
    Skip,
}

/// How far an import has got; handed to the progress callback after every batch (and once before the
/// first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportProgress {
    /// Data rows read so far (the header is not counted).
    pub rows_read: u64,
    /// The number of data rows, when known: files are counted by the check that runs before the
    /// first write; a reader's rows are known only under [`BadRows::Abort`], which reads it all first.
    pub rows_total: Option<u64>,
    /// Events appended so far.
    pub events_written: u64,
    /// Events found already stored so far (an earlier run of the same import).
    pub already_present: u64,
    /// Bad rows left out so far.
    pub rows_skipped: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportSummary {
    /// Data rows read (the header is not counted).
    pub rows: u64,
    /// Events appended by this run.
    pub events_written: u64,
    /// Events that were already stored (an earlier run of the same import): `rows` is their sum
    /// with `events_written` and the skipped rows.
    pub already_present: u64,
    /// The bad rows left out (under [`BadRows::Skip`]), in file order.
    pub skipped: Vec<BadRow>,
    /// How many distinct streams the imported rows belong to.
    pub streams: u64,
}

/// Why an import stopped: the input (with the line where it stopped), or the store and the library.
///
/// Shaped like [`CommandError`](crate::CommandError): the import's own problems apart from the
/// errors of the store it writes to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The import stopped at `line` of its input (1 is the header; 0: the input did not open).
    /// `problem` says why, and how to go on: bad rows under [`BadRows::Abort`] (nothing was written:
    /// fix the rows it lists, or leave them out with [`BadRows::Skip`]), a header without a
    /// configured column (fix the options or the file), or input that does not read (fix the path or
    /// the file; an I/O failure may be retried). Batches appended before a failure stay stored, and
    /// running the same import again completes it without storing anything twice.
    #[error("cannot import the input{}", if *line == 0 { String::new() } else { format!(" at line {line}") })]
    Input {
        /// The 1-based line where the import stopped (for bad rows, the first bad row's).
        line: u64,
        /// What is wrong.
        #[source]
        problem: ImportProblem,
    },
    /// The store failed, or an option is out of range ([`Error::Config`] for a malformed `strftime`
    /// format). Handle it as the [`Error`] variant's documentation says.
    #[error(transparent)]
    Store(#[from] Error),
}

impl ImportError {
    /// The input's problem and its line, if the import stopped on its input.
    pub fn input_problem(&self) -> Option<(u64, &ImportProblem)> {
        match self {
            ImportError::Input { line, problem } => Some((*line, problem)),
            ImportError::Store(_) => None,
        }
    }
}

/// What is wrong with an import's input: the `problem` of [`ImportError::Input`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportProblem {
    /// The input does not open or read (an I/O error, or bytes the CSV reader cannot take).
    #[error("the input cannot be read")]
    Read(#[source] io::Error),
    /// The input is empty: it has no header.
    #[error("the input has no header")]
    NoHeader,
    /// The header's quoting is broken: one of its quoted fields is never closed
    /// ([`BadRowReason::UnclosedQuote`]), or has text after its closing quote
    /// ([`BadRowReason::TextAfterQuote`]). Fix the quotes.
    #[error("the header is bad: {reason}")]
    BadHeader {
        /// What is wrong with it (one of the quote reasons).
        reason: BadRowReason,
    },
    /// The header has no column of a configured name.
    #[error("the header has no column {column:?}")]
    MissingColumn {
        /// The configured name.
        column: String,
    },
    /// A column the import uses appears more than once in the header.
    #[error("the header names column {column:?} more than once")]
    DuplicateColumn {
        /// The repeated name.
        column: String,
    },
    /// Bad rows under [`BadRows::Abort`]: nothing was written (unless the file changed while it was
    /// imported, after its check).
    #[error("{}", bad_rows_message(rows))]
    BadRows {
        /// Every bad row, in file order.
        rows: Vec<BadRow>,
    },
}

fn bad_rows_message(rows: &[BadRow]) -> String {
    const SHOWN: usize = 3;
    let listed: Vec<String> = rows.iter().take(SHOWN).map(BadRow::to_string).collect();
    let more = if rows.len() > SHOWN { format!("; and {} more", rows.len() - SHOWN) } else { String::new() };
    format!("{} bad row(s): {}{more}", rows.len(), listed.join("; "))
}

impl CsvImport {
    /// An import whose streams are named by `stream_column` (one stream per case), event types by
    /// `type_column` and occurred times by `time_column`, with the defaults for everything else.
    pub fn new(
        stream_column: impl Into<String>,
        type_column: impl Into<String>,
        time_column: impl Into<String>,
    ) -> Self {
        CsvImport {
            stream_column: stream_column.into(),
            stream_prefix: String::new(),
            type_column: type_column.into(),
            time_column: time_column.into(),
            time_format: TimeFormat::Rfc3339,
            payload_columns: None,
            batch_size: DEFAULT_BATCH_SIZE,
            bad_rows: BadRows::Abort,
            id_namespace: DEFAULT_ID_NAMESPACE,
            delimiter: b',',
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
        }
    }

    /// Puts `prefix` before every stream name (default none): `"ticket-"` makes the case `7` the
    /// stream `ticket-7`, which [`Aggregate::stream_id`](crate::Aggregate::stream_id) gives for the
    /// id `7` of an aggregate of type `ticket`.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = prefix.into();
        self
    }

    /// How the time column is written (default [`TimeFormat::Rfc3339`]).
    pub fn time_format(mut self, format: TimeFormat) -> Self {
        self.time_format = format;
        self
    }

    /// The columns that go into the payload, in this order (default: every column other than the
    /// stream, type and time columns, in the header's order). A name given twice is used once.
    pub fn payload_columns<I, C>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<String>,
    {
        let mut chosen: Vec<String> = Vec::new();
        for column in columns {
            let column = column.into();
            if !chosen.contains(&column) {
                chosen.push(column);
            }
        }
        self.payload_columns = Some(chosen);
        self
    }

    /// How many rows go into one atomic append (default [`DEFAULT_BATCH_SIZE`]; at least 1). Keep it
    /// the same between runs of one import: a batch is recognised as already stored only when it is
    /// sent the same way again.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// What to do with bad rows (default [`BadRows::Abort`]).
    pub fn bad_rows(mut self, bad_rows: BadRows) -> Self {
        self.bad_rows = bad_rows;
        self
    }

    /// The UUID v5 namespace of the event ids (default [`DEFAULT_ID_NAMESPACE`]). Imports with
    /// different namespaces never take each other's events for their own.
    pub fn id_namespace(mut self, namespace: Uuid) -> Self {
        self.id_namespace = namespace;
        self
    }

    /// The field delimiter (default `b','`; `b';'` and `b'\t'` are common too).
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// The largest event a row may make, in bytes as the store counts them (payload and type name),
    /// default [`DEFAULT_MAX_EVENT_SIZE`]. A row whose event is larger is a bad row
    /// ([`BadRowReason::EventTooLarge`]), found by the check before anything is written.
    ///
    /// The import cannot ask the store for its limit: set this to the store's own when the store is
    /// configured with another ([`SledConfig::max_event_size`](crate::SledConfig::max_event_size),
    /// [`MemoryStore::with_max_event_size`](crate::MemoryStore::with_max_event_size)). With a larger
    /// value than the store's, a row between the two fails the import with
    /// [`Error::EventTooLarge`] after the batches before it were written.
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// Imports the CSV file at `path` into `store`, calling `progress` after every batch.
    ///
    /// The file is read twice: a first pass checks every row and counts them (so progress has a
    /// total, and [`BadRows::Abort`] writes nothing when a row is bad), the second appends. The file
    /// must not change in between.
    ///
    /// # Errors
    /// [`ImportError::Input`] when the file does not read, its header lacks a configured column or has a
    /// broken quote ([`ImportProblem::BadHeader`]), or (with
    /// [`BadRows::Abort`]) rows are bad; [`ImportError::Store`] with [`Error::Config`] for a malformed `strftime` format, and with the
    /// store's errors, unchanged. Batches appended before an error stay stored; running the import
    /// again completes it.
    pub async fn import_file<S: EventStore + ?Sized>(
        &self,
        store: &S,
        path: impl AsRef<Path>,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<ImportSummary, ImportError> {
        self.time_format.check()?;
        let path = path.as_ref();
        let open =
            || File::open(path).map_err(|source| ImportError::Input { line: 0, problem: ImportProblem::Read(source) });
        let mut check = RowReader::new(self, open()?)?;
        let (mut total, mut bad) = (0, Vec::new());
        while let Some(batch) = check.next_batch(Build::CheckOnly)? {
            total += batch.rows;
            bad.extend(batch.bad);
        }
        if self.bad_rows == BadRows::Abort {
            if let Some(first) = bad.first() {
                return Err(ImportError::Input { line: first.line, problem: ImportProblem::BadRows { rows: bad } });
            }
        }
        let mut rows = RowReader::new(self, open()?)?;
        self.write(store, || rows.next_batch(Build::Events), Some(total), &mut progress).await
    }

    /// Imports CSV from `input` (a file, standard input, bytes in memory) into `store`, calling
    /// `progress` after every batch.
    ///
    /// With [`BadRows::Abort`] the whole input is read and checked before anything is written, so
    /// its events are held in memory until then; with [`BadRows::Skip`] it is read batch by batch.
    /// The CSV reader buffers, so `input` need not be a `BufReader`.
    ///
    /// # Errors
    /// As [`import_file`](Self::import_file).
    pub async fn import_reader<S: EventStore + ?Sized, R: io::Read>(
        &self,
        store: &S,
        input: R,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<ImportSummary, ImportError> {
        self.time_format.check()?;
        let mut rows = RowReader::new(self, input)?;
        if self.bad_rows == BadRows::Skip {
            return self.write(store, || rows.next_batch(Build::Events), None, &mut progress).await;
        }
        let mut batches = Vec::new();
        let mut bad = Vec::new();
        while let Some(mut batch) = rows.next_batch(Build::Events)? {
            bad.append(&mut batch.bad);
            batches.push(batch);
        }
        if let Some(first) = bad.first() {
            return Err(ImportError::Input { line: first.line, problem: ImportProblem::BadRows { rows: bad } });
        }
        let total = batches.iter().map(|b| b.rows).sum();
        let mut batches = batches.into_iter();
        self.write(store, || Ok(batches.next()), Some(total), &mut progress).await
    }

    /// Appends the batches `next` gives, one atomic append each, and sums up.
    async fn write<S: EventStore + ?Sized>(
        &self,
        store: &S,
        mut next: impl FnMut() -> Result<Option<ReadBatch>, ImportError>,
        rows_total: Option<u64>,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<ImportSummary, ImportError> {
        describe();
        let mut summary = ImportSummary::default();
        let mut streams: HashSet<StreamId> = HashSet::new();
        let report = |summary: &ImportSummary| ImportProgress {
            rows_read: summary.rows,
            rows_total,
            events_written: summary.events_written,
            already_present: summary.already_present,
            rows_skipped: summary.skipped.len() as u64,
        };
        progress(report(&summary));
        while let Some(batch) = next()? {
            if self.bad_rows == BadRows::Abort {
                if let Some(first) = batch.bad.first() {
                    // Only when the input changed since it was checked.
                    let line = first.line;
                    return Err(ImportError::Input { line, problem: ImportProblem::BadRows { rows: batch.bad } });
                }
            }
            summary.rows += batch.rows;
            summary.skipped.extend(batch.bad);
            for row in &batch.events {
                if !streams.contains(&row.stream) {
                    streams.insert(row.stream.clone());
                }
            }
            let rows = batch.rows;
            let events = batch.events.len();
            let span = tracing::debug_span!(
                "annals.import.batch",
                annals.rows = rows,
                annals.events = events,
                annals.position.last = tracing::field::Empty,
            );
            let tally = append_batch(store, batch.events).instrument(span.clone()).await?;
            if let Some(last) = tally.last {
                span.record("annals.position.last", last.get());
            }
            metrics::counter!("annals.import.rows").increment(events as u64);
            summary.events_written += tally.written;
            summary.already_present += tally.present;
            progress(report(&summary));
        }
        summary.streams = streams.len() as u64;
        Ok(summary)
    }
}

/// Describes the import's metric (unit and meaning) to the installed recorder, once per process.
pub(crate) fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!("annals.import.rows", metrics::Unit::Count, "CSV rows turned into events");
    });
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;
    use crate::envelope::MAX_EVENT_TYPE_LEN;
    use crate::name::InvalidName;
    use crate::store::{ReadLog, ReadStream};
    use crate::{MemoryStore, RecordedEvent};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const LOG: &str = "\
case,activity,timestamp,resource,note
Case 1,Open,2012-10-09T14:50:17+00:00,Ada,\"first, with a comma\"
Case 2,Open,2012-10-10T09:00:00+02:00,Bob,\"says \"\"hi\"\"\"
Case 1,Closed,2012-10-25T11:54:26+00:00,Ada,
Case 2,Closed,2012-11-02T08:00:00Z,Bob,\"two
lines\"
Case 3,Open,2013-01-01T00:00:00+00:00,Cy,last
";

    fn import() -> CsvImport {
        CsvImport::new("case", "activity", "timestamp").stream_prefix("ticket-")
    }

    async fn run(import: &CsvImport, store: &MemoryStore, csv: &str) -> Result<ImportSummary, ImportError> {
        import.import_reader(store, csv.as_bytes(), |_| {}).await
    }

    async fn log(store: &MemoryStore) -> Result<Vec<RecordedEvent>> {
        store.read_log(ReadLog::from_start()).try_collect().await
    }

    async fn stream(store: &MemoryStore, name: &str) -> Result<Vec<RecordedEvent>> {
        store.read_stream(&StreamId::new(name)?, ReadStream::forward()).try_collect().await
    }

    fn bad_rows(result: Result<ImportSummary, ImportError>) -> Vec<BadRow> {
        match result {
            Err(ImportError::Input { problem: ImportProblem::BadRows { rows }, .. }) => rows,
            other => unreachable!("expected bad rows, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn rows_become_events_with_quoted_fields_times_and_payloads() -> TestResult {
        let store = MemoryStore::new();
        let summary = run(&import(), &store, LOG).await?;
        assert_eq!((summary.rows, summary.events_written, summary.already_present, summary.streams), (5, 5, 0, 3));
        assert!(summary.skipped.is_empty());

        let one = stream(&store, "ticket-Case 1").await?;
        assert_eq!(one.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["Open", "Closed"]);
        assert_eq!(one[0].payload, r#"{"resource":"Ada","note":"first, with a comma"}"#);
        assert_eq!(one[1].payload, r#"{"resource":"Ada","note":""}"#);
        assert_eq!(one[0].occurred_at.to_rfc3339(), "2012-10-09T14:50:17+00:00");

        let two = stream(&store, "ticket-Case 2").await?;
        assert_eq!(two[0].payload, r#"{"resource":"Bob","note":"says \"hi\""}"#);
        assert_eq!(two[0].occurred_at.to_rfc3339(), "2012-10-10T07:00:00+00:00", "offsets become UTC");
        assert_eq!(two[1].payload, r#"{"resource":"Bob","note":"two\nlines"}"#);
        assert_eq!(log(&store).await?.len(), 5);
        Ok(())
    }

    #[tokio::test]
    async fn payload_columns_choose_and_order_the_payload() -> TestResult {
        let store = MemoryStore::new();
        run(&import().payload_columns(["note", "resource", "note"]), &store, LOG).await?;
        let one = stream(&store, "ticket-Case 1").await?;
        assert_eq!(one[0].payload, r#"{"note":"first, with a comma","resource":"Ada"}"#);

        let missing = run(&import().payload_columns(["colour"]), &store, LOG).await;
        assert!(matches!(
            missing,
            Err(ImportError::Input { line: 1, problem: ImportProblem::MissingColumn { ref column } }) if column == "colour"
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_header_without_a_configured_column_or_with_it_twice_fails_at_line_1() -> TestResult {
        let store = MemoryStore::new();
        let no_time = CsvImport::new("case", "activity", "time");
        let result = run(&no_time, &store, LOG).await;
        assert!(matches!(
            result,
            Err(ImportError::Input { line: 1, problem: ImportProblem::MissingColumn { ref column } }) if column == "time"
        ));
        let twice = "case,activity,timestamp,case\n1,A,2012-10-09T14:50:17Z,2\n";
        let result = run(&import(), &store, twice).await;
        assert!(matches!(result, Err(ImportError::Input { line: 1, problem: ImportProblem::DuplicateColumn { .. } })));
        let result = run(&import(), &store, "").await;
        assert!(matches!(result, Err(ImportError::Input { line: 1, problem: ImportProblem::NoHeader })), "{result:?}");
        assert_eq!(store.head().await?.get(), 0);
        Ok(())
    }

    /// Every kind of bad row, with the lines they are on (line 3 holds a field spanning two lines).
    const BAD: &str = "\
case,activity,timestamp,resource
Case 1,Open,2012-10-09T14:50:17+00:00,Ada
Case 2,Open,2012-10-10T09:00:00+00:00,\"Bob
the builder\"
Case 3,Open,2012-10-11T09:00:00+00:00
,Open,2012-10-12T09:00:00+00:00,Ada
Case 5,  ,2012-10-12T09:00:00+00:00,Ada
Case 6,Open,yesterday,Ada
\"Case\t7\",Open,2012-10-12T09:00:00+00:00,Ada
Case 1,Closed,2012-10-25T11:54:26+00:00,Ada,extra
Case 1,Closed,2012-10-25T11:54:26+00:00,Ada
";

    fn expected_bad() -> Vec<(u64, BadRowReason)> {
        vec![
            (5, BadRowReason::FieldCount { expected: 4, found: 3 }),
            (6, BadRowReason::Empty { column: "case".into() }),
            (7, BadRowReason::Empty { column: "activity".into() }),
            (8, BadRowReason::BadTime { value: "yesterday".into(), format: TimeFormat::Rfc3339 }),
            (
                9,
                BadRowReason::InvalidStream {
                    name: "ticket-Case\t7".into(),
                    reason: InvalidName::ControlCharacter { at: 11 },
                },
            ),
            (10, BadRowReason::FieldCount { expected: 4, found: 5 }),
        ]
    }

    #[tokio::test]
    async fn abort_checks_everything_first_writes_nothing_and_lists_every_bad_row() -> TestResult {
        let store = MemoryStore::new();
        let result = run(&import().batch_size(2), &store, BAD).await;
        let line = match &result {
            Err(ImportError::Input { line, .. }) => *line,
            _ => 0,
        };
        assert_eq!(line, 5, "the error names the first bad row's line");
        let rows = bad_rows(result);
        let found: Vec<_> = rows.into_iter().map(|row| (row.line, row.reason)).collect();
        assert_eq!(found, expected_bad());
        assert_eq!(store.head().await?.get(), 0, "nothing was written");
        Ok(())
    }

    #[tokio::test]
    async fn skip_leaves_bad_rows_out_and_reports_them() -> TestResult {
        let store = MemoryStore::new();
        let mut seen = Vec::new();
        let skip = import().bad_rows(BadRows::Skip).batch_size(4);
        let summary = skip.import_reader(&store, BAD.as_bytes(), |p| seen.push(p)).await?;
        let found: Vec<_> = summary.skipped.iter().map(|row| (row.line, row.reason.clone())).collect();
        assert_eq!(found, expected_bad());
        assert_eq!((summary.rows, summary.events_written, summary.streams), (9, 3, 2));
        assert_eq!(summary.skipped[0].to_string(), "line 5: it has 3 field(s), the header has 4");
        assert_eq!(stream(&store, "ticket-Case 1").await?.len(), 2);
        assert_eq!(stream(&store, "ticket-Case 2").await?[0].payload, r#"{"resource":"Bob\nthe builder"}"#);
        // Progress: once before the first batch, then after each batch of 4 rows read.
        let read: Vec<_> = seen.iter().map(|p| (p.rows_read, p.rows_skipped, p.events_written)).collect();
        assert_eq!(read, [(0, 0, 0), (4, 2, 2), (8, 6, 2), (9, 6, 3)]);
        assert!(seen.iter().all(|p| p.rows_total.is_none()), "a reader under Skip has no total");
        Ok(())
    }

    #[tokio::test]
    async fn invalid_event_types_and_non_utf8_fields_are_bad_rows() -> TestResult {
        let store = MemoryStore::new();
        let long = "A".repeat(MAX_EVENT_TYPE_LEN + 1);
        let mut csv = format!("case,activity,timestamp,who\n1,{long},2012-10-09T14:50:17Z,x\n").into_bytes();
        csv.extend_from_slice(b"2,Open,2012-10-09T14:50:17Z,\xff\n");
        let skip = import().bad_rows(BadRows::Skip);
        let summary = skip.import_reader(&store, csv.as_slice(), |_| {}).await?;
        let reasons: Vec<_> = summary.skipped.into_iter().map(|row| (row.line, row.reason)).collect();
        assert_eq!(
            reasons,
            [
                (
                    2,
                    BadRowReason::InvalidEventType {
                        event_type: long,
                        reason: InvalidName::TooLong { len: 257, max: 256 }
                    }
                ),
                (3, BadRowReason::NotUtf8 { column: "who".into() }),
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn strftime_formats_naive_as_utc_and_with_offsets() -> TestResult {
        let store = MemoryStore::new();
        let naive = "case,activity,at\n1,A,09/10/2012 14:50:17\n1,B,10/10/2012\n1,C,2012-10-11\n";
        let by_day = import().time_format(TimeFormat::NaiveUtc("%d/%m/%Y %H:%M:%S".into())).bad_rows(BadRows::Skip);
        let by_day = CsvImport { time_column: "at".into(), ..by_day };
        let summary = run(&by_day, &store, naive).await?;
        assert_eq!(summary.events_written, 1);
        let date_only = CsvImport { time_format: TimeFormat::NaiveUtc("%d/%m/%Y".into()), ..by_day.clone() };
        let summary = run(&date_only, &store, naive).await?;
        assert_eq!((summary.events_written, summary.skipped.len()), (1, 2));
        let events = stream(&store, "ticket-1").await?;
        assert_eq!(events[0].occurred_at.to_rfc3339(), "2012-10-09T14:50:17+00:00");
        assert_eq!(events[1].occurred_at.to_rfc3339(), "2012-10-10T00:00:00+00:00");

        let offsets = "case,activity,at\n2,A,09.10.2012 16:50 +0200\n";
        let with_offset =
            CsvImport { time_format: TimeFormat::WithOffset("%d.%m.%Y %H:%M %z".into()), ..by_day.clone() };
        run(&with_offset, &store, offsets).await?;
        assert_eq!(stream(&store, "ticket-2").await?[0].occurred_at.to_rfc3339(), "2012-10-09T14:50:00+00:00");

        let broken = CsvImport { time_format: TimeFormat::NaiveUtc("%Q".into()), ..by_day };
        assert!(matches!(run(&broken, &store, naive).await, Err(ImportError::Store(Error::Config { .. }))));
        Ok(())
    }

    #[tokio::test]
    async fn running_the_same_import_again_writes_nothing() -> TestResult {
        let store = MemoryStore::new();
        let small_batches = import().batch_size(2);
        let first = run(&small_batches, &store, LOG).await?;
        let head = store.head().await?;
        let ids: Vec<_> = log(&store).await?.iter().map(|e| e.id).collect();

        let again = run(&small_batches, &store, LOG).await?;
        assert_eq!((again.rows, again.events_written, again.already_present), (5, 0, 5));
        assert_eq!(again.streams, first.streams);
        assert_eq!(store.head().await?, head, "the head did not move");

        // The ids do not depend on the store or the run: a fresh store gets the same ones.
        let other = MemoryStore::new();
        run(&small_batches, &other, LOG).await?;
        assert_eq!(log(&other).await?.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        // Another namespace makes other ids.
        let elsewhere = MemoryStore::new();
        run(&small_batches.clone().id_namespace(Uuid::from_u128(1)), &elsewhere, LOG).await?;
        assert!(log(&elsewhere).await?.iter().all(|e| !ids.contains(&e.id)));
        Ok(())
    }

    #[tokio::test]
    async fn a_grown_file_or_another_batch_size_adds_only_the_new_rows() -> TestResult {
        let store = MemoryStore::new();
        let (head, _) = LOG.split_at(LOG.find("Case 1,Closed").ok_or("fixture")?);
        // The first two rows, in one batch of three: the batch is not full.
        run(&import().batch_size(3), &store, head).await?;
        assert_eq!(store.head().await?.get(), 2);

        // The whole file: its first batch holds those two rows and a new one.
        let grown = run(&import().batch_size(3), &store, LOG).await?;
        assert_eq!((grown.events_written, grown.already_present), (3, 2));
        // Another batch size: every batch is partly or wholly stored; nothing is stored twice.
        let other = run(&import().batch_size(4), &store, LOG).await?;
        assert_eq!((other.events_written, other.already_present), (0, 5));
        let events = log(&store).await?;
        assert_eq!(events.len(), 5);
        let one = stream(&store, "ticket-Case 1").await?;
        assert_eq!(one.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["Open", "Closed"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_batch_appends_each_stream_once_in_row_order() -> TestResult {
        let store = MemoryStore::new();
        let csv =
            "case,activity,timestamp\na,1,2012-01-01T00:00:00Z\nb,2,2012-01-01T00:00:01Z\na,3,2012-01-01T00:00:02Z\n";
        run(&CsvImport::new("case", "activity", "timestamp"), &store, csv).await?;
        let order: Vec<_> = log(&store).await?.iter().map(|e| (e.stream.to_string(), e.event_type.clone())).collect();
        let expected = [("a", "1"), ("a", "3"), ("b", "2")].map(|(s, t)| (s.to_owned(), t.to_owned()));
        assert_eq!(order, expected, "grouped by stream, streams in order of their first row");
        Ok(())
    }

    #[tokio::test]
    async fn a_file_that_does_not_open_fails_before_line_1() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = MemoryStore::new();
        let result = import().import_file(&store, dir.path().join("missing.csv"), |_| {}).await;
        let Err(error @ ImportError::Input { line: 0, problem: ImportProblem::Read(_) }) = result else {
            unreachable!("expected a read error, got {result:?}");
        };
        assert_eq!(error.to_string(), "cannot import the input");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("the input cannot be read"));

        let path = dir.path().join("log.csv");
        std::fs::write(&path, BAD)?;
        let error = import().import_file(&store, &path, |_| {}).await.err().ok_or("bad rows")?;
        assert_eq!(error.to_string(), "cannot import the input at line 5");
        Ok(())
    }

    /// A log whose line 3 holds a note of `note_len` bytes, between two small rows.
    fn with_note(note_len: usize) -> String {
        let note = "n".repeat(note_len);
        format!(
            "case,activity,timestamp,note\n\
             1,Open,2012-10-09T14:50:17Z,small\n\
             2,Open,2012-10-09T14:50:18Z,{note}\n\
             3,Open,2012-10-09T14:50:19Z,small\n"
        )
    }

    /// The size the store counts for the event of a row of [`with_note`]: payload and type name.
    fn size_with_note(note_len: usize) -> usize {
        format!(r#"{{"note":"{}"}}"#, "n".repeat(note_len)).len() + "Open".len()
    }

    #[tokio::test]
    async fn a_row_over_the_maximum_event_size_is_a_bad_row_under_abort_and_skip() -> TestResult {
        // The defaults of the import and of the store agree.
        let note_len = DEFAULT_MAX_EVENT_SIZE;
        let (csv, size) = (with_note(note_len), size_with_note(note_len));
        let too_large = BadRowReason::EventTooLarge { size, max: DEFAULT_MAX_EVENT_SIZE };
        let one_row_batches = CsvImport::new("case", "activity", "timestamp").batch_size(1);

        let store = MemoryStore::new();
        let rows = bad_rows(run(&one_row_batches, &store, &csv).await);
        assert_eq!(rows, [BadRow { line: 3, reason: too_large.clone() }]);
        assert_eq!(store.head().await?.get(), 0, "the batch before it was not written");
        // A file is checked by its own pass.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log.csv");
        std::fs::write(&path, &csv)?;
        let result = one_row_batches.import_file(&store, &path, |_| {}).await;
        assert_eq!(bad_rows(result), [BadRow { line: 3, reason: too_large.clone() }]);
        assert_eq!(store.head().await?.get(), 0);

        let skip = one_row_batches.clone().bad_rows(BadRows::Skip);
        let summary = run(&skip, &store, &csv).await?;
        assert_eq!(summary.skipped, [BadRow { line: 3, reason: too_large.clone() }]);
        assert_eq!((summary.rows, summary.events_written), (3, 2));
        let summary = skip.import_file(&store, &path, |_| {}).await?;
        assert_eq!((summary.skipped.len(), summary.already_present), (1, 2));
        assert_eq!(
            too_large.to_string(),
            format!("its event would be {size} bytes, over the maximum of {DEFAULT_MAX_EVENT_SIZE}")
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_maximum_event_size_is_an_option_and_an_event_of_exactly_that_size_fits() -> TestResult {
        let note_len = 100;
        let max = size_with_note(note_len);
        let csv = with_note(note_len);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log.csv");
        std::fs::write(&path, &csv)?;
        let fits = CsvImport::new("case", "activity", "timestamp").batch_size(1).max_event_size(max);
        let store = MemoryStore::with_max_event_size(max);
        assert_eq!(fits.import_file(&store, &path, |_| {}).await?.events_written, 3);
        assert_eq!(run(&fits, &MemoryStore::with_max_event_size(max), &csv).await?.events_written, 3);

        let one_less = fits.clone().max_event_size(max - 1);
        let expected = [BadRow { line: 3, reason: BadRowReason::EventTooLarge { size: max, max: max - 1 } }];
        let store = MemoryStore::with_max_event_size(max - 1);
        assert_eq!(bad_rows(one_less.import_file(&store, &path, |_| {}).await), expected);
        assert_eq!(bad_rows(run(&one_less, &store, &csv).await), expected);
        assert_eq!(store.head().await?.get(), 0);
        Ok(())
    }

    /// A log whose line 3 opens a quote that is never closed: the rows after it would be its field.
    const UNCLOSED: &str = "\
case,activity,timestamp,note
1,Open,2012-10-09T14:50:17Z,fine
2,Open,2012-10-09T14:50:18Z,\"oops
3,Open,2012-10-09T14:50:19Z,swallowed
4,Open,2012-10-09T14:50:20Z,swallowed
";

    /// A log whose line 3 opens a quote that line 5's quoted field closes: lines 4 and 5 would be
    /// inside line 3's note.
    const CLOSED_LATER: &str = "\
case,activity,timestamp,note
1,Open,2012-10-09T14:50:17Z,fine
2,Open,2012-10-09T14:50:18Z,\"oops
3,Open,2012-10-09T14:50:19Z,swallowed
4,Open,2012-10-09T14:50:20Z,\"quoted\"
5,Open,2012-10-09T14:50:21Z,fine
";

    #[tokio::test]
    async fn a_quote_that_swallows_rows_is_a_bad_row_naming_the_line_it_opens() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log.csv");
        let unclosed = BadRow { line: 3, reason: BadRowReason::UnclosedQuote { opened: 3 } };
        let closed_later = BadRow { line: 3, reason: BadRowReason::TextAfterQuote { opened: 3, closed: 5 } };
        for (csv, bad, good) in [(UNCLOSED, &unclosed, 1), (CLOSED_LATER, &closed_later, 2)] {
            let bad = std::slice::from_ref(bad);
            let store = MemoryStore::new();
            let abort = import().batch_size(1);
            assert_eq!(bad_rows(run(&abort, &store, csv).await), bad);
            std::fs::write(&path, csv)?;
            assert_eq!(bad_rows(abort.import_file(&store, &path, |_| {}).await), bad);
            assert_eq!(store.head().await?.get(), 0, "nothing was written");

            let skip = abort.bad_rows(BadRows::Skip);
            let summary = run(&skip, &store, csv).await?;
            assert_eq!((summary.skipped.as_slice(), summary.events_written), (bad, good));
            let summary = skip.import_file(&store, &path, |_| {}).await?;
            assert_eq!((summary.skipped.as_slice(), summary.already_present), (bad, good));
        }
        assert_eq!(
            unclosed.to_string(),
            "line 3: its quoted field opened on line 3 is never closed, so the rest of the input would be one field"
        );
        assert_eq!(
            closed_later.to_string(),
            "line 3: its quoted field opened on line 3 closes on line 5 with text after the closing quote"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_header_with_a_quote_never_closed_fails_at_line_1() -> TestResult {
        let store = MemoryStore::new();
        let result = run(&import(), &store, "case,activity,\"timestamp\n1,Open,2012-10-09T14:50:17Z\n").await;
        let Err(error @ ImportError::Input { line: 1, problem: ImportProblem::BadHeader { reason } }) = &result else {
            return Err(format!("expected a bad header, got {result:?}").into());
        };
        assert_eq!(*reason, BadRowReason::UnclosedQuote { opened: 1 });
        let problem = std::error::Error::source(error).map(ToString::to_string);
        assert_eq!(
            problem.as_deref(),
            Some("the header is bad: its quoted field opened on line 1 is never closed, so the rest of the input would be one field")
        );
        Ok(())
    }

    #[test]
    fn imports_can_run_on_any_tokio_task() {
        fn send<T: Send>(_: T) {}
        let store = MemoryStore::new();
        send(import().import_file(&store, "log.csv", |_| {}));
        send(import().import_reader(&store, LOG.as_bytes(), |_| {}));
    }

    #[test]
    fn error_messages_name_the_rows() {
        let rows: Vec<_> =
            (2..=6).map(|line| BadRow { line, reason: BadRowReason::Empty { column: "case".into() } }).collect();
        let message = ImportProblem::BadRows { rows }.to_string();
        assert_eq!(
            message,
            "5 bad row(s): line 2: its \"case\" field is empty; line 3: its \"case\" field is \
             empty; line 4: its \"case\" field is empty; and 2 more"
        );
        let format = BadRowReason::BadTime { value: "x".into(), format: TimeFormat::NaiveUtc("%Y".into()) };
        assert_eq!(format.to_string(), "its time \"x\" does not parse as \"%Y\" (UTC)");
    }
}
