//! Frames: the unit the byte stream is cut into.
//!
//! ```text
//! offset size field     meaning (all integers little-endian)
//!  0     u32  len       bytes after this field: 16 header bytes + body.
//!                       Checked against the max frame size before anything
//!                       is allocated.
//!  4     u8   version   protocol version (PROTOCOL_VERSION = 1)
//!  5     u8   kind      1 Request, 2 Response, 3 Push, 4 Error
//!  6     u16  opcode    1 Hello, 2 Ping, 3 Append, 4 ReadStream, 5 ReadAll,
//!                       6 Subscribe, 7 Unsubscribe, 8 Credit, 9 Stats,
//!                       10 BackupBegin, 11 BackupRead, 12 BackupEnd,
//!                       13 SetMetadata, 14 GetMetadata, 15 Truncate,
//!                       16 DeleteStream, 17 Scavenge, 18 Erase,
//!                       19 ListStreams, 20-30 groups, 31-39 users,
//!                       40 AddNode, 41 RemoveNode
//!  8     u16  flags     bit 0 = END: set on every reply (Response, Error),
//!                       clear on requests and pushes; other bits 0
//! 10     u16  reserved  must be 0
//! 12     u32  corr_id   chosen by the client, echoed by responses and
//!                       errors; pushes carry their Subscribe's corr_id
//! 16     u32  crc32c    over bytes 4..16, then the body
//! 20     ..   body      one MessagePack value (see `crate::msg`)
//! ```
//!
//! The decoder trusts nothing before it has to: it reads `len`, refuses it
//! if the frame would exceed the limit, waits until the whole frame is
//! buffered, checks the crc, and only then interprets the header. The body is
//! split out of the read buffer without copying, so messages decoded from it
//! can share its bytes.
//!
//! The crc does not cover `len` itself: a corrupted length either makes the
//! crc cover the wrong bytes (a mismatch) or makes the decoder wait for bytes
//! that never come, which the peer's idle timeout ends.
//!
//! ## Versions
//! A frame whose version differs from [`PROTOCOL_VERSION`] is refused with
//! [`Error::UnsupportedVersion`], except `Hello` frames (of any kind) with a
//! nonzero version. The `Hello` exchange is frozen across protocol versions
//! so that it can negotiate them: a newer client announces its version in
//! the `Hello` header and body, and an older server must still be able to
//! read it and answer `HelloOk` with a version both speak, or an error frame
//! with code `UnsupportedVersion`, instead of dropping the connection
//! without a word. Callers that care read [`FrameHeader::version`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::le;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes before the body: length prefix, header fields and crc.
pub const HEADER_LEN: usize = 20;

/// Bytes the `len` field counts besides the body (everything in the header
/// after the length prefix).
const LEN_COVERED_HEADER: usize = HEADER_LEN - 4;

/// Default maximum size of a whole frame, length prefix included: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// What a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Client to server: asks for something.
    Request = 1,
    /// Server to client: the successful answer to a request.
    Response = 2,
    /// Server to client: unrequested data for a subscription.
    Push = 3,
    /// Server to client: the failed answer to a request.
    Error = 4,
}

impl Kind {
    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The kind for a wire byte, if known.
    pub const fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Push,
            4 => Kind::Error,
            _ => return None,
        })
    }
}

