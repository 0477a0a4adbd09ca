//! The log record: one per appended batch, the unit of atomicity.
//!
//! ```text
//! offset  size  field
//! 0       4     len             u32 total record length, prefix and suffix included
//! 4       4     crc32c          u32: crc32c of the segment's seed, then bytes 8 .. len-4
//! 8       1     kind            u8  1 = event batch
//! 9       1     flags           u8  bit 0: last record of a group commit; bit 1: removed
//!                                   (the events hold their ids only: see [`FLAG_REMOVED`])
//! 10      2     count           u16 events in the batch, >= 1
//! 12      8     first_position  u64 global position of event 0
//! 20      8     first_version   u64 stream version of event 0
//! 28      8     timestamp_us    i64 commit time, microseconds since the Unix epoch
//! 36      2     stream_len      u16
//! 38      ..    stream          UTF-8
//!         count x { [16] event_id | u16 type_len | type | u32 meta_len | meta | u32 data_len | data }
//! len-4   4     len             u32 suffix, equal to the prefix
//! ```
//! All integers little-endian. Event `i` of a record has position
//! `first_position + i` and version `first_version + i`.
//!
//! The checksum starts from the segment's seed ([`crc_seed`]): crc32c of
//! the random nonce in the segment's header (format 2), or 0 in format-1
//! segments (a plain crc32c of the bytes). Event payloads are client bytes:
//! a client could embed a chain of records that pass every check inside an
//! event's data, and recovery, which tries byte offsets of a damaged tail as
//! record starts, would take them for records. Without the segment's nonce,
//! which never leaves the server, a forged record passes with probability
//! 2^-32.
//!
//! A record is trusted only after three checks, in this order: the length is
//! within bounds, the suffix equals the prefix, the crc32c matches. Only then
//! is it parsed, and parsing is still bounds-checked so that even a crc
//! collision cannot panic. The suffix lets recovery and backward scans walk
//! the log from the end; a torn write almost never leaves a matching prefix,
//! suffix and checksum.

use bytes::{Buf, BufMut, Bytes};

use logbook_protocol::le;
use logbook_protocol::{EventId, LogPosition, NewEvent, RecordedEvent, StreamVersion, Text};

/// Bytes before the stream name.
pub const HEADER_LEN: usize = 38;
/// Bytes of the length suffix.
pub const SUFFIX_LEN: usize = 4;
/// Fixed bytes per event (id, three length fields).
pub const EVENT_OVERHEAD: usize = 16 + 2 + 4 + 4;
/// Smallest possible record: one-byte stream, one event with a one-byte type
/// (a removed event has none, but 8 bytes of data: [`removed_event`]).
pub const MIN_RECORD_LEN: usize = HEADER_LEN + 1 + EVENT_OVERHEAD + 1 + SUFFIX_LEN;
/// Record kind: a batch of events.
pub const KIND_EVENTS: u8 = 1;
/// Record flag: the batch's events were removed (deleted, truncated,
/// expired or erased) and a scavenge on a replica of a cluster kept only
/// their ids and a hash of their content (each event has an empty type
/// and metadata, and its data is [`content_hash`], 8 bytes), with the
/// stream, positions, versions and commit time. Replicas then keep the
/// same positions and the same event ids whatever each scavenged, so that
/// any of them can copy its log to another, and every one answers a
/// reused id alike (the same batch sent again, or other content). No read
/// returns such a record's events.
pub const FLAG_REMOVED: u8 = 2;

