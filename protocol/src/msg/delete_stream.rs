//! `DeleteStream` (opcode 16): delete a stream, softly or for ever.
//!
//! ```text
//! DeleteStream { stream: str, expected: ExpectedVersion, hard: bool }  ->  LifecycleOk
//! ```
//!
//! `expected` is checked against the stream itself (its last version),
//! as an append's is. A soft delete (`hard: false`) makes reads of the
//! stream say `StreamNotFound`; a later append expecting `no_stream` or
//! `any` continues its versions where they stopped, and only the new events
//! are served. A hard delete (`hard: true`) makes every later read, append
//! and lifecycle operation of the stream fail with `StreamDeleted`, for
//! ever. `hard` is required: a destructive request says what it means. The
//! reply is a `LifecycleOk` (see `set_metadata`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::wire::ExpectedWire;
use crate::lifecycle::Deletion;
use crate::types::{ExpectedVersion, Text};

/// Deletes `stream` if it is at `expected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteStream {
    /// The stream (not its `$$` metadata stream).
    pub stream: Text,
    /// The state of the stream itself the delete expects.
    pub expected: ExpectedVersion,
    /// Soft or hard.
    pub mode: Deletion,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct DeleteStreamWire<'a> {
    stream: &'a str,
    expected: ExpectedWire,
    hard: bool,
}

impl DeleteStream {
    pub(crate) fn to_wire(&self) -> DeleteStreamWire<'_> {
        DeleteStreamWire {
            stream: &self.stream,
            expected: ExpectedWire(self.expected),
            hard: self.mode == Deletion::Hard,
        }
    }

    pub(crate) fn from_wire(w: DeleteStreamWire<'_>, body: &Bytes) -> DeleteStream {
        DeleteStream {
            stream: Text::share_from(body, w.stream),
            expected: w.expected.0,
            mode: if w.hard {
                Deletion::Hard
            } else {
                Deletion::Soft
            },
        }
    }
}
