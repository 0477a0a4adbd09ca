//! `SetMetadata` (opcode 13): set a stream's metadata, and `LifecycleOk`,
//! the reply of every lifecycle operation that writes (`SetMetadata`,
//! `Truncate`, `DeleteStream`).
//!
//! ```text
//! SetMetadata { stream: str, expected: ExpectedVersion, metadata: str }
//! LifecycleOk { position: uint64, meta_version: uint64, state: str }
//! ```
//!
//! `metadata` is the JSON of a [`StreamMetadata`] (an object with
//! `max_count`, `max_age_secs`, `truncate_before` and `custom`; unknown
//! keys and out-of-range values are refused). It replaces the stream's
//! metadata whole, except that `truncate_before` only rises. `expected` is
//! checked against the metadata stream `$$stream`, not against the stream
//! itself: it is the `meta_version` of the last `LifecycleOk` (or
//! `no_stream` before the first), so that two writers of metadata cannot
//! overwrite each other unknowingly.
//!
//! `LifecycleOk` says where the operation's event landed in `$$stream`
//! (`position` in the log, `meta_version` in `$$stream`) and, in `state`,
//! the JSON of the stream's whole [`StreamLifecycle`] after it.
//!
//! Both JSON strings are parsed while decoding: a body whose JSON does not
//! parse is malformed like any other bad field ([`Error::Malformed`]), a
//! per-message error that leaves the connection in step.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::wire::{ExpectedWire, malformed};
use crate::error::Error;
use crate::frame::Opcode;
use crate::lifecycle::{StreamLifecycle, StreamMetadata};
use crate::types::{ExpectedVersion, LogPosition, StreamVersion, Text};

/// Sets `stream`'s metadata if its metadata stream is at `expected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetMetadata {
    /// The stream whose metadata is set (not its `$$` metadata stream).
    pub stream: Text,
    /// The state of the metadata stream `$$stream` the change expects:
    /// `Any` to skip the check, `NoStream` before the first lifecycle
    /// operation, `Exact(meta_version)` of the latest one.
    pub expected: ExpectedVersion,
    /// The new metadata.
    pub metadata: StreamMetadata,
}

/// What a lifecycle operation wrote, or (in `GetMetadataOk`) the latest
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleOk {
    /// Log position of the operation's event (in `$$stream`).
    pub position: LogPosition,
    /// Its version in `$$stream`: the expected version for the next
    /// `SetMetadata`.
    pub meta_version: StreamVersion,
    /// The stream's whole lifecycle state after the operation.
    pub state: StreamLifecycle,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SetMetadataWire<'a> {
    stream: &'a str,
    expected: ExpectedWire,
    metadata: &'a str,
}

impl SetMetadata {
    /// The JSON the body carries.
    pub(crate) fn metadata_json(&self) -> String {
        self.metadata.to_json()
    }

    /// The body, with `metadata` already as JSON ([`Self::metadata_json`]).
    pub(crate) fn to_wire<'a>(&'a self, metadata: &'a str) -> SetMetadataWire<'a> {
        SetMetadataWire {
            stream: &self.stream,
            expected: ExpectedWire(self.expected),
            metadata,
        }
    }

    pub(crate) fn from_wire(w: SetMetadataWire<'_>, body: &Bytes) -> Result<SetMetadata, Error> {
        let metadata = StreamMetadata::from_json(w.metadata.as_bytes())
            .map_err(|e| malformed(Opcode::SetMetadata, format_args!("field \"metadata\": {e}")))?;
        Ok(SetMetadata {
            stream: Text::share_from(body, w.stream),
            expected: w.expected.0,
            metadata,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct LifecycleOkWire<'a> {
    position: u64,
    meta_version: u64,
    state: &'a str,
}

impl LifecycleOk {
    /// The JSON of `state`, as the body carries it.
    pub(crate) fn state_json(&self) -> String {
        // serde_json writes UTF-8 only; the fallback is never taken.
        String::from_utf8(self.state.to_json()).unwrap_or_default()
    }

    /// The body, with `state` already as JSON ([`Self::state_json`]).
    pub(crate) fn to_wire<'a>(&self, state: &'a str) -> LifecycleOkWire<'a> {
        LifecycleOkWire {
            position: self.position.0,
            meta_version: self.meta_version.0,
            state,
        }
    }

    pub(crate) fn from_wire(w: LifecycleOkWire<'_>, opcode: Opcode) -> Result<LifecycleOk, Error> {
        LifecycleOk::from_parts(w.position, w.meta_version, w.state, opcode)
    }

    /// A `LifecycleOk` from its decoded fields, parsing the state's JSON.
    pub(crate) fn from_parts(
        position: u64,
        meta_version: u64,
        state: &str,
        opcode: Opcode,
    ) -> Result<LifecycleOk, Error> {
        let state = StreamLifecycle::from_json(state.as_bytes())
            .map_err(|e| malformed(opcode, format_args!("field \"state\": {e}")))?;
        Ok(LifecycleOk {
            position: LogPosition(position),
            meta_version: StreamVersion(meta_version),
            state,
        })
    }
}