/// Sets `flags` on the record at `at` in `buf` and refreshes its checksum
/// (under the segment's `seed`).
pub fn set_flags(buf: &mut [u8], at: usize, seed: u32, flags: u8) {
    let Some(len) = buf
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
    else {
        return;
    };
    if let Some(f) = buf.get_mut(at + 9) {
        *f |= flags;
    }
    let crc = checksum(
        seed,
        buf.get(at + 8..at + len - SUFFIX_LEN).unwrap_or_default(),
    );
    if let Some(slot) = buf.get_mut(at + 4..at + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// A hash of an event's content (type, metadata, data), the same on every
/// replica (not seeded), that a removed event keeps ([`FLAG_REMOVED`]).
pub fn content_hash(event_type: &str, metadata: &[u8], data: &[u8]) -> [u8; 8] {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(event_type.len() as u64).to_le_bytes());
    h.update(event_type.as_bytes());
    h.update(&(metadata.len() as u64).to_le_bytes());
    h.update(metadata);
    h.update(data);
    h.digest().to_le_bytes()
}

/// What a removed event keeps ([`FLAG_REMOVED`]): its id and the hash of
/// its content (so a removed record is never shorter than
/// [`MIN_RECORD_LEN`]).
pub fn removed_event(id: EventId, event_type: &str, metadata: &[u8], data: &[u8]) -> NewEvent {
    NewEvent::new(
        id,
        "",
        Bytes::copy_from_slice(&content_hash(event_type, metadata, data)),
    )
}

/// Whether `e` is what a removed event keeps: no type, no metadata, a
/// content hash.
pub fn is_removed_event(e: &NewEvent) -> bool {
    e.event_type.is_empty() && e.metadata.is_empty() && e.data.len() == 8
}

/// Whether `new` is the event a removed event `stored` kept.
pub fn same_as_removed(stored: &RecordedEvent, new: &NewEvent) -> bool {
    stored.id == new.id
        && stored.data[..] == content_hash(&new.event_type, &new.metadata, &new.data)[..]
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The buffer ends before the record does; `needed` is the full length
    /// when it is known.
    Incomplete {
        /// Total record length, when the prefix could be read.
        needed: Option<usize>,
    },
    /// The bytes do not form a record.
    Corrupt(&'static str),
    /// The checksum does not match.
    Checksum {
        /// Computed over the bytes.
        got: u32,
        /// Stored in the record.
        expected: u32,
    },
}

/// The crc32c seed of the records of a segment whose header holds `nonce`
/// (`None`: a format-1 segment, plain crc32c).
pub fn crc_seed(nonce: Option<u32>) -> u32 {
    nonce.map_or(0, |n| crc32c::crc32c(&n.to_le_bytes()))
}

/// The checksum of a record's covered bytes (8 .. len-4) under `seed`.
pub fn checksum(seed: u32, covered: &[u8]) -> u32 {
    crc32c::crc32c_append(seed, covered)
}

/// Length of the record that `stream` and `events` encode to.
pub fn encoded_len(stream: &str, events: &[NewEvent]) -> usize {
    HEADER_LEN + stream.len() + events.iter().map(NewEvent::encoded_len).sum::<usize>() + SUFFIX_LEN
}

/// Appends one record to `buf`, checksummed under the segment's `seed`.
/// The caller has validated the stream name, event types and sizes (so
/// every length fits its field).
pub fn encode(
    buf: &mut Vec<u8>,
    seed: u32,
    stream: &str,
    first_position: u64,
    first_version: u64,
    timestamp_us: i64,
    events: &[NewEvent],
) {
    let start = buf.len();
    let len = encoded_len(stream, events);
    buf.reserve(len);
    buf.put_u32_le(len as u32);
    buf.put_u32_le(0); // crc, patched below
    buf.put_u8(KIND_EVENTS);
    buf.put_u8(0);
    buf.put_u16_le(events.len() as u16);
    buf.put_u64_le(first_position);
    buf.put_u64_le(first_version);
    buf.put_i64_le(timestamp_us);
    buf.put_u16_le(stream.len() as u16);
    buf.put_slice(stream.as_bytes());
    for e in events {
        buf.put_slice(&e.id.0);
        buf.put_u16_le(e.event_type.len() as u16);
        buf.put_slice(e.event_type.as_bytes());
        buf.put_u32_le(e.metadata.len() as u32);
        buf.put_slice(&e.metadata);
        buf.put_u32_le(e.data.len() as u32);
        buf.put_slice(&e.data);
    }
    buf.put_u32_le(len as u32);
    let crc = checksum(
        seed,
        buf.get(start + 8..start + len - SUFFIX_LEN)
            .unwrap_or_default(),
    );
    if let Some(slot) = buf.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Reads the length prefix at the start of `buf`, checking only bounds.
pub fn peek_len(buf: &[u8], max_len: usize) -> Result<usize, RecordError> {
    let len = le::try_u32(buf, 0).ok_or(RecordError::Incomplete { needed: None })? as usize;
    if len == 0 {
        return Err(RecordError::Corrupt("zero length (end of data)"));
    }
    if len < MIN_RECORD_LEN {
        return Err(RecordError::Corrupt("length below the minimum record size"));
    }
    if len > max_len {
        return Err(RecordError::Corrupt("length above the maximum record size"));
    }
    Ok(len)
}

/// Checks the record at the start of `buf` (bounds, suffix, checksum under
/// the segment's `seed`) and returns its length. Does not parse the body.
pub fn check(buf: &[u8], max_len: usize, seed: u32) -> Result<usize, RecordError> {
    let len = peek_len(buf, max_len)?;
    let rec = buf
        .get(..len)
        .ok_or(RecordError::Incomplete { needed: Some(len) })?;
    if le::try_u32(rec, len - SUFFIX_LEN) != Some(len as u32) {
        return Err(RecordError::Corrupt("length suffix differs from prefix"));
    }
    let expected = le::try_u32(rec, 4).ok_or(RecordError::Corrupt("short header"))?;
    let got = checksum(seed, rec.get(8..len - SUFFIX_LEN).unwrap_or_default());
    if got != expected {
        return Err(RecordError::Checksum { got, expected });
    }
    Ok(len)
}

/// A checked record, sliced out of a read buffer without copying.
#[derive(Clone, Debug)]
pub struct Record {
    bytes: Bytes,
    /// Record flags (see `writer::FLAG_GROUP_END`).
    pub flags: u8,
    /// Events in the batch.
    pub count: u16,
    /// Position of event 0.
    pub first_position: u64,
    /// Version of event 0.
    pub first_version: u64,
    /// Commit time.
    pub timestamp_us: i64,
    /// The stream.
    pub stream: Text,
}

impl Record {
    /// Parses a record that [`check`] accepted; `bytes` is exactly the record.
    pub fn parse(bytes: Bytes) -> Result<Record, RecordError> {
        let mut b = bytes
            .get(8..HEADER_LEN)
            .ok_or(RecordError::Corrupt("short header"))?;
        let kind = b.get_u8();
        let flags = b.get_u8();
        if kind != KIND_EVENTS {
            return Err(RecordError::Corrupt("unknown record kind"));
        }
        let count = b.get_u16_le();
        if count == 0 {
            return Err(RecordError::Corrupt("record with no events"));
        }
        let first_position = b.get_u64_le();
        let first_version = b.get_u64_le();
        let timestamp_us = b.get_i64_le();
        let stream_len = b.get_u16_le() as usize;
        let end = HEADER_LEN + stream_len;
        if end + SUFFIX_LEN > bytes.len() {
            return Err(RecordError::Corrupt("stream name overruns the record"));
        }
        let stream = Text::from_utf8(bytes.slice(HEADER_LEN..end))
            .map_err(|_| RecordError::Corrupt("stream name is not UTF-8"))?;
        Ok(Record {
            bytes,
            flags,
            count,
            first_position,
            first_version,
            timestamp_us,
            stream,
        })
    }

    /// Positions covered: `first_position .. first_position + count`.
    pub fn end_position(&self) -> u64 {
        self.first_position + u64::from(self.count)
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether its events were removed, their ids kept ([`FLAG_REMOVED`]).
    pub fn is_removed(&self) -> bool {
        self.flags & FLAG_REMOVED != 0
    }

    /// Whether the record is empty (never, for a parsed record).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The events, in order.
    pub fn events(&self) -> Events<'_> {
        Events {
            record: self,
            at: HEADER_LEN + self.stream.len(),
            index: 0,
        }
    }

    /// The event ids, in order (cheaper than [`Record::events`]).
    pub fn event_ids(&self) -> impl Iterator<Item = Result<EventId, RecordError>> + '_ {
        let mut at = HEADER_LEN + self.stream.len();
        (0..self.count).map(move |_| {
            let (id, next) = self.skip_event(at)?;
            at = next;
            Ok(id)
        })
    }

    fn skip_event(&self, at: usize) -> Result<(EventId, usize), RecordError> {
        let body_end = self.bytes.len() - SUFFIX_LEN;
        let b = self
            .bytes
            .get(at..body_end)
            .ok_or(RecordError::Corrupt("event overruns"))?;
        let id: [u8; 16] = b
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordError::Corrupt("event id overruns"))?;
        let mut p = 16usize;
        let tl = le::try_u16(b, p).ok_or(RecordError::Corrupt("type length overruns"))?;
        p += 2 + tl as usize;
        let ml =
            le::try_u32(b, p).ok_or(RecordError::Corrupt("metadata length overruns"))? as usize;
        p += 4 + ml;
        let dl = le::try_u32(b, p).ok_or(RecordError::Corrupt("data length overruns"))? as usize;
        p += 4 + dl;
        if p > b.len() {
            return Err(RecordError::Corrupt("event overruns the record"));
        }
        Ok((EventId(id), at + p))
    }
}

/// Iterator over a record's events; see [`Record::events`].
pub struct Events<'a> {
    record: &'a Record,
    at: usize,
    index: u16,
}

