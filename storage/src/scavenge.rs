//! Scavenging: giving back the disk that removed events (deleted,
//! truncated, expired, superseded metadata) still take.
//!
//! Removal is logical and immediate (`lifecycle`): every read path skips
//! removed events from the moment their delete is acknowledged. A
//! scavenge then rewrites the sealed segments that hold them, one at a
//! time, without them:
//!
//! 1. **Point.** It appends a `$scavenge-started` event to the `$scavenges`
//!    stream and seals the active segment right after it, so that data in
//!    the active segment is reclaimable too (KurrentDB never touches its
//!    open chunk).
//! 2. **Which segments.** Those holding an event of a stream whose
//!    lifecycle changed since the last scavenge (all streams with a state,
//!    after a restart): the index gives the positions of each one's removed
//!    versions, so a scavenge with nothing to do reads no segment at all
//!    (cost O(streams changed), not O(log)). Streams with `max_age` are
//!    always considered (time removes their events).
//! 3. **Rewrite**, per segment: copy its records to `<segment>.scavenge`,
//!    dropping removed events (a record whose first events are removed is
//!    re-encoded with the rest: positions and versions unchanged), with a
//!    new pidx and footer, in format 3 (positions may skip); fsync; rename
//!    over the segment (atomic: after a crash, the old file or the new one,
//!    never a mix; a leftover `.scavenge` file is removed at start); sync
//!    the directory; swap the new segment into the list. Readers that hold
//!    the old one go on reading it (its file stays open until they drop
//!    it). Extra disk: one segment. A segment with nothing removed is left
//!    alone. Only segments the index and the lifecycle snapshot already
//!    cover are rewritten (the scavenge waits for them after the seal):
//!    what recovery rebuilds from the log past them (the ids of the
//!    unindexed tail, streams' last versions) never depends on removed
//!    events. A stream's last event is kept (reads still skip it) when no
//!    `$$` event records its version, so the log alone always says where
//!    a stream's versions go on.
//!    A rewritten segment is merged with its sealed neighbours at most half
//!    full (both sides, those the index covers) while the result fits in
//!    one segment, and runs of segments under an eighth of one are merged
//!    wherever they are (found by their sizes, without reading): the run
//!    is written as one file named after its first segment, renamed over
//!    it, and the neighbours' files are removed after (a crash in between
//!    leaves neighbours wholly inside the range of a rewritten segment,
//!    which the next start removes and `verify` passes over). So a log
//!    scavenged again and again does not become many small files, and a
//!    merge still takes one segment of extra disk at most. A failure after
//!    a rename (the directory sync, reopening the new file) leaves the
//!    segment list apart from the files: scavenges and erases are then
//!    refused until a restart reads the directory again. An erase does not
//!    merge: it rewrites exactly the segments that hold the stream.
//! 4. **Report**: a `$scavenged` event (segments, bytes before and after,
//!    events removed, duration) and the counters in Stats and /metrics.
//!
//! Index entries are not rewritten: entries into a rewritten segment have
//! stale offsets and are resolved through its pidx (`read::locate`), and
//! those of removed events find nothing and are passed over. Event ids of
//! removed events stay in the id index: ids are never reused, and an append
//! reusing one is refused as a duplicate.
//!
//! An erase (`Store::erase`) is a hard delete sealed at once, then a rewrite
//! of exactly the segments that hold the stream's events (and its older
//! metadata events).
//!
//! **On a replica of a cluster** (`StoreConfig::keep_removed_ids`) the log
//! is the cluster's and must stay the same on every replica, whatever
//! each scavenged: a scavenge appends nothing and seals nothing (it
//! rewrites the segments sealed already), and instead of dropping a
//! record all of whose events are removed it keeps their ids, with the
//! record's stream, positions, versions and time
//! (`record::FLAG_REMOVED`, `Plan::Stub`); a record some of whose
//! events are live is kept whole, and a metadata stream's older states are
//! kept unless the stream was erased. So positions have no holes, a
//! replica can copy the log record by record from any other (`ingest`),
//! and every replica refuses a reused id alike (KurrentDB's scavenges
//! leave holes, and its replicas copy chunk files instead; Logbook's ids
//! are unique for ever, which the copy must carry). An erase there is a
//! replicated tombstone, then each replica's own rewrite
//! (`Store::finish_erasures`, owed durably: `erasures`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use logbook_protocol::lifecycle::meta_target;
use logbook_protocol::{Direction, NewEvent};

