//! Plumbing shared by every message: writing a body straight into the
//! output buffer under the frame limit (through serde, or by hand for the
//! hot bodies), reading one (serde's borrowed deserialization, or a
//! hand-written map walk), and the wire shapes of the small enums that
//! several messages use.
//!
//! Enum-like values travel as lowercase snake_case strings, and "a keyword
//! or a number" values as either a str or an unsigned integer, so a client
//! in any language can build them without a MessagePack extension type or a
//! tagged map:
//!
//! ```text
//! Direction        "forward" | "backward"
//! ExpectedVersion  "any" | "no_stream" | "stream_exists" | uint (exact last version)
//! StreamState      "no_stream" | uint (the stream's last version)
//! SubscribeFrom    "start" | "end" | uint (exclusive: deliver what comes after it)
//! ```

use std::fmt;
use std::io;

use bytes::{BufMut, BytesMut};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mp::{self, Reader, Reason};
use crate::error::Error;
use crate::frame::{FrameHeader, HEADER_LEN, Opcode, encode_frame_with};
use crate::types::{Direction, EventId, ExpectedVersion, StreamVersion};

/// Deepest nesting of arrays and maps accepted in a body. Every message is
/// at most four levels deep; the limit exists so that a hostile body of
/// nested arrays (in a field the receiver skips) cannot recurse through the
/// decoder's stack, which is small on async worker threads.
pub const MAX_BODY_DEPTH: usize = 32;

/// An `io::Write` into the output buffer that refuses to grow the frame past
/// the limit, so encoding an oversized message stops at the limit instead
/// of first building the whole thing.
struct LimitedWriter<'a> {
    dst: &'a mut BytesMut,
    /// `dst.len()` where the frame started.
    start: usize,
    max_frame_bytes: u32,
    /// Set when a write was refused for size.
    overflow: Option<Error>,
}

impl io::Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let len = self
            .dst
            .len()
            .saturating_sub(self.start)
            .saturating_add(buf.len());
        if len > self.max_frame_bytes as usize {
            self.overflow = Some(Error::TooLarge {
                len: len as u64,
                max: self.max_frame_bytes,
            });
            return Err(io::Error::other("frame size limit reached"));
        }
        self.dst.put_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a frame with `header` whose body is `body` serialized as
/// MessagePack with named fields (structs become maps).
///
/// `size_hint` is the expected body size; it is reserved up front (within
/// the limit) so a large body does not grow the buffer step by step.
pub(crate) fn encode_message<T: Serialize + ?Sized>(
    dst: &mut BytesMut,
    header: &FrameHeader,
    max_frame_bytes: u32,
    size_hint: usize,
    body: &T,
) -> Result<(), Error> {
    let start = dst.len();
    encode_frame_with(dst, header, max_frame_bytes, |dst| {
        dst.reserve(size_hint.min(max_frame_bytes as usize));
        let mut w = LimitedWriter {
            dst,
            start,
            max_frame_bytes,
            overflow: None,
        };
        let result = body.serialize(&mut rmp_serde::Serializer::new(&mut w).with_struct_map());
        result.map_err(|e| {
            w.overflow.take().unwrap_or_else(|| Error::Encode {
                opcode: header.opcode,
                reason: e.to_string(),
            })
        })
    })
}

/// Writes a frame whose body `write` produces by hand (see [`mp`]).
///
/// `min_len` is a lower bound of the body's size (the exact size of its
/// events): a frame that cannot fit is refused before anything is written.
/// `min_len + slack` is reserved up front.
pub(crate) fn encode_raw(
    dst: &mut BytesMut,
    header: &FrameHeader,
    max_frame_bytes: u32,
    min_len: usize,
    slack: usize,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), Error> {
    let at_least = HEADER_LEN.saturating_add(min_len);
    if at_least > max_frame_bytes as usize {
        return Err(Error::TooLarge {
            len: at_least as u64,
            max: max_frame_bytes,
        });
    }
    encode_frame_with(dst, header, max_frame_bytes, |dst| {
        dst.reserve(min_len.saturating_add(slack));
        write(dst);
        Ok(())
    })
}

/// Walks a body that is one map with str keys, calling `field` for each
/// entry with the reader positioned on its value. `field` must consume the
/// value, skipping keys it does not know ([`Reader::skip`]).
pub(crate) fn read_map<'a>(
    body: &'a [u8],
    opcode: Opcode,
    mut field: impl FnMut(&'a str, &mut Reader<'a>) -> Result<(), Reason>,
) -> Result<(), Error> {
    let mut r = Reader::new(body);
    let n = r.map_len().map_err(|e| malformed(opcode, e))?;
    for _ in 0..n {
        let key = r
            .str()
            .map_err(|e| malformed(opcode, format_args!("map key: {e}")))?;
        field(key, &mut r).map_err(|e| malformed(opcode, format_args!("field {key:?}: {e}")))?;
    }
    if r.remaining() != 0 {
        return Err(malformed(opcode, "bytes after the body"));
    }
    Ok(())
}

/// The value of a required field, or the error naming it.
pub(crate) fn required<T>(value: Option<T>, opcode: Opcode, name: &str) -> Result<T, Error> {
    value.ok_or_else(|| malformed(opcode, format_args!("missing field `{name}`")))
}

