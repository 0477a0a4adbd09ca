//! `Append` (opcode 3): write a batch of events to one stream, atomically.
//!
//! ```text
//! Append   { stream: str, expected: ExpectedVersion, events: [NewEvent] }
//! AppendOk { first_version: uint64, last_version: uint64,
//!            first_position: uint64, last_position: uint64 }
//! ```
//!
//! `events` is an array of positional event arrays (see
//! [`crate::msg::event`]); a failed expected-version check is an error frame
//! with code `WrongExpectedVersion`. The request body is hand-written
//! (`msg/mp.rs`): appends carry the bulk of what clients send.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::event::{new_event_wire_len, put_new_events, read_new_events};
use super::mp;
use super::wire::{put_expected, read_expected, read_map, required};
use crate::error::Error;
use crate::frame::Opcode;
use crate::types::{AppendResult, ExpectedVersion, LogPosition, NewEvent, StreamVersion, Text};

/// Appends `events` to `stream` if `expected` holds; all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// Target stream (created by its first append).
    pub stream: Text,
    /// What the client believes the stream's state is.
    pub expected: ExpectedVersion,
    /// The batch, in order.
    pub events: Vec<NewEvent>,
}

impl Append {
    /// Exact size of the events array's contents, and room for the rest.
    pub(crate) fn body_len(&self) -> (usize, usize) {
        let events = self.events.iter().map(new_event_wire_len).sum();
        (events, 48 + self.stream.len())
    }

    pub(crate) fn put_body(&self, dst: &mut BytesMut) {
        mp::put_map_len(dst, 3);
        mp::put_str(dst, "stream");
        mp::put_str(dst, &self.stream);
        mp::put_str(dst, "expected");
        put_expected(dst, self.expected);
        mp::put_str(dst, "events");
        put_new_events(dst, &self.events);
    }

    pub(crate) fn read_body(body: &Bytes) -> Result<Append, Error> {
        let op = Opcode::Append;
        let (mut stream, mut expected, mut events) = (None, None, None);
        read_map(body, op, |key, r| {
            match key {
                "stream" => stream = Some(r.str()?),
                "expected" => expected = Some(read_expected(r)?),
                "events" => events = Some(read_new_events(r, body)?),
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(Append {
            stream: Text::share_from(body, required(stream, op, "stream")?),
            expected: required(expected, op, "expected")?,
            events: required(events, op, "events")?,
        })
    }
}

/// Body of `AppendOk`.
#[derive(Serialize, Deserialize)]
pub(crate) struct AppendOkWire {
    first_version: u64,
    last_version: u64,
    first_position: u64,
    last_position: u64,
}

impl From<&AppendResult> for AppendOkWire {
    fn from(r: &AppendResult) -> AppendOkWire {
        AppendOkWire {
            first_version: r.first_version.0,
            last_version: r.last_version.0,
            first_position: r.first_position.0,
            last_position: r.last_position.0,
        }
    }
}

impl From<AppendOkWire> for AppendResult {
    fn from(w: AppendOkWire) -> AppendResult {
        AppendResult {
            first_version: StreamVersion(w.first_version),
            last_version: StreamVersion(w.last_version),
            first_position: LogPosition(w.first_position),
            last_position: LogPosition(w.last_position),
        }
    }
}