use crate::error::StorageError;
use crate::fs::OpenMode;
use crate::lifecycle::Window;
use crate::record::{self, Record};
use crate::segment::{
    self, FORMAT_VERSION_GAPS, Footer, HEADER_LEN, Header, PIDX_INTERVAL, PidxEntry, RecordWalk,
    Segment,
};
use crate::shared::Shared;

/// Suffix of a segment being rewritten.
pub const TMP_SUFFIX: &str = ".scavenge";
/// Bytes written between two throttle checks.
const CHUNK: usize = 1 << 20;
/// Bytes written between two fdatasyncs of a segment being rewritten.
const SYNC_EVERY: u64 = 8 << 20;

/// How a scavenge runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScavengeOptions {
    /// Most bytes per second it reads and writes (`None`: as fast as the
    /// disk goes). Appends and reads share the disk with it.
    pub max_bytes_per_sec: Option<u64>,
}

/// What a scavenge (or an erase) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScavengeReport {
    /// Segments it considered (held a removed event, by the index).
    pub segments_considered: u64,
    /// Segments it rewrote (merged ones included).
    pub segments_rewritten: u64,
    /// Of those, segments merged into a neighbour (gone as files).
    pub segments_merged: u64,
    /// Events it removed from disk.
    pub events_removed: u64,
    /// Bytes of the segments it rewrote, before.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
    /// How long it took.
    pub duration: Duration,
}

impl ScavengeReport {
    fn add(&mut self, r: Rewrite) {
        self.segments_rewritten += u64::from(r.rewritten) + r.merged;
        self.segments_merged += r.merged;
        self.events_removed += r.events_removed;
        self.bytes_before += r.bytes_before;
        self.bytes_after += r.bytes_after;
    }

    /// The report as JSON (the data of the `$scavenged` event).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"segments_considered\":{},\"segments_rewritten\":{},\"segments_merged\":{},\"events_removed\":{},\"bytes_before\":{},\"bytes_after\":{},\"duration_ms\":{}}}",
            self.segments_considered,
            self.segments_rewritten,
            self.segments_merged,
            self.events_removed,
            self.bytes_before,
            self.bytes_after,
            self.duration.as_millis()
        )
    }
}

/// What a rewrite does with one record ([`Shared::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Copies it as it is.
    Keep,
    /// Leaves it out.
    Drop,
    /// Keeps its events from version `first_live` on.
    Trim { first_live: u64 },
    /// Keeps its events' ids and content hashes only
    /// ([`record::FLAG_REMOVED`]).
    Stub,
    /// An older state of an erased stream: kept as a state, without its
    /// custom metadata.
    Scrub,
}

/// An older state of an erased stream without its custom metadata, if
/// `rec` is one that has some (see [`Plan::Scrub`]).
fn scrubbed(rec: &Record) -> Option<NewEvent> {
    let target = meta_target(&rec.stream)?;
    let e = rec.events().next()?.ok()?;
    let mut state = crate::lifecycle::recorded_state(target, &e.event_type, &e.data)?;
    if state.metadata.custom.is_empty() {
        return None;
    }
    state.metadata.custom.clear();
    Some(NewEvent::new(e.id, e.event_type, state.to_json()).with_metadata(e.metadata))
}

