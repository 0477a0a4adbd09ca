//! Error replies (kind Error; opcode and `corr_id` of the failed request).
//!
//! ```text
//! ErrorReply { code: uint16, message: str, stream?: str,
//!              expected?: ExpectedVersion, actual?: "no_stream"|uint64,
//!              limit?: uint64, max_version?: uint8, event_id?: bin16,
//!              position?: uint64, leader?: str }
//! ```
//!
//! `code` is what programs branch on; `message` is for people. The optional
//! fields carry the structured detail of the codes that have some (see
//! [`ErrorCode`]).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::wire::{EventIdWire, ExpectedWire, StreamStateWire};
use crate::types::{EventId, ExpectedVersion, LogPosition, StreamVersion, Text};

/// Why a request failed (or a subscription ended). Receivers map codes they
/// do not know to [`ErrorCode::Unknown`], so servers can add codes without
/// breaking old clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// (1) The append's expected version did not hold; nothing was written.
    /// Detail: `stream`, `expected`, `actual`.
    WrongExpectedVersion,
    /// (2) The stream does not exist where that is an error. Detail: `stream`.
    StreamNotFound,
    /// (3) The request is invalid: malformed body, bad name, unknown
    /// subscription, request before `Hello`, ...
    BadRequest,
    /// (4) The request exceeds a server limit. Detail: `limit`.
    TooLarge,
    /// (5) The `Hello` token is missing or wrong.
    NotAuthenticated,
    /// (6) Too much load (e.g. too many requests in flight); retry later.
    ServerBusy,
    /// (7) The server is shutting down; reconnect elsewhere or later.
    ShuttingDown,
    /// (8) The server found corrupt data while serving the request.
    Corruption,
    /// (9) A server bug or unexpected failure.
    Internal,
    /// (10) No protocol version both sides speak. Detail: `max_version`.
    UnsupportedVersion,
    /// (11) An event id of the append is already stored, and the append is
    /// not an exact resend of the batch that stored it (same ids in the
    /// same order, same stream, same types, metadata and data), or an id
    /// repeats within the append. Nothing was written. Detail: `event_id`,
    /// `stream` (where the id is stored), `position` (absent when the id
    /// repeats within the append).
    DuplicateEventId,
    /// (12) A subscription's `from` names a log position or stream version
    /// past the end of the log or stream (a checkpoint of another store,
    /// or of one restored from an older backup). Detail for a stream:
    /// `stream`, and `actual`, the stream's last version.
    OutOfRange,
    /// (13) The connection had nothing going on (no request, no open
    /// subscription, no append in flight, no scavenge or erase running, no
    /// backup session) for the server's idle timeout, and is closed. Sent on corr_id 0; reconnect
    /// when there is something to do.
    IdleTimeout,
    /// (14) The stream was hard-deleted: reads, appends and lifecycle
    /// operations of it fail, for ever. Detail: `stream`.
    StreamDeleted,
    /// (15) No consumer group of that name. Detail: `group`.
    GroupNotFound,
    /// (16) A consumer group of that name exists already. Detail: `group`.
    GroupExists,
    /// (17) The connection's user lacks the right the request needs; the
    /// message names it. Detail: `stream`, when a stream's right is
    /// missing.
    AccessDenied,
    /// (18) This node of a cluster is not its leader, and the request
    /// (an append) must go to the leader; nothing was written. Detail:
    /// `leader`, the leader's client address, when this node knows it
    /// (none during an election: retry shortly).
    NotLeader,
    /// (19) The server does not serve this request in its present
    /// configuration: on a cluster, the requests that change the log
    /// other than appends (stream lifecycle, scavenges, users, consumer
    /// groups) are not replicated yet.
    Unsupported,
    /// A code this side does not know (sent by a newer peer). Never build it
    /// for a known code: it would decode as the named variant.
    Unknown(u16),
}

impl ErrorCode {
    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::WrongExpectedVersion => 1,
            ErrorCode::StreamNotFound => 2,
            ErrorCode::BadRequest => 3,
            ErrorCode::TooLarge => 4,
            ErrorCode::NotAuthenticated => 5,
            ErrorCode::ServerBusy => 6,
            ErrorCode::ShuttingDown => 7,
            ErrorCode::Corruption => 8,
            ErrorCode::Internal => 9,
            ErrorCode::UnsupportedVersion => 10,
            ErrorCode::DuplicateEventId => 11,
            ErrorCode::OutOfRange => 12,
            ErrorCode::IdleTimeout => 13,
            ErrorCode::StreamDeleted => 14,
            ErrorCode::GroupNotFound => 15,
            ErrorCode::GroupExists => 16,
            ErrorCode::AccessDenied => 17,
            ErrorCode::NotLeader => 18,
            ErrorCode::Unsupported => 19,
            ErrorCode::Unknown(code) => code,
        }
    }

    /// The code for a wire value; unknown values become
    /// [`ErrorCode::Unknown`].
    pub const fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::WrongExpectedVersion,
            2 => ErrorCode::StreamNotFound,
            3 => ErrorCode::BadRequest,
            4 => ErrorCode::TooLarge,
            5 => ErrorCode::NotAuthenticated,
            6 => ErrorCode::ServerBusy,
            7 => ErrorCode::ShuttingDown,
            8 => ErrorCode::Corruption,
            9 => ErrorCode::Internal,
            10 => ErrorCode::UnsupportedVersion,
            11 => ErrorCode::DuplicateEventId,
            12 => ErrorCode::OutOfRange,
            13 => ErrorCode::IdleTimeout,
            14 => ErrorCode::StreamDeleted,
            15 => ErrorCode::GroupNotFound,
            16 => ErrorCode::GroupExists,
            17 => ErrorCode::AccessDenied,
            18 => ErrorCode::NotLeader,
            19 => ErrorCode::Unsupported,
            other => ErrorCode::Unknown(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorCode::WrongExpectedVersion => "wrong expected version",
            ErrorCode::StreamNotFound => "stream not found",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::TooLarge => "too large",
            ErrorCode::NotAuthenticated => "not authenticated",
            ErrorCode::ServerBusy => "server busy",
            ErrorCode::ShuttingDown => "shutting down",
            ErrorCode::Corruption => "corruption",
            ErrorCode::Internal => "internal error",
            ErrorCode::UnsupportedVersion => "unsupported version",
            ErrorCode::DuplicateEventId => "duplicate event id",
            ErrorCode::OutOfRange => "out of range",
            ErrorCode::IdleTimeout => "idle timeout",
            ErrorCode::StreamDeleted => "stream deleted",
            ErrorCode::GroupNotFound => "group not found",
            ErrorCode::GroupExists => "group exists",
            ErrorCode::AccessDenied => "access denied",
            ErrorCode::NotLeader => "not leader",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unknown(code) => return write!(f, "error code {code}"),
        };
        f.write_str(name)
    }
}

