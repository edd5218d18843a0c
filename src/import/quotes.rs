//! Watching the quotes of a CSV input as the reader takes it in.
//!
//! The CSV reader accepts a quoted field that is never closed (it runs to the end of the input) and
//! text after a closing quote (`"a"b` reads as `ab`). Both are how one missing or extra quote shows:
//! the field swallows the rows after it, up to the end of the input or to the next quote, and the
//! reader says nothing. [`QuoteWatch`] sits between the input and the reader, follows the quotes the
//! way the reader does (RFC 4180: `"` opens a field that starts with it, `""` inside is a quote) and
//! notes each such field, so that the row holding it is reported instead.

use std::collections::VecDeque;
use std::io::{self, Read};

use super::rows::BadRowReason;

/// Where the watch is in the input, as the CSV reader's own state machine would be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a field (or of a record, or of a blank line).
    FieldStart,
    /// In a field that does not start with a quote: quotes in it are text.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: it closes the field, or is the first of `""`.
    QuoteInQuoted {
        /// The line of that quote.
        line: u64,
    },
}

/// A quoted field that swallowed input: the byte offset of its opening quote, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct QuoteFault {
    pub(super) at: u64,
    pub(super) reason: BadRowReason,
}

/// A reader that passes `inner` through, watching its quotes.
pub(super) struct QuoteWatch<R> {
    inner: R,
    delimiter: u8,
    state: State,
    /// The number of bytes read so far: the offset of the next one.
    offset: u64,
    /// The 1-based line of the next byte, counted as the CSV reader counts (`\n`).
    line: u64,
    /// The offset and line of the quote that opened the current quoted field.
    opened: (u64, u64),
    /// Faults found and not yet taken, in input order.
    faults: VecDeque<QuoteFault>,
    ended: bool,
}

impl<R> QuoteWatch<R> {
    pub(super) fn new(inner: R, delimiter: u8) -> Self {
        QuoteWatch {
            inner,
            delimiter,
            state: State::FieldStart,
            offset: 0,
            line: 1,
            opened: (0, 1),
            faults: VecDeque::new(),
            ended: false,
        }
    }

    /// The first fault whose opening quote is before byte `end`, dropping any others before it: the
    /// CSV reader has read up to `end`, and a fault there belongs to the record (or header) just read.
    pub(super) fn take_fault_before(&mut self, end: u64) -> Option<BadRowReason> {
        let mut first = None;
        while self.faults.front().is_some_and(|fault| fault.at < end) {
            let fault = self.faults.pop_front();
            first = first.or(fault.map(|fault| fault.reason));
        }
        first
    }

    fn step(&mut self, byte: u8) {
        let boundary = byte == self.delimiter || byte == b'\n' || byte == b'\r';
        self.state = match self.state {
            State::FieldStart if byte == b'"' => {
                self.opened = (self.offset, self.line);
                State::Quoted
            }
            State::FieldStart | State::Unquoted if boundary => State::FieldStart,
            State::FieldStart | State::Unquoted => State::Unquoted,
            State::Quoted if byte == b'"' => State::QuoteInQuoted { line: self.line },
            State::Quoted => State::Quoted,
            State::QuoteInQuoted { .. } if byte == b'"' => State::Quoted,
            State::QuoteInQuoted { .. } if boundary => State::FieldStart,
            State::QuoteInQuoted { line } => {
                let (at, opened) = self.opened;
                self.faults.push_back(QuoteFault { at, reason: BadRowReason::TextAfterQuote { opened, closed: line } });
                State::Unquoted
            }
        };
        self.offset += 1;
        self.line += u64::from(byte == b'\n');
    }

    fn end(&mut self) {
        if !self.ended && self.state == State::Quoted {
            let (at, opened) = self.opened;
            self.faults.push_back(QuoteFault { at, reason: BadRowReason::UnclosedQuote { opened } });
        }
        self.ended = true;
    }
}

impl<R: Read> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && !buf.is_empty() {
            self.end();
        }
        for &byte in buf.get(..read).unwrap_or_default() {
            self.step(byte);
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fault of `input` read through the watch, as (offset of the opening quote, reason).
    fn faults(input: &str, delimiter: u8) -> Vec<(u64, BadRowReason)> {
        let mut watch = QuoteWatch::new(input.as_bytes(), delimiter);
        let mut sink = Vec::new();
        let read = watch.read_to_end(&mut sink);
        assert!(read.is_ok());
        assert_eq!(sink, input.as_bytes(), "the input passes through unchanged");
        watch.faults.into_iter().map(|fault| (fault.at, fault.reason)).collect()
    }

    #[test]
    fn well_formed_quoting_has_no_fault() {
        for input in [
            "a,b\n\"x, y\",\"say \"\"hi\"\"\"\n",
            "a,b\r\n\"two\r\nlines\",\"\"\r\n",
            "a,b\n1,2\n\n3,\"\"",
            "a,b\nx\"y,\"z\"\n",
            "\"only\"",
        ] {
            assert_eq!(faults(input, b','), [], "{input:?}");
        }
        assert_eq!(faults("a;b\n\"x; y\";\"z\"\n", b';'), []);
    }

    #[test]
    fn a_quote_never_closed_is_a_fault_at_the_line_it_opens() {
        let input = "a,b\n1,2\n3,\"oops\n4,5\n6,7\n";
        assert_eq!(faults(input, b','), [(10, BadRowReason::UnclosedQuote { opened: 3 })]);
        assert_eq!(faults("\"a,b\n", b','), [(0, BadRowReason::UnclosedQuote { opened: 1 })]);
        assert_eq!(faults("a,\"b\"\"", b','), [(2, BadRowReason::UnclosedQuote { opened: 1 })], "\"\" is a quote");
    }

    #[test]
    fn text_after_a_closing_quote_is_a_fault_naming_both_lines() {
        // The quote opened on line 2 closes at the opening quote of line 4's field.
        let input = "a,b\n1,\"oops\n2,fine\n3,\"quoted\"\n";
        assert_eq!(faults(input, b','), [(6, BadRowReason::TextAfterQuote { opened: 2, closed: 4 })]);
        assert_eq!(faults("\"a\"b,c\n", b','), [(0, BadRowReason::TextAfterQuote { opened: 1, closed: 1 })]);
        // With another delimiter, a comma after a quote is text.
        assert_eq!(faults("\"a\",b\n", b';'), [(0, BadRowReason::TextAfterQuote { opened: 1, closed: 1 })]);
    }

    #[test]
    fn faults_are_taken_by_the_byte_the_reader_reached() {
        let mut watch = QuoteWatch::new(&b""[..], b',');
        for at in [3, 10] {
            watch.faults.push_back(QuoteFault { at, reason: BadRowReason::UnclosedQuote { opened: at } });
        }
        assert_eq!(watch.take_fault_before(3), None);
        assert_eq!(watch.take_fault_before(4), Some(BadRowReason::UnclosedQuote { opened: 3 }));
        assert_eq!(watch.take_fault_before(100), Some(BadRowReason::UnclosedQuote { opened: 10 }));
        assert_eq!(watch.take_fault_before(200), None);
    }
}