/// The events a rewrite writes for `located` under `plan` (none: the
/// record goes).
pub(crate) fn rewritten(
    located: &crate::read::Located<'_>,
    plan: Plan,
) -> Result<Vec<NewEvent>, StorageError> {
    match plan {
        Plan::Drop => Ok(Vec::new()),
        Plan::Stub => located.removed_events(),
        Plan::Scrub => Ok(scrubbed(located.record).into_iter().collect()),
        Plan::Keep | Plan::Trim { .. } => located
            .events()
            .filter(|e| {
                e.as_ref().map_or(true, |e| match plan {
                    Plan::Trim { first_live } => e.version.0 >= first_live,
                    _ => true,
                })
            })
            .map(|e| e.map(|e| NewEvent::new(e.id, e.event_type, e.data).with_metadata(e.metadata)))
            .collect(),
    }
}

/// What rewriting one segment did.
#[derive(Clone, Copy, Debug, Default)]
struct Rewrite {
    rewritten: bool,
    /// Segments merged into the first of its run.
    merged: u64,
    events_removed: u64,
    bytes_before: u64,
    bytes_after: u64,
}

/// Paces writes to a rate.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Waits until `bytes` more are due at the rate, in slices, so that a
    /// store closing meanwhile (`closing`) is not kept waiting.
    fn spend(&mut self, bytes: u64, closing: &std::sync::atomic::AtomicBool) {
        self.bytes += bytes;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            while let Some(wait) = due.checked_sub(self.started.elapsed()) {
                if closing.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
        }
    }
}

impl Shared {
    /// Which events of `rec` are live now (see `lifecycle`): the record's
    /// stream's window, or for a metadata stream `$$S`, its latest event
    /// only (each holds the whole state, so older ones are superseded).
    pub(crate) fn window_of(&self, rec: &Record, now_us: i64) -> Window {
        if rec.is_removed() {
            return Window::None;
        }
        self.window_for(
            &rec.stream,
            rec.first_version,
            u64::from(rec.count),
            rec.timestamp_us,
            now_us,
        )
    }

    /// [`Shared::window_of`] for `count` events of `stream` from version
    /// `first`, committed at `timestamp_us`.
    pub(crate) fn window_for(
        &self,
        stream: &str,
        first: u64,
        count: u64,
        timestamp_us: i64,
        now_us: i64,
    ) -> Window {
        if self.lifecycle.is_empty() {
            return Window::All;
        }
        if let Some(target) = meta_target(stream) {
            let Some(e) = self.lifecycle_of(target) else {
                return Window::All;
            };
            return if e.meta_version >= first + count {
                Window::None
            } else if e.meta_version <= first {
                Window::All
            } else {
                Window::From {
                    first_live: e.meta_version,
                }
            };
        }
        let entry = self.lifecycle_of(stream);
        Window::of(entry.as_deref(), first, count, timestamp_us, now_us)
    }