impl Events<'_> {
    fn decode(&mut self) -> Result<RecordedEvent, RecordError> {
        let r = self.record;
        let bytes = &r.bytes;
        let body_end = bytes.len() - SUFFIX_LEN;
        let mut at = self.at;
        let take = |at: &mut usize,
                    n: usize,
                    what: &'static str|
         -> Result<std::ops::Range<usize>, RecordError> {
            let start = *at;
            let end = start
                .checked_add(n)
                .filter(|&e| e <= body_end)
                .ok_or(RecordError::Corrupt(what))?;
            *at = end;
            Ok(start..end)
        };
        let id_range = take(&mut at, 16, "event id overruns")?;
        let id: [u8; 16] = bytes
            .get(id_range)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordError::Corrupt("event id overruns"))?;
        let tl = take(&mut at, 2, "type length overruns")?;
        let tl = le::try_u16(bytes, tl.start).unwrap_or(0) as usize;
        let type_range = take(&mut at, tl, "event type overruns")?;
        let ml = take(&mut at, 4, "metadata length overruns")?;
        let ml = le::try_u32(bytes, ml.start).unwrap_or(0) as usize;
        let meta_range = take(&mut at, ml, "metadata overruns")?;
        let dl = take(&mut at, 4, "data length overruns")?;
        let dl = le::try_u32(bytes, dl.start).unwrap_or(0) as usize;
        let data_range = take(&mut at, dl, "data overruns")?;
        self.at = at;
        let i = u64::from(self.index);
        self.index += 1;
        Ok(RecordedEvent {
            stream: r.stream.clone(),
            version: StreamVersion(r.first_version + i),
            position: LogPosition(r.first_position + i),
            id: EventId(id),
            event_type: Text::from_utf8(bytes.slice(type_range))
                .map_err(|_| RecordError::Corrupt("event type is not UTF-8"))?,
            metadata: bytes.slice(meta_range),
            data: bytes.slice(data_range),
            timestamp_us: r.timestamp_us,
        })
    }
}