/// Which operation a frame belongs to. A request, its reply and its error
/// share the opcode; subscription pushes use [`Opcode::Subscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Opcode {
    /// Handshake; must be the first request on a connection.
    Hello = 1,
    /// Liveness check.
    Ping = 2,
    /// Append a batch of events to one stream.
    Append = 3,
    /// Read a page of one stream.
    ReadStream = 4,
    /// Read a page of the global log.
    ReadAll = 5,
    /// Start a subscription (and the opcode of its pushes).
    Subscribe = 6,
    /// Stop a subscription.
    Unsubscribe = 7,
    /// Grant a subscription more events.
    Credit = 8,
    /// Server statistics.
    Stats = 9,
    /// Start an online backup session.
    BackupBegin = 10,
    /// Read part of a file of a backup image.
    BackupRead = 11,
    /// End a backup session.
    BackupEnd = 12,
    /// Set a stream's metadata (retention and custom keys).
    SetMetadata = 13,
    /// Read a stream's lifecycle state.
    GetMetadata = 14,
    /// Remove a stream's events below a version.
    Truncate = 15,
    /// Delete a stream, softly or for ever.
    DeleteStream = 16,
    /// Give back the disk that removed events take.
    Scavenge = 17,
    /// Erase a stream's events from disk for good.
    Erase = 18,
    /// A page of the stream catalog.
    ListStreams = 19,
    /// Create a consumer group.
    CreateGroup = 20,
    /// Change a consumer group's settings.
    UpdateGroup = 21,
    /// Delete a consumer group.
    DeleteGroup = 22,
    /// List the consumer groups.
    ListGroups = 23,
    /// Join a consumer group (and the opcode of its pushes).
    JoinGroup = 24,
    /// Acknowledge group events.
    GroupAck = 25,
    /// Refuse group events (retry, park, skip).
    GroupNack = 26,
    /// Extend the ack wait of group events.
    GroupExtend = 27,
    /// A page of a group's parked events.
    ListParked = 28,
    /// Deliver a group's parked events again.
    ReplayParked = 29,
    /// Drop a group's parked events.
    DeleteParked = 30,
    /// Create or replace a user.
    PutUser = 31,
    /// Delete a user.
    DeleteUser = 32,
    /// List the users.
    ListUsers = 33,
    /// Create or replace a role.
    PutRole = 34,
    /// Delete a role.
    DeleteRole = 35,
    /// List the roles.
    ListRoles = 36,
    /// Create an API token for a user.
    CreateToken = 37,
    /// Revoke a user's API token.
    RevokeToken = 38,
    /// The connection's identity and rights.
    WhoAmI = 39,
    /// Add a node to the cluster.
    AddNode = 40,
    /// Remove a node from the cluster.
    RemoveNode = 41,
}

impl Opcode {
    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The opcode for a wire value, if known.
    pub const fn from_u16(v: u16) -> Option<Opcode> {
        Some(match v {
            1 => Opcode::Hello,
            2 => Opcode::Ping,
            3 => Opcode::Append,
            4 => Opcode::ReadStream,
            5 => Opcode::ReadAll,
            6 => Opcode::Subscribe,
            7 => Opcode::Unsubscribe,
            8 => Opcode::Credit,
            9 => Opcode::Stats,
            10 => Opcode::BackupBegin,
            11 => Opcode::BackupRead,
            12 => Opcode::BackupEnd,
            13 => Opcode::SetMetadata,
            14 => Opcode::GetMetadata,
            15 => Opcode::Truncate,
            16 => Opcode::DeleteStream,
            17 => Opcode::Scavenge,
            18 => Opcode::Erase,
            19 => Opcode::ListStreams,
            20 => Opcode::CreateGroup,
            21 => Opcode::UpdateGroup,
            22 => Opcode::DeleteGroup,
            23 => Opcode::ListGroups,
            24 => Opcode::JoinGroup,
            25 => Opcode::GroupAck,
            26 => Opcode::GroupNack,
            27 => Opcode::GroupExtend,
            28 => Opcode::ListParked,
            29 => Opcode::ReplayParked,
            30 => Opcode::DeleteParked,
            31 => Opcode::PutUser,
            32 => Opcode::DeleteUser,
            33 => Opcode::ListUsers,
            34 => Opcode::PutRole,
            35 => Opcode::DeleteRole,
            36 => Opcode::ListRoles,
            37 => Opcode::CreateToken,
            38 => Opcode::RevokeToken,
            39 => Opcode::WhoAmI,
            40 => Opcode::AddNode,
            41 => Opcode::RemoveNode,
            _ => return None,
        })
    }
}

