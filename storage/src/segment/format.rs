//! The segment file format: header, records, and the seal (sparse position
//! index and footer) of a sealed segment. Codecs only; no I/O.
//!
//! ```text
//! header (32 bytes)
//! 0   [8]  magic           "LGBKSEG\0"
//! 8   u32  format_version  2
//! 12  u32  header_len      32
//! 16  u64  first_position
//! 24  u32  nonce           random per segment; seeds every record's crc32c
//! 28  u32  crc32c          over bytes 0..28
//!
//! records (see record.rs), back to back from offset 32, each checksummed
//! under the nonce (record::crc_seed), so that bytes a client put inside an
//! event can never pass for a record
//!
//! format 1 (still read): byte 24 is reserved (0) and records carry a plain
//! crc32c
//!
//! format 3: a segment rewritten by a scavenge; as format 2, but records may
//! skip positions (removed events): first_position and the footer's
//! end_position are those of the segment it replaced
//!
//! the active segment: zeros after the last record (space is preallocated
//! by writing zeros, so an fdatasync need not commit a new file size)
//!
//! a sealed segment, after its last record (the file ends with the footer):
//! pidx   pidx_count x { u64 position | u64 offset }  first position of a
//!        record at least every PIDX_INTERVAL bytes, and its byte offset
//! footer (56 bytes)
//! 0   u64  data_end        offset just past the last record (= pidx start)
//! 8   u64  record_count
//! 16  u64  first_position
//! 24  u64  end_position    position after the segment's last event
//! 32  u32  pidx_count
//! 36  u32  pidx_crc32c     over the pidx bytes
//! 40  u32  reserved        0
//! 44  u32  footer_crc32c   over footer bytes 0..44
//! 48  [8]  magic           "LGBKSEND"
//! ```
//! A sealed segment is never written again. The sparse position index
//! (pidx) finds the record holding any position with one binary search and
//! a scan of at most PIDX_INTERVAL bytes, as Kafka's offset index does; it is
//! persisted on seal and rebuilt by scanning for the active segment.

use std::path::Path;

use logbook_protocol::le;

use crate::error::StorageError;

/// Magic number opening every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LGBKSEG\0";
/// Magic number closing a sealed segment.
pub const FOOTER_MAGIC: [u8; 8] = *b"LGBKSEND";
/// Segment format version the writer writes (1 is still read).
pub const FORMAT_VERSION: u32 = 2;
/// Format version of a segment rewritten by a scavenge: the layout of
/// version 2, but its records may skip positions (removed events), so a
/// reader checks that positions rise rather than that they are contiguous.
/// Its header and footer still name the positions it covered when it was
/// written, `[first_position, end_position)`, so segments still tile the
/// log.
pub const FORMAT_VERSION_GAPS: u32 = 3;
/// Bytes of the segment header.
pub const HEADER_LEN: u64 = 32;
/// Bytes of the sealed-segment footer.
pub const FOOTER_LEN: u64 = 56;
/// Bytes of one pidx entry.
pub const PIDX_ENTRY_LEN: u64 = 16;
/// A pidx entry is added at least every this many bytes of records.
pub const PIDX_INTERVAL: u64 = 16 * 1024;

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Position of the segment's first event.
    pub first_position: u64,
    /// The nonce seeding its records' checksums; `None` in a format-1
    /// segment.
    pub nonce: Option<u32>,
    /// Whether records may skip positions (format 3: rewritten by a
    /// scavenge).
    pub gaps: bool,
}

impl Header {
    /// The crc32c seed of this segment's records.
    pub fn crc_seed(&self) -> u32 {
        crate::record::crc_seed(self.nonce)
    }
}

/// Encodes a (format 2) segment header.
pub fn encode_header(first_position: u64, nonce: u32) -> [u8; HEADER_LEN as usize] {
    encode_header_version(first_position, nonce, FORMAT_VERSION)
}

/// Encodes a segment header of format `version` (2, or 3 for a segment
/// with gaps).
pub fn encode_header_version(
    first_position: u64,
    nonce: u32,
    version: u32,
) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let mut v = Vec::with_capacity(HEADER_LEN as usize);
    v.extend_from_slice(&SEGMENT_MAGIC);
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    v.extend_from_slice(&first_position.to_le_bytes());
    v.extend_from_slice(&nonce.to_le_bytes());
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    h.copy_from_slice(&v);
    h
}

