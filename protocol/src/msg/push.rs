//! Subscription pushes (kind Push, opcode Subscribe, `corr_id` of the
//! Subscribe): a map tagged by its `t` field.
//!
//! ```text
//! { t: "events",      events: [RecordedEvent] }
//! { t: "caught_up",   position: uint64, next_version?: uint64 }
//! { t: "fell_behind", position: uint64, next_version?: uint64 }
//! { t: "checkpoint",  position: uint64 }
//! { t: "ended",       code: uint16, message: str }
//! ```
//!
//! `next_version` is sent to stream subscriptions only: the first version
//! of the stream not delivered yet, where `position` (a log position)
//! cannot say where a stream resumes.
//!
//! The tag is an ordinary field that may come anywhere in the map, so any
//! MessagePack library can produce it, and new push types can be added:
//! receivers skip tags they do not know ([`Error::UnknownPushType`]). Push
//! bodies are hand-written (`msg/mp.rs`): they carry most of the bytes a
//! server sends.

use bytes::{Bytes, BytesMut};

use super::error_reply::ErrorCode;
use super::event::{put_recorded_events, read_recorded_events, recorded_event_wire_len};
use super::mp;
use super::wire::{read_map, required};
use crate::error::Error;
use crate::frame::Opcode;
use crate::types::{LogPosition, RecordedEvent, StreamVersion};

/// Something a subscription tells its client without being asked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Push {
    /// The next events, in order, within the granted credit.
    Events {
        /// The events, in log (or stream) order; the server never sends an
        /// empty batch.
        events: Vec<RecordedEvent>,
        /// Where this push's coverage starts: a log position (global-log
        /// subscriptions) or a stream version (stream subscriptions). Every
        /// live event the subscription selects from `from` up to this
        /// push's last event is either in it or was in an earlier frame,
        /// so the positions (or versions) the push skips were removed
        /// (deleted, truncated, expired), not lost. A client checks that
        /// `from` is not past what it expects next. `None` (filtered
        /// subscriptions, servers before it): no claim; an unfiltered
        /// subscription's events are then consecutive.
        from: Option<u64>,
    },
    /// The subscription has delivered everything committed so far and is
    /// now live. Sent when history is delivered, and again each time the
    /// subscription catches up after a `FellBehind`.
    CaughtUp {
        /// Log position the subscription reached: the head when it caught up.
        position: LogPosition,
        /// Stream subscriptions: the first version of the stream not yet
        /// delivered (every version before it was). `None` for the global
        /// log.
        next_version: Option<StreamVersion>,
    },
    /// Live delivery could not keep up and the subscription went back to
    /// reading the log. Nothing is lost; events keep coming in order.
    FellBehind {
        /// Log position the subscription had reached.
        position: LogPosition,
        /// Stream subscriptions: the first version of the stream not yet
        /// delivered. `None` for the global log.
        next_version: Option<StreamVersion>,
    },
    /// A filtered subscription scanned up to `position` (exclusive) without
    /// more matches: a consumer may record it as its resume point.
    Checkpoint {
        /// Everything before this log position has been scanned.
        position: LogPosition,
    },
    /// The subscription is over; no push follows.
    Ended {
        /// Why.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

const EVENTS: &str = "events";
const CAUGHT_UP: &str = "caught_up";
const FELL_BEHIND: &str = "fell_behind";
const CHECKPOINT: &str = "checkpoint";
const ENDED: &str = "ended";

/// Exact size of the events array's contents, and room for the rest.
pub(crate) fn events_body_len(events: &[RecordedEvent]) -> (usize, usize) {
    (events.iter().map(recorded_event_wire_len).sum(), 40)
}

/// Writes the body of an events push over borrowed events.
pub(crate) fn put_events_body(dst: &mut BytesMut, events: &[RecordedEvent], from: Option<u64>) {
    mp::put_map_len(dst, 2 + u8::from(from.is_some()));
    mp::put_str(dst, "t");
    mp::put_str(dst, EVENTS);
    if let Some(from) = from {
        mp::put_str(dst, "from");
        mp::put_uint(dst, from);
    }
    mp::put_str(dst, "events");
    put_recorded_events(dst, events);
}

fn put_position_body(
    dst: &mut BytesMut,
    tag: &str,
    position: LogPosition,
    next_version: Option<StreamVersion>,
) {
    mp::put_map_len(dst, 2 + u8::from(next_version.is_some()));
    mp::put_str(dst, "t");
    mp::put_str(dst, tag);
    mp::put_str(dst, "position");
    mp::put_uint(dst, position.0);
    if let Some(v) = next_version {
        mp::put_str(dst, "next_version");
        mp::put_uint(dst, v.0);
    }
}

impl Push {
    /// Exact size of the events (if any), and room for the rest.
    pub(crate) fn body_len(&self) -> (usize, usize) {
        match self {
            Push::Events { events, .. } => events_body_len(events),
            Push::Ended { message, .. } => (0, 32 + message.len()),
            Push::CaughtUp { .. } | Push::FellBehind { .. } | Push::Checkpoint { .. } => (0, 48),
        }
    }

    pub(crate) fn put_body(&self, dst: &mut BytesMut) {
        match self {
            Push::Events { events, from } => put_events_body(dst, events, *from),
            Push::CaughtUp {
                position,
                next_version,
            } => put_position_body(dst, CAUGHT_UP, *position, *next_version),
            Push::FellBehind {
                position,
                next_version,
            } => put_position_body(dst, FELL_BEHIND, *position, *next_version),
            Push::Checkpoint { position } => put_position_body(dst, CHECKPOINT, *position, None),
            Push::Ended { code, message } => {
                mp::put_map_len(dst, 3);
                mp::put_str(dst, "t");
                mp::put_str(dst, ENDED);
                mp::put_str(dst, "code");
                mp::put_uint(dst, code.as_u16().into());
                mp::put_str(dst, "message");
                mp::put_str(dst, message);
            }
        }
    }

    pub(crate) fn read_body(body: &Bytes) -> Result<Push, Error> {
        let op = Opcode::Subscribe;
        let (mut tag, mut events, mut position, mut code, mut message) =
            (None, None, None, None, None);
        let (mut next_version, mut from) = (None, None);
        read_map(body, op, |key, r| {
            match key {
                "t" => tag = Some(r.str()?),
                "from" => from = r.opt_uint()?,
                "events" => events = Some(read_recorded_events(r, body)?),
                "position" => position = Some(LogPosition(r.uint()?)),
                "next_version" => next_version = r.opt_uint()?.map(StreamVersion),
                "code" => {
                    let c = u16::try_from(r.uint()?).map_err(|_| "error code out of range")?;
                    code = Some(ErrorCode::from_u16(c));
                }
                "message" => message = Some(r.str()?),
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(match required(tag, op, "t")? {
            EVENTS => Push::Events {
                events: required(events, op, "events")?,
                from,
            },
            CAUGHT_UP => Push::CaughtUp {
                position: required(position, op, "position")?,
                next_version,
            },
            FELL_BEHIND => Push::FellBehind {
                position: required(position, op, "position")?,
                next_version,
            },
            CHECKPOINT => Push::Checkpoint {
                position: required(position, op, "position")?,
            },
            ENDED => Push::Ended {
                code: required(code, op, "code")?,
                message: message.unwrap_or_default().to_owned(),
            },
            other => {
                return Err(Error::UnknownPushType {
                    tag: other.to_owned(),
                });
            }
        })
    }
}
