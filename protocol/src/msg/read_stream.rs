//! `ReadStream` (opcode 4): read a page of one stream.
//!
//! ```text
//! ReadStream   { stream: str, from?: uint64, direction: "forward"|"backward",
//!                max_count: uint32, min_position?: uint64 }
//! ReadStreamOk { events: [RecordedEvent], last_version?: uint64, next?: uint64 }
//! ```
//!
//! `from` is inclusive; absent or nil means the first event when reading
//! forward and the last one when reading backward. Reading a stream with no
//! events is answered with the `StreamNotFound` error; reading past the end
//! of one that exists is an empty page. The reply body is hand-written
//! (`msg/mp.rs`).

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::event::{put_recorded_events, read_recorded_events, recorded_event_wire_len};
use super::mp;
use super::wire::{DirectionWire, read_map, required};
use crate::error::Error;
use crate::frame::Opcode;
use crate::types::{Direction, LogPosition, RecordedEvent, StreamVersion, Text};

/// Reads up to `max_count` events of `stream` starting at `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadStream {
    /// The stream to read.
    pub stream: Text,
    /// First version to return (inclusive); `None` starts at the first
    /// event (forward) or the last one (backward).
    pub from: Option<StreamVersion>,
    /// Reading direction.
    pub direction: Direction,
    /// Most events to return; the server may return fewer (it caps pages by
    /// its own limits), so page with `next`, not by counting.
    pub max_count: u32,
    /// Read only once this server's log holds every event before this
    /// position (a follower of a cluster catching up with a write the
    /// reader made through the leader: "read your own writes"). The server
    /// waits up to 10 s, then answers `ServerBusy`. `None`: at once.
    pub min_position: Option<LogPosition>,
}

/// A page of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadStreamOk {
    /// The events, in the requested direction.
    pub events: Vec<RecordedEvent>,
    /// The stream's last version when the page was read; `None` if the
    /// stream has no events.
    pub last_version: Option<StreamVersion>,
    /// Where to continue reading in the same direction; `None` when there is
    /// nothing more that way (yet).
    pub next: Option<StreamVersion>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ReadStreamWire<'a> {
    stream: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<u64>,
    #[serde(default)]
    direction: DirectionWire,
    max_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_position: Option<u64>,
}

impl ReadStream {
    pub(crate) fn to_wire(&self) -> ReadStreamWire<'_> {
        ReadStreamWire {
            stream: &self.stream,
            from: self.from.map(|v| v.0),
            direction: DirectionWire(self.direction),
            max_count: self.max_count,
            min_position: self.min_position.map(|p| p.0),
        }
    }

    pub(crate) fn from_wire(w: ReadStreamWire<'_>, body: &Bytes) -> ReadStream {
        ReadStream {
            stream: Text::share_from(body, w.stream),
            from: w.from.map(StreamVersion),
            direction: w.direction.0,
            max_count: w.max_count,
            min_position: w.min_position.map(LogPosition),
        }
    }
}

impl ReadStreamOk {
    /// Exact size of the events array's contents, and room for the rest.
    pub(crate) fn body_len(&self) -> (usize, usize) {
        let events = self.events.iter().map(recorded_event_wire_len).sum();
        (events, 64)
    }

    pub(crate) fn put_body(&self, dst: &mut BytesMut) {
        let fields = 1 + u8::from(self.last_version.is_some()) + u8::from(self.next.is_some());
        mp::put_map_len(dst, fields);
        mp::put_str(dst, "events");
        put_recorded_events(dst, &self.events);
        if let Some(v) = self.last_version {
            mp::put_str(dst, "last_version");
            mp::put_uint(dst, v.0);
        }
        if let Some(v) = self.next {
            mp::put_str(dst, "next");
            mp::put_uint(dst, v.0);
        }
    }

    pub(crate) fn read_body(body: &Bytes) -> Result<ReadStreamOk, Error> {
        let op = Opcode::ReadStream;
        let (mut events, mut last_version, mut next) = (None, None, None);
        read_map(body, op, |key, r| {
            match key {
                "events" => events = Some(read_recorded_events(r, body)?),
                "last_version" => last_version = r.opt_uint()?,
                "next" => next = r.opt_uint()?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(ReadStreamOk {
            events: required(events, op, "events")?,
            last_version: last_version.map(StreamVersion),
            next: next.map(StreamVersion),
        })
    }
}