/// Decodes and checks a segment header (format 1 or 2).
pub fn decode_header(path: &Path, b: &[u8]) -> Result<Header, StorageError> {
    if b.len() < HEADER_LEN as usize {
        return Err(StorageError::corrupt(
            path,
            0,
            "segment shorter than its header",
        ));
    }
    if b.get(0..8) != Some(&SEGMENT_MAGIC[..]) {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a Logbook segment (bad magic)",
        ));
    }
    let expected = le::u32(b, 28);
    let got = crc32c::crc32c(b.get(0..28).unwrap_or_default());
    if got != expected {
        return Err(StorageError::ChecksumMismatch {
            file: path.to_path_buf(),
            offset: 0,
            got,
            expected,
        });
    }
    let version = le::u32(b, 8);
    if !(1..=FORMAT_VERSION_GAPS).contains(&version) {
        return Err(StorageError::UnsupportedFormat {
            file: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION_GAPS,
        });
    }
    if u64::from(le::u32(b, 12)) != HEADER_LEN {
        return Err(StorageError::corrupt(path, 12, "unexpected header length"));
    }
    Ok(Header {
        first_position: le::u64(b, 16),
        nonce: (version >= 2).then(|| le::u32(b, 24)),
        gaps: version >= FORMAT_VERSION_GAPS,
    })
}

/// One entry of the sparse position index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidxEntry {
    /// First position of the record.
    pub position: u64,
    /// Byte offset of the record in the segment.
    pub offset: u64,
}

/// The footer of a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Offset just past the last record.
    pub data_end: u64,
    /// Records in the segment.
    pub record_count: u64,
    /// Position of the first event.
    pub first_position: u64,
    /// Position after the last event.
    pub end_position: u64,
    /// Entries in the pidx.
    pub pidx_count: u32,
    /// crc32c of the pidx bytes.
    pub pidx_crc: u32,
}

fn encode_pidx(pidx: &[PidxEntry], v: &mut Vec<u8>) {
    for e in pidx {
        v.extend_from_slice(&e.position.to_le_bytes());
        v.extend_from_slice(&e.offset.to_le_bytes());
    }
}

/// The crc32c of `pidx` as the seal stores it.
pub fn pidx_crc(pidx: &[PidxEntry]) -> u32 {
    let mut v = Vec::with_capacity(pidx.len() * PIDX_ENTRY_LEN as usize);
    encode_pidx(pidx, &mut v);
    crc32c::crc32c(&v)
}

