//! Writing to stdout: JSON lines or aligned columns, buffered, with a
//! closed pipe treated as "enough" (see [`Failure::stdout`]).

use std::io::{BufWriter, Stdout, Write};

use logbook_client::RecordedEvent;
use serde::Serialize;

use crate::failure::Failure;
use crate::render::{EventJson, human_payload, rfc3339};

/// Rows a table holds back to size its columns before printing them: the
/// columns of a read fit its widest value within each such chunk.
const TABLE_CHUNK_ROWS: usize = 1000;

/// Buffered stdout. Callers flush when a pause is coming (`tail` before it
/// waits for the next event) and at the end.
pub(crate) struct Out {
    w: BufWriter<Stdout>,
}

impl Out {
    pub(crate) fn new() -> Out {
        Out {
            w: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        }
    }

    /// `value` as one JSON line.
    pub(crate) fn json<T: Serialize>(&mut self, value: &T) -> Result<(), Failure> {
        serde_json::to_writer(&mut self.w, value).map_err(|e| Failure::stdout(e.into()))?;
        self.w.write_all(b"\n").map_err(Failure::stdout)
    }

    /// Text as it is (include the newline).
    pub(crate) fn text(&mut self, text: &str) -> Result<(), Failure> {
        self.w.write_all(text.as_bytes()).map_err(Failure::stdout)
    }

    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        self.w.flush().map_err(Failure::stdout)
    }
}

/// Which way a column's values line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table whose column widths only grow: rows are printed in chunks (or
/// one by one when streaming), each padded to the widest value seen so
/// far. The last column is never padded.
pub(crate) struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    widths: Vec<usize>,
    rows: Vec<Vec<String>>,
    /// Print each row as it comes (for `tail`), instead of in chunks.
    streaming: bool,
    header_printed: bool,
}

impl Table {
    /// A table with these columns. `min_widths` start the widths (useful
    /// when streaming, where later rows cannot widen earlier ones).
    pub(crate) fn new(columns: &[(&'static str, Align, usize)], streaming: bool) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            widths: columns.iter().map(|c| c.0.len().max(c.2)).collect(),
            rows: Vec::new(),
            streaming,
            header_printed: false,
        }
    }

    /// Adds a row; prints it now when streaming, else with its chunk.
    pub(crate) fn push(&mut self, row: Vec<String>, out: &mut Out) -> Result<(), Failure> {
        self.rows.push(row);
        if self.streaming || self.rows.len() >= TABLE_CHUNK_ROWS {
            self.print(out)?;
        }
        Ok(())
    }

    /// Prints the rows held back.
    pub(crate) fn print(&mut self, out: &mut Out) -> Result<(), Failure> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let text = self.render();
        out.text(&text)
    }

    /// The rows held back as text (after the header, the first time),
    /// widening the columns to fit them.
    fn render(&mut self) -> String {
        for row in &self.rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        if !self.header_printed {
            let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
            self.line(&headers, &mut text);
            self.header_printed = true;
        }
        for row in std::mem::take(&mut self.rows) {
            self.line(&row, &mut text);
        }
        text
    }

    fn line(&self, row: &[String], text: &mut String) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            let width = self.widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            let align = self.align.get(i).copied().unwrap_or(Align::Left);
            if i > 0 {
                text.push_str("  ");
            }
            match align {
                Align::Right => {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                }
                Align::Left => {
                    text.push_str(cell);
                    if i < last {
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        text.push('\n');
    }
}

/// Prints events in either form: JSON lines, or a table whose columns
/// depend on whether the events come from one stream (the stream column
/// is left out) or from the global log.
pub(crate) struct EventPrinter {
    table: Option<Table>,
    one_stream: bool,
}

impl EventPrinter {
    /// `json`: JSON lines; `one_stream`: the events are one stream's, in
    /// version order; `streaming`: print rows as they come (tail).
    pub(crate) fn new(json: bool, one_stream: bool, streaming: bool) -> EventPrinter {
        let table = (!json).then(|| {
            // Minimum widths keep a streamed table steady for ordinary
            // values; a chunked one sizes itself anyway.
            let columns: &[(&'static str, Align, usize)] = if one_stream {
                &[
                    ("VERSION", Align::Right, 7),
                    ("POSITION", Align::Right, 8),
                    ("TYPE", Align::Left, 16),
                    ("TIMESTAMP", Align::Left, 24),
                    ("DATA", Align::Left, 0),
                ]
            } else {
                &[
                    ("POSITION", Align::Right, 8),
                    ("STREAM", Align::Left, 16),
                    ("VERSION", Align::Right, 7),
                    ("TYPE", Align::Left, 16),
                    ("TIMESTAMP", Align::Left, 24),
                    ("DATA", Align::Left, 0),
                ]
            };
            let columns = if streaming {
                columns.to_vec()
            } else {
                columns.iter().map(|&(h, a, _)| (h, a, 0)).collect()
            };
            Table::new(&columns, streaming)
        });
        EventPrinter { table, one_stream }
    }

    pub(crate) fn event(&mut self, event: &RecordedEvent, out: &mut Out) -> Result<(), Failure> {
        let Some(table) = &mut self.table else {
            return out.json(&EventJson::new(event));
        };
        let mut data = human_payload(&event.data);
        if !event.metadata.is_empty() {
            data.push_str("  metadata: ");
            data.push_str(&human_payload(&event.metadata));
        }
        let version = event.version.to_string();
        let position = event.position.to_string();
        let event_type = event.event_type.as_str().to_owned();
        let timestamp = rfc3339(event.timestamp_us, 3);
        let row = if self.one_stream {
            vec![version, position, event_type, timestamp, data]
        } else {
            let stream = event.stream.as_str().to_owned();
            vec![position, stream, version, event_type, timestamp, data]
        };
        table.push(row, out)
    }

    /// Prints what is held back.
    pub(crate) fn finish(&mut self, out: &mut Out) -> Result<(), Failure> {
        match &mut self.table {
            Some(table) => table.print(out),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(table: &mut Table, rows: &[&[&str]]) -> String {
        for row in rows {
            table
                .rows
                .push(row.iter().map(|c| (*c).to_owned()).collect());
        }
        table.render()
    }

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut table = Table::new(
            &[
                ("POS", Align::Right, 0),
                ("STREAM", Align::Left, 0),
                ("DATA", Align::Left, 0),
            ],
            false,
        );
        let text = rows(
            &mut table,
            &[&["7", "a", "{}"], &["1234", "account-42", "0x00 (1 byte)"]],
        );
        assert_eq!(
            text,
            " POS  STREAM      DATA\n   7  a           {}\n1234  account-42  0x00 (1 byte)\n"
        );
        // Later chunks keep the widths and print no second header.
        assert_eq!(
            rows(&mut table, &[&["8", "b", "1"]]),
            "   8  b           1\n"
        );
    }

    #[test]
    fn streamed_tables_start_from_minimum_widths() {
        let mut table = Table::new(&[("V", Align::Right, 4), ("T", Align::Left, 3)], true);
        assert_eq!(rows(&mut table, &[&["1", "A"]]), "   V  T\n   1  A\n");
    }
}
