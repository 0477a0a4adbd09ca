//! The framing of the consensus files: `[len: u32 LE][crc32c(payload): u32
//! LE][payload]`, payloads in MessagePack.
//!
//! A file is read frame by frame up to the first frame that does not check
//! out ([`read_all`]); what lies past it is for the file's owner to judge
//! ([`scan`] finds valid frames at any offset): the WAL tells a torn tail
//! from damaged synced data by the batch markers it writes.

/// Bytes before a frame's payload.
pub const HEADER: usize = 8;
/// Largest payload accepted when reading (a length past it is damage).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// `payload` framed.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload length and checksum a frame's header at the start of
/// `bytes` declares; `None` without a whole header, or for a length of 0
/// or past `max_payload`.
pub fn header(bytes: &[u8], max_payload: usize) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    (len != 0 && len <= max_payload).then_some((len, crc))
}

/// The frame at the start of `bytes`: its payload and its length with the
/// header; `None` if there is no whole, valid frame there. Payloads are
/// never empty: an all-zero header (a zeroed or preallocated tail) would
/// otherwise check out, the CRC of nothing being 0.
pub fn at(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let (len, crc) = header(bytes, MAX_PAYLOAD)?;
    let payload = bytes.get(HEADER..HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, HEADER + len))
}

/// What reading a whole file found.
#[derive(Debug)]
pub struct Read<'a> {
    /// The valid frames from the start, in order: offset and payload.
    pub frames: Vec<(usize, &'a [u8])>,
    /// Bytes they cover from the start. Bytes past it are not a frame.
    pub valid_len: usize,
}

/// Reads the frames of `bytes` up to the first that does not check out.
pub fn read_all(bytes: &[u8]) -> Read<'_> {
    let mut frames = Vec::new();
    let mut off = 0;
    while let Some((payload, n)) = bytes.get(off..).and_then(at) {
        frames.push((off, payload));
        off += n;
    }
    Read {
        frames,
        valid_len: off,
    }
}

/// Valid frames of at most `max_payload` bytes starting at any offset at or
/// past `from` (a byte-by-byte scan, for damaged files only; the bound
/// keeps it linear: each offset costs at most one checksum of
/// `max_payload` bytes, whatever length field the bytes there hold).
pub fn scan(bytes: &[u8], from: usize, max_payload: usize) -> impl Iterator<Item = (usize, &[u8])> {
    (from..bytes.len()).filter_map(move |i| {
        let rest = bytes.get(i..)?;
        header(rest, max_payload)?;
        at(rest).map(|(p, _)| (i, p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(p, &mut out);
        }
        out
    }

    fn payloads(bytes: &[u8]) -> Vec<&[u8]> {
        read_all(bytes).frames.into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn frames_round_trip() {
        let bytes = file(&[b"one", b"2", b"three"]);
        assert_eq!(payloads(&bytes), [&b"one"[..], b"2", b"three"]);
        assert_eq!(read_all(&bytes).valid_len, bytes.len());
        assert_eq!(read_all(&bytes).frames[2].0, 2 * HEADER + 4);
    }

    #[test]
    fn reading_stops_at_the_first_bad_frame_and_scan_finds_the_rest() {
        let whole = file(&[b"one", b"two", b"three"]);
        let last = whole.len() - (HEADER + 5);
        for cut in last..whole.len() {
            assert_eq!(payloads(&whole[..cut]).len(), 2, "cut at {cut}");
            assert_eq!(read_all(&whole[..cut]).valid_len, last);
        }
        let mut damaged = whole.clone();
        damaged[HEADER] ^= 1;
        let r = read_all(&damaged);
        assert_eq!((r.frames.len(), r.valid_len), (0, 0));
        let found: Vec<_> = scan(&damaged, 1, MAX_PAYLOAD).collect();
        assert_eq!(
            found,
            [(HEADER + 3, &b"two"[..]), (2 * HEADER + 6, b"three")]
        );
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(read_all(&zeros).valid_len, whole.len());
        assert_eq!(scan(&zeros, whole.len(), MAX_PAYLOAD).count(), 0);
        let mut big = (MAX_PAYLOAD as u32 + 1).to_le_bytes().to_vec();
        big.extend_from_slice(&[0; 4]);
        assert!(at(&big).is_none());
    }

    proptest! {
        #[test]
        fn any_prefix_reads_as_whole_frames(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let bytes = file(&refs);
            let cut = cut.index(bytes.len() + 1);
            let r = read_all(&bytes[..cut]);
            prop_assert!(r.valid_len <= cut);
            let got: Vec<&[u8]> = r.frames.iter().map(|(_, p)| *p).collect();
            prop_assert_eq!(&got[..], &refs[..got.len()]);
        }
    }
}
