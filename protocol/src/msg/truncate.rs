//! `Truncate` (opcode 15): remove a stream's events below a version.
//!
//! ```text
//! Truncate { stream: str, before: uint64 }  ->  LifecycleOk
//! ```
//!
//! Events of `stream` below version `before` are no longer served by any
//! read path; the rest keep their versions and positions. It raises the
//! stream's `truncate_before` and never lowers it: a `before` at or below
//! the current one changes nothing (but is still recorded and answered).
//! The reply is a `LifecycleOk` (see `set_metadata`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{StreamVersion, Text};

/// Removes `stream`'s events below `before` from every read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    /// The stream (not its `$$` metadata stream).
    pub stream: Text,
    /// The first version to keep.
    pub before: StreamVersion,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TruncateWire<'a> {
    stream: &'a str,
    before: u64,
}

impl Truncate {
    pub(crate) fn to_wire(&self) -> TruncateWire<'_> {
        TruncateWire {
            stream: &self.stream,
            before: self.before.0,
        }
    }

    pub(crate) fn from_wire(w: TruncateWire<'_>, body: &Bytes) -> Truncate {
        Truncate {
            stream: Text::share_from(body, w.stream),
            before: StreamVersion(w.before),
        }
    }
}
