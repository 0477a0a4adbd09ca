//! `Erase` (opcode 18): erase a stream for good (the right to be
//! forgotten).
//!
//! ```text
//! Erase   { stream: str }
//! EraseOk { position: uint64, segments_rewritten: uint64,
//!           events_removed: uint64, bytes_before: uint64,
//!           bytes_after: uint64, duration_us: uint64 }
//! ```
//!
//! A hard delete of `stream` (a `$tombstone` in `$$stream`, at `position`),
//! the active segment sealed right after it, then a rewrite of exactly the
//! segments that hold the stream's events and older metadata events.
//! Afterwards none of the stream's event bytes are in any file of the
//! server's data directory; backups taken before still hold them. Event ids
//! of the removed events stay reserved: an append reusing one is refused as
//! a duplicate.
//!
//! Erasing a stream already hard-deleted (or erased) is allowed: it
//! rewrites whatever still holds the stream's events (often nothing), and
//! `position` is then that of the existing tombstone. So a retried `Erase`
//! is safe. `bytes_before` and `bytes_after` are the sizes of the segments
//! it rewrote, and `events_removed` may count other removed events those
//! segments held.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{LogPosition, Text};

/// Erases `stream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erase {
    /// The stream (not its `$$` metadata stream).
    pub stream: Text,
}

/// What an erase did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EraseOk {
    /// Log position of the stream's tombstone (in `$$stream`).
    pub position: LogPosition,
    /// Segments rewritten.
    pub segments_rewritten: u64,
    /// Events removed from disk (the stream's, and other removed events in
    /// the same segments).
    pub events_removed: u64,
    /// Bytes of the rewritten segments before.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after.
    pub bytes_after: u64,
    /// How long the erase took, in microseconds.
    pub duration_us: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct EraseWire<'a> {
    stream: &'a str,
}

impl Erase {
    pub(crate) fn to_wire(&self) -> EraseWire<'_> {
        EraseWire {
            stream: &self.stream,
        }
    }

    pub(crate) fn from_wire(w: EraseWire<'_>, body: &Bytes) -> Erase {
        Erase {
            stream: Text::share_from(body, w.stream),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct EraseOkWire {
    position: u64,
    segments_rewritten: u64,
    events_removed: u64,
    bytes_before: u64,
    bytes_after: u64,
    duration_us: u64,
}

impl EraseOk {
    pub(crate) fn to_wire(self) -> EraseOkWire {
        EraseOkWire {
            position: self.position.0,
            segments_rewritten: self.segments_rewritten,
            events_removed: self.events_removed,
            bytes_before: self.bytes_before,
            bytes_after: self.bytes_after,
            duration_us: self.duration_us,
        }
    }

    pub(crate) fn from_wire(w: EraseOkWire) -> EraseOk {
        EraseOk {
            position: LogPosition(w.position),
            segments_rewritten: w.segments_rewritten,
            events_removed: w.events_removed,
            bytes_before: w.bytes_before,
            bytes_after: w.bytes_after,
            duration_us: w.duration_us,
        }
    }
}