    /// The positions of index entries of stream `name` (and of streams
    /// whose hash collides with it: harmless here) with versions below
    /// `below`.
    fn positions_below(&self, name: &str, below: u64) -> Result<Vec<u64>, StorageError> {
        let hash = self.hasher.hash(name);
        let head = self.head();
        let mut out = Vec::new();
        let mut from_memtable = |m: &crate::index::memtable::Memtable| {
            let mut exact = Vec::new();
            m.range(
                hash,
                name,
                0,
                Direction::Forward,
                usize::MAX,
                head,
                &mut exact,
            );
            out.extend(
                exact
                    .iter()
                    .take_while(|e| e.version < below)
                    .map(|e| e.position),
            );
        };
        let (tables, frozen) = {
            let g = self.index.read();
            from_memtable(&g.active);
            (Arc::clone(&g.tables), g.frozen.clone())
        };
        for m in frozen {
            from_memtable(&m);
        }
        let mut buf = Vec::new();
        for t in tables.iter() {
            if !t.may_contain(hash) {
                continue;
            }
            let mut cursor = (0u64, 0u64);
            loop {
                buf.clear();
                t.range(hash, cursor, Direction::Forward, 4096, &mut buf)?;
                let mut done = buf.len() < 4096;
                for (_, e) in &buf {
                    if e.version >= below {
                        done = true;
                        break;
                    }
                    out.push(e.position);
                }
                match buf.last() {
                    Some((_, last)) if !done => cursor = (last.version, last.position + 1),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// The sealed segments (by first position) ending at or before
    /// `sealed` (what the index and the lifecycle snapshot cover) holding
    /// events of `streams` that a scavenge may remove: versions below
    /// their first live one
    /// (all of a hard-deleted stream, any for one with `max_age`), and
    /// their metadata streams' older events. With them, the streams that
    /// have such events past `sealed` too (for the next scavenge).
    pub(crate) fn segments_to_scavenge(
        &self,
        streams: &[String],
        sealed: u64,
    ) -> Result<(BTreeSet<u64>, Vec<String>), StorageError> {
        let segs = Arc::clone(&self.segments.read());
        let mut out = BTreeSet::new();
        let mut later = Vec::new();
        for name in streams {
            let Some(e) = self.lifecycle_of(name) else {
                continue;
            };
            // Versions below `below` may go: all of a hard-deleted stream;
            // with an age limit, those older than it (found by a bounded
            // search, so that a scavenge does not read every segment that
            // holds a stream with `max_age` each time it runs).
            let below = if e.state.is_hard_deleted() {
                u64::MAX
            } else {
                match (e.state.min_timestamp(self.removal_now_us()), e.last()) {
                    (Some(min_ts), Some(last)) if e.first_live() <= last => {
                        self.first_younger(name, e.first_live(), last, min_ts)?
                    }
                    _ => e.first_live(),
                }
            };
            let mut positions = self.positions_below(name, below)?;
            // A replica keeps the older states unless the stream was
            // erased (`plan`).
            if !self.config.keep_removed_ids || e.state.erased {
                positions.extend(self.positions_below(
                    &logbook_protocol::lifecycle::meta_stream(name),
                    e.meta_version,
                )?);
            }
            if positions.iter().any(|p| *p >= sealed) {
                later.push(name.clone());
            }
            for p in positions {
                if let Some(i) = Shared::segment_index_of(&segs, p)
                    && let Some(seg) = segs.get(i)
                    && seg.is_sealed()
                    && seg.end_position() <= sealed
                {
                    out.insert(seg.first_position);
                }
            }
        }
        Ok((out, later))
    }

    /// Index in `segs` of the segment holding `position`.
    pub(crate) fn segment_index_of(segs: &[Arc<Segment>], position: u64) -> Option<usize> {
        segs.partition_point(|s| s.first_position <= position)
            .checked_sub(1)
    }

    /// Which events of `rec` a rewrite keeps: the live ones, and a
    /// stream's last event when its `$$S` state does not record that
    /// version (removed by max_age, or below a truncation past the end,
    /// after the last lifecycle event), so that the log itself always
    /// says where the stream's versions stand (reads still skip it).
    pub(crate) fn scavenge_window(&self, rec: &Record, now_us: i64) -> Window {
        let w = self.window_of(rec, now_us);
        if w == Window::All || meta_target(&rec.stream).is_some() {
            return w;
        }
        let Some(e) = self.lifecycle_of(&rec.stream) else {
            return w;
        };
        let Some(last) = e.last() else {
            return w;
        };
        let end = rec.first_version + u64::from(rec.count);
        let recorded = e.state.last_version.is_some_and(|l| l >= last);
        if e.state.is_hard_deleted() || recorded || last < rec.first_version || last >= end {
            return w;
        }
        match w {
            Window::From { first_live } if first_live <= last => w,
            _ => Window::From { first_live: last },
        }
    }

    /// What a rewrite does with `rec` now: on one server, what
    /// [`Shared::scavenge_window`] removes goes; on a replica of a cluster
    /// (`keep_removed_ids`), a record all of whose events are removed
    /// keeps their ids and content hashes ([`record::FLAG_REMOVED`]) and
    /// any other is kept whole, and the older states of a metadata stream
    /// are kept as states: a replica that copies this log up to an earlier
    /// point decides the next appends and lifecycle changes by the state
    /// it had then. Those of an erased stream lose their custom metadata
    /// (which no decision reads).
    pub(crate) fn plan(&self, rec: &Record, now_us: i64) -> Plan {
        let keep_ids = self.config.keep_removed_ids;
        if rec.is_removed() {
            return if keep_ids { Plan::Keep } else { Plan::Drop };
        }
        match (self.scavenge_window(rec, now_us), keep_ids) {
            (Window::All, _) => Plan::Keep,
            (Window::None, false) => Plan::Drop,
            (Window::From { first_live }, false) => Plan::Trim { first_live },
            (Window::From { .. }, true) => Plan::Keep,
            (Window::None, true) => match meta_target(&rec.stream) {
                None => Plan::Stub,
                Some(target) => {
                    let erased = self.lifecycle_of(target).is_some_and(|e| e.state.erased);
                    if erased && scrubbed(rec).is_some() {
                        Plan::Scrub
                    } else {
                        Plan::Keep
                    }
                }
            },
        }
    }

    /// Removed events of `seg` now, and the bytes its records would keep
    /// (a first pass over it: a segment with nothing removed costs a read,
    /// not a write).
    fn removable(
        &self,
        seg: &Segment,
        reader: &mut segment::RecordReader,
        now: i64,
    ) -> Result<(u64, u64), StorageError> {
        let (mut removed, mut kept) = (0u64, 0u64);
        let mut walk = RecordWalk::new(seg, HEADER_LEN, seg.data_end(), None);
        while let Some((_, rec)) = walk.next(reader)? {
            let count = u64::from(rec.count);
            // What the kept part re-encodes to: the record's fixed part,
            // and its events' share of the rest.
            let fixed = (record::HEADER_LEN + rec.stream.len()) as u64;
            let len = rec.len() as u64;
            let (gone, keeps) = match self.plan(&rec, now) {
                Plan::Keep => (0, len),
                Plan::Drop => (count, 0),
                Plan::Stub => (
                    count,
                    fixed + count * (record::EVENT_OVERHEAD as u64 + 8) + record::SUFFIX_LEN as u64,
                ),
                Plan::Scrub => (1, len),
                Plan::Trim { first_live } => {
                    let g = first_live - rec.first_version;
                    (g, fixed + len.saturating_sub(fixed) * (count - g) / count)
                }
            };
            removed += gone;
            kept += keeps;
        }
        Ok((removed, kept))
    }

    /// Rewrites `run`, consecutive sealed segments, as one segment named
    /// after the first, without their removed events (see the module's
    /// doc): a rewrite of one segment, or a merge of small neighbours.
    fn rewrite_run(
        &self,
        run: &[Arc<Segment>],
        removed: u64,
        throttle: &mut Throttle,
    ) -> Result<Rewrite, StorageError> {
        let (Some(old), Some(last)) = (run.first().cloned(), run.last().cloned()) else {
            return Ok(Rewrite::default());
        };
        let vfs = &*self.config.vfs;
        let now = self.removal_now_us();
        let mut reader = self.reader(self.config.read_chunk_bytes);
        let mut bytes_before = 0u64;
        for seg in run {
            bytes_before += seg
                .sealed_len()
                .map_err(|e| StorageError::io("stat", &seg.path, e))?;
        }
        let tmp = old.path.with_extension(format!("seg{TMP_SUFFIX}"));
        let io = |op: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e| StorageError::io(op, path, e)
        };
        if vfs.exists(&tmp) {
            vfs.remove_file(&tmp).map_err(io("remove", &tmp))?;
        }
        let file = vfs
            .open(&tmp, OpenMode::CreateNew)
            .map_err(io("create", &tmp))?;
        let result = (|| -> Result<(Header, Footer, Vec<PidxEntry>), StorageError> {
            let header = Header {
                first_position: old.first_position,
                nonce: Some(crate::writer::segment_nonce()),
                gaps: true,
            };
            let seed = header.crc_seed();
            file.write_all_at(
                &segment::encode_header_version(
                    old.first_position,
                    header.nonce.unwrap_or(0),
                    FORMAT_VERSION_GAPS,
                ),
                0,
            )
            .map_err(io("write header", &tmp))?;
            let mut offset = HEADER_LEN;
            let mut synced = HEADER_LEN;
            let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + (64 << 10));
            let mut pidx: Vec<PidxEntry> = Vec::new();
            let mut records = 0u64;
            for seg in run {
                let mut walk = RecordWalk::new(seg, HEADER_LEN, seg.data_end(), None);
                while let Some((at, rec)) = walk.next(&mut reader)? {
                    let plan = self.plan(&rec, now);
                    let located = crate::read::Located {
                        record: &rec,
                        path: &seg.path,
                        offset: at,
                    };
                    if plan == Plan::Drop {
                        continue;
                    }
                    let kept = rewritten(&located, plan)?;
                    let skip = u64::from(rec.count) - kept.len() as u64;
                    let first_position = rec.first_position + skip;
                    let at_out = offset + buf.len() as u64;
                    if pidx
                        .last()
                        .is_none_or(|p| at_out >= p.offset + PIDX_INTERVAL)
                    {
                        pidx.push(PidxEntry {
                            position: first_position,
                            offset: at_out,
                        });
                    }
                    let start = buf.len();
                    record::encode(
                        &mut buf,
                        seed,
                        &rec.stream,
                        first_position,
                        rec.first_version + skip,
                        rec.timestamp_us,
                        &kept,
                    );
                    if plan == Plan::Stub || rec.is_removed() {
                        record::set_flags(&mut buf, start, seed, record::FLAG_REMOVED);
                    }
                    records += 1;
                    if buf.len() >= CHUNK {
                        file.write_all_at(&buf, offset).map_err(io("write", &tmp))?;
                        offset += buf.len() as u64;
                        throttle.spend(buf.len() as u64, &self.closing);
                        buf.clear();
                        // Written back as it goes: dirty pages piling up
                        // would be flushed in a burst that stalls the
                        // appends' fdatasyncs (ext4 commits the journal in
                        // order).
                        if offset - synced >= SYNC_EVERY {
                            file.sync_data().map_err(io("fdatasync", &tmp))?;
                            synced = offset;
                        }
                    }
                }
            }
            file.write_all_at(&buf, offset).map_err(io("write", &tmp))?;
            offset += buf.len() as u64;
            let footer = Footer {
                data_end: offset,
                record_count: records,
                first_position: old.first_position,
                end_position: last.end_position(),
                pidx_count: pidx.len() as u32,
                pidx_crc: segment::pidx_crc(&pidx),
            };
            let seal = segment::encode_seal(&pidx, &footer);
            file.write_all_at(&seal, offset)
                .map_err(io("write footer", &tmp))?;
            throttle.spend(buf.len() as u64 + seal.len() as u64, &self.closing);
            // On disk before the rename exposes it.
            file.sync_data().map_err(io("fdatasync", &tmp))?;
            Ok((header, footer, pidx))
        })();
        file.release();
        drop(file);
        let (header, footer, pidx) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = vfs.remove_file(&tmp);
                return Err(e);
            }
        };
        let hook = |step| {
            if let Some(hook) = &self.config.testing.scavenge_hook {
                (hook.0)(step);
            }
        };
        hook(ScavengeStep::Written);
        // From the rename on, the first segment covers the whole run: the
        // others are leftovers, removed here or (after a crash) at start.
        vfs.rename(&tmp, &old.path)
            .map_err(io("rename", &old.path))?;
        // Past the rename, a failure leaves the files and the segment list
        // apart (the list still names the old files, which readers keep
        // reading): no rewrite may build on that list until a restart
        // reads the directory again.
        let poison = |e: StorageError| {
            self.rewrites_poisoned.store(true, Ordering::Release);
            e
        };
        vfs.sync_dir(&self.log_dir)
            .map_err(io("sync dir", &self.log_dir))
            .map_err(poison)?;
        hook(ScavengeStep::Renamed);
        let file = vfs
            .open(&old.path, OpenMode::Read)
            .map_err(io("open", &old.path))
            .map_err(poison)?;
        let bytes_after =
            footer.data_end + segment::FOOTER_LEN + pidx.len() as u64 * segment::PIDX_ENTRY_LEN;
        let new = Arc::new(Segment::new(
            old.path.clone(),
            file,
            header,
            footer.data_end,
            footer.end_position,
            pidx,
            true,
        ));
        new.track(&self.pidx_budget);
        {
            let mut segs = self.segments.write();
            let mut v = Vec::clone(&segs);
            let at = v.iter().position(|s| Arc::ptr_eq(s, &old));
            let whole = at.is_some_and(|at| {
                v.get(at..at + run.len())
                    .is_some_and(|w| w.iter().zip(run).all(|(a, b)| Arc::ptr_eq(a, b)))
            });
            let Some(at) = at.filter(|_| whole) else {
                drop(segs);
                return Err(poison(StorageError::Internal(
                    "a rewritten run left the segment list".into(),
                )));
            };
            v.splice(at..at + run.len(), [Arc::clone(&new)]);
            *segs = Arc::new(v);
        }
        // Readers that hold the others keep them open (the file cache
        // pins a file before it is removed). One that cannot be removed
        // now is a leftover the next start removes (its range is the new
        // segment's): the scavenge goes on.
        if run.len() > 1 {
            for seg in run.iter().skip(1) {
                if let Err(e) = vfs.remove_file(&seg.path) {
                    tracing::warn!(file = %seg.path.display(), error = %e, "could not remove a merged segment; the next start removes it");
                }
                hook(ScavengeStep::Removed);
            }
            if let Err(e) = vfs.sync_dir(&self.log_dir) {
                tracing::warn!(error = %e, "could not sync the log directory after a merge; the next start finishes it");
            }
        }
        self.counters
            .scavenge_segments
            .fetch_add(run.len() as u64, Ordering::Relaxed);
        self.counters
            .scavenge_bytes_reclaimed
            .fetch_add(bytes_before.saturating_sub(bytes_after), Ordering::Relaxed);
        Ok(Rewrite {
            rewritten: true,
            merged: run.len() as u64 - 1,
            events_removed: removed,
            bytes_before,
            bytes_after,
        })
    }