/// Header flag bits. Only defined bits can be represented, so an encoded
/// frame never carries bits a receiver would refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// Last frame of a reply. Every reply is a single frame today and
    /// carries it; a reply split over several frames would set it on the
    /// last one only. Requests and pushes leave it clear.
    pub const END: Flags = Flags(1);
    /// Every bit defined so far.
    const KNOWN: u16 = Flags::END.0;

    /// The wire value.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Flags for a wire value, or `None` if it has undefined bits set.
    pub const fn from_bits(bits: u16) -> Option<Flags> {
        if bits & !Flags::KNOWN == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of both.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// A decoded frame header (everything but `len` and `crc32c`, which the
/// codec handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Protocol version the frame is written in.
    pub version: u8,
    /// What the frame is for.
    pub kind: Kind,
    /// Which operation it belongs to.
    pub opcode: Opcode,
    /// Header flags.
    pub flags: Flags,
    /// Correlation id: matches replies and pushes to their request.
    pub corr_id: u32,
}

impl FrameHeader {
    /// A header in the current protocol version. Replies (responses and
    /// errors) get [`Flags::END`], since every reply is one frame; requests
    /// and pushes get no flags.
    pub const fn new(kind: Kind, opcode: Opcode, corr_id: u32) -> FrameHeader {
        let flags = match kind {
            Kind::Response | Kind::Error => Flags::END,
            Kind::Request | Kind::Push => Flags::NONE,
        };
        FrameHeader {
            version: PROTOCOL_VERSION,
            kind,
            opcode,
            flags,
            corr_id,
        }
    }
}

/// A whole frame: its header and its (still encoded) body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The MessagePack body. When decoded from a read buffer it shares that
    /// buffer's memory: holding on to it (or to events decoded from it) keeps
    /// the buffer's allocation alive.
    pub body: Bytes,
}

impl Frame {
    /// A frame from its parts.
    pub fn new(header: FrameHeader, body: impl Into<Bytes>) -> Frame {
        Frame {
            header,
            body: body.into(),
        }
    }
}