/// Writes an [`ExpectedVersion`] (see the module docs for its shape).
pub(crate) fn put_expected(dst: &mut BytesMut, e: ExpectedVersion) {
    match e {
        ExpectedVersion::Any => mp::put_str(dst, "any"),
        ExpectedVersion::NoStream => mp::put_str(dst, "no_stream"),
        ExpectedVersion::StreamExists => mp::put_str(dst, "stream_exists"),
        ExpectedVersion::Exact(v) => mp::put_uint(dst, v.0),
    }
}

/// Reads an [`ExpectedVersion`].
pub(crate) fn read_expected(r: &mut Reader<'_>) -> Result<ExpectedVersion, Reason> {
    if !r.next_is_str() {
        return r.uint().map(|v| ExpectedVersion::Exact(StreamVersion(v)));
    }
    match r.str()? {
        "any" => Ok(ExpectedVersion::Any),
        "no_stream" => Ok(ExpectedVersion::NoStream),
        "stream_exists" => Ok(ExpectedVersion::StreamExists),
        _ => Err(r#"expected "any", "no_stream", "stream_exists" or a version"#),
    }
}

/// Decodes a body with serde's borrowed deserialization: `&str` and
/// `&[u8]` fields of `T` point into `body`.
pub(crate) fn decode_body<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    opcode: Opcode,
) -> Result<T, Error> {
    // A body is exactly one map with str keys (PROTOCOL.md §3). serde
    // alone would also take an array for a struct (fields by position) or
    // integer keys (fields by index), and rmp-serde stops after the first
    // value: the walk checks all three before serde sees the body.
    read_map(body, opcode, |_, r| r.skip())?;
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_BODY_DEPTH);
    T::deserialize(&mut de).map_err(|e| malformed(opcode, e))
}

/// An [`Error::Malformed`] for `opcode`.
pub(crate) fn malformed(opcode: Opcode, reason: impl fmt::Display) -> Error {
    Error::Malformed {
        opcode,
        reason: reason.to_string(),
    }
}

/// Deserializes "a keyword or an unsigned integer" values.
struct KeywordOrUint<T> {
    expecting: &'static str,
    keyword: fn(&str) -> Option<T>,
    uint: fn(u64) -> T,
}

impl<'de, T> Visitor<'de> for KeywordOrUint<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok((self.uint)(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v)
            .map(self.uint)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.keyword)(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Wire shape of [`ExpectedVersion`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExpectedWire(pub ExpectedVersion);

impl Serialize for ExpectedWire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ExpectedVersion::Any => s.serialize_str("any"),
            ExpectedVersion::NoStream => s.serialize_str("no_stream"),
            ExpectedVersion::StreamExists => s.serialize_str("stream_exists"),
            ExpectedVersion::Exact(v) => s.serialize_u64(v.0),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeywordOrUint {
            expecting: r#""any", "no_stream", "stream_exists" or an unsigned version"#,
            keyword: |k| match k {
                "any" => Some(ExpectedWire(ExpectedVersion::Any)),
                "no_stream" => Some(ExpectedWire(ExpectedVersion::NoStream)),
                "stream_exists" => Some(ExpectedWire(ExpectedVersion::StreamExists)),
                _ => None,
            },
            uint: |v| ExpectedWire(ExpectedVersion::Exact(StreamVersion(v))),
        })
    }
}

/// Wire shape of an [`EventId`]: a 16-byte `bin`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventIdWire(pub EventId);

impl Serialize for EventIdWire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.0)
    }
}

impl<'de> Deserialize<'de> for EventIdWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EventIdWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 16-byte bin")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<EventIdWire, E> {
                <[u8; 16]>::try_from(v)
                    .map(|b| EventIdWire(EventId(b)))
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Wire shape of "a stream's last version, or no stream" (`None` = the
/// stream has no events).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamStateWire(pub Option<StreamVersion>);

impl Serialize for StreamStateWire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_str("no_stream"),
            Some(v) => s.serialize_u64(v.0),
        }
    }
}

impl<'de> Deserialize<'de> for StreamStateWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeywordOrUint {
            expecting: r#""no_stream" or an unsigned version"#,
            keyword: |k| (k == "no_stream").then_some(StreamStateWire(None)),
            uint: |v| StreamStateWire(Some(StreamVersion(v))),
        })
    }
}

/// Wire shape of a subscription's starting point before it is typed as a
/// stream version or a log position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FromWire {
    Start,
    After(u64),
    End,
}

impl Serialize for FromWire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            FromWire::Start => s.serialize_str("start"),
            FromWire::End => s.serialize_str("end"),
            FromWire::After(v) => s.serialize_u64(v),
        }
    }
}

impl<'de> Deserialize<'de> for FromWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeywordOrUint {
            expecting: r#""start", "end" or an unsigned position to start after"#,
            keyword: |k| match k {
                "start" => Some(FromWire::Start),
                "end" => Some(FromWire::End),
                _ => None,
            },
            uint: FromWire::After,
        })
    }
}

/// Wire shape of [`Direction`]; nil, like an absent field, means the
/// default (forward).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DirectionWire(pub Direction);

impl Serialize for DirectionWire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self.0 {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        })
    }
}

impl<'de> Deserialize<'de> for DirectionWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DirectionWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""forward", "backward" or nil"#)
            }
            fn visit_unit<E: de::Error>(self) -> Result<DirectionWire, E> {
                Ok(DirectionWire::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<DirectionWire, E> {
                Ok(DirectionWire::default())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DirectionWire, E> {
                match v {
                    "forward" => Ok(DirectionWire(Direction::Forward)),
                    "backward" => Ok(DirectionWire(Direction::Backward)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
