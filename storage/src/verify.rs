//! Offline verification: checks every record, every segment's footer and
//! sparse position index, that every stream's versions are contiguous from
//! 0 across the whole log, and every index entry against the log.
//!
//! It opens the files read-only and takes the directory lock, so it never
//! runs beside a daemon and never changes anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbook_protocol::layout::{self, DataDir};

use crate::config::StoreConfig;
use crate::error::StorageError;
use crate::fs::OpenMode;
use crate::index::ids;
use crate::index::manifest::Manifest;
use crate::index::table::Table;
use crate::segment::{self, FOOTER_LEN, HEADER_LEN, RecordReader, ScanEnd, Segment};
use crate::stream_map::StreamHasher;

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

/// What verification found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: u64,
    /// Records checked.
    pub records: u64,
    /// Events in the log.
    pub events: u64,
    /// Bytes of records checked.
    pub bytes: u64,
    /// Index tables checked.
    pub index_tables: u64,
    /// Index entries checked against the log.
    pub index_entries: u64,
    /// Event ids checked: against the log, and unique.
    pub event_ids: u64,
    /// Everything that is wrong; empty for a healthy store.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Progress of a verification, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Bytes of segments checked so far.
    pub done: u64,
    /// Bytes of segments in all.
    pub total: u64,
}

/// A step of a verification, for progress displays
/// ([`verify_with_progress`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Step<'a> {
    /// Checking a segment starts.
    SegmentStart {
        /// The segment file.
        file: &'a Path,
        /// Its number, from 1.
        number: usize,
        /// Segments in all.
        count: usize,
        /// Its length in bytes.
        len: u64,
        /// Bytes of segments checked before it, and in all.
        progress: Progress,
    },
    /// Bytes checked so far, within a segment (at most one per MiB).
    Bytes(Progress),
    /// A segment is checked.
    SegmentDone {
        /// The segment file.
        file: &'a Path,
        /// Its number, from 1.
        number: usize,
        /// Segments in all.
        count: usize,
        /// Records in it.
        records: u64,
        /// Problems found in it.
        problems: usize,
        /// Bytes of segments checked, and in all.
        progress: Progress,
    },
    /// Checking the stream index starts (after every segment).
    IndexStart {
        /// Index tables in the manifest.
        tables: usize,
    },
    /// An index table is checked.
    TableDone {
        /// The table file.
        file: &'a Path,
        /// Its number, from 1.
        number: usize,
        /// Tables in all.
        count: usize,
        /// Entries checked.
        entries: u64,
        /// Problems found in it.
        problems: usize,
    },
}

/// Verifies the store in `config.data_dir`. I/O errors and a held lock are
/// errors; damage is reported in [`VerifyReport::problems`]. `progress` is
/// called after each segment.
pub fn verify(
    config: &StoreConfig,
    mut progress: impl FnMut(Progress),
) -> Result<VerifyReport, StorageError> {
    verify_with_progress(config, |step| {
        if let Step::SegmentDone { progress: p, .. } = step {
            progress(p);
        }
    })
}

/// Bytes between two [`Step::Bytes`] reports.
const BYTES_STEP: u64 = 1 << 20;

