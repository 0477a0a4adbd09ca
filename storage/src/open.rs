//! Opening a store: lock, recover the log, load the index, replay the tail.
//!
//! 1. Take `<data>/LOCK`: a second process on the directory fails at once.
//!    Refuse a directory marked as an unfinished backup.
//! 2. Sealed segments: check header and footer only (start-up must not
//!    depend on the store's size; records are checked when read and by
//!    `verify`). A segment that is not the last but has no footer is scanned
//!    and sealed.
//! 3. The last segment: scan every record. At the first record that fails
//!    its checks, decide between a torn last write and damage to
//!    acknowledged data (see [`segment::search_tail`]): a torn write is cut
//!    off (and logged); damage makes `open` fail with file and offset,
//!    unless [`RecoveryMode::TruncateDamagedTail`] is configured.
//! 4. Index: load the MANIFEST's tables, delete files it does not list, and
//!    replay the log from `indexed_through` into the memtable. Index files
//!    are derived data: if they are missing or damaged, the index is rebuilt
//!    from the log.
//!
//! Start-up reads: every segment's header and footer, every table's footer,
//! fences and bloom (about 1% of the index), the whole last segment (at most
//! `segment_bytes`) and the unindexed tail (at most `index_flush_entries`
//! events plus one segment).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_protocol::layout::{self, DataDir};
use parking_lot::{Mutex, RwLock};

use crate::commit::MAX_SYNC_LANES;
use crate::config::{RecoveryMode, StoreConfig};
use crate::error::StorageError;
use crate::file_cache::FileCache;
use crate::fs::{LockGuard, OpenMode, VFile};
use crate::index::IndexState;
use crate::index::ids::IdMap;
use crate::index::manifest::{self, Manifest};
use crate::index::memtable::Memtable;
use crate::index::table::Table;
use crate::read::Visit;
use crate::segment::{
    self, FOOTER_LEN, HEADER_LEN, Header, PIDX_INTERVAL, PidxEntry, ScanEnd, Segment,
};
use crate::shared::{Counters, Shared};
use crate::stream_map::StreamHasher;
use crate::writer::{self, FLAG_GROUP_END};

/// A cut made by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment cut.
    pub file: PathBuf,
    /// Where the cut is: everything from here on was removed.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Why the first removed record was bad.
    pub reason: String,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Segments in the log.
    pub segments: usize,
    /// Events in the store (the next position).
    pub events: u64,
    /// A torn tail (or, in repair mode, damaged data) that was cut off.
    pub truncated: Option<Truncation>,
    /// Segments that were complete but unsealed (a crash during roll-over)
    /// and were sealed.
    pub sealed: Vec<PathBuf>,
    /// Index tables loaded.
    pub index_tables: usize,
    /// Why the index was rebuilt from the log, if it was.
    pub index_rebuilt: Option<String>,
    /// Files removed because nothing refers to them.
    pub removed_files: Vec<PathBuf>,
    /// Events replayed from the log into the memtable.
    pub replayed_events: u64,
    /// Lifecycle events (`$$` streams) read from the log to rebuild the
    /// lifecycle states past their snapshot.
    pub lifecycle_events_replayed: u64,
    /// Wall time of the whole open.
    pub duration: Duration,
    /// The commit time of the last record (0 in an empty store).
    pub last_timestamp_us: i64,
}

pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    /// The event ids of the unindexed tail replayed into the memtable.
    pub tail_ids: IdMap,
    pub active: Arc<Segment>,
    pub pidx: Vec<PidxEntry>,
    pub records_in_segment: u64,
    pub last_timestamp: i64,
    pub lock: Box<dyn LockGuard>,
    pub report: RecoveryReport,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::io(op, path, e)
}

fn read_header(path: &Path, file: &dyn VFile) -> Result<Header, StorageError> {
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            StorageError::corrupt(path, 0, "segment shorter than its header")
        }
        _ => StorageError::io("read", path, e),
    })?;
    segment::decode_header(path, &h)
}

