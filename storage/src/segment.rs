//! Segment files: the log is a sequence of them, each named by the global
//! position of its first event (`00000000000000000000.seg`), so listing the
//! directory sorts them in log order.
//!
//! ```text
//! header (32 bytes)
//! 0   [8]  magic           "LGBKSEG\0"
//! 8   u32  format_version  1
//! 12  u32  header_len      32
//! 16  u64  first_position
//! 24  u32  reserved        0
//! 28  u32  crc32c          over bytes 0..28
//!
//! records (see record.rs), back to back from offset 32
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use super::error::StorageError;
use super::fs::VFile;
use super::le;
use super::record::{self, Record, RecordError};

/// Magic number opening every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LGBKSEG\0";
/// Magic number closing a sealed segment.
pub const FOOTER_MAGIC: [u8; 8] = *b"LGBKSEND";
/// Segment format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const HEADER_LEN: u64 = 32;
/// Bytes of the sealed-segment footer.
pub const FOOTER_LEN: u64 = 56;
/// Bytes of one pidx entry.
pub const PIDX_ENTRY_LEN: u64 = 16;
/// A pidx entry is added at least every this many bytes of records.
pub const PIDX_INTERVAL: u64 = 16 * 1024;

/// File name of the segment starting at `first_position`.
pub fn file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// The first position encoded in a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes a segment header.
pub fn encode_header(first_position: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let mut v = Vec::with_capacity(HEADER_LEN as usize);
    v.extend_from_slice(&SEGMENT_MAGIC);
    v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    v.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    v.extend_from_slice(&first_position.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    h.copy_from_slice(&v);
    h
}

/// Decodes and checks a segment header; returns its first position.
pub fn decode_header(path: &Path, b: &[u8]) -> Result<u64, StorageError> {
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
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            file: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if u64::from(le::u32(b, 12)) != HEADER_LEN {
        return Err(StorageError::corrupt(path, 12, "unexpected header length"));
    }
    Ok(le::u64(b, 16))
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

/// Encodes the pidx and footer that seal a segment.
pub fn encode_seal(pidx: &[PidxEntry], footer: &Footer) -> Vec<u8> {
    let mut v = Vec::with_capacity(pidx.len() * PIDX_ENTRY_LEN as usize + FOOTER_LEN as usize);
    for e in pidx {
        v.extend_from_slice(&e.position.to_le_bytes());
        v.extend_from_slice(&e.offset.to_le_bytes());
    }
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

fn decode_pidx(
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

#[derive(Debug)]
enum Pidx {
    /// Sealed segment whose pidx is still on disk: loaded on first use so
    /// that start-up does not read every segment's index.
    OnDisk {
        count: u32,
        crc: u32,
    },
    Loaded(Vec<PidxEntry>),
}

/// An open segment, shared by the writer and readers.
#[derive(Debug)]
pub struct Segment {
    /// Path of the file.
    pub path: PathBuf,
    /// The file.
    pub file: Arc<dyn VFile>,
    /// Position of the segment's first event.
    pub first_position: u64,
    /// Records in `[HEADER_LEN, data_end)` are durable and readable. Only the
    /// writer advances it, after the fdatasync that covers them.
    data_end: AtomicU64,
    /// Position after the segment's last durable event.
    end_position: AtomicU64,
    sealed: AtomicBool,
    /// A sealed segment's file length, once asked for (0: not yet known).
    sealed_len: AtomicU64,
    pidx: RwLock<Pidx>,
}

impl Segment {
    /// A segment whose durable records end at `data_end`.
    pub fn new(
        path: PathBuf,
        file: Arc<dyn VFile>,
        first_position: u64,
        data_end: u64,
        end_position: u64,
        pidx: Vec<PidxEntry>,
        sealed: bool,
    ) -> Segment {
        Segment {
            path,
            file,
            first_position,
            data_end: AtomicU64::new(data_end),
            end_position: AtomicU64::new(end_position),
            sealed: AtomicBool::new(sealed),
            sealed_len: AtomicU64::new(0),
            pidx: RwLock::new(Pidx::Loaded(pidx)),
        }
    }

    /// A sealed segment described by its footer; the pidx stays on disk
    /// until first needed.
    pub fn sealed_from_footer(path: PathBuf, file: Arc<dyn VFile>, footer: &Footer) -> Segment {
        Segment {
            path,
            file,
            first_position: footer.first_position,
            data_end: AtomicU64::new(footer.data_end),
            end_position: AtomicU64::new(footer.end_position),
            sealed: AtomicBool::new(true),
            sealed_len: AtomicU64::new(0),
            pidx: RwLock::new(Pidx::OnDisk {
                count: footer.pidx_count,
                crc: footer.pidx_crc,
            }),
        }
    }

    /// Offset just past the last durable record.
    pub fn data_end(&self) -> u64 {
        self.data_end.load(Ordering::Acquire)
    }

    /// Position after the last durable event.
    pub fn end_position(&self) -> u64 {
        self.end_position.load(Ordering::Acquire)
    }

    /// Whether the segment is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// The file's length once sealed (records, pidx and footer). A sealed
    /// file never changes, so the length is read from the file system
    /// once and remembered. Only meaningful when [`Segment::is_sealed`].
    pub fn sealed_len(&self) -> std::io::Result<u64> {
        match self.sealed_len.load(Ordering::Relaxed) {
            0 => {
                let len = self.file.len()?;
                self.sealed_len.store(len, Ordering::Relaxed);
                Ok(len)
            }
            len => Ok(len),
        }
    }

    /// Bytes of the segment that hold data: a sealed file whole, else the
    /// durable records (and the header).
    pub fn durable_len(&self) -> u64 {
        if self.is_sealed() {
            self.sealed_len().unwrap_or(0)
        } else {
            self.data_end().max(HEADER_LEN)
        }
    }

    /// Publishes newly durable records (writer only, after fdatasync).
    pub(crate) fn publish(&self, data_end: u64, end_position: u64, new_pidx: &[PidxEntry]) {
        if !new_pidx.is_empty() {
            let mut p = self.pidx.write();
            if let Pidx::Loaded(v) = &mut *p {
                v.extend_from_slice(new_pidx);
            }
        }
        self.end_position.store(end_position, Ordering::Release);
        self.data_end.store(data_end, Ordering::Release);
    }

    pub(crate) fn mark_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Runs `f` over the pidx, loading it from disk first if needed.
    fn with_pidx<T>(&self, f: impl FnOnce(&[PidxEntry]) -> T) -> Result<T, StorageError> {
        if let Pidx::Loaded(v) = &*self.pidx.read() {
            return Ok(f(v));
        }
        let mut p = self.pidx.write();
        if let Pidx::OnDisk { count, crc } = &*p {
            let offset = self.data_end();
            let mut buf = vec![0u8; *count as usize * PIDX_ENTRY_LEN as usize];
            self.file
                .read_exact_at(&mut buf, offset)
                .map_err(|e| StorageError::io("read pidx", &self.path, e))?;
            *p = Pidx::Loaded(decode_pidx(&self.path, offset, &buf, *crc)?);
        }
        match &*p {
            Pidx::Loaded(v) => Ok(f(v)),
            Pidx::OnDisk { .. } => Ok(f(&[])),
        }
    }

    /// A copy of the pidx (verification).
    pub fn pidx(&self) -> Result<Vec<PidxEntry>, StorageError> {
        self.with_pidx(<[PidxEntry]>::to_vec)
    }

    /// Offset of a record at or before the one holding `position`.
    pub fn seek_offset(&self, position: u64) -> Result<u64, StorageError> {
        self.with_pidx(|pidx| {
            let i = pidx.partition_point(|e| e.position <= position);
            match i.checked_sub(1).and_then(|i| pidx.get(i)) {
                Some(e) => e.offset,
                None => HEADER_LEN,
            }
        })
    }
}

/// Reads records from segment files through a window of recently read
/// bytes, so that neighbouring records cost one `pread` between them. The
/// window is a `Bytes`, so events sliced from it are zero-copy.
pub struct RecordReader {
    chunk: usize,
    max_record: usize,
    window: Option<Window>,
    /// Number of `pread` calls made (for tests and benches).
    pub reads: u64,
}

struct Window {
    segment_start: u64,
    offset: u64,
    bytes: Bytes,
}

impl RecordReader {
    /// A reader that fetches at least `chunk` bytes per `pread` and accepts
    /// records up to `max_record` bytes.
    pub fn new(chunk: usize, max_record: usize) -> RecordReader {
        RecordReader {
            chunk: chunk.max(64),
            max_record,
            window: None,
            reads: 0,
        }
    }

    /// Bytes `[offset, offset + len)` of `seg`, which must lie below `limit`.
    /// On a miss, reads a chunk placed after `offset` (forward) or ending at
    /// `offset + len` (backward).
    fn bytes(
        &mut self,
        seg: &Segment,
        offset: u64,
        len: usize,
        limit: u64,
        backward: bool,
    ) -> Result<Bytes, StorageError> {
        let end = offset + len as u64;
        if end > limit {
            return Err(StorageError::corrupt(
                &seg.path,
                offset,
                "record extends past the end of the segment's data",
            ));
        }
        if let Some(w) = &self.window
            && w.segment_start == seg.first_position
            && w.offset <= offset
            && end <= w.offset + w.bytes.len() as u64
        {
            let s = (offset - w.offset) as usize;
            return Ok(w.bytes.slice(s..s + len));
        }
        let want = len.max(self.chunk) as u64;
        let (start, stop) = if backward {
            (end.saturating_sub(want).max(HEADER_LEN).min(offset), end)
        } else {
            (offset, (offset + want).min(limit))
        };
        let mut buf = BytesMut::zeroed((stop - start) as usize);
        seg.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| StorageError::io("read", &seg.path, e))?;
        self.reads += 1;
        let bytes = buf.freeze();
        let s = (offset - start) as usize;
        let out = bytes.slice(s..s + len);
        self.window = Some(Window {
            segment_start: seg.first_position,
            offset: start,
            bytes,
        });
        Ok(out)
    }

    fn to_error(seg: &Segment, offset: u64, e: RecordError) -> StorageError {
        match e {
            RecordError::Checksum { got, expected } => StorageError::ChecksumMismatch {
                file: seg.path.clone(),
                offset,
                got,
                expected,
            },
            RecordError::Corrupt(reason) => StorageError::corrupt(&seg.path, offset, reason),
            RecordError::Incomplete { .. } => {
                StorageError::corrupt(&seg.path, offset, "record truncated")
            }
        }
    }

    /// The record starting at `offset`, checked and parsed. `limit` is the
    /// end of the readable data.
    pub fn record_at(
        &mut self,
        seg: &Segment,
        offset: u64,
        limit: u64,
    ) -> Result<Record, StorageError> {
        self.record_at_dir(seg, offset, limit, false)
    }

    /// [`RecordReader::record_at`], fetching at least `span` bytes from
    /// `offset` if the window misses: a caller that knows which records it
    /// will want next (a stream read knows their offsets) gets them all with
    /// one `pread`.
    pub fn record_at_spanning(
        &mut self,
        seg: &Segment,
        offset: u64,
        limit: u64,
        span: usize,
    ) -> Result<Record, StorageError> {
        let chunk = self.chunk;
        self.chunk = chunk.max(span);
        let r = self.record_at_dir(seg, offset, limit, false);
        self.chunk = chunk;
        r
    }

    fn record_at_dir(
        &mut self,
        seg: &Segment,
        offset: u64,
        limit: u64,
        backward: bool,
    ) -> Result<Record, StorageError> {
        if offset + 4 > limit {
            return Err(StorageError::corrupt(
                &seg.path,
                offset,
                "record starts past the end of the segment's data",
            ));
        }
        let head = self.bytes(seg, offset, 4, limit, backward)?;
        let len =
            record::peek_len(&head, self.max_record).map_err(|e| Self::to_error(seg, offset, e))?;
        let bytes = self.bytes(seg, offset, len, limit, backward)?;
        record::check(&bytes, self.max_record).map_err(|e| Self::to_error(seg, offset, e))?;
        Record::parse(bytes).map_err(|e| Self::to_error(seg, offset, e))
    }

    /// The record ending just before `end` (walking backwards via the
    /// length suffix). Returns the record and its start offset.
    pub fn record_before(
        &mut self,
        seg: &Segment,
        end: u64,
        limit: u64,
    ) -> Result<(Record, u64), StorageError> {
        if end < HEADER_LEN + record::MIN_RECORD_LEN as u64 {
            return Err(StorageError::corrupt(
                &seg.path,
                end,
                "no record before this offset",
            ));
        }
        let tail = self.bytes(seg, end - 4, 4, limit, true)?;
        let len = u64::from(u32::from_le_bytes(
            tail.as_ref().try_into().unwrap_or([0; 4]),
        ));
        if len < record::MIN_RECORD_LEN as u64
            || len > self.max_record as u64
            || len > end - HEADER_LEN
        {
            return Err(StorageError::corrupt(
                &seg.path,
                end - 4,
                "bad length suffix",
            ));
        }
        let start = end - len;
        Ok((self.record_at_dir(seg, start, limit, true)?, start))
    }
}

/// How a scan of a segment's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Reached `limit`, or zeros (preallocated space) where a record would start.
    Clean,
    /// A record failed its checks at `offset`.
    Bad {
        /// Offset of the bad record.
        offset: u64,
        /// What failed.
        reason: String,
    },
}

/// The result of scanning a segment.
#[derive(Debug)]
pub struct Scan {
    /// Offset just past the last good record.
    pub data_end: u64,
    /// Position after the last good record.
    pub end_position: Option<u64>,
    /// Good records found.
    pub records: u64,
    /// Why the scan stopped.
    pub end: ScanEnd,
}

/// Scans the records of `seg` from `from` up to `limit`, calling `visit` for
/// each good record with its offset. Stops at the first bad record. Checks
/// that positions are contiguous, starting at `expect_position` if given.
pub fn scan(
    seg: &Segment,
    from: u64,
    limit: u64,
    mut expect_position: Option<u64>,
    reader: &mut RecordReader,
    mut visit: impl FnMut(u64, &Record) -> Result<(), StorageError>,
) -> Result<Scan, StorageError> {
    let mut offset = from;
    let mut records = 0;
    let end = loop {
        if offset + record::MIN_RECORD_LEN as u64 > limit {
            if offset + 4 <= limit {
                let head = reader.bytes(seg, offset, 4, limit, false)?;
                if head.iter().any(|&b| b != 0) {
                    break ScanEnd::Bad {
                        offset,
                        reason: "partial record at the end of the file".into(),
                    };
                }
            } else if offset < limit {
                break ScanEnd::Bad {
                    offset,
                    reason: "partial record at the end of the file".into(),
                };
            }
            break ScanEnd::Clean;
        }
        let head = reader.bytes(seg, offset, 4, limit, false)?;
        if head.iter().all(|&b| b == 0) {
            break ScanEnd::Clean;
        }
        let rec = match reader.record_at(seg, offset, limit) {
            Ok(r) => r,
            Err(e) if e.is_corruption() => {
                break ScanEnd::Bad {
                    offset,
                    reason: e.to_string(),
                };
            }
            Err(e) => return Err(e),
        };
        if let Some(p) = expect_position
            && rec.first_position != p
        {
            break ScanEnd::Bad {
                offset,
                reason: format!(
                    "record starts at position {}, expected {p}",
                    rec.first_position
                ),
            };
        }
        visit(offset, &rec)?;
        expect_position = Some(rec.end_position());
        offset += rec.len() as u64;
        records += 1;
    };
    Ok(Scan {
        data_end: offset,
        end_position: expect_position,
        records,
        end,
    })
}

/// What lies after the last good record of the last segment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TailSearch {
    /// Whether any non-zero byte follows (zeros are preallocated space).
    pub nonzero: bool,
    /// Offset of a record proving that the damaged data had been
    /// acknowledged: a valid record that follows the `ends_needed`-th valid
    /// group-end record after the damage. The writer starts writing a group
    /// only while at most `ends_needed - 1` older groups are unacknowledged,
    /// so that many complete groups after the damage, and then more, mean
    /// the damaged group had been acknowledged.
    pub acknowledged_after: Option<u64>,
}

/// Searches `[from, limit)` of `seg` for valid records with positions at or
/// after `min_position`, to tell a torn tail (cut it) from damage to
/// acknowledged data (refuse to start). `group_end_flag` is the record flag
/// the writer sets on the last record of each group write.
pub fn search_tail(
    seg: &Segment,
    from: u64,
    limit: u64,
    min_position: u64,
    max_record: usize,
    group_end_flag: u8,
    ends_needed: usize,
) -> Result<TailSearch, StorageError> {
    let mut out = TailSearch::default();
    let mut bytes_reader = RecordReader::new(1 << 20, max_record);
    let mut reader = RecordReader::new(64 << 10, max_record);
    let mut ends = 0usize;
    let mut off = from;
    while off < limit {
        // Skip runs of zeros quickly: most of a clean tail is preallocation.
        let span = (limit - off).min(64 << 10) as usize;
        let window = bytes_reader.bytes(seg, off, span, limit, false)?;
        let Some(nz) = window.iter().position(|&b| b != 0) else {
            off += span as u64;
            continue;
        };
        out.nonzero = true;
        // A record's length prefix may begin with zero bytes (little-endian
        // low byte), so try the three offsets before the non-zero byte too.
        let first_nz = off + nz as u64;
        let start = first_nz.saturating_sub(3).max(off);
        let mut advanced = false;
        for cand in start..=first_nz {
            if cand + record::MIN_RECORD_LEN as u64 > limit {
                break;
            }
            let Ok(rec) = reader.record_at(seg, cand, limit) else {
                continue;
            };
            if rec.first_position < min_position {
                continue;
            }
            // Follow the chain of contiguous records from here.
            let mut at = cand;
            let mut r = rec;
            loop {
                if r.flags & group_end_flag != 0 {
                    ends += 1;
                }
                let next = at + r.len() as u64;
                let following = reader
                    .record_at(seg, next, limit)
                    .ok()
                    .filter(|n| n.first_position == r.end_position());
                match following {
                    Some(n) => {
                        if ends >= ends_needed {
                            out.acknowledged_after = Some(next);
                            return Ok(out);
                        }
                        at = next;
                        r = n;
                    }
                    None => {
                        off = next;
                        advanced = true;
                        break;
                    }
                }
            }
            break;
        }
        if !advanced {
            off = first_nz + 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_log_order() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn header_round_trip_and_corruption() {
        let p = Path::new("x.seg");
        let h = encode_header(77);
        assert_eq!(decode_header(p, &h).unwrap(), 77);
        for i in 0..h.len() {
            let mut b = h;
            b[i] ^= 0x10;
            assert!(decode_header(p, &b).is_err(), "flip at {i}");
        }
        assert!(decode_header(p, &h[..10]).is_err());
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
