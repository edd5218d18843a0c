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
//! order, [`ExpectedVersion::Any`]): a crash leaves whole batches, never part of one. A bad row (a
//! field count other than the header's, an empty case or activity, a time that does not parse, a name
//! the store refuses) is reported with its line number and reason ([`BadRow`]). With
//! [`BadRows::Abort`] (the default) the whole input is checked before anything is written, and any
//! bad row fails the import with [`Error::Import`] listing them all; with [`BadRows::Skip`] bad rows
//! are left out and listed in [`ImportSummary::skipped`].
//!
//! The library never prints: a progress callback receives an [`ImportProgress`] after every batch.
//!
//! Input is read on the calling task, one buffered batch at a time (a thousand rows of a local file
//! take well under a millisecond to parse); the store's writes run on its own writer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use uuid::Uuid;

use crate::envelope::{NewEvent, MAX_EVENT_TYPE_LEN};
use crate::error::{Error, InvalidName, Result};
use crate::position::ExpectedVersion;
use crate::store::{AppendResult, EventStore, StreamAppend};
use crate::stream_id::{check_name, StreamId};

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
}

/// How the time column is written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeFormat {
    /// RFC 3339 with an offset, e.g. `2012-10-09T14:50:17+00:00` or `2012-10-09T16:50:17.5+02:00`.
    Rfc3339,
    /// A chrono `strftime` format without an offset (e.g. `"%Y-%m-%d %H:%M:%S"`), the time taken as
    /// UTC. A format with a date only (`"%d/%m/%Y"`) gives midnight.
    NaiveUtc(String),
    /// A chrono `strftime` format with an offset (`%z` or `%:z`), e.g. `"%d/%m/%Y %H:%M %z"`.
    WithOffset(String),
}

/// What an import does with a bad row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRows {
    /// Check the whole input first; write nothing and fail with [`Error::Import`] if any row is bad.
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

/// A row that does not make an event: where it is and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// The row's 1-based line number in the input (the header is line 1; a row whose quoted field
    /// spans lines has the number of its first line).
    pub line: u64,
    /// What is wrong with it.
    pub reason: BadRowReason,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Why a row does not make an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRowReason {
    /// The row has more or fewer fields than the header.
    #[error("it has {found} field(s), the header has {expected}")]
    FieldCount {
        /// The header's number of fields.
        expected: usize,
        /// The row's.
        found: usize,
    },
    /// The case or activity field is empty (or only spaces).
    #[error("its {column:?} field is empty")]
    Empty {
        /// The column.
        column: String,
    },
    /// A field is not valid UTF-8.
    #[error("its {column:?} field is not valid UTF-8")]
    NotUtf8 {
        /// The column.
        column: String,
    },
    /// The time does not parse in the import's time format.
    #[error("its time {value:?} does not parse as {format}")]
    BadTime {
        /// The time field.
        value: String,
        /// The format it was parsed with.
        format: TimeFormat,
    },
    /// The stream name (prefix and case) is not a valid [`StreamId`].
    #[error("stream name {name:?} is invalid: {reason}")]
    InvalidStream {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: InvalidName,
    },
    /// The activity is not a valid event type name.
    #[error("event type {event_type:?} is invalid: {reason}")]
    InvalidEventType {
        /// The rejected name.
        event_type: String,
        /// What is wrong with it.
        reason: InvalidName,
    },
}

/// Why an import stopped: the `problem` of [`Error::Import`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportProblem {
    /// The input does not open or read (an I/O error, or bytes the CSV reader cannot take).
    #[error("the input cannot be read")]
    Read(#[source] io::Error),
    /// The input is empty: it has no header.
    #[error("the input has no header")]
    NoHeader,
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

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeFormat::Rfc3339 => f.write_str("RFC 3339"),
            TimeFormat::NaiveUtc(format) => write!(f, "{format:?} (UTC)"),
            TimeFormat::WithOffset(format) => write!(f, "{format:?}"),
        }
    }
}

impl TimeFormat {
    /// Parses `value` (surrounding spaces ignored), or `None` when it does not fit the format.
    fn parse(&self, value: &str) -> Option<DateTime<Utc>> {
        let value = value.trim();
        match self {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(value).ok().map(|t| t.to_utc()),
            TimeFormat::NaiveUtc(format) => NaiveDateTime::parse_from_str(value, format)
                .ok()
                .or_else(|| NaiveDate::parse_from_str(value, format).ok().map(|day| day.and_time(NaiveTime::MIN)))
                .map(|t| t.and_utc()),
            TimeFormat::WithOffset(format) => DateTime::parse_from_str(value, format).ok().map(|t| t.to_utc()),
        }
    }