/// Whether the file of the last segment, starting at `first`, is what an
/// interrupted creation leaves: shorter than a header, and holding nothing
/// but a prefix of the header it was getting (or zeros).
fn interrupted_creation(path: &Path, file: &dyn VFile, first: u64) -> Result<bool, StorageError> {
    let len = file.len().map_err(io("stat", path))?;
    if len >= HEADER_LEN {
        return Ok(false);
    }
    let mut b = vec![0u8; len as usize];
    file.read_exact_at(&mut b, 0).map_err(io("read", path))?;
    // The nonce and the checksum (bytes 24..32) are random; the rest is
    // what the header of a segment starting at `first` holds.
    let expected = segment::encode_header(first, 0);
    let fixed = b.len().min(24);
    Ok(expected.get(..fixed) == b.get(..fixed) || b.iter().all(|&x| x == 0))
}

fn read_footer(
    path: &Path,
    file: &dyn VFile,
    len: u64,
) -> Result<Option<segment::Footer>, StorageError> {
    if len < HEADER_LEN + FOOTER_LEN {
        return Ok(None);
    }
    let mut f = [0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut f, len - FOOTER_LEN)
        .map_err(io("read", path))?;
    segment::decode_footer(path, len, &f)
}

/// Makes the scan of an unsealed segment read what is on the disk. Its
/// tail was never known to be synced: a write the previous process made may
/// have failed its writeback (after it died, or with the error reported and
/// the process then stopped), and Linux keeps such pages in the cache,
/// marked clean, where reads still find them. Adopting them would serve
/// events the disk does not hold. So: sync what is dirty (a failure here is
/// the disk refusing those unacknowledged writes, which the scan then does
/// not find), then drop the cached pages. Sealed segments were synced
/// whole before their seal was written and are read as they are.
fn forget_cached_tail(path: &Path, file: &dyn VFile) {
    if let Err(e) = file.sync_data() {
        tracing::warn!(file = %path.display(), error = %e, "syncing the unsealed tail at start-up failed; recovery reads what the disk holds");
    }
    if let Err(e) = file.drop_cache() {
        tracing::warn!(file = %path.display(), error = %e, "could not drop the cached pages of the unsealed tail");
    }
}

/// State of the last segment after its scan.
struct Tail {
    pidx: Vec<PidxEntry>,
    records: u64,
    data_end: u64,
    end_position: u64,
    last_timestamp: i64,
}

/// Scans a segment's records from the start, rebuilding its pidx.
fn scan_segment(
    config: &StoreConfig,
    seg: &Segment,
    limit: u64,
) -> Result<(Tail, ScanEnd), StorageError> {
    let mut reader = segment::RecordReader::new(
        config.read_chunk_bytes.max(1 << 20),
        config.max_record_bytes() as usize,
    );
    let mut pidx: Vec<PidxEntry> = Vec::new();
    let mut last_timestamp = 0;
    let scan = segment::scan(
        seg,
        HEADER_LEN,
        limit,
        Some(seg.first_position),
        &mut reader,
        |offset, rec| {
            if pidx
                .last()
                .is_none_or(|p| offset >= p.offset + PIDX_INTERVAL)
            {
                pidx.push(PidxEntry {
                    position: rec.first_position,
                    offset,
                });
            }
            last_timestamp = rec.timestamp_us;
            Ok(())
        },
    )?;
    Ok((
        Tail {
            pidx,
            records: scan.records,
            data_end: scan.data_end,
            end_position: scan.end_position.unwrap_or(seg.first_position),
            last_timestamp,
        },
        scan.end,
    ))
}

