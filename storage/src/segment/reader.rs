//! Reading records from segment files: [`RecordReader`] fetches and
//! checks them through a window of recently read bytes; [`RecordWalk`] is
//! the one loop that walks a segment's records forward, used by reads of
//! the global log, recovery, `verify` and the torn-tail search.

use bytes::{Bytes, BytesMut};

use crate::error::StorageError;
use crate::record::{self, Record, RecordError};
use crate::segment::{HEADER_LEN, Segment};

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
    pub(super) fn bytes(
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
        record::check(&bytes, self.max_record, seg.crc_seed)
            .map_err(|e| Self::to_error(seg, offset, e))?;
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

/// Walks the records of one segment forward from an offset up to a limit,
/// checking each record (bounds, suffix, checksum) and that positions are
/// contiguous: each record starts where the previous one ended (and where
/// `expect` says, for the first one, when given); in a segment with gaps
/// (rewritten by a scavenge), at or after it.
///
/// A record that fails a check is an error naming file and offset, and the
/// walk stays on it ([`RecordWalk::offset`] is the bad record's), so a
/// caller that tolerates damage (recovery) knows where good data ends.
pub(crate) struct RecordWalk<'a> {
    seg: &'a Segment,
    offset: u64,
    limit: u64,
    expect: Option<u64>,
}

impl<'a> RecordWalk<'a> {
    /// A walk of `seg` from the record at `from` up to `limit` (exclusive);
    /// `expect` is the position the first record must start at, if known.
    pub fn new(seg: &'a Segment, from: u64, limit: u64, expect: Option<u64>) -> RecordWalk<'a> {
        RecordWalk {
            seg,
            offset: from,
            limit,
            expect,
        }
    }

    /// The segment walked.
    pub fn segment(&self) -> &'a Segment {
        self.seg
    }

    /// Offset of the next record (of the bad one after an error).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The position the next record must start at, once known.
    pub fn expected_position(&self) -> Option<u64> {
        self.expect
    }

    /// The next record and its offset; `None` at the limit.
    pub fn next(
        &mut self,
        reader: &mut RecordReader,
    ) -> Result<Option<(u64, Record)>, StorageError> {
        if self.offset >= self.limit {
            return Ok(None);
        }
        let rec = reader.record_at(self.seg, self.offset, self.limit)?;
        // In a segment with gaps (removed events), positions only rise.
        if let Some(p) = self.expect
            && (rec.first_position != p && !(self.seg.gaps && rec.first_position > p))
        {
            return Err(StorageError::corrupt(
                &self.seg.path,
                self.offset,
                format!(
                    "record starts at position {}, expected {p}",
                    rec.first_position
                ),
            ));
        }
        let at = self.offset;
        self.offset += rec.len() as u64;
        self.expect = Some(rec.end_position());
        Ok(Some((at, rec)))
    }
}
