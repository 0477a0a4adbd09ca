//! The protocol crate's error type.
//!
//! Errors fall in two classes, and [`Error::is_fatal`] tells them apart:
//! - **frame errors** (length, checksum, header fields, I/O): the byte stream
//!   can no longer be trusted to be in step, so the connection must be closed
//!   (after sending an error frame if the peer deserves an explanation);
//! - **message errors** (a well-framed body that does not decode, a frame that
//!   carries no message of the expected class, an outgoing message that is too
//!   large): they concern one message only and the connection can carry on,
//!   typically after answering `BadRequest`.
//!
//! "Need more bytes" is not an error: the decoder returns `Ok(None)`.

use crate::frame::{Kind, Opcode};

/// Everything that can go wrong turning bytes into frames and frames into
/// messages, or back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the underlying transport failed (required by
    /// `tokio_util::codec`, which reports socket errors through the codec's
    /// error type).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    /// An incoming frame declares a size above the receiver's limit; nothing
    /// was allocated for it. `len` counts the whole frame, length prefix
    /// included.
    #[error("incoming frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared size of the whole frame in bytes (length prefix included).
        len: u64,
        /// The receiver's maximum frame size in bytes.
        max: u32,
    },

    /// The crc32c carried by a frame does not match its header and body.
    #[error("frame checksum mismatch: computed {got:#010x}, frame carries {expected:#010x}")]
    ChecksumMismatch {
        /// Checksum computed over the received bytes.
        got: u32,
        /// Checksum carried in the frame header.
        expected: u32,
    },

    /// The frame's protocol version is not one this side speaks (only
    /// `Hello` frames are exempt, see [`crate::frame`]).
    #[error("unsupported protocol version {got}")]
    UnsupportedVersion {
        /// The version byte found in the header.
        got: u8,
    },

    /// The header's kind byte names no known frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),

    /// The header's opcode names no known operation.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),

    /// A header field breaks the framing rules (length below the header
    /// size, unknown flag bits, nonzero reserved field).
    #[error("bad frame header: {reason}")]
    BadHeader {
        /// Which rule was broken.
        reason: &'static str,
    },

    /// A well-framed body did not decode as the message its kind and opcode
    /// announce.
    #[error("malformed {opcode:?} body: {reason}")]
    Malformed {
        /// Opcode of the frame whose body was rejected.
        opcode: Opcode,
        /// What was wrong with the body.
        reason: String,
    },

    /// The frame's kind and opcode pair carries no message of the class the
    /// caller asked to decode (for example a `Push` with opcode `Ping`, or a
    /// request decoder fed a response).
    #[error("no {expected:?} message for a {kind:?} frame with opcode {opcode:?}")]
    UnexpectedFrame {
        /// The message class the caller tried to decode.
        expected: Kind,
        /// The frame's kind.
        kind: Kind,
        /// The frame's opcode.
        opcode: Opcode,
    },

    /// A subscription push carries a type tag this side does not know.
    /// Receivers may skip such pushes: new push types only add information.
    #[error("unknown push type {tag:?}")]
    UnknownPushType {
        /// The `t` field of the push body.
        tag: String,
    },

    /// An outgoing frame would exceed the maximum frame size; nothing was
    /// left in the output buffer.
    #[error("outgoing frame of at least {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size the frame reached (length prefix included) when the limit
        /// was hit; the complete frame may be larger still.
        len: u64,
        /// The maximum frame size in bytes.
        max: u32,
    },

    /// A message could not be serialized for a reason other than its size
    /// (a bug rather than bad input); nothing was left in the output buffer.
    #[error("cannot encode {opcode:?} message: {reason}")]
    Encode {
        /// Opcode of the message being encoded.
        opcode: Opcode,
        /// What the serializer reported.
        reason: String,
    },
}

impl Error {
    /// Whether the connection that produced this error must be closed.
    ///
    /// True for transport and frame-level errors: once a length, checksum or
    /// header is wrong the receiver cannot know where the next frame starts.
    /// False for errors about a single message, which leave the stream in
    /// step.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Io(_)
            | Error::FrameTooLarge { .. }
            | Error::ChecksumMismatch { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnknownKind(_)
            | Error::UnknownOpcode(_)
            | Error::BadHeader { .. } => true,
            Error::Malformed { .. }
            | Error::UnexpectedFrame { .. }
            | Error::UnknownPushType { .. }
            | Error::TooLarge { .. }
            | Error::Encode { .. } => false,
        }
    }
}
