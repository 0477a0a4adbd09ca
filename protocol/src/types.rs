//! Domain types shared by the server, the client and the wire protocol.
//!
//! Bare `u64`s stay inside codecs; everything that crosses a module boundary
//! says what it is: a [`StreamVersion`] is not a [`LogPosition`].

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest stream name accepted, in UTF-8 bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 1024;
/// Longest event type accepted, in UTF-8 bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 255;

/// Version of an event within its stream: 0 for the first event, then +1 per
/// event, with no gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

/// Position of an event in the global log: a dense, gap-free sequence
/// 0, 1, 2, ... over the whole store in commit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogPosition(pub u64);

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Client-chosen 16-byte event id (a UUID). Appending a batch whose ids equal
/// the stream's last committed batch is recognised as a retry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// Builds an id from a 128-bit integer (big-endian byte order, as UUIDs).
    pub const fn from_u128(v: u128) -> Self {
        EventId(v.to_be_bytes())
    }

    /// The id as a 128-bit integer.
    pub const fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// A fresh id: a UUID version 7 (time-ordered, random), the usual
    /// choice for new events.
    pub fn new_v7() -> EventId {
        EventId(*uuid::Uuid::now_v7().as_bytes())
    }
}

impl From<uuid::Uuid> for EventId {
    fn from(u: uuid::Uuid) -> EventId {
        EventId(*u.as_bytes())
    }
}

impl fmt::Display for EventId {
    /// Hyphenated UUID form: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EventId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("16 bytes of event id")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<EventId, E> {
                <[u8; 16]>::try_from(v)
                    .map(EventId)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EventId, A::Error> {
                let mut out = [0u8; 16];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(17, &self));
                }
                Ok(EventId(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// What the writer of a batch believes the stream's current state is.
///
/// The append succeeds only if the belief holds at commit time (optimistic
/// concurrency); otherwise nothing is written and the caller gets the actual
/// version back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's state.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` (None: no events)
    /// satisfies this expectation.
    pub fn admits(&self, actual: Option<StreamVersion>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual == Some(*v),
        }
    }
}