/// Opens (and if needed creates and recovers) the store in `config.data_dir`.
pub(crate) fn open(config: StoreConfig) -> Result<Opened, StorageError> {
    let started = Instant::now();
    config.validate()?;
    // Every file of the store through one budget of open descriptors.
    let files = Arc::new(FileCache::new(
        Arc::clone(&config.vfs),
        config.max_open_files,
    ));
    let config = StoreConfig {
        vfs: Arc::clone(&files) as Arc<dyn crate::fs::Vfs>,
        ..config
    };
    let vfs = Arc::clone(&config.vfs);
    let layout = DataDir::new(&config.data_dir);
    let log_dir = layout.log_dir();
    let index_dir = layout.index_dir();
    for d in [layout.root(), &log_dir, &index_dir] {
        vfs.create_dir_all(d).map_err(io("create dir", d))?;
    }
    let lock_path = layout.lock();
    let lock = vfs
        .try_lock(&lock_path)
        .map_err(io("lock", &lock_path))?
        .ok_or(StorageError::Locked { path: lock_path })?;
    // A backup client writes this marker before it changes anything and
    // removes it once the copy is complete and durable.
    let unfinished = layout.backup_incomplete();
    if vfs.exists(&unfinished) {
        return Err(StorageError::UnfinishedBackup { path: unfinished });
    }
    let mut report = RecoveryReport::default();

    // --- Segments -------------------------------------------------------
    let mut names: Vec<(u64, String)> = Vec::new();
    for name in vfs.list_dir(&log_dir).map_err(io("list", &log_dir))? {
        match layout::parse_segment_file(&name) {
            Some(first) => names.push((first, name)),
            None if name.ends_with(crate::scavenge::TMP_SUFFIX) => {
                // A segment rewrite a crash interrupted before its rename:
                // the segment it was for is whole.
                let p = log_dir.join(&name);
                vfs.remove_file(&p).map_err(io("remove", &p))?;
                report.removed_files.push(p);
            }
            None => {
                tracing::warn!(file = %log_dir.join(&name).display(), "ignoring unknown file in the log directory")
            }
        }
    }
    names.sort();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(names.len() + 1);
    let mut expect_first = 0u64;
    let mut tail: Option<Tail> = None;
    let count = names.len();
    for (i, (first, name)) in names.iter().enumerate() {
        let path = log_dir.join(name);
        let last = i + 1 == count;
        let file = vfs
            .open(&path, OpenMode::ReadWrite)
            .map_err(io("open", &path))?;
        if last && *first == expect_first && interrupted_creation(&path, &*file, *first)? {
            // A crash while the segment was being created (after the file
            // appeared, before its header was complete). Nothing was ever
            // written to it: records go in only after its header is synced.
            drop(file);
            vfs.remove_file(&path).map_err(io("remove", &path))?;
            vfs.sync_dir(&log_dir).map_err(io("sync dir", &log_dir))?;
            tracing::warn!(file = %path.display(), "removed a segment whose creation a crash interrupted");
            report.removed_files.push(path);
            continue;
        }
        let header = read_header(&path, &*file)?;
        let header_first = header.first_position;
        if header_first != *first {
            return Err(StorageError::corrupt(
                &path,
                16,
                format!("header says first position {header_first}, file name says {first}"),
            ));
        }
        let len = file.len().map_err(io("stat", &path))?;
        if *first < expect_first
            && segments.last().is_some_and(|prev| prev.gaps)
            && let Some(footer) = read_footer(&path, &*file, len)?
            && footer.first_position == *first
            && footer.end_position <= expect_first
        {
            // A segment a scavenge merged into the one before (a rewrite's
            // output, which covers this whole range): the merge's rename
            // landed, the removal of this one did not.
            drop(file);
            vfs.remove_file(&path).map_err(io("remove", &path))?;
            vfs.sync_dir(&log_dir).map_err(io("sync dir", &log_dir))?;
            tracing::warn!(file = %path.display(), "removed a segment an interrupted scavenge had merged into the one before");
            report.removed_files.push(path);
            continue;
        }
        if *first != expect_first {
            return Err(StorageError::corrupt(
                &path,
                0,
                format!(
                    "segment starts at position {first}, but the previous one ends at {expect_first}: events are missing"
                ),
            ));
        }
        if let Some(footer) = read_footer(&path, &*file, len)? {
            if footer.first_position != *first {
                return Err(StorageError::corrupt(
                    &path,
                    len - FOOTER_LEN,
                    "footer's first position differs from the header's",
                ));
            }
            expect_first = footer.end_position;
            file.release();
            segments.push(Arc::new(Segment::sealed_from_footer(
                path, file, header, &footer,
            )));
            continue;
        }
        // No footer: the active segment, or (if not last) a segment whose
        // seal was interrupted.
        let seg = Segment::new(
            path.clone(),
            Arc::clone(&file),
            header,
            len,
            *first,
            Vec::new(),
            false,
        );
        forget_cached_tail(&path, &*file);
        let (t, end) = scan_segment(&config, &seg, len)?;
        if !last {
            if end != ScanEnd::Clean {
                return Err(StorageError::corrupt(
                    &path,
                    t.data_end,
                    format!("damaged record in a segment that is not the last: {end:?}"),
                ));
            }
            let footer = segment::Footer {
                data_end: t.data_end,
                record_count: t.records,
                first_position: *first,
                end_position: t.end_position,
                pidx_count: t.pidx.len() as u32,
                pidx_crc: 0,
            };
            let seal = segment::encode_seal(&t.pidx, &footer);
            file.write_all_at(&seal, t.data_end)
                .map_err(io("write footer", &path))?;
            file.set_len(t.data_end + seal.len() as u64)
                .map_err(io("truncate", &path))?;
            file.sync_data().map_err(io("fdatasync", &path))?;
            file.release();
            tracing::warn!(file = %path.display(), "sealed a segment left unsealed by a crash during roll-over");
            report.sealed.push(path.clone());
            expect_first = t.end_position;
            segments.push(Arc::new(Segment::new(
                path,
                file,
                header,
                t.data_end,
                t.end_position,
                t.pidx,
                true,
            )));
            continue;
        }
        // The last segment: anything after its last good record is either a
        // torn write (cut it) or damage to acknowledged data (refuse).
        let cut_reason = match &end {
            ScanEnd::Bad { reason, .. } => Some(reason.clone()),
            ScanEnd::Clean => None,
        };
        if t.data_end < len {
            let search = segment::search_tail(
                &seg,
                t.data_end,
                len,
                t.end_position,
                config.max_record_bytes() as usize,
                FLAG_GROUP_END,
                MAX_SYNC_LANES + 1,
            )?;
            if let Some(proof) = search.acknowledged_after {
                let reason = cut_reason
                    .clone()
                    .unwrap_or_else(|| "unreadable bytes".into());
                let msg = format!(
                    "damaged record at offset {} ({reason}) is followed by acknowledged records at offset {proof}: \
                     this is corruption, not a torn write",
                    t.data_end
                );
                if config.recovery == RecoveryMode::Strict {
                    return Err(StorageError::corrupt(&path, t.data_end, msg));
                }
                tracing::error!(file = %path.display(), offset = t.data_end, "{msg}; truncating as configured");
            }
            if search.nonzero {
                // Cut everything after the last good record, so that no stale
                // bytes of an unacknowledged write can ever be mistaken for
                // records once new ones are written in front of them.
                file.set_len(t.data_end).map_err(io("truncate", &path))?;
                file.sync_data().map_err(io("fdatasync", &path))?;
                let cut = Truncation {
                    file: path.clone(),
                    offset: t.data_end,
                    bytes: len - t.data_end,
                    reason: cut_reason.unwrap_or_else(|| "bytes after the last record".into()),
                };
                tracing::warn!(file = %path.display(), offset = cut.offset, bytes = cut.bytes, reason = %cut.reason, "cut a torn tail");
                report.truncated = Some(cut);
            }
        }
        expect_first = t.end_position;
        segments.push(Arc::new(Segment::new(
            path,
            file,
            header,
            t.data_end,
            t.end_position,
            Vec::new(),
            false,
        )));
        tail = Some(t);
    }
    let head = expect_first;
    report.events = head;

    // --- Index ----------------------------------------------------------
    let (mut manifest, tables) = load_index(&config, &index_dir, head, &mut report)?;
    let hasher = match config.testing.degenerate_stream_hash {
        Some(h) => StreamHasher::degenerate(h),
        // Tables are keyed by the seed they were written with. With none
        // (a new store, or an index to rebuild), pick a fresh secret one:
        // clients then cannot compute colliding stream names offline.
        None if tables.is_empty() => StreamHasher::new(random_seed()),
        None => StreamHasher::new(manifest.hash_seed),
    };
    manifest.hash_seed = hasher.seed();
    let streams = manifest.streams.unwrap_or(0);
    let indexed_through = manifest.indexed_through;

    let counters = Counters::default();
    let (head_watch, _) = tokio::sync::watch::channel(head);
    let shared = Arc::new(Shared {
        config: config.clone(),
        files,
        hasher,
        log_dir: log_dir.clone(),
        index_dir: index_dir.clone(),
        pidx_budget: {
            let budget = crate::segment::PidxBudget::new(
                config
                    .testing
                    .pidx_budget_entries
                    .unwrap_or(crate::segment::PIDX_BUDGET_ENTRIES),
            );
            for s in &segments {
                s.track(&budget);
            }
            budget
        },
        segments: RwLock::new(Arc::new(segments)),
        index: RwLock::new(IndexState {
            active: Memtable::new(indexed_through),
            frozen: Vec::new(),
            tables: Arc::new(tables),
            indexed_streams: streams,
            manifest: Arc::new(manifest.clone()),
        }),
        head: head.into(),
        head_watch,
        indexed_through: indexed_through.into(),
        manifest: Mutex::new(manifest),
        writer_failure: Mutex::new(None),
        counters,
        abandoned: false.into(),
        closing: false.into(),
        flushing: Mutex::new(()),
        index_progress: parking_lot::Condvar::new(),
        index_progress_lock: Mutex::new(()),
        index_shape: std::sync::atomic::AtomicU64::new(0),
        lifecycle: crate::lifecycle::Lifecycles::default(),
        scavenging: Mutex::new(()),
        rewrites_poisoned: false.into(),
        erasures: crate::erasures::Erasures::default(),
        last_written_us: 0.into(),
    });
    shared.note_index_shape(&shared.index.read());

    // The active segment: the last one if unsealed, else a new one.
    let (active, pidx, records, last_timestamp) = match tail {
        Some(t) => {
            let seg = shared.segments.read().last().cloned();
            match seg {
                Some(s) => {
                    s.publish(t.data_end, t.end_position, &t.pidx);
                    s.open_lane_files(shared.lanes())?;
                    (s, t.pidx, t.records, t.last_timestamp)
                }
                None => {
                    return Err(StorageError::Internal(
                        "recovery scanned a last segment that is not in the list".into(),
                    ));
                }
            }
        }
        None => {
            let seg = writer::create_segment(&shared, head)?;
            let mut segs = shared.segments.write();
            let mut v = Vec::clone(&segs);
            v.push(Arc::clone(&seg));
            *segs = Arc::new(v);
            (seg, Vec::new(), 0, 0)
        }
    };
    report.segments = shared.segments.read().len();

    // --- Replay the unindexed tail -------------------------------------
    let from = indexed_through;
    let mut tail_ids = IdMap::default();
    if from < head {
        let segs = Arc::clone(&shared.segments.read());
        let mut replayed = 0u64;
        let mut mem = Memtable::new(from);
        let tail_ids = &mut tail_ids;
        shared.scan_forward(&segs, from, head, |loc, skip| {
            if skip != 0 {
                return Err(StorageError::corrupt(
                    loc.path,
                    loc.offset,
                    "index checkpoint is not at a record boundary",
                ));
            }
            let rec = loc.record;
            let n = u64::from(rec.count);
            mem.insert(
                shared.hasher.hash(&rec.stream),
                &rec.stream,
                rec.first_version,
                rec.first_position,
                n,
                loc.offset,
            );
            for (i, id) in rec.event_ids().enumerate() {
                let id =
                    id.map_err(|e| StorageError::corrupt(loc.path, loc.offset, format!("{e:?}")))?;
                let hasher = shared.hasher;
                if tail_ids
                    .insert(
                        hasher.hash_id(&id),
                        id,
                        rec.first_position + i as u64,
                        |k| hasher.hash_id(k),
                    )
                    .is_some()
                {
                    return Err(StorageError::corrupt(
                        loc.path,
                        loc.offset,
                        format!("event id {id} is stored twice in the unindexed tail"),
                    ));
                }
            }
            replayed += n;
            Ok(Visit::Continue)
        })?;
        report.replayed_events = replayed;
        shared.index.write().active = mem;
    }
    report.lifecycle_events_replayed = rebuild_lifecycle(&shared)?;
    // Erasures owed: the record, or every erased stream if it cannot be
    // trusted.
    let owed = match crate::erasures::load(&*shared.config.vfs, &shared.config.data_dir) {
        Ok(owed) => owed.unwrap_or_default(),
        Err(why) => {
            tracing::warn!(%why, "the record of erasures owed is damaged: every erased stream is erased again");
            shared
                .lifecycle
                .all()
                .iter()
                .filter(|e| e.state.erased)
                .map(|e| e.state.stream.clone())
                .collect()
        }
    };
    shared.erasures.reset(owed);
    shared
        .lifecycle
        .noted_through
        .store(shared.head(), std::sync::atomic::Ordering::Release);
    let last_timestamp = if last_timestamp == 0 && head > 0 {
        // The last segment is new: take the time from the last record.
        shared
            .read_all(
                head - 1,
                logbook_protocol::Direction::Forward,
                1.into(),
                false,
            )?
            .events
            .first()
            .map(|e| e.timestamp_us)
            .unwrap_or(0)
    } else {
        last_timestamp
    };
    report.duration = started.elapsed();
    report.last_timestamp_us = last_timestamp;
    shared
        .last_written_us
        .store(last_timestamp, std::sync::atomic::Ordering::Release);
    Ok(Opened {
        shared,
        tail_ids,
        active,
        pidx,
        records_in_segment: records,
        last_timestamp,
        lock,
        report,
    })
}