/// The failed answer to a request.
///
/// Build one with [`ErrorReply::new`] and the `with_*` methods; the detail
/// fields are optional and more may come.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorReply {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The stream concerned.
    pub stream: Option<Text>,
    /// The expected version the append carried (`WrongExpectedVersion`).
    pub expected: Option<ExpectedVersion>,
    /// The stream's actual state when the check failed
    /// (`WrongExpectedVersion`, `OutOfRange`): `Some(None)` when it had no
    /// events.
    pub actual: Option<Option<StreamVersion>>,
    /// The limit that was exceeded (`TooLarge`), in the limit's own unit.
    pub limit: Option<u64>,
    /// Highest protocol version the server speaks (`UnsupportedVersion`).
    pub max_version: Option<u8>,
    /// The event id concerned (`DuplicateEventId`).
    pub event_id: Option<EventId>,
    /// The log position concerned (`DuplicateEventId`: where the id is
    /// stored).
    pub position: Option<LogPosition>,
    /// The cluster leader's client address (`NotLeader`).
    pub leader: Option<String>,
}

impl ErrorReply {
    /// A reply with no detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
            stream: None,
            expected: None,
            actual: None,
            limit: None,
            max_version: None,
            event_id: None,
            position: None,
            leader: None,
        }
    }

    /// Sets the cluster leader's client address.
    pub fn with_leader(mut self, leader: impl Into<String>) -> ErrorReply {
        self.leader = Some(leader.into());
        self
    }

    /// Sets the stream concerned.
    pub fn with_stream(mut self, stream: impl Into<Text>) -> ErrorReply {
        self.stream = Some(stream.into());
        self
    }

    /// Sets the expected-version detail: what the append expected and the
    /// stream's actual last version (`None`: no events).
    pub fn with_versions(
        mut self,
        expected: ExpectedVersion,
        actual: Option<StreamVersion>,
    ) -> ErrorReply {
        self.expected = Some(expected);
        self.actual = Some(actual);
        self
    }

    /// Sets the stream's actual state alone (`None`: no events), where no
    /// expected version is involved.
    pub fn with_actual(mut self, actual: Option<StreamVersion>) -> ErrorReply {
        self.actual = Some(actual);
        self
    }

    /// Sets the limit that was exceeded.
    pub fn with_limit(mut self, limit: u64) -> ErrorReply {
        self.limit = Some(limit);
        self
    }

    /// Sets the event id concerned and, if known, where it is stored.
    pub fn with_event_id(mut self, id: EventId, position: Option<LogPosition>) -> ErrorReply {
        self.event_id = Some(id);
        self.position = position;
        self
    }

    /// Sets the highest protocol version the server speaks.
    pub fn with_max_version(mut self, version: u8) -> ErrorReply {
        self.max_version = Some(version);
        self
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

#[derive(Serialize, Deserialize)]
pub(crate) struct ErrorReplyWire<'a> {
    code: u16,
    #[serde(default)]
    message: &'a str,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<ExpectedWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actual: Option<StreamStateWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<EventIdWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    leader: Option<&'a str>,
}

impl ErrorReply {
    pub(crate) fn to_wire(&self) -> ErrorReplyWire<'_> {
        ErrorReplyWire {
            code: self.code.as_u16(),
            message: &self.message,
            stream: self.stream.as_deref(),
            expected: self.expected.map(ExpectedWire),
            actual: self.actual.map(StreamStateWire),
            limit: self.limit,
            max_version: self.max_version,
            event_id: self.event_id.map(EventIdWire),
            position: self.position.map(|p| p.0),
            leader: self.leader.as_deref(),
        }
    }

    pub(crate) fn from_wire(w: ErrorReplyWire<'_>, body: &Bytes) -> ErrorReply {
        ErrorReply {
            code: ErrorCode::from_u16(w.code),
            message: w.message.to_owned(),
            stream: w.stream.map(|s| Text::share_from(body, s)),
            expected: w.expected.map(|e| e.0),
            actual: w.actual.map(|a| a.0),
            limit: w.limit,
            max_version: w.max_version,
            event_id: w.event_id.map(|e| e.0),
            position: w.position.map(LogPosition),
            leader: w.leader.map(str::to_owned),
        }
    }

    /// Expected body size, to reserve output space in one go.
    pub(crate) fn size_hint(&self) -> usize {
        96 + self.message.len()
            + self.stream.as_ref().map_or(0, Text::len)
            + self.leader.as_ref().map_or(0, String::len)
    }
}