impl From<Option<StreamVersion>> for ExpectedVersion {
    /// The expectation that a stream is still where a reader saw it: no
    /// events (`None`), or exactly that version.
    fn from(seen: Option<StreamVersion>) -> ExpectedVersion {
        match seen {
            None => ExpectedVersion::NoStream,
            Some(v) => ExpectedVersion::Exact(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Reading direction for stream and global reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Direction {
    /// Ascending versions / positions.
    #[default]
    Forward,
    /// Descending versions / positions.
    Backward,
}

/// Immutable UTF-8 text backed by [`Bytes`], so names and types sliced out of
/// a log or network buffer cost a reference count, not an allocation.
///
/// The only constructors validate UTF-8, so [`Text::as_str`] never fails.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// Wraps `bytes` if they are valid UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// Shares `s` out of `buf` without copying when `s` lies inside `buf`
    /// (as a `&str` borrowed from it does), and copies it otherwise. Unlike
    /// [`Text::from_utf8`] it does not re-check UTF-8: `s` is a `str` already.
    pub fn share_from(buf: &Bytes, s: &str) -> Text {
        Text(share_slice(buf, s.as_bytes()))
    }

    /// A `Text` for a string known at compile time.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// The text as `&str`.
    #[allow(unsafe_code)]
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `Text` either checks UTF-8
        // (`from_utf8`) or takes bytes that are UTF-8 by type (`&str`,
        // `String`, `share_from`'s `&str` sub-slice), and the bytes are
        // immutable afterwards. Re-validating here cost 5% of the server's
        // CPU when encoding reads (names and types of every event).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Consumes the text, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `buf.slice_ref(sub)` without its panic: shares `sub` when it lies inside
/// `buf`, copies it otherwise (which callers that borrowed `sub` from `buf`
/// never hit).
pub(crate) fn share_slice(buf: &Bytes, sub: &[u8]) -> Bytes {
    let start = buf.as_ptr() as usize;
    let at = sub.as_ptr() as usize;
    if at >= start && at.saturating_add(sub.len()) <= start.saturating_add(buf.len()) {
        buf.slice_ref(sub)
    } else {
        Bytes::copy_from_slice(sub)
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

/// Why a stream name or event type was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// "stream name" or "event type".
        what: &'static str,
    },
    /// The name is longer than the limit.
    #[error("{what} is {len} bytes, the limit is {max}")]
    TooLong {
        /// "stream name" or "event type".
        what: &'static str,
        /// Length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains a control character (U+0000..U+001F or U+007F).
    #[error("{what} contains a control character at byte {at}")]
    ControlCharacter {
        /// "stream name" or "event type".
        what: &'static str,
        /// Byte offset of the offending character.
        at: usize,
    },
}

fn validate_name(what: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    // Control characters make names unprintable in logs and tools; nothing
    // legitimate needs them.
    if let Some(at) = s.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(NameError::ControlCharacter { what, at });
    }
    Ok(())
}

/// Checks a stream name: non-empty UTF-8, at most [`MAX_STREAM_NAME_BYTES`],
/// no control characters.
pub fn validate_stream_name(s: &str) -> Result<(), NameError> {
    validate_name("stream name", s, MAX_STREAM_NAME_BYTES)
}

/// Checks an event type: non-empty UTF-8, at most [`MAX_EVENT_TYPE_BYTES`],
/// no control characters.
pub fn validate_event_type(s: &str) -> Result<(), NameError> {
    validate_name("event type", s, MAX_EVENT_TYPE_BYTES)
}

/// A validated stream name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(Text);

impl StreamName {
    /// Validates `name` (see [`validate_stream_name`]).
    pub fn new(name: impl Into<Text>) -> Result<StreamName, NameError> {
        let text = name.into();
        validate_stream_name(text.as_str())?;
        Ok(StreamName(text))
    }

    /// The name as `&str`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The name as [`Text`].
    pub fn as_text(&self) -> &Text {
        &self.0
    }

    /// Consumes the name, returning its text.
    pub fn into_text(self) -> Text {
        self.0
    }
}

impl Deref for StreamName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl TryFrom<&str> for StreamName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<StreamName, NameError> {
        StreamName::new(s)
    }
}

impl TryFrom<String> for StreamName {
    type Error = NameError;
    fn try_from(s: String) -> Result<StreamName, NameError> {
        StreamName::new(s)
    }
}

/// An event as a writer proposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Client-chosen unique id (a UUID); used to recognise retries.
    pub id: EventId,
    /// Event type, e.g. `MoneyDeposited`.
    pub event_type: Text,
    /// Opaque metadata bytes (often JSON: correlation ids, user, ...).
    pub metadata: Bytes,
    /// Opaque payload bytes.
    pub data: Bytes,
}

impl NewEvent {
    /// An event with the given id, type and data, and no metadata.
    pub fn new(id: EventId, event_type: impl Into<Text>, data: impl Into<Bytes>) -> NewEvent {
        NewEvent {
            id,
            event_type: event_type.into(),
            metadata: Bytes::new(),
            data: data.into(),
        }
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> NewEvent {
        self.metadata = metadata.into();
        self
    }

    /// Bytes this event occupies in a log record, beyond the per-record header.
    pub fn encoded_len(&self) -> usize {
        16 + 2 + self.event_type.len() + 4 + self.metadata.len() + 4 + self.data.len()
    }
}

/// An event as stored: what a writer proposed plus where and when it landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream the event belongs to.
    pub stream: Text,
    /// Version within the stream.
    pub version: StreamVersion,
    /// Position in the global log.
    pub position: LogPosition,
    /// Client-chosen id.
    pub id: EventId,
    /// Event type.
    pub event_type: Text,
    /// Metadata bytes.
    pub metadata: Bytes,
    /// Payload bytes.
    pub data: Bytes,
    /// Server time of the commit, microseconds since the Unix epoch.
    pub timestamp_us: i64,
}

/// What a successful append reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendResult {
    /// Version of the first event of the batch.
    pub first_version: StreamVersion,
    /// Version of the last event of the batch: the stream's version after the
    /// append, and the `Exact` to expect for the next one.
    pub last_version: StreamVersion,
    /// Global position of the first event of the batch.
    pub first_position: LogPosition,
    /// Global position of the last event of the batch.
    pub last_position: LogPosition,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_displays_as_uuid() {
        let id = EventId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(id.as_u128(), 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    }

    #[test]
    fn new_ids_are_distinct_and_expected_version_follows_a_read() {
        assert_ne!(EventId::new_v7(), EventId::new_v7());
        assert_eq!(ExpectedVersion::from(None), ExpectedVersion::NoStream);
        assert_eq!(
            ExpectedVersion::from(Some(StreamVersion(4))),
            ExpectedVersion::Exact(StreamVersion(4))
        );
    }

    #[test]
    fn expected_version_admits() {
        let v = |n| Some(StreamVersion(n));
        assert!(ExpectedVersion::Any.admits(None));
        assert!(ExpectedVersion::Any.admits(v(3)));
        assert!(ExpectedVersion::NoStream.admits(None));
        assert!(!ExpectedVersion::NoStream.admits(v(0)));
        assert!(!ExpectedVersion::StreamExists.admits(None));
        assert!(ExpectedVersion::StreamExists.admits(v(0)));
        assert!(ExpectedVersion::Exact(StreamVersion(2)).admits(v(2)));
        assert!(!ExpectedVersion::Exact(StreamVersion(2)).admits(v(3)));
        assert!(!ExpectedVersion::Exact(StreamVersion(0)).admits(None));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_stream_name("account-42").is_ok());
        assert!(validate_stream_name("compte-é").is_ok());
        assert_eq!(
            validate_stream_name(""),
            Err(NameError::Empty {
                what: "stream name"
            })
        );
        assert!(matches!(
            validate_stream_name(&"x".repeat(MAX_STREAM_NAME_BYTES + 1)),
            Err(NameError::TooLong { .. })
        ));
        assert_eq!(
            validate_event_type("a\nb"),
            Err(NameError::ControlCharacter {
                what: "event type",
                at: 1
            })
        );
    }

    #[test]
    fn text_share_from_borrows_inside_and_copies_outside() {
        let buf = Bytes::from_static(b"hello world");
        let inside = std::str::from_utf8(&buf[6..]).unwrap();
        let t = Text::share_from(&buf, inside);
        assert_eq!(t, "world");
        assert_eq!(t.as_bytes().as_ptr(), buf[6..].as_ptr());
        let outside = String::from("elsewhere");
        let t = Text::share_from(&buf, &outside);
        assert_eq!(t, "elsewhere");
        assert_ne!(t.as_bytes().as_ptr(), outside.as_ptr());
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        assert!(Text::from_utf8(Bytes::from_static(b"\xff\xfe")).is_err());
        assert_eq!(Text::from_utf8(Bytes::from_static(b"ok")).unwrap(), "ok");
    }
}