/// [`verify`], reporting each [`Step`] to `progress` (for a progress bar:
/// bytes of segments checked out of the total, and the current file).
pub fn verify_with_progress(
    config: &StoreConfig,
    mut progress: impl FnMut(Step<'_>),
) -> Result<VerifyReport, StorageError> {
    // Every segment and table stays referenced while it is checked: the
    // same budget of open files as a running store.
    let files = crate::file_cache::FileCache::new(Arc::clone(&config.vfs), config.max_open_files);
    let vfs: &dyn crate::fs::Vfs = &files;
    let layout = DataDir::new(&config.data_dir);
    let lock_path = layout.lock();
    let _lock = vfs
        .try_lock(&lock_path)
        .map_err(|e| StorageError::io("lock", &lock_path, e))?
        .ok_or(StorageError::Locked { path: lock_path })?;
    let log_dir = layout.log_dir();
    let index_dir = layout.index_dir();
    let mut report = VerifyReport::default();
    let problem = |report: &mut VerifyReport, file: &PathBuf, offset: u64, what: String| {
        report.problems.push(Problem {
            file: file.clone(),
            offset,
            what,
        });
    };

    let mut names: Vec<(u64, String)> = vfs
        .list_dir(&log_dir)
        .map_err(|e| StorageError::io("list", &log_dir, e))?
        .into_iter()
        .filter_map(|n| layout::parse_segment_file(&n).map(|p| (p, n)))
        .collect();
    names.sort();
    let mut files = Vec::new();
    let mut total = 0;
    for (first, name) in &names {
        let path = log_dir.join(name);
        let file = vfs
            .open(&path, OpenMode::Read)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let len = file.len().map_err(|e| StorageError::io("stat", &path, e))?;
        total += len;
        files.push((*first, path, file, len));
    }
    let max_record = config.max_record_bytes() as usize;
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut expect = 0u64;
    // Each stream's next version, as the log so far has it.
    let mut stream_versions: HashMap<Box<str>, u64> = HashMap::new();
    // Whether a segment rewritten by a scavenge was met: from there on a
    // stream's versions may skip the removed ones (they still rise).
    let mut scavenged = false;
    // Every record's (first position, offset), per segment: the event-id
    // check finds events by position.
    let mut record_offsets: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut done = 0;
    let count = files.len();
    for (i, (first, path, file, len)) in files.into_iter().enumerate() {
        report.segments += 1;
        let problems_before = report.problems.len();
        progress(Step::SegmentStart {
            file: &path,
            number: i + 1,
            count,
            len,
            progress: Progress { done, total },
        });
        // The checks below end in `continue` in one place: account the
        // segment's bytes there too.
        let finish =
            |report: &VerifyReport, records, done: u64, progress: &mut dyn FnMut(Step<'_>)| {
                progress(Step::SegmentDone {
                    file: &path,
                    number: i + 1,
                    count,
                    records,
                    problems: report.problems.len() - problems_before,
                    progress: Progress { done, total },
                });
            };
        let mut h = [0u8; HEADER_LEN as usize];
        let header = match file
            .read_exact_at(&mut h, 0)
            .map_err(|e| StorageError::io("read", &path, e))
            .and_then(|_| segment::decode_header(&path, &h))
        {
            Ok(header) => header,
            Err(e) => {
                problem(&mut report, &path, 0, e.to_string());
                done += len;
                finish(&report, 0, done, &mut progress);
                continue;
            }
        };
        scavenged |= header.gaps;
        let footer = if len >= HEADER_LEN + FOOTER_LEN {
            let mut f = [0u8; FOOTER_LEN as usize];
            file.read_exact_at(&mut f, len - FOOTER_LEN)
                .map_err(|e| StorageError::io("read", &path, e))?;
            match segment::decode_footer(&path, len, &f) {
                Ok(f) => f,
                Err(e) => {
                    problem(&mut report, &path, len - FOOTER_LEN, e.to_string());
                    None
                }
            }
        } else {
            None
        };
        if first < expect
            && segments.last().is_some_and(|prev| prev.gaps)
            && footer.is_some_and(|f| f.first_position == first && f.end_position <= expect)
        {
            // A segment a scavenge merged into the one before (the merge's
            // rename landed, the removal of this one did not): the next
            // start removes it. Its events are in the one before.
            done += len;
            finish(&report, 0, done, &mut progress);
            continue;
        }
        if first != expect {
            problem(
                &mut report,
                &path,
                0,
                format!("segment starts at position {first}, expected {expect}"),
            );
        }
        let last = i + 1 == count;
        if footer.is_none() && !last {
            problem(
                &mut report,
                &path,
                len,
                "segment is not sealed but is not the last".into(),
            );
        }
        let limit = footer.map_or(len, |f| f.data_end);
        let seg = Segment::new(
            path.clone(),
            Arc::clone(&file),
            header,
            limit,
            first,
            Vec::new(),
            footer.is_some(),
        );
        let mut reader = RecordReader::new(1 << 20, max_record);
        let mut offsets: Vec<(u64, u64)> = Vec::new();
        let mut reported = 0;
        let mut gaps: Vec<(u64, String)> = Vec::new();
        let scan = segment::scan(
            &seg,
            HEADER_LEN,
            limit,
            Some(first),
            &mut reader,
            |off, rec| {
                offsets.push((rec.first_position, off));
                // Every stream's versions are contiguous from 0 across the
                // whole log: each record continues its stream's last one.
                let next = stream_versions
                    .get(rec.stream.as_str())
                    .copied()
                    .unwrap_or(0);
                if rec.first_version != next && !(scavenged && rec.first_version > next) {
                    gaps.push((
                        off,
                        format!(
                            "stream {:?} continues at version {}, expected {next}",
                            rec.stream.as_str(),
                            rec.first_version
                        ),
                    ));
                }
                let end = rec.first_version + u64::from(rec.count);
                match stream_versions.get_mut(rec.stream.as_str()) {
                    Some(v) => *v = end,
                    None => {
                        stream_versions.insert(Box::from(rec.stream.as_str()), end);
                    }
                }
                if off >= reported + BYTES_STEP {
                    reported = off;
                    progress(Step::Bytes(Progress {
                        done: done + off,
                        total,
                    }));
                }
                Ok(())
            },
        )?;
        for (offset, what) in gaps {
            problem(&mut report, &path, offset, what);
        }
        report.records += scan.records;
        report.bytes += scan.data_end - HEADER_LEN;
        let mut end_position = scan.end_position.unwrap_or(first);
        if header.gaps
            && let Some(f) = &footer
            && end_position <= f.end_position
        {
            // Removed events at the end: the footer says what the segment
            // covers.
            end_position = f.end_position;
        }
        if let ScanEnd::Bad { offset, reason } = &scan.end {
            problem(&mut report, &path, *offset, reason.clone());
        }
        if let Some(f) = footer {
            if scan.data_end != f.data_end {
                problem(
                    &mut report,
                    &path,
                    scan.data_end,
                    format!(
                        "records end at {}, footer says {}",
                        scan.data_end, f.data_end
                    ),
                );
            }
            if scan.records != f.record_count {
                problem(
                    &mut report,
                    &path,
                    len - FOOTER_LEN,
                    format!("{} records, footer says {}", scan.records, f.record_count),
                );
            }
            if end_position != f.end_position {
                problem(
                    &mut report,
                    &path,
                    len - FOOTER_LEN,
                    format!(
                        "events end at position {end_position}, footer says {}",
                        f.end_position
                    ),
                );
            }
            let sealed = Segment::sealed_from_footer(path.clone(), Arc::clone(&file), header, &f);
            match sealed.pidx() {
                Ok(pidx) => {
                    for e in pidx {
                        if offsets.binary_search(&(e.position, e.offset)).is_err() {
                            problem(
                                &mut report,
                                &path,
                                e.offset,
                                format!(
                                    "position index entry for {} does not point at a record starting there",
                                    e.position
                                ),
                            );
                        }
                    }
                }
                Err(e) => problem(&mut report, &path, f.data_end, e.to_string()),
            }
        } else if scan.data_end < len {
            match segment::search_tail(
                &seg,
                scan.data_end,
                len,
                end_position,
                max_record,
                crate::writer::FLAG_GROUP_END,
                crate::commit::MAX_SYNC_LANES + 1,
            ) {
                Ok(t) if t.nonzero => problem(
                    &mut report,
                    &path,
                    scan.data_end,
                    format!(
                        "unreadable bytes after the last record{}",
                        if t.acknowledged_after.is_some() {
                            ", followed by acknowledged records (corruption)"
                        } else {
                            " (a torn write; recovery cuts it)"
                        }
                    ),
                ),
                Ok(_) => {}
                Err(e) => problem(&mut report, &path, scan.data_end, e.to_string()),
            }
        }
        expect = end_position;
        done += len;
        finish(&report, scan.records, done, &mut progress);
        segments.push(Arc::new(Segment::new(
            path,
            file,
            header,
            scan.data_end,
            end_position,
            Vec::new(),
            true,
        )));
        record_offsets.push(offsets);
    }
    report.events = expect;

    // Index tables: every entry must point at the record holding its event.
    let manifest = match Manifest::load(vfs, &index_dir) {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => {
            problem(&mut report, &layout.manifest(), 0, e.to_string());
            Manifest::default()
        }
    };
    let hasher = match config.testing.degenerate_stream_hash {
        Some(h) => StreamHasher::degenerate(h),
        None => StreamHasher::new(manifest.hash_seed),
    };
    let mut covered = 0u64;
    let mut opened_tables: Vec<Arc<Table>> = Vec::new();
    // Entries with version 0: the streams the tables hold.
    let mut first_events = 0u64;
    let mut reader = RecordReader::new(64 << 10, max_record);
    let tables = manifest.tables.len();
    progress(Step::IndexStart { tables });
    for (i, &id) in manifest.tables.iter().enumerate() {
        report.index_tables += 1;
        let problems_before = report.problems.len();
        let table_path = layout.table(id);
        let table = match Table::open(vfs, &index_dir, id) {
            Ok(t) => {
                let t = Arc::new(t);
                opened_tables.push(Arc::clone(&t));
                t
            }
            Err(e) => {
                problem(&mut report, &table_path, 0, e.to_string());
                progress(Step::TableDone {
                    file: &table_path,
                    number: i + 1,
                    count: tables,
                    entries: 0,
                    problems: report.problems.len() - problems_before,
                });
                continue;
            }
        };
        if table.start_position != covered {
            problem(
                &mut report,
                &table.path,
                0,
                format!(
                    "table starts at {}, expected {covered}",
                    table.start_position
                ),
            );
        }
        covered = table.end_position;
        let mut seen = 0u64;
        // Hashes of the version-0 entries, in table order (sorted): the
        // streams the table's names must be.
        let mut first_hashes: Vec<u64> = Vec::new();
        for item in table.iter() {
            let (hash, e) = match item {
                Ok(x) => x,
                Err(err) => {
                    problem(&mut report, &table.path, 0, err.to_string());
                    break;
                }
            };
            seen += 1;
            report.index_entries += 1;
            first_events += u64::from(e.version == 0);
            if e.version == 0 {
                first_hashes.push(hash);
            }
            let si = segments.partition_point(|s| s.first_position <= e.position);
            let Some(seg) = si.checked_sub(1).and_then(|i| segments.get(i)) else {
                problem(
                    &mut report,
                    &table.path,
                    0,
                    format!("entry for position {} is before the log", e.position),
                );
                continue;
            };
            // In a segment a scavenge rewrote, offsets are stale: the record
            // is found by position, and an entry of a removed event finds
            // none (it is passed over by reads).
            let offset = if seg.gaps {
                let offsets = record_offsets.get(si - 1).map_or(&[][..], Vec::as_slice);
                let ri = offsets.partition_point(|(p, _)| *p <= e.position);
                match ri.checked_sub(1).and_then(|r| offsets.get(r)) {
                    Some(&(_, off)) => off,
                    None => continue,
                }
            } else {
                e.offset
            };
            match reader.record_at(seg, offset, seg.data_end()) {
                Ok(rec) if seg.gaps && rec.end_position() <= e.position => {}
                Ok(rec) => {
                    let holds = rec.first_position <= e.position && e.position < rec.end_position();
                    let version_ok = e.version
                        == rec.first_version + (e.position - rec.first_position.min(e.position));
                    if !holds || !version_ok || hasher.hash(&rec.stream) != hash {
                        problem(
                            &mut report,
                            &table.path,
                            0,
                            format!(
                                "entry (position {}, version {}) disagrees with the record at {} offset {}",
                                e.position,
                                e.version,
                                seg.path.display(),
                                offset
                            ),
                        );
                    }
                }
                Err(err) => problem(
                    &mut report,
                    &table.path,
                    0,
                    format!("entry for position {}: {err}", e.position),
                ),
            }
        }
        if seen != table.entry_count {
            problem(
                &mut report,
                &table.path,
                0,
                format!("{seen} entries readable, footer says {}", table.entry_count),
            );
        }
        // The stream names: exactly the streams of the version-0 entries
        // (their hashes agree; the entries were checked against the
        // records' names above).
        if table.has_names() {
            match table
                .names_from("")
                .map(|n| n.map(|n| hasher.hash(&n)))
                .collect::<Result<Vec<u64>, _>>()
            {
                Ok(mut hashes) => {
                    hashes.sort_unstable();
                    if hashes != first_hashes {
                        problem(
                            &mut report,
                            &table.path,
                            0,
                            format!(
                                "table names {} streams that disagree with its {} first events",
                                hashes.len(),
                                first_hashes.len()
                            ),
                        );
                    }
                }
                Err(e) => problem(&mut report, &table.path, 0, e.to_string()),
            }
        }
        progress(Step::TableDone {
            file: &table.path,
            number: i + 1,
            count: tables,
            entries: seen,
            problems: report.problems.len() - problems_before,
        });
    }
    check_event_ids(
        &mut report,
        &layout,
        &hasher,
        &opened_tables,
        &segments,
        &record_offsets,
        max_record,
    );
    if covered != manifest.indexed_through {
        problem(
            &mut report,
            &layout.manifest(),
            0,
            format!(
                "tables cover up to {covered}, manifest says {}",
                manifest.indexed_through
            ),
        );
    }
    if let Some(streams) = manifest.streams
        && streams != first_events
    {
        problem(
            &mut report,
            &layout.manifest(),
            0,
            format!("manifest counts {streams} streams, the tables hold {first_events}"),
        );
    }
    if manifest.indexed_through > report.events {
        let what = format!(
            "index covers up to {} but the log ends at {}",
            manifest.indexed_through, report.events
        );
        problem(&mut report, &layout.manifest(), 0, what);
    }
    Ok(report)
}

/// The event-id index against the log, and ids unique across the log:
/// every table's id file holds exactly the ids of its positions (each
/// entry names the event with that id; as many entries as positions), no
/// id is in two places (a merge of every table's sorted ids finds no two
/// equal), and no id of the unindexed tail is stored before it.
fn check_event_ids(
    report: &mut VerifyReport,
    layout: &DataDir,
    hasher: &StreamHasher,
    tables: &[Arc<Table>],
    segments: &[Arc<Segment>],
    record_offsets: &[Vec<(u64, u64)>],
    max_record: usize,
) {
    let mut reader = RecordReader::new(64 << 10, max_record);
    // The event at `position`, read through the offsets the scan found.
    // `None`: a scavenge removed it (its id stays in the index, reserved).
    let mut event_at = |position: u64| -> Result<Option<logbook_protocol::RecordedEvent>, String> {
        let si = segments
            .partition_point(|s| s.first_position <= position)
            .checked_sub(1)
            .ok_or("before the log")?;
        let (seg, offsets) = segments
            .get(si)
            .zip(record_offsets.get(si))
            .ok_or("past the log")?;
        let ri = offsets
            .partition_point(|(p, _)| *p <= position)
            .checked_sub(1);
        let Some(ri) = ri else {
            return if seg.gaps {
                Ok(None)
            } else {
                Err("before the segment's first record".into())
            };
        };
        let &(_, offset) = offsets.get(ri).ok_or("no record")?;
        let rec = reader
            .record_at(seg, offset, seg.data_end())
            .map_err(|e| e.to_string())?;
        if seg.gaps && rec.end_position() <= position {
            return Ok(None);
        }
        rec.events()
            .nth((position - rec.first_position) as usize)
            .ok_or("past the record's events")?
            .map(Some)
            .map_err(|e| format!("{e:?}"))
    };
    for t in tables {
        let ids = &t.ids;
        if ids.count != ids.end_position - ids.start_position
            || ids.start_position != t.start_position
            || ids.end_position != t.end_position
        {
            report.problems.push(Problem {
                file: ids.path.clone(),
                offset: 0,
                what: format!(
                    "{} ids for positions {}..{} (its table: {}..{})",
                    ids.count,
                    ids.start_position,
                    ids.end_position,
                    t.start_position,
                    t.end_position
                ),
            });
        }
        for item in ids.iter() {
            let (id, position) = match item {
                Ok(x) => x,
                Err(e) => {
                    report.problems.push(Problem {
                        file: ids.path.clone(),
                        offset: 0,
                        what: e.to_string(),
                    });
                    break;
                }
            };
            let what = if position < ids.start_position || position >= ids.end_position {
                Some(format!(
                    "id {id} at position {position}, outside the file's range"
                ))
            } else {
                match event_at(position) {
                    Ok(None) => None,
                    Ok(Some(e)) if e.id == id => None,
                    Ok(Some(e)) => Some(format!(
                        "id {id} at position {position}, where the log has {}",
                        e.id
                    )),
                    Err(e) => Some(format!("id {id} at position {position}: {e}")),
                }
            };
            if let Some(what) = what {
                report.problems.push(Problem {
                    file: ids.path.clone(),
                    offset: 0,
                    what,
                });
            }
        }
    }
    let mut prev: Option<logbook_protocol::EventId> = None;
    for item in ids::merge_iters(tables.iter().map(|t| t.ids.iter()).collect()) {
        let Ok((id, position)) = item else { break };
        if prev == Some(id) {
            report.problems.push(Problem {
                file: layout.index_dir(),
                offset: 0,
                what: format!("event id {id} is stored twice (again at position {position})"),
            });
        }
        prev = Some(id);
    }
    // The tail the tables do not cover yet.
    let indexed = tables.last().map_or(0, |t| t.end_position);
    let mut tail = std::collections::HashSet::new();
    let end = segments.last().map_or(0, |s| s.end_position());
    for position in indexed..end {
        let Ok(Some(e)) = event_at(position) else {
            continue;
        };
        let h = hasher.hash_id(&e.id);
        let stored = tables
            .iter()
            .any(|t| matches!(t.ids.get(h, &e.id), Ok(Some(_))));
        if !tail.insert(e.id) || stored {
            report.problems.push(Problem {
                file: layout.log_dir(),
                offset: 0,
                what: format!("event id {} at position {position} is stored twice", e.id),
            });
        }
    }
    report.event_ids = tables.iter().map(|t| t.ids.count).sum::<u64>() + (end - indexed.min(end));
}
