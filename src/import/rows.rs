//! Reading rows: the header's layout, each row checked and turned into its event.

use std::fmt;
use std::io::{self, Write as _};

use serde::ser::{Serialize, SerializeMap, Serializer};
use uuid::Uuid;

use super::quotes::QuoteWatch;
use super::{CsvImport, ImportError, ImportProblem, TimeFormat};
use crate::envelope::{NewEvent, MAX_EVENT_TYPE_LEN};
use crate::error::{Error, Result};
use crate::name::{check_name, InvalidName};
use crate::stream_id::StreamId;

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
    /// The row's event would be larger than the import's maximum event size
    /// ([`CsvImport::max_event_size`]), which the store would refuse.
    #[error("its event would be {size} bytes, over the maximum of {max}")]
    EventTooLarge {
        /// The event's size as the store counts it (payload and type name bytes).
        size: usize,
        /// The import's maximum.
        max: usize,
    },
    /// A quoted field of the row is never closed: it runs to the end of the input, which the CSV
    /// reader would take as one field (the rows after it included). A quote is missing or one too
    /// many on line `opened`.
    #[error("its quoted field opened on line {opened} is never closed, so the rest of the input would be one field")]
    UnclosedQuote {
        /// The 1-based line of the opening quote.
        opened: u64,
    },
    /// A quoted field of the row closes with text right after its closing quote (`"a"b`), which is
    /// how a quote missing or one too many shows: the field swallowed the input up to the next quote.
    #[error("its quoted field opened on line {opened} closes on line {closed} with text after the closing quote")]
    TextAfterQuote {
        /// The 1-based line of the opening quote.
        opened: u64,
        /// The 1-based line of the closing quote.
        closed: u64,
    },
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
    fn new(import: &CsvImport, header: &csv::ByteRecord) -> Result<Self, ImportError> {
        let names: Vec<String> = header.iter().map(|name| String::from_utf8_lossy(name).into_owned()).collect();
        let find = |column: &str| -> Result<usize, ImportError> {
            let mut at = names.iter().enumerate().filter(|(_, name)| *name == column).map(|(i, _)| i);
            let problem = match (at.next(), at.next()) {
                (Some(index), None) => return Ok(index),
                (None, _) => ImportProblem::MissingColumn { column: column.to_owned() },
                (Some(_), Some(_)) => ImportProblem::DuplicateColumn { column: column.to_owned() },
            };
            Err(ImportError::Input { line: 1, problem })
        };
        let stream = find(&import.stream_column)?;
        let event_type = find(&import.type_column)?;
        let time = find(&import.time_column)?;
        let payload = match &import.payload_columns {
            Some(columns) => {
                columns.iter().map(|c| Ok((c.clone(), find(c)?))).collect::<Result<Vec<_>, ImportError>>()?
            }
            None => {
                let others = names.iter().enumerate().filter(|(i, _)| ![stream, event_type, time].contains(i));
                others.map(|(_, name)| Ok((name.clone(), find(name)?))).collect::<Result<Vec<_>, ImportError>>()?
            }
        };
        Ok(Layout { stream, event_type, time, payload, width: names.len() })
    }
}

/// Whether a read builds the events or only checks the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Build {
    CheckOnly,
    Events,
}

/// One good row, as the event it makes.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) stream: StreamId,
    pub(super) event: NewEvent,
}

/// What reading up to a batch of rows gave.
#[derive(Debug, Default)]
pub(super) struct ReadBatch {
    /// Rows read, good and bad.
    pub(super) rows: u64,
    /// The good rows' events (none when only checking).
    pub(super) events: Vec<Row>,
    pub(super) bad: Vec<BadRow>,
}

/// The rows of a CSV input, read a batch at a time.
pub(super) struct RowReader<'a, R> {
    import: &'a CsvImport,
    csv: csv::Reader<QuoteWatch<R>>,
    layout: Layout,
    record: csv::ByteRecord,
    /// A reused buffer for the bytes an event id is made from.
    id_input: Vec<u8>,
}

impl<'a, R: io::Read> RowReader<'a, R> {
    /// Reads the header and finds the columns.
    pub(super) fn new(import: &'a CsvImport, input: R) -> Result<Self, ImportError> {
        let input = QuoteWatch::new(input, import.delimiter);
        let mut csv = csv::ReaderBuilder::new().delimiter(import.delimiter).flexible(true).from_reader(input);
        let header = csv.byte_headers().map_err(|e| read_error(1, e))?.clone();
        let end = csv.position().byte();
        if let Some(reason) = csv.get_mut().take_fault_before(end) {
            return Err(ImportError::Input { line: 1, problem: ImportProblem::BadHeader { reason } });
        }
        if header.is_empty() {
            return Err(ImportError::Input { line: 1, problem: ImportProblem::NoHeader });
        }
        let layout = Layout::new(import, &header)?;
        Ok(RowReader { import, csv, layout, record: csv::ByteRecord::new(), id_input: Vec::new() })
    }

    /// Reads the next batch of rows, or `None` at the end of the input.
    pub(super) fn next_batch(&mut self, build: Build) -> Result<Option<ReadBatch>, ImportError> {
        let mut batch = ReadBatch::default();
        while batch.rows < self.import.batch_size as u64 {
            let line = self.csv.position().line();
            let more = self.csv.read_byte_record(&mut self.record).map_err(|e| read_error(line, e))?;
            if !more {
                break;
            }
            batch.rows += 1;
            let line = self.record.position().map_or(line, csv::Position::line);
            let end = self.csv.position().byte();
            if let Some(reason) = self.csv.get_mut().take_fault_before(end) {
                batch.bad.push(BadRow { line, reason });
                continue;
            }
            match convert(self.import, &self.layout, &self.record, line, build, &mut self.id_input)? {
                Ok(Some(row)) => batch.events.push(row),
                Ok(None) => {}
                Err(reason) => batch.bad.push(BadRow { line, reason }),
            }
        }
        Ok((batch.rows > 0).then_some(batch))
    }
}

fn read_error(line: u64, error: csv::Error) -> ImportError {
    let source = match error.into_kind() {
        csv::ErrorKind::Io(source) => source,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    };
    ImportError::Input { line, problem: ImportProblem::Read(source) }
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
) -> Result<Converted, ImportError> {
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
    let payload = Payload { columns: &layout.payload, values: &values };
    let too_large = |size: usize| {
        (size > import.max_event_size).then_some(BadRowReason::EventTooLarge { size, max: import.max_event_size })
    };
    if build == Build::CheckOnly {
        let mut counted = ByteCount(0);
        serde_json::to_writer(&mut counted, &payload)
            .map_err(|source| Error::Serialize { event_type: event_type.to_owned(), source })?;
        return Ok(too_large(counted.0 + event_type.len()).map_or(Ok(None), Err));
    }
    let event = NewEvent::json(event_type, &payload)?.with_occurred_at(occurred);
    if let Some(reason) = too_large(event.size()) {
        return Ok(Err(reason));
    }
    id_input.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(id_input, "{line}\u{1f}{stream}\u{1f}{event_type}\u{1f}{}\u{1f}", occurred.timestamp_micros());
    id_input.extend_from_slice(event.payload().as_bytes());
    let id = Uuid::new_v5(&import.id_namespace, id_input);
    let stream = StreamId::new(stream)?;
    Ok(Ok(Some(Row { stream, event: event.with_id(id) })))
}

/// Counts the bytes written to it: the size of a payload, without keeping it.
struct ByteCount(usize);

impl io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