    /// Whether a `strftime` format is well formed.
    fn check(&self) -> Result<()> {
        let format = match self {
            TimeFormat::Rfc3339 => return Ok(()),
            TimeFormat::NaiveUtc(format) | TimeFormat::WithOffset(format) => format,
        };
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(Error::Config("the import's time format is not a valid strftime format"));
        }
        Ok(())
    }
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

    /// Imports the CSV file at `path` into `store`, calling `progress` after every batch.
    ///
    /// The file is read twice: a first pass checks every row and counts them (so progress has a
    /// total, and [`BadRows::Abort`] writes nothing when a row is bad), the second appends. The file
    /// must not change in between.
    ///
    /// # Errors
    /// [`Error::Import`] when the file does not read, its header lacks a configured column, or (with
    /// [`BadRows::Abort`]) rows are bad; [`Error::Config`] for a malformed `strftime` format; the
    /// store's errors, unchanged. Batches appended before an error stay stored; running the import
    /// again completes it.
    pub async fn import_file<S: EventStore + ?Sized>(
        &self,
        store: &S,
        path: impl AsRef<Path>,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<ImportSummary> {
        self.time_format.check()?;
        let path = path.as_ref();
        let open =
            || File::open(path).map_err(|source| Error::Import { line: 0, problem: ImportProblem::Read(source) });
        let mut check = RowReader::new(self, open()?)?;
        let (mut total, mut bad) = (0, Vec::new());
        while let Some(batch) = check.next_batch(Build::CheckOnly)? {
            total += batch.rows;
            bad.extend(batch.bad);
        }
        if self.bad_rows == BadRows::Abort {
            if let Some(first) = bad.first() {
                return Err(Error::Import { line: first.line, problem: ImportProblem::BadRows { rows: bad } });
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
    ) -> Result<ImportSummary> {
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
            return Err(Error::Import { line: first.line, problem: ImportProblem::BadRows { rows: bad } });
        }
        let total = batches.iter().map(|b| b.rows).sum();
        let mut batches = batches.into_iter();
        self.write(store, || Ok(batches.next()), Some(total), &mut progress).await
    }

    /// Appends the batches `next` gives, one atomic append each, and sums up.
    async fn write<S: EventStore + ?Sized>(
        &self,
        store: &S,
        mut next: impl FnMut() -> Result<Option<ReadBatch>>,
        rows_total: Option<u64>,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<ImportSummary> {
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
                    return Err(Error::Import { line, problem: ImportProblem::BadRows { rows: batch.bad } });
                }
            }
            summary.rows += batch.rows;
            summary.skipped.extend(batch.bad);
            for row in &batch.events {
                if !streams.contains(&row.stream) {
                    streams.insert(row.stream.clone());
                }
            }
            let tally = append_batch(store, batch.events).await?;
            summary.events_written += tally.written;
            summary.already_present += tally.present;
            progress(report(&summary));
        }
        summary.streams = streams.len() as u64;
        Ok(summary)
    }
}

// ---------------------------------------------------------------------------------------------------
// Reading rows.

/// Where the columns the import uses are in the header.
#[derive(Debug)]
struct Layout {
    stream: usize,
    event_type: usize,
    time: usize,
    /// The payload's columns: name and index.
    payload: Vec<(String, usize)>,
    /// The header's number of fields.
    width: usize,
}

impl Layout {
    fn new(import: &CsvImport, header: &csv::ByteRecord) -> Result<Self> {
        let names: Vec<String> = header.iter().map(|name| String::from_utf8_lossy(name).into_owned()).collect();
        let find = |column: &str| -> Result<usize> {
            let mut at = names.iter().enumerate().filter(|(_, name)| *name == column).map(|(i, _)| i);
            let problem = match (at.next(), at.next()) {
                (Some(index), None) => return Ok(index),
                (None, _) => ImportProblem::MissingColumn { column: column.to_owned() },
                (Some(_), Some(_)) => ImportProblem::DuplicateColumn { column: column.to_owned() },
            };
            Err(Error::Import { line: 1, problem })
        };
        let stream = find(&import.stream_column)?;
        let event_type = find(&import.type_column)?;
        let time = find(&import.time_column)?;
        let payload = match &import.payload_columns {
            Some(columns) => columns.iter().map(|c| Ok((c.clone(), find(c)?))).collect::<Result<Vec<_>>>()?,
            None => {
                let others = names.iter().enumerate().filter(|(i, _)| ![stream, event_type, time].contains(i));
                others.map(|(_, name)| Ok((name.clone(), find(name)?))).collect::<Result<Vec<_>>>()?
            }
        };
        Ok(Layout { stream, event_type, time, payload, width: names.len() })
    }
}