    /// Rewrites the sealed segments starting at `firsts`, in log order; with
    /// `merge`, each with its small sealed neighbours (up to `sealed`, the
    /// end of what the index covers) while the result fits in a segment,
    /// then runs of small sealed segments left anywhere (by their sizes: no
    /// read unless a run is found).
    pub(crate) fn rewrite_segments(
        &self,
        firsts: &BTreeSet<u64>,
        sealed: u64,
        merge: bool,
        options: ScavengeOptions,
    ) -> Result<ScavengeReport, StorageError> {
        if self.rewrites_poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Busy(
                "an earlier segment rewrite failed after its rename (see the log); restart the server to complete it"
                    .into(),
            ));
        }
        let started = Instant::now();
        let mut throttle = Throttle::new(options.max_bytes_per_sec);
        let mut report = ScavengeReport {
            segments_considered: firsts.len() as u64,
            ..ScavengeReport::default()
        };
        self.counters
            .scavenge_todo
            .store(firsts.len() as u64, Ordering::Relaxed);
        self.counters.scavenge_done.store(0, Ordering::Relaxed);
        let mut reader = self.reader(self.config.read_chunk_bytes);
        let limit = self.config.segment_bytes;
        // What a merged file adds to its records: header, footer, and a
        // pidx entry per 4 KiB or so.
        let overhead = HEADER_LEN + segment::FOOTER_LEN + limit / PIDX_INTERVAL * 16;
        let mergeable = |s: &Arc<Segment>| s.is_sealed() && s.end_position() <= sealed;
        let len_of = |s: &Arc<Segment>| s.sealed_len().unwrap_or(u64::MAX);
        // Segments rewritten or merged here, by first position (a later
        // candidate already merged into an earlier run is done).
        let mut done: BTreeSet<u64> = BTreeSet::new();
        for &first in firsts {
            if self.closing.load(Ordering::Relaxed) {
                return Err(StorageError::ShuttingDown);
            }
            if done.contains(&first) {
                self.counters.scavenge_done.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let segs = Arc::clone(&self.segments.read());
            let Some(at) = segs
                .iter()
                .position(|s| s.first_position == first && s.is_sealed())
            else {
                self.counters.scavenge_done.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let now = self.removal_now_us();
            let Some(seg) = segs.get(at) else { continue };
            let (mut removed, kept) = self.removable(seg, &mut reader, now)?;
            let mut run = vec![Arc::clone(seg)];
            if merge {
                // Neighbours at most half full join while the result fits:
                // before it (not ones written here: those were sized when
                // they were written), then after it.
                let small = |len: u64| len <= limit / 2;
                let mut total = kept + overhead;
                let mut lo = at;
                while let Some(prev) = lo.checked_sub(1).and_then(|i| segs.get(i)) {
                    let len = len_of(prev);
                    if !mergeable(prev)
                        || done.contains(&prev.first_position)
                        || !small(len)
                        || total.saturating_add(len) > limit
                    {
                        break;
                    }
                    total += len;
                    lo -= 1;
                    run.insert(0, Arc::clone(prev));
                }
                let mut hi = at + 1;
                while let Some(next) = segs.get(hi) {
                    let len = len_of(next);
                    if !mergeable(next) {
                        break;
                    }
                    let (gone, keeps) = if firsts.contains(&next.first_position) {
                        self.removable(next, &mut reader, now)?
                    } else {
                        (0, len)
                    };
                    if !small(keeps) || total.saturating_add(keeps) > limit {
                        break;
                    }
                    total += keeps;
                    removed += gone;
                    hi += 1;
                    run.push(Arc::clone(next));
                }
            }
            if removed > 0 || run.len() > 1 {
                report.add(self.rewrite_run(&run, removed, &mut throttle)?);
            }
            done.extend(run.iter().map(|s| s.first_position));
            self.counters.scavenge_done.fetch_add(1, Ordering::Relaxed);
        }
        if merge {
            // Runs of small segments anywhere (those the scavenges' own
            // seals leave, or earlier rewrites): each at most an eighth of
            // a segment, merged while the result stays under a segment, so
            // a log does not turn into many small files and no run is
            // rewritten again and again once it is big.
            let tiny = limit / 8;
            let segs = Arc::clone(&self.segments.read());
            let mut i = 0;
            while i < segs.len() {
                if self.closing.load(Ordering::Relaxed) {
                    return Err(StorageError::ShuttingDown);
                }
                let mut run: Vec<Arc<Segment>> = Vec::new();
                let mut total = overhead;
                while let Some(s) = segs.get(i + run.len()) {
                    let len = len_of(s);
                    if !mergeable(s) || len > tiny || total.saturating_add(len) > limit {
                        break;
                    }
                    total += len;
                    run.push(Arc::clone(s));
                }
                if run.len() > 1 {
                    let now = self.removal_now_us();
                    let mut removed = 0;
                    for s in &run {
                        removed += self.removable(s, &mut reader, now)?.0;
                    }
                    report.add(self.rewrite_run(&run, removed, &mut throttle)?);
                }
                i += run.len().max(1);
            }
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Every stream a scavenge must look at now, taking them from the
    /// dirty set (all are given back with `Lifecycles::mark_all_dirty` if
    /// the scavenge fails).
    pub(crate) fn streams_to_scavenge(&self) -> Vec<String> {
        self.lifecycle.take_dirty()
    }
}

/// Steps of a segment rewrite a test hook sees.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScavengeStep {
    /// The new file is written and synced, not renamed yet.
    Written,
    /// Renamed over the old one (the first of a merged run), directory
    /// synced.
    Renamed,
    /// One merged neighbour's file removed (not synced yet).
    Removed,
}