impl Iterator for Events<'_> {
    type Item = Result<RecordedEvent, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.record.count {
            return None;
        }
        let out = self.decode();
        if out.is_err() {
            // Stop after the first error: the rest cannot be located.
            self.index = self.record.count;
        }
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::from(self.record.count - self.index);
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(i: u8, ty: &str, meta: &[u8], data: &[u8]) -> NewEvent {
        NewEvent::new(EventId([i; 16]), ty, data.to_vec()).with_metadata(meta.to_vec())
    }

    fn one(stream: &str, events: &[NewEvent]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, 0, stream, 7, 3, 1_700_000_000_000_000, events);
        buf
    }

    #[test]
    fn encodes_the_documented_layout() {
        let buf = one("s", &[ev(9, "T", b"m", b"dd")]);
        let len = HEADER_LEN + 1 + EVENT_OVERHEAD + 1 + 1 + 2 + SUFFIX_LEN;
        assert_eq!(buf.len(), len);
        assert_eq!(&buf[0..4], &(len as u32).to_le_bytes());
        assert_eq!(buf[8], KIND_EVENTS);
        assert_eq!(&buf[10..12], &1u16.to_le_bytes());
        assert_eq!(&buf[12..20], &7u64.to_le_bytes());
        assert_eq!(&buf[20..28], &3u64.to_le_bytes());
        assert_eq!(&buf[36..38], &1u16.to_le_bytes());
        assert_eq!(buf[38], b's');
        assert_eq!(&buf[39..55], &[9u8; 16]);
        assert_eq!(&buf[len - 4..], &(len as u32).to_le_bytes());
        let crc = crc32c::crc32c(&buf[8..len - 4]);
        assert_eq!(&buf[4..8], &crc.to_le_bytes());
    }

    fn arb_event() -> impl Strategy<Value = NewEvent> {
        (
            any::<[u8; 16]>(),
            "[a-zA-Z]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(id, ty, meta, data)| {
                NewEvent::new(EventId(id), ty, data).with_metadata(meta)
            })
    }

    proptest! {
        #[test]
        fn round_trip(
            stream in "[a-z0-9-]{1,40}",
            pos in any::<u32>(),
            ver in any::<u32>(),
            ts in any::<i64>(),
            events in proptest::collection::vec(arb_event(), 1..8),
        ) {
            let mut buf = Vec::new();
            encode(&mut buf, 0, &stream, u64::from(pos), u64::from(ver), ts, &events);
            prop_assert_eq!(buf.len(), encoded_len(&stream, &events));
            let len = check(&buf, 1 << 20, 0).unwrap();
            prop_assert_eq!(len, buf.len());
            let rec = Record::parse(Bytes::from(buf)).unwrap();
            prop_assert_eq!(rec.stream.as_str(), stream.as_str());
            let got: Vec<RecordedEvent> = rec.events().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got.len(), events.len());
            for (i, (g, e)) in got.iter().zip(&events).enumerate() {
                prop_assert_eq!(g.position.0, u64::from(pos) + i as u64);
                prop_assert_eq!(g.version.0, u64::from(ver) + i as u64);
                prop_assert_eq!(g.id, e.id);
                prop_assert_eq!(&g.event_type, &e.event_type);
                prop_assert_eq!(&g.metadata, &e.metadata);
                prop_assert_eq!(&g.data, &e.data);
                prop_assert_eq!(g.timestamp_us, ts);
            }
            let ids: Vec<EventId> = rec.event_ids().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(ids, events.iter().map(|e| e.id).collect::<Vec<_>>());
        }

        #[test]
        fn any_truncation_is_incomplete(
            events in proptest::collection::vec(arb_event(), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let buf = one("stream", &events);
            let cut = cut.index(buf.len());
            match check(&buf[..cut], 1 << 20, 0) {
                Err(RecordError::Incomplete { .. }) => {}
                other => prop_assert!(false, "cut at {cut}: {other:?}"),
            }
        }

        #[test]
        fn any_bit_flip_is_detected(
            events in proptest::collection::vec(arb_event(), 1..4),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut buf = one("stream", &events);
            let at = at.index(buf.len());
            buf[at] ^= 1 << bit;
            match check(&buf, 1 << 20, 0) {
                Err(RecordError::Corrupt(_) | RecordError::Checksum { .. } | RecordError::Incomplete { .. }) => {}
                Ok(_) => prop_assert!(false, "flip at byte {at} bit {bit} went unnoticed"),
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(len) = check(&bytes, 1 << 20, 0)
                && let Ok(rec) = Record::parse(Bytes::copy_from_slice(&bytes[..len]))
            {
                for e in rec.events() { let _ = e; }
                for e in rec.event_ids() { let _ = e; }
            }
        }

        #[test]
        fn parse_never_panics_on_valid_crc(bytes in proptest::collection::vec(any::<u8>(), MIN_RECORD_LEN..300)) {
            // Forge a record whose envelope is valid around arbitrary content,
            // as a crc collision would: parsing must still not panic.
            let mut b = bytes.clone();
            let len = b.len();
            b[0..4].copy_from_slice(&(len as u32).to_le_bytes());
            b[len - 4..].copy_from_slice(&(len as u32).to_le_bytes());
            let crc = crc32c::crc32c(&b[8..len - 4]);
            b[4..8].copy_from_slice(&crc.to_le_bytes());
            b[8] = KIND_EVENTS;
            let crc = crc32c::crc32c(&b[8..len - 4]);
            b[4..8].copy_from_slice(&crc.to_le_bytes());
            prop_assert_eq!(check(&b, 1 << 20, 0), Ok(len));
            if let Ok(rec) = Record::parse(Bytes::from(b)) {
                for e in rec.events() { let _ = e; }
                for e in rec.event_ids() { let _ = e; }
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let mut buf = one("s", &[ev(1, "T", b"", b"x")]);
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            check(&buf, 1 << 20, 0),
            Err(RecordError::Corrupt("length above the maximum record size"))
        );
        assert_eq!(
            peek_len(&[0, 0, 0, 0], 100),
            Err(RecordError::Corrupt("zero length (end of data)"))
        );
    }

    /// A record checks only under the seed of the segment it was written
    /// for: bytes forged without the segment's nonce do not pass.
    #[test]
    fn checksum_depends_on_the_segment_seed() {
        let events = [NewEvent::new(EventId::from_u128(1), "T", &b"x"[..])];
        let a = crc_seed(Some(1));
        let b = crc_seed(Some(2));
        assert_ne!(a, b);
        let mut buf = Vec::new();
        encode(&mut buf, a, "s", 0, 0, 0, &events);
        assert!(check(&buf, 1 << 20, a).is_ok());
        assert!(matches!(
            check(&buf, 1 << 20, b),
            Err(RecordError::Checksum { .. })
        ));
        assert!(matches!(
            check(&buf, 1 << 20, 0),
            Err(RecordError::Checksum { .. })
        ));
        // Format 1: no nonce, plain crc32c.
        let mut plain = Vec::new();
        encode(&mut plain, crc_seed(None), "s", 0, 0, 0, &events);
        assert_eq!(
            le::u32(&plain, 4),
            crc32c::crc32c(&plain[8..plain.len() - SUFFIX_LEN])
        );
    }
}