/// Whether a read builds the events or only checks the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    CheckOnly,
    Events,
}

/// One good row, as the event it makes.
#[derive(Debug)]
struct Row {
    stream: StreamId,
    event: NewEvent,
}

/// What reading up to a batch of rows gave.
#[derive(Debug, Default)]
struct ReadBatch {
    /// Rows read, good and bad.
    rows: u64,
    /// The good rows' events (none when only checking).
    events: Vec<Row>,
    bad: Vec<BadRow>,
}

/// The rows of a CSV input, read a batch at a time.
struct RowReader<'a, R> {
    import: &'a CsvImport,
    csv: csv::Reader<R>,
    layout: Layout,
    record: csv::ByteRecord,
    /// A reused buffer for the bytes an event id is made from.
    id_input: Vec<u8>,
}

impl<'a, R: io::Read> RowReader<'a, R> {
    /// Reads the header and finds the columns.
    fn new(import: &'a CsvImport, input: R) -> Result<Self> {
        let mut csv = csv::ReaderBuilder::new().delimiter(import.delimiter).flexible(true).from_reader(input);
        let header = csv.byte_headers().map_err(|e| read_error(1, e))?.clone();
        if header.is_empty() {
            return Err(Error::Import { line: 1, problem: ImportProblem::NoHeader });
        }
        let layout = Layout::new(import, &header)?;
        Ok(RowReader { import, csv, layout, record: csv::ByteRecord::new(), id_input: Vec::new() })
    }

    /// Reads the next batch of rows, or `None` at the end of the input.
    fn next_batch(&mut self, build: Build) -> Result<Option<ReadBatch>> {
        let mut batch = ReadBatch::default();
        while batch.rows < self.import.batch_size as u64 {
            let line = self.csv.position().line();
            let more = self.csv.read_byte_record(&mut self.record).map_err(|e| read_error(line, e))?;
            if !more {
                break;
            }
            batch.rows += 1;
            let line = self.record.position().map_or(line, csv::Position::line);
            match convert(self.import, &self.layout, &self.record, line, build, &mut self.id_input)? {
                Ok(Some(row)) => batch.events.push(row),
                Ok(None) => {}
                Err(reason) => batch.bad.push(BadRow { line, reason }),
            }
        }
        Ok((batch.rows > 0).then_some(batch))
    }
}

fn read_error(line: u64, error: csv::Error) -> Error {
    let source = match error.into_kind() {
        csv::ErrorKind::Io(source) => source,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    };
    Error::Import { line, problem: ImportProblem::Read(source) }
}

/// A row checked, and turned into its event when asked (`Ok(None)` when only checking).
type Converted = std::result::Result<Option<Row>, BadRowReason>;

/// Checks one row and, when `build` says so, makes its event.
fn convert(
    import: &CsvImport,
    layout: &Layout,
    record: &csv::ByteRecord,
    line: u64,
    build: Build,
    id_input: &mut Vec<u8>,
) -> Result<Converted> {
    if record.len() != layout.width {
        return Ok(Err(BadRowReason::FieldCount { expected: layout.width, found: record.len() }));
    }
    let field = |index: usize, column: &str| -> std::result::Result<&str, BadRowReason> {
        let bytes = record.get(index).unwrap_or_default();
        std::str::from_utf8(bytes).map_err(|_| BadRowReason::NotUtf8 { column: column.to_owned() })
    };
    let named = |index: usize, column: &str| -> std::result::Result<&str, BadRowReason> {
        let value = field(index, column)?;
        if value.trim().is_empty() {
            return Err(BadRowReason::Empty { column: column.to_owned() });
        }
        Ok(value)
    };
    let checked = (|| {
        let case = named(layout.stream, &import.stream_column)?;
        let event_type = named(layout.event_type, &import.type_column)?;
        let time = field(layout.time, &import.time_column)?;
        let stream = format!("{}{case}", import.stream_prefix);
        if let Err(reason) = check_name(&stream, StreamId::MAX_LEN) {
            return Err(BadRowReason::InvalidStream { name: stream, reason });
        }
        if let Err(reason) = check_name(event_type, MAX_EVENT_TYPE_LEN) {
            return Err(BadRowReason::InvalidEventType { event_type: event_type.to_owned(), reason });
        }
        let Some(occurred) = import.time_format.parse(time) else {
            return Err(BadRowReason::BadTime { value: time.to_owned(), format: import.time_format.clone() });
        };
        let values = layout.payload.iter().map(|(name, index)| field(*index, name)).collect::<Result<Vec<_>, _>>()?;
        Ok((stream, event_type, occurred, values))
    })();
    let (stream, event_type, occurred, values) = match checked {
        Ok(checked) => checked,
        Err(reason) => return Ok(Err(reason)),
    };
    if build == Build::CheckOnly {
        return Ok(Ok(None));
    }
    let payload = Payload { columns: &layout.payload, values: &values };
    let event = NewEvent::json(event_type, &payload)?.with_occurred_at(occurred);
    id_input.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(id_input, "{line}\u{1f}{stream}\u{1f}{event_type}\u{1f}{}\u{1f}", occurred.timestamp_micros());
    id_input.extend_from_slice(event.payload().as_bytes());
    let id = Uuid::new_v5(&import.id_namespace, id_input);
    let stream = StreamId::new(stream)?;
    Ok(Ok(Some(Row { stream, event: event.with_id(id) })))
}