/// Encodes the pidx and footer that seal a segment.
pub fn encode_seal(pidx: &[PidxEntry], footer: &Footer) -> Vec<u8> {
    let mut v = Vec::with_capacity(pidx.len() * PIDX_ENTRY_LEN as usize + FOOTER_LEN as usize);
    encode_pidx(pidx, &mut v);
    let pidx_crc = crc32c::crc32c(&v);
    let f_start = v.len();
    v.extend_from_slice(&footer.data_end.to_le_bytes());
    v.extend_from_slice(&footer.record_count.to_le_bytes());
    v.extend_from_slice(&footer.first_position.to_le_bytes());
    v.extend_from_slice(&footer.end_position.to_le_bytes());
    v.extend_from_slice(&(pidx.len() as u32).to_le_bytes());
    v.extend_from_slice(&pidx_crc.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(v.get(f_start..).unwrap_or_default());
    v.extend_from_slice(&crc.to_le_bytes());
    v.extend_from_slice(&FOOTER_MAGIC);
    v
}

/// Decodes a footer if `b` (the last FOOTER_LEN bytes of a file) is one.
/// `None`: no footer (an active segment). A footer whose magic is right but
/// whose checksum or fields are wrong is corruption.
pub fn decode_footer(path: &Path, file_len: u64, b: &[u8]) -> Result<Option<Footer>, StorageError> {
    if b.len() != FOOTER_LEN as usize || b.get(48..56) != Some(&FOOTER_MAGIC[..]) {
        return Ok(None);
    }
    let at = file_len - FOOTER_LEN;
    let expected = le::u32(b, 44);
    let got = crc32c::crc32c(b.get(0..44).unwrap_or_default());
    if got != expected {
        return Err(StorageError::ChecksumMismatch {
            file: path.to_path_buf(),
            offset: at,
            got,
            expected,
        });
    }
    let f = Footer {
        data_end: le::u64(b, 0),
        record_count: le::u64(b, 8),
        first_position: le::u64(b, 16),
        end_position: le::u64(b, 24),
        pidx_count: le::u32(b, 32),
        pidx_crc: le::u32(b, 36),
    };
    if f.data_end < HEADER_LEN
        || f.data_end + u64::from(f.pidx_count) * PIDX_ENTRY_LEN + FOOTER_LEN != file_len
        || f.end_position < f.first_position
    {
        return Err(StorageError::corrupt(
            path,
            at,
            "footer fields are inconsistent with the file",
        ));
    }
    Ok(Some(f))
}

pub(crate) fn decode_pidx(
    path: &Path,
    offset: u64,
    b: &[u8],
    crc: u32,
) -> Result<Vec<PidxEntry>, StorageError> {
    let got = crc32c::crc32c(b);
    if got != crc {
        return Err(StorageError::ChecksumMismatch {
            file: path.to_path_buf(),
            offset,
            got,
            expected: crc,
        });
    }
    Ok(b.chunks_exact(PIDX_ENTRY_LEN as usize)
        .map(|c| PidxEntry {
            position: le::u64(c, 0),
            offset: le::u64(c, 8),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_corruption() {
        let p = Path::new("x.seg");
        let h = encode_header(77, 0xfeed);
        assert_eq!(
            decode_header(p, &h).unwrap(),
            Header {
                first_position: 77,
                nonce: Some(0xfeed),
                gaps: false,
            }
        );
        let g = encode_header_version(77, 0xfeed, FORMAT_VERSION_GAPS);
        assert!(decode_header(p, &g).unwrap().gaps);
        let future = encode_header_version(77, 0xfeed, FORMAT_VERSION_GAPS + 1);
        assert!(matches!(
            decode_header(p, &future),
            Err(StorageError::UnsupportedFormat { .. })
        ));
        for i in 0..h.len() {
            let mut b = h;
            b[i] ^= 0x10;
            assert!(decode_header(p, &b).is_err(), "flip at {i}");
        }
        assert!(decode_header(p, &h[..10]).is_err());
    }

    /// A format-1 header (reserved zeros where format 2 has its nonce)
    /// still opens: its records carry plain crc32c.
    #[test]
    fn format_1_header_has_no_nonce() {
        let mut h = encode_header(5, 0);
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        let got = decode_header(Path::new("x.seg"), &h).unwrap();
        assert_eq!(
            got,
            Header {
                first_position: 5,
                nonce: None,
                gaps: false,
            }
        );
        assert_eq!(got.crc_seed(), 0);
    }

    #[test]
    fn seal_round_trip() {
        let p = Path::new("x.seg");
        let pidx = vec![
            PidxEntry {
                position: 0,
                offset: 32,
            },
            PidxEntry {
                position: 9,
                offset: 20_000,
            },
        ];
        let f = Footer {
            data_end: 40_000,
            record_count: 12,
            first_position: 0,
            end_position: 15,
            pidx_count: 2,
            pidx_crc: 0,
        };
        let seal = encode_seal(&pidx, &f);
        let file_len = f.data_end + seal.len() as u64;
        let tail = &seal[seal.len() - FOOTER_LEN as usize..];
        let got = decode_footer(p, file_len, tail).unwrap().unwrap();
        assert_eq!(got.end_position, 15);
        assert_eq!(got.pidx_count, 2);
        let pb = &seal[..32];
        assert_eq!(decode_pidx(p, 0, pb, got.pidx_crc).unwrap(), pidx);
        // A flipped footer byte (other than the magic) is corruption.
        for i in 0..48 {
            let mut t = tail.to_vec();
            t[i] ^= 1;
            assert!(decode_footer(p, file_len, &t).is_err(), "flip at {i}");
        }
        // No magic: not a footer at all.
        let mut t = tail.to_vec();
        t[50] ^= 1;
        assert!(decode_footer(p, file_len, &t).unwrap().is_none());
    }
}
