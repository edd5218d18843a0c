//! Standard output: text for people, or JSON for scripts.

use std::fmt::Write as _;
use std::io::{self, BufWriter, StdoutLock, Write};

use annals::RecordedEvent;
use chrono::{DateTime, SecondsFormat, Utc};

/// Where commands print their results. Buffered: call [`Output::flush`] when a line must be seen
/// at once (`tail -f`); it is flushed at the end of every command.
pub(crate) struct Output {
    json: bool,
    out: BufWriter<StdoutLock<'static>>,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Output { json, out: BufWriter::new(io::stdout().lock()) }
    }

    /// Whether the user asked for JSON.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// One line of text.
    pub(crate) fn line(&mut self, text: impl AsRef<str>) -> io::Result<()> {
        self.out.write_all(text.as_ref().as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// One JSON value on one line (a JSON line, or a whole document).
    pub(crate) fn json_line(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// An event: its envelope as a JSON line, or as a block of text followed by a blank line.
    pub(crate) fn event(&mut self, event: &RecordedEvent) -> io::Result<()> {
        if self.json {
            self.json_line(event)
        } else {
            self.line(describe_event(event))
        }
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A time with microseconds, in UTC: `2013-01-01T00:00:00.000000Z`.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A size in bytes for people: `1.4 MiB (1468006 bytes)`.
pub(crate) fn bytes(size: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut scaled = size as f64;
    let mut unit = None;
    for name in UNITS {
        if scaled < 1024.0 {
            break;
        }
        scaled /= 1024.0;
        unit = Some(name);
    }
    match unit {
        None => format!("{size} bytes"),
        Some(unit) => format!("{scaled:.1} {unit} ({size} bytes)"),
    }
}

/// The whole envelope of an event, one field a line, then a blank line.
fn describe_event(event: &RecordedEvent) -> String {
    let mut text =
        format!("event {}: {} in {} at version {}\n", event.position, event.event_type, event.stream, event.version);
    let mut field = |name: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(text, "  {:<12} {value}", format!("{name}:"));
    };
    field("id", &event.id);
    field("schema", &event.schema_version);
    field("recorded at", &time(event.recorded_at));
    field("occurred at", &time(event.occurred_at));
    if let Some(correlation) = &event.metadata.correlation_id {
        field("correlation", correlation);
    }
    if let Some(causation) = &event.metadata.causation_id {
        field("causation", causation);
    }
    for (key, value) in &event.metadata.headers {
        field("header", &format!("{key}={value}"));
    }
    field("payload", &event.payload);
    text
}

/// Lines of a table: columns padded to their widest cell, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB (3145728 bytes)");
    }

    #[test]
    fn tables_pad_their_columns() {
        let rows = vec![vec!["a".to_owned(), "1".to_owned()], vec!["long".to_owned(), "22".to_owned()]];
        assert_eq!(table(&rows), ["a     1", "long  22"]);
    }
}