/// Rebuilds the published lifecycle states: the snapshot, then the `$$`
/// events from its `through` to the head (the whole log if there is no
/// snapshot, unless the log is empty: a new store writes an empty one).
/// Returns the number of lifecycle events replayed.
fn rebuild_lifecycle(shared: &Arc<Shared>) -> Result<u64, StorageError> {
    use crate::lifecycle::Lifecycles;
    use logbook_protocol::lifecycle::meta_target;
    let vfs = &*shared.config.vfs;
    let head = shared.head();
    // A snapshot that knows of events the log no longer has (a tail lost
    // with `Durability::Os`, or cut by recovery) is not used: its states
    // would hide later ones.
    let snapshot =
        Lifecycles::load_snapshot(vfs, &shared.index_dir).filter(|(through, seen_head, states)| {
            let fits = *through <= head
                && *seen_head <= head
                && states.iter().all(|s| s.meta_position < head);
            if !fits {
                tracing::warn!(
                    "lifecycle snapshot is ahead of the log: rebuilding it from the log"
                );
            }
            fits
        });
    let rebuilt = snapshot.is_none() && head > 0;
    let through = match snapshot {
        Some((through, _, states)) => {
            shared.lifecycle.load(&shared.hasher, states);
            through
        }
        None => 0,
    };
    let mut replayed = 0u64;
    if through < head {
        let segs = Arc::clone(&shared.segments.read());
        shared.scan_forward(&segs, through, head, |loc, skip| {
            let rec = loc.record;
            let Some(target) = meta_target(&rec.stream) else {
                // Streams with a state: their last version (their events
                // may be removed later, the version stays taken).
                if !shared.lifecycle.is_empty() {
                    let last = rec.first_version + u64::from(rec.count) - 1;
                    shared
                        .lifecycle
                        .note_last(shared.hasher.hash(&rec.stream), &rec.stream, last);
                }
                return Ok(Visit::Continue);
            };
            // Older states a replica's scavenge kept the ids of.
            if rec.is_removed() {
                return Ok(Visit::Continue);
            }
            let hash = shared.hasher.hash(target);
            for e in loc.events().skip(skip) {
                let e = e?;
                let state =
                    crate::lifecycle::recorded_state(target, e.event_type.as_str(), &e.data);
                let Some(state) = state else {
                    // A `$$` stream a client wrote before such names were
                    // reserved: not a lifecycle event.
                    tracing::warn!(stream = %rec.stream, position = e.position.0, "ignoring an event of a `$$` stream that is not a lifecycle state");
                    continue;
                };
                shared
                    .lifecycle
                    .apply(hash, state, e.position.0, e.version.0, None);
                replayed += 1;
            }
            Ok(Visit::Continue)
        })?;
    }
    if rebuilt || head == 0 {
        // Written at once: a snapshot left behind (rejected, or none) must
        // not be read by a later start.
        shared
            .lifecycle
            .store_snapshot(vfs, &shared.index_dir, head, || head)?;
    }
    Ok(replayed)
}