/// Writes one frame into `dst`: reserves the header, lets `body` write the
/// body straight into `dst`, then fills in `len` and the crc.
///
/// On any error (from `body`, or [`Error::TooLarge`] when the frame exceeds
/// `max_frame_bytes`, length prefix included) `dst` is truncated back to
/// where it was, so a half-written frame can never be sent.
pub fn encode_frame_with(
    dst: &mut BytesMut,
    header: &FrameHeader,
    max_frame_bytes: u32,
    body: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
) -> Result<(), Error> {
    let start = dst.len();
    dst.reserve(HEADER_LEN);
    dst.put_u32_le(0); // len, patched below
    dst.put_u8(header.version);
    dst.put_u8(header.kind.as_u8());
    dst.put_u16_le(header.opcode.as_u16());
    dst.put_u16_le(header.flags.bits());
    dst.put_u16_le(0); // reserved
    dst.put_u32_le(header.corr_id);
    dst.put_u32_le(0); // crc, patched below

    let result = body(dst).and_then(|()| seal(dst, start, max_frame_bytes));
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

/// Fills in `len` and the crc of the frame that starts at `start` and runs to
/// the end of `dst`.
fn seal(dst: &mut BytesMut, start: usize, max_frame_bytes: u32) -> Result<(), Error> {
    let total = dst.len().saturating_sub(start);
    if total > max_frame_bytes as usize {
        return Err(Error::TooLarge {
            len: total as u64,
            max: max_frame_bytes,
        });
    }
    // Fits: total <= max_frame_bytes, a u32.
    let len = total.saturating_sub(4) as u32;
    let frame = dst.get_mut(start..).unwrap_or_default();
    let crc = frame_crc(frame);
    if let Some(slot) = frame.get_mut(0..4) {
        slot.copy_from_slice(&len.to_le_bytes());
    }
    if let Some(slot) = frame.get_mut(16..HEADER_LEN) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// The crc32c of a whole frame: header bytes 4..16, then the body.
/// A frame encoded once and written for many correlation ids: fan-out of
/// one batch of events to many subscriptions costs a copy and a checksum
/// per subscription, not an encoding.
///
/// (The checksum covers the correlation id before the body, so it is
/// recomputed; `crc32c_combine` could splice a precomputed body checksum,
/// but measured at half the server's CPU it costs far more than the
/// hardware crc32c pass it saves.)
#[derive(Clone, Debug)]
pub struct SharedFrame {
    /// The frame as encoded (with whatever correlation id it was given).
    frame: Bytes,
}

impl SharedFrame {
    /// Wraps a whole encoded frame (as written by this crate's encoders).
    pub fn new(frame: Bytes) -> SharedFrame {
        SharedFrame { frame }
    }

    /// Length of the frame in bytes.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the frame is empty (never, for a frame from an encoder).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Appends the frame to `dst` with correlation id `corr_id`; only the
    /// header's id and checksum are recomputed.
    pub fn write_to(&self, dst: &mut BytesMut, corr_id: u32) {
        let start = dst.len();
        dst.extend_from_slice(&self.frame);
        let Some(frame) = dst.get_mut(start..) else {
            return;
        };
        if let Some(slot) = frame.get_mut(12..16) {
            slot.copy_from_slice(&corr_id.to_le_bytes());
        }
        let crc = frame_crc(frame);
        if let Some(slot) = frame.get_mut(16..HEADER_LEN) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
    }
}

fn frame_crc(frame: &[u8]) -> u32 {
    let header = frame.get(4..16).unwrap_or_default();
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(header), body)
}

/// Takes one frame off the front of `src` if it is complete.
///
/// Returns `Ok(None)` while the frame is incomplete, after reserving room for
/// the rest of it (never more than the declared size, and only once that size
/// passed the limit). On error `src` is left as it was; the connection should
/// be closed (see [`Error::is_fatal`]).
pub fn decode_frame(src: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, Error> {
    if src.len() < 4 {
        return Ok(None);
    }
    let len = le::u32(src, 0);
    let total = u64::from(len) + 4;
    if total > u64::from(max_frame_bytes) {
        return Err(Error::FrameTooLarge {
            len: total,
            max: max_frame_bytes,
        });
    }
    if (len as usize) < LEN_COVERED_HEADER {
        return Err(Error::BadHeader {
            reason: "length shorter than the header",
        });
    }
    // Cannot overflow: total <= max_frame_bytes <= u32::MAX.
    let total = total as usize;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }

    let frame = src.get(..total).unwrap_or_default();
    let expected = le::u32(frame, 16);
    let got = frame_crc(frame);
    if got != expected {
        return Err(Error::ChecksumMismatch { got, expected });
    }

    let header = parse_header(frame)?;
    src.advance(HEADER_LEN);
    let body = src.split_to(total - HEADER_LEN).freeze();
    Ok(Some(Frame { header, body }))
}

/// Interprets header bytes 4..16 of a frame whose crc has been verified.
fn parse_header(frame: &[u8]) -> Result<FrameHeader, Error> {
    let version = frame.get(4).copied().unwrap_or_default();
    let kind = frame.get(5).copied().unwrap_or_default();
    let opcode = le::u16(frame, 6);
    let flags = le::u16(frame, 8);
    let reserved = le::u16(frame, 10);
    let corr_id = le::u32(frame, 12);

    // Version first: a frame from a newer protocol may legitimately use
    // kinds, opcodes or flags this side does not know, and "unsupported
    // version" is the accurate diagnosis. Hello is exempt (see module docs).
    let is_hello = opcode == Opcode::Hello.as_u16();
    if version != PROTOCOL_VERSION && (version == 0 || !is_hello) {
        return Err(Error::UnsupportedVersion { got: version });
    }
    let kind = Kind::from_u8(kind).ok_or(Error::UnknownKind(kind))?;
    let opcode = Opcode::from_u16(opcode).ok_or(Error::UnknownOpcode(opcode))?;
    let flags = Flags::from_bits(flags).ok_or(Error::BadHeader {
        reason: "undefined flag bits set",
    })?;
    if reserved != 0 {
        return Err(Error::BadHeader {
            reason: "reserved field is not zero",
        });
    }
    // Every reply is one frame, so END marks exactly the replies: a request
    // or push with it set (or a reply without it) is not a frame of this
    // protocol, and nothing after it can be trusted either.
    let is_reply = matches!(kind, Kind::Response | Kind::Error);
    if flags.contains(Flags::END) != is_reply {
        return Err(Error::BadHeader {
            reason: if is_reply {
                "a reply without the END flag"
            } else {
                "the END flag on a request or push"
            },
        });
    }
    Ok(FrameHeader {
        version,
        kind,
        opcode,
        flags,
        corr_id,
    })
}

/// The `tokio_util` codec for frames: wrap a socket in
/// `Framed::new(socket, FrameCodec::new(max))`.
///
/// Message encoders ([`crate::msg`]) write straight into a `BytesMut`; use
/// them with [`FrameCodec::max_frame_bytes`] and `Framed::write_buffer_mut`,
/// or on a buffer of your own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_bytes: u32,
}

