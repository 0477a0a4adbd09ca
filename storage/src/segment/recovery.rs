//! The scans of a segment whose end is not known: recovery's and
//! `verify`'s.

use crate::error::StorageError;
use crate::record::{self, Record};
use crate::segment::{RecordReader, RecordWalk, Segment};

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
    expect_position: Option<u64>,
    reader: &mut RecordReader,
    mut visit: impl FnMut(u64, &Record) -> Result<(), StorageError>,
) -> Result<Scan, StorageError> {
    let mut walk = RecordWalk::new(seg, from, limit, expect_position);
    let mut records = 0;
    let end = loop {
        let offset = walk.offset();
        // Where a record would start: the end of the data, zeros
        // (preallocated space) or a fragment too short to be a record.
        if offset + record::MIN_RECORD_LEN as u64 > limit {
            let partial = if offset + 4 <= limit {
                let head = reader.bytes(seg, offset, 4, limit, false)?;
                head.iter().any(|&b| b != 0)
            } else {
                offset < limit
            };
            if partial {
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
        match walk.next(reader) {
            Ok(Some((at, rec))) => {
                visit(at, &rec)?;
                records += 1;
            }
            Ok(None) => break ScanEnd::Clean,
            Err(e) if e.is_corruption() => {
                break ScanEnd::Bad {
                    offset,
                    reason: e.to_string(),
                };
            }
            Err(e) => return Err(e),
        }
    };
    Ok(Scan {
        data_end: walk.offset(),
        end_position: walk.expected_position(),
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
            let mut r = rec;
            let mut chain =
                RecordWalk::new(seg, cand + r.len() as u64, limit, Some(r.end_position()));
            loop {
                if r.flags & group_end_flag != 0 {
                    ends += 1;
                }
                let next = chain.offset();
                match chain.next(&mut reader).ok().flatten() {
                    Some((_, n)) => {
                        if ends >= ends_needed {
                            out.acknowledged_after = Some(next);
                            return Ok(out);
                        }
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
