//! `ReadAll` (opcode 5): read a page of the global log.
//!
//! ```text
//! ReadAll   { from?: uint64, direction: "forward"|"backward", max_count: uint32,
//!             min_position?: uint64 }
//! ReadAllOk { events: [RecordedEvent], head: uint64, next?: uint64 }
//! ```
//!
//! `from` is an inclusive log position; absent or nil means position 0
//! (forward) or the last committed event (backward). Positions are dense, so
//! a forward reader that sees `head` has seen everything committed. The reply
//! body is hand-written (`msg/mp.rs`).

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::event::{put_recorded_events, read_recorded_events, recorded_event_wire_len};
use super::mp;
use super::wire::{DirectionWire, read_map, required};
use crate::error::Error;
use crate::frame::Opcode;
use crate::types::{Direction, LogPosition, RecordedEvent};

/// Reads up to `max_count` events of the global log starting at `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAll {
    /// First position to return (inclusive); `None` starts at the beginning
    /// (forward) or at the last committed event (backward).
    pub from: Option<LogPosition>,
    /// Reading direction.
    pub direction: Direction,
    /// Most events to return; the server may return fewer.
    pub max_count: u32,
    /// Read only once this server's log holds every event before this
    /// position (a follower of a cluster catching up with a write the
    /// reader made through the leader: "read your own writes"). The server
    /// waits up to 10 s, then answers `ServerBusy`. `None`: at once.
    pub min_position: Option<LogPosition>,
}

/// A page of the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAllOk {
    /// The events, in the requested direction.
    pub events: Vec<RecordedEvent>,
    /// Number of committed (durable) events when the page was read: the
    /// position the next commit will get.
    pub head: LogPosition,
    /// Where to continue reading in the same direction; `None` when there is
    /// nothing more that way (yet).
    pub next: Option<LogPosition>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ReadAllWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<u64>,
    #[serde(default)]
    direction: DirectionWire,
    max_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_position: Option<u64>,
}

impl ReadAll {
    pub(crate) fn to_wire(self) -> ReadAllWire {
        ReadAllWire {
            from: self.from.map(|p| p.0),
            direction: DirectionWire(self.direction),
            max_count: self.max_count,
            min_position: self.min_position.map(|p| p.0),
        }
    }

    pub(crate) fn from_wire(w: ReadAllWire) -> ReadAll {
        ReadAll {
            from: w.from.map(LogPosition),
            direction: w.direction.0,
            max_count: w.max_count,
            min_position: w.min_position.map(LogPosition),
        }
    }
}

impl ReadAllOk {
    /// Exact size of the events array's contents, and room for the rest.
    pub(crate) fn body_len(&self) -> (usize, usize) {
        let events = self.events.iter().map(recorded_event_wire_len).sum();
        (events, 48)
    }

    pub(crate) fn put_body(&self, dst: &mut BytesMut) {
        mp::put_map_len(dst, 2 + u8::from(self.next.is_some()));
        mp::put_str(dst, "events");
        put_recorded_events(dst, &self.events);
        mp::put_str(dst, "head");
        mp::put_uint(dst, self.head.0);
        if let Some(p) = self.next {
            mp::put_str(dst, "next");
            mp::put_uint(dst, p.0);
        }
    }

    pub(crate) fn read_body(body: &Bytes) -> Result<ReadAllOk, Error> {
        let op = Opcode::ReadAll;
        let (mut events, mut head, mut next) = (None, None, None);
        read_map(body, op, |key, r| {
            match key {
                "events" => events = Some(read_recorded_events(r, body)?),
                "head" => head = Some(r.uint()?),
                "next" => next = r.opt_uint()?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(ReadAllOk {
            events: required(events, op, "events")?,
            head: LogPosition(required(head, op, "head")?),
            next: next.map(LogPosition),
        })
    }
}