/// A row's payload: its columns' names and values as a JSON object, in column order.
struct Payload<'a> {
    columns: &'a [(String, usize)],
    values: &'a [&'a str],
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for ((name, _), value) in self.columns.iter().zip(self.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

// ---------------------------------------------------------------------------------------------------
// Writing batches.

/// Events appended and found already stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    written: u64,
    present: u64,
}

impl Tally {
    fn add(&mut self, events: usize, result: &AppendResult) {
        if result.already_appended {
            self.present += events as u64;
        } else {
            self.written += events as u64;
        }
    }
}

/// Groups a batch's rows by stream, keeping their order: one part per stream, streams in the order
/// of their first row.
fn group(rows: Vec<Row>) -> Vec<StreamAppend> {
    let mut parts: Vec<StreamAppend> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for Row { stream, event } in rows {
        match index.get(&stream) {
            Some(&at) => parts[at].events.push(event),
            None => {
                index.insert(stream.clone(), parts.len());
                parts.push(StreamAppend::new(stream, ExpectedVersion::Any, vec![event]));
            }
        }
    }
    parts
}

/// Appends one batch atomically. A batch the store holds partly (see the module docs) goes again
/// stream by stream, and a stream's part that is itself partly stored event by event.
async fn append_batch<S: EventStore + ?Sized>(store: &S, rows: Vec<Row>) -> Result<Tally> {
    let mut tally = Tally::default();
    if rows.is_empty() {
        return Ok(tally);
    }
    let parts = group(rows);
    let sizes: Vec<usize> = parts.iter().map(|part| part.events.len()).collect();
    match store.append_multi(parts.clone()).await {
        Ok(results) => {
            for (size, result) in sizes.iter().zip(&results) {
                tally.add(*size, result);
            }
            Ok(tally)
        }
        Err(Error::DuplicateEventId { .. }) => {
            for part in parts {
                let size = part.events.len();
                match store.append_multi(vec![part.clone()]).await {
                    Ok(results) => results.iter().for_each(|result| tally.add(size, result)),
                    Err(Error::DuplicateEventId { .. }) => {
                        for event in part.events {
                            let result = store.append(&part.stream, ExpectedVersion::Any, vec![event]).await?;
                            tally.add(1, &result);
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(tally)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;
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

    async fn run(import: &CsvImport, store: &MemoryStore, csv: &str) -> Result<ImportSummary> {
        import.import_reader(store, csv.as_bytes(), |_| {}).await
    }

    async fn log(store: &MemoryStore) -> Result<Vec<RecordedEvent>> {
        store.read_log(ReadLog::from_start()).try_collect().await
    }

    async fn stream(store: &MemoryStore, name: &str) -> Result<Vec<RecordedEvent>> {
        store.read_stream(&StreamId::new(name)?, ReadStream::forward()).try_collect().await
    }

    fn bad_rows(result: Result<ImportSummary>) -> Vec<BadRow> {
        match result {
            Err(Error::Import { problem: ImportProblem::BadRows { rows }, .. }) => rows,
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
            Err(Error::Import { line: 1, problem: ImportProblem::MissingColumn { ref column } }) if column == "colour"
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
            Err(Error::Import { line: 1, problem: ImportProblem::MissingColumn { ref column } }) if column == "time"
        ));
        let twice = "case,activity,timestamp,case\n1,A,2012-10-09T14:50:17Z,2\n";
        let result = run(&import(), &store, twice).await;
        assert!(matches!(result, Err(Error::Import { line: 1, problem: ImportProblem::DuplicateColumn { .. } })));
        let result = run(&import(), &store, "").await;
        assert!(matches!(result, Err(Error::Import { line: 1, problem: ImportProblem::NoHeader })), "{result:?}");
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
            Err(Error::Import { line, .. }) => *line,
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
        assert!(matches!(run(&broken, &store, naive).await, Err(Error::Config(_))));
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
        let Err(error @ Error::Import { line: 0, problem: ImportProblem::Read(_) }) = result else {
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