/// A random seed for a new store's stream hash.
fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|e| {
        // No OS randomness: fall back to what std's hash maps use (keys
        // from the OS once per process, or the clock). Collisions would
        // still be harmless, only slower.
        tracing::warn!(error = %e, "no OS randomness for the stream hash seed");
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    })
}

/// Loads the MANIFEST and its tables, or decides to rebuild the index (from
/// an empty one), and removes index files the manifest does not list.
fn load_index(
    config: &StoreConfig,
    dir: &Path,
    head: u64,
    report: &mut RecoveryReport,
) -> Result<(Manifest, Vec<Arc<Table>>), StorageError> {
    let vfs = &*config.vfs;
    let loaded: Result<(Manifest, Vec<Arc<Table>>), String> = (|| {
        let m = match Manifest::load(vfs, dir) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok((Manifest::default(), Vec::new())),
            Err(e) => return Err(e.to_string()),
        };
        let mut tables = Vec::with_capacity(m.tables.len());
        let mut expect = 0u64;
        for &id in &m.tables {
            let t = Table::open(vfs, dir, id).map_err(|e| e.to_string())?;
            if !t.has_names() {
                // Tables of earlier builds have no stream names for the
                // catalog: one rebuild from the log writes them (a single
                // read of the log, at the first start of this build).
                return Err(format!(
                    "index table {id} is of format {} (no stream names)",
                    t.format
                ));
            }
            if t.start_position != expect {
                return Err(format!(
                    "index table {id} starts at {}, expected {expect}",
                    t.start_position
                ));
            }
            expect = t.end_position;
            tables.push(Arc::new(t));
        }
        if expect != m.indexed_through {
            return Err(format!(
                "index tables end at {expect}, the manifest says {}",
                m.indexed_through
            ));
        }
        if m.indexed_through > head {
            return Err(format!(
                "index covers position {} but the log ends at {head}",
                m.indexed_through
            ));
        }
        if m.tables.iter().any(|&id| id >= m.next_table_id) {
            return Err("manifest's next table id is not above its tables".into());
        }
        let mut m = m;
        if m.streams.is_none() {
            // A version 1 manifest did not count streams: count the first
            // events in the tables, once (the next flush stores the count).
            // A table that cannot be read is rebuilt like any damage.
            let mut n = 0u64;
            for t in &tables {
                for e in t.iter() {
                    n += u64::from(e.map_err(|e| e.to_string())?.1.version == 0);
                }
            }
            m.streams = Some(n);
        }
        Ok((m, tables))
    })();
    let (manifest, tables) = match loaded {
        Ok(x) => x,
        Err(reason) => {
            tracing::warn!(%reason, "rebuilding the stream index from the log");
            report.index_rebuilt = Some(reason);
            let m = Manifest::default();
            m.store(vfs, dir)?;
            (m, Vec::new())
        }
    };
    // Remove files the manifest does not list: tables of interrupted
    // flushes or merges, and a leftover MANIFEST.tmp.
    let mut next_id = manifest.next_table_id;
    for name in vfs.list_dir(dir).map_err(io("list", dir))? {
        let keep = match layout::parse_table_file(&name).or_else(|| layout::parse_ids_file(&name)) {
            Some(id) => {
                next_id = next_id.max(id + 1);
                manifest.tables.contains(&id)
            }
            None => name == manifest::FILE_NAME || name == crate::lifecycle::SNAPSHOT,
        };
        if !keep {
            let p = dir.join(&name);
            vfs.remove_file(&p).map_err(io("remove", &p))?;
            report.removed_files.push(p);
        }
    }
    report.index_tables = tables.len();
    let mut m = manifest;
    m.next_table_id = next_id;
    m.streams = Some(m.streams.unwrap_or(0));
    Ok((m, tables))
}
