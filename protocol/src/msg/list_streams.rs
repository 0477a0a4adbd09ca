//! `ListStreams` (opcode 19): the stream catalog, by prefix, a page at a
//! time.
//!
//! ```text
//! ListStreams   { prefix: str, after?: str, limit: uint32 }
//! ListStreamsOk { streams: [StreamInfo], next?: str }
//! StreamInfo    { stream: str, last_version?: uint64, first_version?: uint64,
//!                 event_count: uint64, deleted?: str, metadata?: str,
//!                 meta_version?: uint64 }
//! ```
//!
//! The streams whose name starts with `prefix` (an empty prefix: every
//! stream) and sorts after `after` (exclusive; absent: from the first),
//! in the byte order of their UTF-8 names, at most `limit` of them (the
//! server caps it at [`MAX_LIST_STREAMS`] and at a reply of about 1 MiB).
//! `next`, when present, is the `after` of the next page: the last name of
//! this one. A page can be shorter than `limit` and still have a `next`.
//!
//! A stream is listed from its first event on, or from its first lifecycle
//! operation (metadata set before any event), and stays listed once
//! deleted, with its state: the catalog of a store is every stream name it
//! ever had, except that metadata streams (`$$S`) are not listed (their
//! state is `S`'s `metadata` and `meta_version`).
//!
//! - `last_version`: the stream's last version, removed events included
//!   (versions are never given twice); absent if it never had an event.
//! - `first_version` and `event_count`: its live events (those a read
//!   returns now), `first_version` absent when it has none.
//! - `deleted`: `"soft"` (reads say StreamNotFound until the next append)
//!   or `"hard"` (StreamDeleted for ever; an erased stream too).
//! - `metadata`: the JSON of its `StreamMetadata` (absent: none set), and
//!   `meta_version` the version of its latest lifecycle event in `$$S`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::wire::malformed;
use crate::error::Error;
use crate::frame::Opcode;
use crate::lifecycle::{Deletion, StreamMetadata};
use crate::types::{StreamVersion, Text};

/// Most streams one page lists.
pub const MAX_LIST_STREAMS: u32 = 10_000;

/// Asks for a page of the stream catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListStreams {
    /// Only streams whose name starts with this (empty: all).
    pub prefix: Text,
    /// Start after this name (exclusive): the `next` of the previous page.
    pub after: Option<Text>,
    /// Most streams wanted (capped at [`MAX_LIST_STREAMS`]).
    pub limit: u32,
}

/// One stream of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// Its last version, removed events included; `None`: it never had an
    /// event.
    pub last_version: Option<StreamVersion>,
    /// Its first live event's version; `None`: no live event.
    pub first_version: Option<StreamVersion>,
    /// Its live events: what a read of the whole stream returns now.
    pub event_count: u64,
    /// Set while it is deleted.
    pub deleted: Option<Deletion>,
    /// Its metadata (default: none set).
    pub metadata: StreamMetadata,
    /// Version of its latest lifecycle event in `$$stream` (the expected
    /// version of the next `SetMetadata`); `None`: it never had one.
    pub meta_version: Option<StreamVersion>,
}

impl StreamInfo {
    /// Bytes this entry is counted as in a page's byte budget: its name,
    /// its metadata's JSON (unless default) and 128 for the rest (field
    /// names and numbers, MessagePack), rounded up. The store and the
    /// server count entries alike.
    pub fn reply_bytes(&self) -> usize {
        128 + self.stream.len()
            + if self.metadata == crate::lifecycle::StreamMetadata::default() {
                0
            } else {
                self.metadata.to_json().len()
            }
    }
}

/// A page of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListStreamsOk {
    /// The streams, by name.
    pub streams: Vec<StreamInfo>,
    /// The `after` of the next page; `None`: this was the last.
    pub next: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ListStreamsWire<'a> {
    prefix: &'a str,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    after: Option<&'a str>,
    limit: u32,
}

impl ListStreams {
    pub(crate) fn to_wire(&self) -> ListStreamsWire<'_> {
        ListStreamsWire {
            prefix: &self.prefix,
            after: self.after.as_deref(),
            limit: self.limit,
        }
    }

    pub(crate) fn from_wire(w: ListStreamsWire<'_>, body: &Bytes) -> ListStreams {
        ListStreams {
            prefix: Text::share_from(body, w.prefix),
            after: w.after.map(|a| Text::share_from(body, a)),
            limit: w.limit,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StreamInfoWire<'a> {
    stream: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_version: Option<u64>,
    event_count: u64,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    deleted: Option<&'a str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    metadata: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta_version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ListStreamsOkWire<'a> {
    #[serde(borrow)]
    streams: Vec<StreamInfoWire<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
}

fn deletion_name(d: Deletion) -> &'static str {
    match d {
        Deletion::Soft => "soft",
        Deletion::Hard => "hard",
    }
}

impl ListStreamsOk {
    /// A bound on the encoded body (for the buffer hint).
    pub(crate) fn size_hint(&self) -> usize {
        32 + self.next.as_ref().map_or(0, String::len)
            + self
                .streams
                .iter()
                .map(|s| 96 + s.stream.len() + 2 * s.metadata.custom.len() * 16)
                .sum::<usize>()
    }

    pub(crate) fn to_wire(&self) -> ListStreamsOkWire<'_> {
        ListStreamsOkWire {
            streams: self
                .streams
                .iter()
                .map(|s| StreamInfoWire {
                    stream: &s.stream,
                    last_version: s.last_version.map(|v| v.0),
                    first_version: s.first_version.map(|v| v.0),
                    event_count: s.event_count,
                    deleted: s.deleted.map(deletion_name),
                    metadata: (s.metadata != StreamMetadata::default())
                        .then(|| s.metadata.to_json().into()),
                    meta_version: s.meta_version.map(|v| v.0),
                })
                .collect(),
            next: self.next.as_deref(),
        }
    }

    pub(crate) fn from_wire(w: ListStreamsOkWire<'_>) -> Result<ListStreamsOk, Error> {
        let op = Opcode::ListStreams;
        let streams = w
            .streams
            .into_iter()
            .map(|s| {
                let deleted = match s.deleted {
                    None => None,
                    Some("soft") => Some(Deletion::Soft),
                    Some("hard") => Some(Deletion::Hard),
                    Some(_) => return Err(malformed(op, "deleted is neither soft nor hard")),
                };
                let metadata = match s.metadata {
                    None => StreamMetadata::default(),
                    Some(j) => StreamMetadata::from_json(j.as_bytes())
                        .map_err(|_| malformed(op, "metadata is not stream metadata JSON"))?,
                };
                if s.first_version.is_some() != (s.event_count > 0)
                    || s.first_version.is_some() && s.last_version < s.first_version
                {
                    return Err(malformed(
                        op,
                        "first_version, last_version and event_count disagree",
                    ));
                }
                Ok(StreamInfo {
                    stream: s.stream.to_owned(),
                    last_version: s.last_version.map(StreamVersion),
                    first_version: s.first_version.map(StreamVersion),
                    event_count: s.event_count,
                    deleted,
                    metadata,
                    meta_version: s.meta_version.map(StreamVersion),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(ListStreamsOk {
            streams,
            next: w.next.map(str::to_owned),
        })
    }
}
