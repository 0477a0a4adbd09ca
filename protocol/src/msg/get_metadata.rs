//! `GetMetadata` (opcode 14): a stream's lifecycle state.
//!
//! ```text
//! GetMetadata   { stream: str }
//! GetMetadataOk { state?: str, position?: uint64, meta_version?: uint64 }
//! ```
//!
//! The reply's three fields come together: the latest lifecycle operation
//! of the stream, as in `LifecycleOk` (`state` the JSON of its whole
//! `StreamLifecycle`). All three are absent when the stream never had a
//! lifecycle operation (it has no metadata, was never truncated nor
//! deleted), whether or not it has events. A reply with some of them only
//! is malformed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::set_metadata::LifecycleOk;
use super::wire::malformed;
use crate::error::Error;
use crate::frame::Opcode;
use crate::types::Text;

/// Asks for `stream`'s lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMetadata {
    /// The stream (not its `$$` metadata stream).
    pub stream: Text,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct GetMetadataWire<'a> {
    stream: &'a str,
}

impl GetMetadata {
    pub(crate) fn to_wire(&self) -> GetMetadataWire<'_> {
        GetMetadataWire {
            stream: &self.stream,
        }
    }

    pub(crate) fn from_wire(w: GetMetadataWire<'_>, body: &Bytes) -> GetMetadata {
        GetMetadata {
            stream: Text::share_from(body, w.stream),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct GetMetadataOkWire<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta_version: Option<u64>,
}

/// The body of `GetMetadataOk` for `ok`, with its state already as JSON
/// (`state_json`, `None` with no state).
pub(crate) fn get_metadata_ok_wire<'a>(
    ok: Option<&LifecycleOk>,
    state_json: Option<&'a str>,
) -> GetMetadataOkWire<'a> {
    GetMetadataOkWire {
        state: state_json,
        position: ok.map(|o| o.position.0),
        meta_version: ok.map(|o| o.meta_version.0),
    }
}

/// The state a `GetMetadataOk` body carries, if any.
pub(crate) fn get_metadata_ok_from_wire(
    w: GetMetadataOkWire<'_>,
) -> Result<Option<LifecycleOk>, Error> {
    let op = Opcode::GetMetadata;
    match (w.state, w.position, w.meta_version) {
        (None, None, None) => Ok(None),
        (Some(state), Some(position), Some(meta_version)) => {
            LifecycleOk::from_parts(position, meta_version, state, op).map(Some)
        }
        _ => Err(malformed(
            op,
            "state, position and meta_version come all together or not at all",
        )),
    }
}