impl FrameCodec {
    /// A codec refusing frames (in and out) larger than `max_frame_bytes`,
    /// length prefix included.
    pub const fn new(max_frame_bytes: u32) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }

    /// The maximum frame size in bytes, length prefix included.
    pub const fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// [`encode_frame_with`] under this codec's limit.
    pub fn encode_with(
        &self,
        dst: &mut BytesMut,
        header: &FrameHeader,
        body: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(), Error> {
        encode_frame_with(dst, header, self.max_frame_bytes, body)
    }
}

impl Default for FrameCodec {
    /// A codec with [`DEFAULT_MAX_FRAME_BYTES`].
    fn default() -> FrameCodec {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        decode_frame(src, self.max_frame_bytes)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        Encoder::<&Frame>::encode(self, &frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        if frame.body.len() > self.max_frame_bytes as usize {
            // Refuse before copying a body that cannot fit anyway.
            return Err(Error::TooLarge {
                len: (HEADER_LEN + frame.body.len()) as u64,
                max: self.max_frame_bytes,
            });
        }
        self.encode_with(dst, &frame.header, |dst| {
            dst.extend_from_slice(&frame.body);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    fn kind() -> impl Strategy<Value = Kind> {
        (1u8..=4).prop_filter_map("known kind", Kind::from_u8)
    }

    fn opcode() -> impl Strategy<Value = Opcode> {
        (1u16..=39).prop_filter_map("known opcode", Opcode::from_u16)
    }

    fn header() -> impl Strategy<Value = FrameHeader> {
        (kind(), opcode(), any::<u32>())
            .prop_map(|(kind, opcode, corr_id)| FrameHeader::new(kind, opcode, corr_id))
    }

    fn frame() -> impl Strategy<Value = Frame> {
        (header(), prop::collection::vec(any::<u8>(), 0..512))
            .prop_map(|(header, body)| Frame::new(header, body))
    }

    fn encode(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::new(MAX).encode(frame, &mut buf).unwrap();
        buf
    }

    /// Builds frame bytes by hand, with a correct crc, so header fields the
    /// encoder cannot produce can be tested.
    fn raw(version: u8, kind: u8, opcode: u16, flags: u16, reserved: u16, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32_le((LEN_COVERED_HEADER + body.len()) as u32);
        b.put_u8(version);
        b.put_u8(kind);
        b.put_u16_le(opcode);
        b.put_u16_le(flags);
        b.put_u16_le(reserved);
        b.put_u32_le(7);
        b.put_u32_le(0);
        b.put_slice(body);
        let crc = frame_crc(&b);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        FrameCodec::new(MAX).decode(buf)
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in prop::collection::vec(frame(), 1..5), chunk in 1usize..64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                wire.extend_from_slice(&encode(f));
            }
            // Feed the stream in small chunks, as a socket would.
            let mut codec = FrameCodec::new(MAX);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn any_truncation_needs_more_bytes(f in frame()) {
            let wire = encode(&f);
            for cut in 0..wire.len() {
                let mut buf = BytesMut::from(&wire[..cut]);
                prop_assert!(decode(&mut buf).unwrap().is_none(), "cut at {}", cut);
                prop_assert_eq!(buf.len(), cut, "a partial frame must stay buffered");
            }
        }

        #[test]
        fn any_bit_flip_is_detected(f in frame(), bit in any::<prop::sample::Index>()) {
            let mut wire = encode(&f);
            let bit = bit.index(wire.len() * 8);
            wire[bit / 8] ^= 1 << (bit % 8);
            match decode(&mut wire) {
                Err(e) => prop_assert!(e.is_fatal(), "{e}"),
                // A flip that grows `len` (not covered by the crc) makes the
                // decoder wait for bytes that never come; a flip anywhere
                // else must be reported.
                Ok(None) => prop_assert!(bit < 32, "undetected flip at bit {}", bit),
                Ok(Some(g)) => prop_assert!(false, "flip at bit {} decoded as {:?}", bit, g),
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Anything but a panic is acceptable; a decoded frame must have
            // consumed exactly its bytes.
            let before = buf.len();
            if let Ok(Some(f)) = decode(&mut buf) {
                prop_assert_eq!(before - buf.len(), HEADER_LEN + f.body.len());
            }
        }

        #[test]
        fn random_bytes_after_a_valid_length_never_panic(
            len in 0u32..64,
            rest in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut buf = BytesMut::new();
            buf.put_u32_le(len);
            buf.put_slice(&rest);
            let _ = decode(&mut buf);
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u32_le(u32::MAX);
        buf.put_u8(PROTOCOL_VERSION);
        let capacity = buf.capacity();
        match decode(&mut buf) {
            Err(Error::FrameTooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX) + 4);
                assert_eq!(max, MAX);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.capacity(), capacity);

        // The limit counts the length prefix: MAX total is fine, MAX + 1 not.
        let mut at_limit = BytesMut::new();
        at_limit.put_u32_le(MAX - 4);
        assert!(decode(&mut at_limit).unwrap().is_none());
        assert!(at_limit.capacity() >= MAX as usize);
        let mut over = BytesMut::new();
        over.put_u32_le(MAX - 3);
        assert!(matches!(
            decode(&mut over),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn reserves_only_the_declared_size() {
        let wire = encode(&Frame::new(
            FrameHeader::new(Kind::Request, Opcode::Ping, 1),
            vec![0u8; 5000],
        ));
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(&wire[..8]);
        assert!(decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= wire.len());
        assert!(buf.capacity() < 2 * wire.len());
    }

    #[test]
    fn header_fields_are_checked() {
        let err = |b: &mut BytesMut| decode(b).unwrap_err();
        assert!(matches!(
            err(&mut raw(1, 9, 2, 0, 0, b"")),
            Error::UnknownKind(9)
        ));
        assert!(matches!(
            err(&mut raw(1, 1, 77, 0, 0, b"")),
            Error::UnknownOpcode(77)
        ));
        assert!(matches!(
            err(&mut raw(1, 1, 2, 2, 0, b"")),
            Error::BadHeader { .. }
        ));
        assert!(matches!(
            err(&mut raw(1, 1, 2, 0, 1, b"")),
            Error::BadHeader { .. }
        ));
        // END marks exactly the replies (kinds 2 and 4).
        for (kind, flags) in [(1, 1), (3, 1), (2, 0), (4, 0)] {
            assert!(
                matches!(
                    err(&mut raw(1, kind, 6, flags, 0, b"")),
                    Error::BadHeader { .. }
                ),
                "kind {kind} with flags {flags}"
            );
        }
        assert!(matches!(
            err(&mut raw(2, 1, 2, 0, 0, b"")),
            Error::UnsupportedVersion { got: 2 }
        ));
        assert!(matches!(
            err(&mut raw(0, 1, 1, 0, 0, b"")),
            Error::UnsupportedVersion { got: 0 }
        ));
        // A length too short to hold the header.
        let mut short = BytesMut::new();
        short.put_u32_le(15);
        short.put_slice(&[0; 15]);
        assert!(matches!(err(&mut short), Error::BadHeader { .. }));
        // A corrupted body.
        let mut b = raw(1, 1, 2, 0, 0, b"\x80");
        b[20] ^= 0x01;
        assert!(matches!(err(&mut b), Error::ChecksumMismatch { .. }));
    }

    #[test]
    fn hello_of_any_nonzero_version_passes_the_codec() {
        for (kind, flags) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
            let f = decode(&mut raw(
                200,
                kind,
                Opcode::Hello.as_u16(),
                flags,
                0,
                b"\x80",
            ))
            .unwrap()
            .unwrap();
            assert_eq!(f.header.version, 200);
        }
    }

    #[test]
    fn encode_with_errors_leave_the_buffer_alone() {
        let header = FrameHeader::new(Kind::Request, Opcode::Ping, 1);
        let mut buf = BytesMut::from(&b"keep"[..]);
        let r = encode_frame_with(&mut buf, &header, MAX, |b| {
            b.put_slice(b"half");
            Err(Error::BadHeader { reason: "test" })
        });
        assert!(r.is_err());
        assert_eq!(&buf[..], b"keep");
        let r = encode_frame_with(&mut buf, &header, 30, |b| {
            b.put_slice(&[0; 11]);
            Ok(())
        });
        assert!(matches!(r, Err(Error::TooLarge { len: 31, max: 30 })));
        assert_eq!(&buf[..], b"keep");
        let r = FrameCodec::new(30).encode(Frame::new(header, vec![0u8; 100]), &mut buf);
        assert!(matches!(r, Err(Error::TooLarge { .. })));
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn replies_carry_end() {
        assert_eq!(
            FrameHeader::new(Kind::Response, Opcode::Ping, 0).flags,
            Flags::END
        );
        assert_eq!(
            FrameHeader::new(Kind::Error, Opcode::Ping, 0).flags,
            Flags::END
        );
        assert_eq!(
            FrameHeader::new(Kind::Request, Opcode::Ping, 0).flags,
            Flags::NONE
        );
        assert_eq!(
            FrameHeader::new(Kind::Push, Opcode::Subscribe, 0).flags,
            Flags::NONE
        );
        assert!(Flags::END.contains(Flags::END));
        assert!(!Flags::NONE.contains(Flags::END));
        assert_eq!(Flags::from_bits(2), None);
    }
}

#[cfg(test)]
mod shared_frame_tests {
    use super::*;
    use crate::msg::{Push, ServerMessage};
    use crate::{EventId, LogPosition, RecordedEvent, StreamVersion, Text};

    #[test]
    fn a_shared_frame_is_the_frame_encoded_for_that_id() {
        let events: Vec<RecordedEvent> = (0..5u64)
            .map(|i| RecordedEvent {
                stream: Text::from("s"),
                version: StreamVersion(i),
                position: LogPosition(i),
                id: EventId::from_u128(u128::from(i)),
                event_type: Text::from("T"),
                metadata: Bytes::new(),
                data: Bytes::from(vec![i as u8; 100]),
                timestamp_us: 7,
            })
            .collect();
        let mut once = BytesMut::new();
        Push::encode_events(&mut once, 0, &events, Some(5), 1 << 20).unwrap();
        let shared = SharedFrame::new(once.freeze());
        for id in [1u32, 77, u32::MAX] {
            let mut direct = BytesMut::new();
            Push::encode_events(&mut direct, id, &events, Some(5), 1 << 20).unwrap();
            let mut via = BytesMut::new();
            shared.write_to(&mut via, id);
            assert_eq!(via, direct, "corr_id {id}");
            let frame = decode_frame(&mut via, 1 << 20).unwrap().unwrap();
            assert!(matches!(
                ServerMessage::decode(&frame).unwrap(),
                ServerMessage::Push(Push::Events { .. })
            ));
        }
    }
}
