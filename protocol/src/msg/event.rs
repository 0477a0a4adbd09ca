//! Events on the wire: positional MessagePack arrays, not maps.
//!
//! ```text
//! NewEvent      = [ id: bin(16), type: str, metadata: bin, data: bin ]
//! RecordedEvent = [ stream: str, version: uint, position: uint, id: bin(16),
//!                   type: str, metadata: bin, data: bin, timestamp_us: int ]
//! ```
//!
//! Events dominate bulk replies, so they skip the field names every other
//! body carries. Decoders ignore extra trailing elements, which leaves room
//! to append fields in a later protocol version.
//!
//! Decoding borrows: stream, type, metadata and data come out as slices of
//! the frame body (`Bytes::slice_ref`), so a payload costs a reference count,
//! never a copy or an allocation. Both directions are hand-written on
//! `msg/mp.rs` (see there for why).

use bytes::{Bytes, BytesMut};

use super::mp::{self, Reader, Reason};
use crate::types::{LogPosition, NewEvent, RecordedEvent, StreamVersion, Text, share_slice};

/// Elements of a `NewEvent` array.
const NEW_EVENT_FIELDS: usize = 4;
/// Elements of a `RecordedEvent` array.
const RECORDED_EVENT_FIELDS: usize = 8;
/// Encoded size of an event id: bin8 marker, length byte, 16 bytes.
const ID_WIRE_LEN: usize = 2 + 16;
/// Fewest bytes a `NewEvent` can take (empty type, metadata and data).
const MIN_NEW_EVENT_LEN: usize = 1 + ID_WIRE_LEN + 1 + 2 + 2;
/// Fewest bytes a `RecordedEvent` can take.
const MIN_RECORDED_EVENT_LEN: usize = 1 + 1 + 1 + 1 + ID_WIRE_LEN + 1 + 2 + 2 + 1;

/// Writes `events` as an array of `NewEvent` arrays.
pub(crate) fn put_new_events(dst: &mut BytesMut, events: &[NewEvent]) {
    mp::put_array_len(dst, events.len());
    for e in events {
        mp::put_array_len(dst, NEW_EVENT_FIELDS);
        mp::put_bin(dst, &e.id.0);
        mp::put_str(dst, &e.event_type);
        mp::put_bin(dst, &e.metadata);
        mp::put_bin(dst, &e.data);
    }
}

/// Writes `events` as an array of `RecordedEvent` arrays.
pub(crate) fn put_recorded_events(dst: &mut BytesMut, events: &[RecordedEvent]) {
    mp::put_array_len(dst, events.len());
    for e in events {
        mp::put_array_len(dst, RECORDED_EVENT_FIELDS);
        mp::put_str(dst, &e.stream);
        mp::put_uint(dst, e.version.0);
        mp::put_uint(dst, e.position.0);
        mp::put_bin(dst, &e.id.0);
        mp::put_str(dst, &e.event_type);
        mp::put_bin(dst, &e.metadata);
        mp::put_bin(dst, &e.data);
        mp::put_sint(dst, e.timestamp_us);
    }
}

/// Reads an array of `NewEvent` arrays; the events share `body`, which `r`
/// reads.
pub(crate) fn read_new_events(r: &mut Reader<'_>, body: &Bytes) -> Result<Vec<NewEvent>, Reason> {
    let n = r.array_len()?;
    // The declared count is the peer's claim; the body's size is a fact.
    let mut events = Vec::with_capacity(n.min(r.remaining() / MIN_NEW_EVENT_LEN));
    for _ in 0..n {
        let fields = r.array_len()?;
        if fields < NEW_EVENT_FIELDS {
            return Err("new event array has fewer than 4 elements");
        }
        events.push(NewEvent {
            id: r.event_id()?,
            event_type: Text::share_from(body, r.str()?),
            metadata: share_slice(body, r.bin()?),
            data: share_slice(body, r.bin()?),
        });
        skip_extra(r, fields - NEW_EVENT_FIELDS)?;
    }
    Ok(events)
}

/// Reads an array of `RecordedEvent` arrays; the events share `body`, which
/// `r` reads.
pub(crate) fn read_recorded_events(
    r: &mut Reader<'_>,
    body: &Bytes,
) -> Result<Vec<RecordedEvent>, Reason> {
    let n = r.array_len()?;
    let mut events = Vec::with_capacity(n.min(r.remaining() / MIN_RECORDED_EVENT_LEN));
    for _ in 0..n {
        let fields = r.array_len()?;
        if fields < RECORDED_EVENT_FIELDS {
            return Err("recorded event array has fewer than 8 elements");
        }
        events.push(RecordedEvent {
            stream: Text::share_from(body, r.str()?),
            version: StreamVersion(r.uint()?),
            position: LogPosition(r.uint()?),
            id: r.event_id()?,
            event_type: Text::share_from(body, r.str()?),
            metadata: share_slice(body, r.bin()?),
            data: share_slice(body, r.bin()?),
            timestamp_us: r.sint()?,
        });
        skip_extra(r, fields - RECORDED_EVENT_FIELDS)?;
    }
    Ok(events)
}

/// Skips elements a later protocol version appended to an event array.
fn skip_extra(r: &mut Reader<'_>, n: usize) -> Result<(), Reason> {
    for _ in 0..n {
        r.skip()?;
    }
    Ok(())
}

/// Encoded size of a msgpack unsigned integer (most compact form).
pub(crate) const fn uint_len(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Encoded size of a msgpack signed integer (most compact form, as rmp
/// writes it: non-negative values use the unsigned encodings).
const fn sint_len(v: i64) -> usize {
    if v >= 0 {
        uint_len(v as u64)
    } else if v >= -32 {
        1
    } else if v >= -128 {
        2
    } else if v >= -32768 {
        3
    } else if v >= -2_147_483_648 {
        5
    } else {
        9
    }
}

/// Encoded size of a msgpack str of `n` bytes.
pub(crate) const fn str_len(n: usize) -> usize {
    n + match n {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Encoded size of a msgpack bin of `n` bytes.
const fn bin_len(n: usize) -> usize {
    n + match n {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Encoded size of a msgpack array header for `n` elements.
pub(crate) const fn array_header_len(n: usize) -> usize {
    match n {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// Exact number of bytes `e` takes inside an `Append` request's `events`
/// array. Clients use it to split batches under the server's limits.
pub fn new_event_wire_len(e: &NewEvent) -> usize {
    array_header_len(NEW_EVENT_FIELDS)
        + ID_WIRE_LEN
        + str_len(e.event_type.len())
        + bin_len(e.metadata.len())
        + bin_len(e.data.len())
}

/// Exact number of bytes `e` takes inside an `events` array of a reply or
/// push. The server uses it to fill frames up to the frame limit; see
/// [`crate::msg::EVENTS_MESSAGE_OVERHEAD`].
pub fn recorded_event_wire_len(e: &RecordedEvent) -> usize {
    array_header_len(RECORDED_EVENT_FIELDS)
        + str_len(e.stream.len())
        + uint_len(e.version.0)
        + uint_len(e.position.0)
        + ID_WIRE_LEN
        + str_len(e.event_type.len())
        + bin_len(e.metadata.len())
        + bin_len(e.data.len())
        + sint_len(e.timestamp_us)
}
