//! The read paths: the global log forward and backward, and a stream's
//! events through the index.
//!
//! Readers take no lock across I/O: they load the durable head, snapshot
//! the segment list and the index (cloning `Arc`s under a short read lock),
//! and then read files. Everything they can reach through the snapshot is
//! immutable or append-only, and bounded by the durable head they loaded
//! first, so they never see an event that is not synced.

use std::sync::Arc;

use logbook_protocol::{Direction, NewEvent, RecordedEvent};

use crate::error::StorageError;
use crate::index::memtable::{Entry, Memtable};
use crate::index::table::Table;
use crate::lifecycle::Window;
use crate::record::Record;
use crate::segment::{HEADER_LEN, RecordWalk, Segment};
use crate::shared::Shared;

/// How much one read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// Most events.
    pub events: usize,
    /// Stop once the events read hold this many bytes (stream, type,
    /// metadata and data, plus a fixed 48 per event); at least one event is
    /// always returned.
    pub bytes: usize,
}

impl From<usize> for ReadLimit {
    /// A limit of `events` events and no byte limit.
    fn from(events: usize) -> ReadLimit {
        ReadLimit {
            events,
            bytes: usize::MAX,
        }
    }
}

/// Bytes read so far against a [`ReadLimit`].
struct Budget {
    left: usize,
    exhausted: bool,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        Budget {
            left: bytes,
            exhausted: false,
        }
    }

    /// Charges `e`; true once the budget is spent.
    fn take(&mut self, e: &RecordedEvent) -> bool {
        let cost = 48 + e.stream.len() + e.event_type.len() + e.metadata.len() + e.data.len();
        self.left = self.left.saturating_sub(cost);
        self.exhausted = self.left == 0;
        self.exhausted
    }
}

/// A record and where it was read from, for error messages.
pub(crate) struct Located<'a> {
    pub record: &'a Record,
    pub path: &'a std::path::Path,
    pub offset: u64,
}

impl Located<'_> {
    /// Decodes the record's events, reporting failures with file and offset.
    pub fn events(&self) -> impl Iterator<Item = Result<RecordedEvent, StorageError>> + '_ {
        self.record
            .events()
            .map(|r| r.map_err(|e| StorageError::corrupt(self.path, self.offset, format!("{e:?}"))))
    }

    /// What the record's events keep once removed: their ids and content
    /// hashes ([`crate::record::FLAG_REMOVED`]); a removed record's, as
    /// they are.
    pub fn removed_events(&self) -> Result<Vec<NewEvent>, StorageError> {
        let removed = self.record.is_removed();
        self.events()
            .map(|e| {
                e.map(|e| {
                    if removed {
                        NewEvent::new(e.id, e.event_type, e.data)
                    } else {
                        crate::record::removed_event(e.id, &e.event_type, &e.metadata, &e.data)
                    }
                })
            })
            .collect()
    }
}

/// Outcome of visiting one entry of a stream.
pub(crate) enum Visit {
    Continue,
    Stop,
}

/// Most events a read of the global log passes over (removed ones) after
/// the last one it returns: a read over a long removed range returns
/// early, with nothing, saying how far it scanned.
pub(crate) const SCAN_LIMIT: usize = 64 * 1024;

/// What [`Shared::read_all`] found.
#[derive(Debug)]
pub struct AllRead {
    /// The events, in the requested direction.
    pub events: Vec<RecordedEvent>,
    /// Whether the byte budget cut the read short.
    pub cut: bool,
    /// How far it scanned: forward, every event in `[from, through)` was
    /// looked at (and those live returned); backward, every one in
    /// `[through, from]`.
    pub through: u64,
}

/// Most index entries fetched from one source per call.
const MAX_BATCH: usize = 4096;

/// The key just past `key` in `direction`, in the (version, position)
/// order of index entries; `None` past either end of the key space.
fn step_past(key: (u64, u64), direction: Direction) -> Option<(u64, u64)> {
    let (version, position) = key;
    match direction {
        Direction::Forward => match position.checked_add(1) {
            Some(p) => Some((version, p)),
            None => Some((version.checked_add(1)?, 0)),
        },
        Direction::Backward => match position.checked_sub(1) {
            Some(p) => Some((version, p)),
            None => Some((version.checked_sub(1)?, u64::MAX)),
        },
    }
}

/// One source of index entries for a stream read.
enum Source {
    /// Entries copied from the active memtable (exact: no collisions).
    Exact(Vec<Entry>),
    Frozen(Arc<Memtable>),
    Table(Arc<Table>),
}

impl Shared {
    /// Index in `segs` of the segment holding `position`.
    fn segment_index(segs: &[Arc<Segment>], position: u64) -> Option<usize> {
        segs.partition_point(|s| s.first_position <= position)
            .checked_sub(1)
    }

    /// Reads the global log from `from` (inclusive) in `direction`, within
    /// `limit`: every event, or with `live`, only the live ones (see
    /// `lifecycle`), scanning at most [`SCAN_LIMIT`] events past the last
    /// one returned.
    pub fn read_all(
        &self,
        from: u64,
        direction: Direction,
        limit: ReadLimit,
        live: bool,
    ) -> Result<AllRead, StorageError> {
        let max = limit.events;
        let mut budget = Budget::new(limit.bytes);
        // Head first, then the segment list: every segment holding a position
        // below the head was listed before the head was published.
        let head = self.head();
        let segs = Arc::clone(&self.segments.read());
        let mut out = Vec::new();
        let mut read = AllRead {
            events: Vec::new(),
            cut: false,
            through: match direction {
                Direction::Forward => from.min(head),
                Direction::Backward => from.saturating_add(1).min(head),
            },
        };
        if max == 0 || head == 0 {
            return Ok(read);
        }
        let now = self.now_us();
        // Which of a record's events are live: all of them, unless its
        // stream has a lifecycle state (streams without one cost an atomic
        // load; with some, one hash and map lookup per record).
        let window = |rec: &Record| -> Window {
            if !live {
                return Window::All;
            }
            self.window_of(rec, now)
        };
        // Events passed over (not live) since the last one taken.
        let mut skipped = 0usize;
        match direction {
            Direction::Forward => {
                if from >= head {
                    return Ok(read);
                }
                out.reserve(max.min((head - from) as usize).min(64 * 1024));
                let mut through = from;
                let mut stopped = false;
                self.scan_forward(&segs, from, head, |rec, skip| {
                    let w = window(rec.record);
                    if w == Window::None {
                        skipped += usize::from(rec.record.count) - skip;
                        through = rec.record.end_position().min(head);
                        stopped = skipped >= SCAN_LIMIT;
                        return Ok(if stopped {
                            Visit::Stop
                        } else {
                            Visit::Continue
                        });
                    }
                    for e in rec.events().skip(skip) {
                        let e = e?;
                        if e.position.0 >= head {
                            stopped = true;
                            return Ok(Visit::Stop);
                        }
                        through = e.position.0 + 1;
                        if !w.admits(e.version.0) {
                            skipped += 1;
                            continue;
                        }
                        skipped = 0;
                        let full = budget.take(&e);
                        out.push(e);
                        if out.len() == max || full {
                            stopped = true;
                            return Ok(Visit::Stop);
                        }
                    }
                    stopped = skipped >= SCAN_LIMIT;
                    Ok(if stopped {
                        Visit::Stop
                    } else {
                        Visit::Continue
                    })
                })?;
                // A scan that ran to the end covered everything to the head
                // (a scavenge may have left nothing at the end of it).
                read.through = if stopped { through } else { head };
            }
            Direction::Backward => {
                let start = from.min(head - 1);
                let mut through = start + 1;
                let mut stopped = false;
                self.scan_backward(&segs, start, |rec, take| {
                    let w = window(rec.record);
                    if w == Window::None {
                        skipped += take;
                        through = rec.record.first_position;
                        stopped = skipped >= SCAN_LIMIT;
                        return Ok(if stopped {
                            Visit::Stop
                        } else {
                            Visit::Continue
                        });
                    }
                    let events: Vec<RecordedEvent> =
                        rec.events().take(take).collect::<Result<_, _>>()?;
                    for e in events.into_iter().rev() {
                        through = e.position.0;
                        if !w.admits(e.version.0) {
                            skipped += 1;
                            continue;
                        }
                        skipped = 0;
                        let full = budget.take(&e);
                        out.push(e);
                        if out.len() == max || full {
                            stopped = true;
                            return Ok(Visit::Stop);
                        }
                    }
                    stopped = skipped >= SCAN_LIMIT;
                    Ok(if stopped {
                        Visit::Stop
                    } else {
                        Visit::Continue
                    })
                })?;
                read.through = if stopped { through } else { 0 };
            }
        }
        read.events = out;
        read.cut = budget.exhausted;
        Ok(read)
    }

    /// Calls `visit(record, skip)` for each record from the one holding
    /// `from` up to `head`, where `skip` is the number of leading events
    /// before `from`. Checks that positions are contiguous.
    pub(crate) fn scan_forward(
        &self,
        segs: &[Arc<Segment>],
        from: u64,
        head: u64,
        mut visit: impl FnMut(&Located<'_>, usize) -> Result<Visit, StorageError>,
    ) -> Result<(), StorageError> {
        let Some(mut si) = Self::segment_index(segs, from) else {
            return Ok(());
        };
        let mut reader = self.reader(self.config.read_chunk_bytes);
        let Some(seg) = segs.get(si) else {
            return Ok(());
        };
        // Each segment's durable end is loaded after the head was (by the
        // caller), and published before it: it covers every record below
        // the head.
        let mut walk = RecordWalk::new(seg, seg.seek_offset(from)?, seg.data_end(), None);
        loop {
            let Some((at, rec)) = walk.next(&mut reader)? else {
                si += 1;
                let Some(seg) = segs.get(si) else {
                    return Ok(());
                };
                // Segments tile the log (recovery checks it): the next one
                // starts where the last one's range ended, whatever
                // records a scavenge removed at the end of it.
                walk = RecordWalk::new(seg, HEADER_LEN, seg.data_end(), Some(seg.first_position));
                continue;
            };
            if rec.first_position >= head {
                return Ok(());
            }
            if rec.end_position() <= from {
                continue;
            }
            let skip = from.saturating_sub(rec.first_position) as usize;
            let loc = Located {
                record: &rec,
                path: &walk.segment().path,
                offset: at,
            };
            if let Visit::Stop = visit(&loc, skip)? {
                return Ok(());
            }
        }
    }

    /// Calls `visit(record, take)` for each record from the one holding
    /// `start` back to the beginning of the log, where `take` is the number
    /// of leading events at or before `start`.
    fn scan_backward(
        &self,
        segs: &[Arc<Segment>],
        start: u64,
        mut visit: impl FnMut(&Located<'_>, usize) -> Result<Visit, StorageError>,
    ) -> Result<(), StorageError> {
        let Some(si) = Self::segment_index(segs, start) else {
            return Ok(());
        };
        // Backward reads fetch smaller windows: most are short.
        let mut reader = self.reader(64 << 10);
        // Find the record holding `start` by scanning forward from the pidx.
        let Some(seg) = segs.get(si) else {
            return Ok(());
        };
        // The last record starting at or before `start` (with gaps, `start`
        // may fall in a hole: then the record before it, or in an earlier
        // segment).
        let mut walk = RecordWalk::new(seg, seg.seek_offset(start)?, seg.data_end(), None);
        let mut found: Option<(u64, Record)> = None;
        while let Some((at, rec)) = walk.next(&mut reader)? {
            if rec.first_position > start {
                break;
            }
            let holds = rec.end_position() > start;
            found = Some((at, rec));
            if holds {
                break;
            }
        }
        let (rec_start, first) = match found {
            Some(f) => f,
            None if seg.gaps => {
                // Nothing at or before `start` here: go on from the end of
                // the previous segment.
                return self.scan_backward_from(
                    segs,
                    si,
                    HEADER_LEN,
                    seg.first_position,
                    &mut reader,
                    visit,
                );
            }
            None => {
                return Err(StorageError::corrupt(
                    &seg.path,
                    walk.offset(),
                    format!("no record holds position {start} below the segment's end"),
                ));
            }
        };
        let take = (start - first.first_position + 1).min(u64::from(first.count)) as usize;
        let loc = Located {
            record: &first,
            path: &seg.path,
            offset: rec_start,
        };
        if let Visit::Stop = visit(&loc, take)? {
            return Ok(());
        }
        self.scan_backward_from(
            segs,
            si,
            rec_start,
            first.first_position,
            &mut reader,
            visit,
        )
    }

    /// [`Shared::scan_backward`] on from the record at `rec_start` in
    /// segment `si`, whose first position is `expect_end`: every record
    /// before it, back to the start of the log.
    fn scan_backward_from(
        &self,
        segs: &[Arc<Segment>],
        mut si: usize,
        mut rec_start: u64,
        expect_end: u64,
        reader: &mut crate::segment::RecordReader,
        mut visit: impl FnMut(&Located<'_>, usize) -> Result<Visit, StorageError>,
    ) -> Result<(), StorageError> {
        let mut expect_end = expect_end;
        loop {
            let Some(seg) = segs.get(si) else {
                return Ok(());
            };
            if rec_start <= HEADER_LEN {
                if si == 0 {
                    return Ok(());
                }
                si -= 1;
                // Segments tile the log: the previous one's records end
                // where its range does (before it, with gaps).
                let Some(prev) = segs.get(si) else {
                    return Ok(());
                };
                rec_start = prev.data_end();
                expect_end = prev.end_position();
                continue;
            }
            let limit = seg.data_end();
            let (rec, at) = reader.record_before(seg, rec_start, limit)?;
            if rec.end_position() != expect_end && !(seg.gaps && rec.end_position() < expect_end) {
                return Err(StorageError::corrupt(
                    &seg.path,
                    at,
                    format!(
                        "record ends at position {}, expected {expect_end}",
                        rec.end_position()
                    ),
                ));
            }
            expect_end = rec.first_position;
            rec_start = at;
            let loc = Located {
                record: &rec,
                path: &seg.path,
                offset: at,
            };
            if let Visit::Stop = visit(&loc, usize::from(rec.count))? {
                return Ok(());
            }
        }
    }

    /// The record holding `position` in `seg`, and its offset, found
    /// through the pidx; `None` if there is none (a scavenge removed it).
    pub(crate) fn locate(
        &self,
        seg: &Segment,
        reader: &mut crate::segment::RecordReader,
        position: u64,
    ) -> Result<Option<(u64, Record)>, StorageError> {
        let mut walk = RecordWalk::new(seg, seg.seek_offset(position)?, seg.data_end(), None);
        while let Some((at, rec)) = walk.next(reader)? {
            if rec.end_position() > position {
                return Ok((rec.first_position <= position).then_some((at, rec)));
            }
        }
        Ok(None)
    }

    /// Visits the entries of stream `name` from version `from` in
    /// `direction`, with the record each lives in (`None`: an event a
    /// scavenge removed), until `visit` says stop. Entries of other streams
    /// whose hash collides are skipped here.
    pub(crate) fn visit_stream(
        &self,
        name: &str,
        from: u64,
        direction: Direction,
        batch_hint: usize,
        mut visit: impl FnMut(&Entry, Option<&Located<'_>>) -> Result<Visit, StorageError>,
    ) -> Result<(), StorageError> {
        let hash = self.hasher.hash(name);
        let head = self.head();
        let segs = Arc::clone(&self.segments.read());
        let mut batch = batch_hint.clamp(1, MAX_BATCH);
        let mut sources: Vec<Source> = {
            let g = self.index.read();
            // The active memtable changes under us, so its entries are copied
            // now, all that the caller may need; the other sources are
            // immutable and read in batches.
            let mut exact = Vec::new();
            g.active.range(
                hash,
                name,
                from,
                direction,
                batch_hint.max(1),
                head,
                &mut exact,
            );
            let mut s: Vec<Source> = g
                .tables
                .iter()
                .map(|t| Source::Table(Arc::clone(t)))
                .collect();
            s.extend(g.frozen.iter().map(|m| Source::Frozen(Arc::clone(m))));
            s.push(Source::Exact(exact));
            s
        };
        if direction == Direction::Backward {
            sources.reverse();
        }
        // Small windows: stream reads hop between records.
        let mut reader = self.reader(16 << 10);
        let mut cached: Option<(u64, u64, Record)> = None;
        let mut buf: Vec<(u64, Entry)> = Vec::new();
        let mut exact_buf: Vec<Entry> = Vec::new();
        for source in sources {
            // (version, position) cursor within this source.
            let mut cursor = match direction {
                Direction::Forward => (from, 0),
                Direction::Backward => (from, u64::MAX),
            };
            loop {
                let (entries, exhausted): (&[Entry], bool) = match &source {
                    Source::Exact(v) => (v.as_slice(), true),
                    Source::Frozen(m) => {
                        exact_buf.clear();
                        m.range(hash, name, cursor.0, direction, batch, head, &mut exact_buf);
                        let done = exact_buf.len() < batch;
                        if let Some(last) = exact_buf.last() {
                            cursor.0 = match direction {
                                Direction::Forward => last.version + 1,
                                Direction::Backward => last.version.saturating_sub(1),
                            };
                        }
                        let stop_at_zero = direction == Direction::Backward
                            && exact_buf.last().is_some_and(|l| l.version == 0);
                        (exact_buf.as_slice(), done || stop_at_zero)
                    }
                    Source::Table(t) => {
                        buf.clear();
                        t.range(hash, cursor, direction, batch, &mut buf)?;
                        let mut done = buf.len() < batch;
                        if let Some((_, last)) = buf.last() {
                            // Step past the last key; at the end of the key
                            // space there is nothing more to read.
                            match step_past((last.version, last.position), direction) {
                                Some(next) => cursor = next,
                                None => done = true,
                            }
                        }
                        exact_buf.clear();
                        exact_buf.extend(buf.iter().map(|(_, e)| *e));
                        (exact_buf.as_slice(), done)
                    }
                };
                for (i, e) in entries.iter().enumerate() {
                    if e.position >= head {
                        // Indexed but beyond what this reader may see.
                        continue;
                    }
                    let si = Self::segment_index(&segs, e.position).ok_or_else(|| {
                        StorageError::corrupt(
                            &self.index_dir,
                            0,
                            format!("index points at position {} before the log", e.position),
                        )
                    })?;
                    let seg = segs.get(si).ok_or_else(|| {
                        StorageError::corrupt(&self.index_dir, 0, "index points past the log")
                    })?;
                    // In a segment a scavenge rewrote, entries' offsets are
                    // stale: the record is found through the pidx, and an
                    // entry whose event it removed is passed over.
                    let offset = if seg.gaps {
                        let held = matches!(&cached, Some((s, _, r)) if *s == seg.first_position
                            && r.first_position <= e.position && e.position < r.end_position());
                        if held {
                            cached.as_ref().map_or(0, |(_, o, _)| *o)
                        } else {
                            match self.locate(seg, &mut reader, e.position)? {
                                Some((at, rec)) => {
                                    cached = Some((seg.first_position, at, rec));
                                    at
                                }
                                None => {
                                    if let Visit::Stop = visit(e, None)? {
                                        return Ok(());
                                    }
                                    continue;
                                }
                            }
                        }
                    } else {
                        e.offset
                    };
                    let hit = matches!(&cached, Some((s, o, _)) if *s == seg.first_position && *o == offset);
                    if !hit {
                        // Read ahead to cover the next entries' records in
                        // this segment (entries of one stream usually sit
                        // close together), up to 1 MiB.
                        let seg_end = seg.end_position();
                        let span = entries
                            .iter()
                            .skip(i + 1)
                            .take_while(|n| {
                                n.position < seg_end && n.position >= seg.first_position
                            })
                            .map(|n| n.offset)
                            .filter(|&o| o > offset && o - offset < (1 << 20))
                            .max()
                            .map_or(0, |o| (o - offset) as usize + 4096);
                        let rec = reader.record_at_spanning(seg, offset, seg.data_end(), span)?;
                        cached = Some((seg.first_position, offset, rec));
                    }
                    let Some((_, _, rec)) = &cached else { continue };
                    if rec.stream != name {
                        // Another stream with the same hash.
                        continue;
                    }
                    if e.position < rec.first_position || e.position >= rec.end_position() {
                        return Err(StorageError::corrupt(
                            &seg.path,
                            offset,
                            format!(
                                "index entry for position {} points at a record that does not hold it",
                                e.position
                            ),
                        ));
                    }
                    let loc = Located {
                        record: rec,
                        path: &seg.path,
                        offset,
                    };
                    if let Visit::Stop = visit(e, Some(&loc))? {
                        return Ok(());
                    }
                }
                if exhausted {
                    break;
                }
                // The visitor wants more than the batch held (entries of
                // colliding streams, or a long read): fetch more per call.
                batch = (batch * 2).min(MAX_BATCH);
            }
        }
        Ok(())
    }

    /// Reads events of stream `name` from version `from` (inclusive) in
    /// `direction`, within `limit`. The flag says whether the byte budget cut
    /// the read short.
    pub fn read_stream(
        &self,
        name: &str,
        from: u64,
        direction: Direction,
        limit: ReadLimit,
    ) -> Result<(Vec<RecordedEvent>, bool), StorageError> {
        let max = limit.events;
        let mut budget = Budget::new(limit.bytes);
        let mut out = Vec::new();
        if max == 0 {
            return Ok((out, false));
        }
        // Events of the record last decoded: consecutive entries usually
        // share a record, which is decoded once.
        // Each event is taken out (not cloned): an entry is visited once.
        let mut decoded: Option<(u64, Vec<Option<RecordedEvent>>)> = None;
        self.visit_stream(name, from, direction, max, |e, loc| {
            // Gone, or only its id kept: nothing to return.
            let Some(loc) = loc.filter(|l| !l.record.is_removed()) else {
                return Ok(Visit::Continue);
            };
            let key = loc.record.first_position;
            if decoded.as_ref().is_none_or(|(k, _)| *k != key) {
                let events = loc
                    .events()
                    .map(|r| r.map(Some))
                    .collect::<Result<Vec<_>, _>>()?;
                decoded = Some((key, events));
            }
            let i = (e.position - key) as usize;
            let mut full = false;
            if let Some(ev) = decoded
                .as_mut()
                .and_then(|(_, v)| v.get_mut(i))
                .and_then(Option::take)
            {
                full = budget.take(&ev);
                out.push(ev);
            }
            Ok(if out.len() >= max || full {
                Visit::Stop
            } else {
                Visit::Continue
            })
        })?;
        Ok((out, budget.exhausted))
    }

    /// The record holding the last event of stream `name`, if it has any,
    /// and that record's byte offset.
    pub fn last_record(&self, name: &str) -> Result<Option<(Record, u64)>, StorageError> {
        let mut found = None;
        self.visit_stream(name, u64::MAX, Direction::Backward, 1, |_, loc| {
            let Some(loc) = loc else {
                return Ok(Visit::Continue);
            };
            found = Some((loc.record.clone(), loc.offset));
            Ok(Visit::Stop)
        })?;
        Ok(found)
    }

    /// Stream's last version, if it has events.
    pub fn stream_last_version(&self, name: &str) -> Result<Option<u64>, StorageError> {
        Ok(self
            .last_record(name)?
            .map(|(r, _)| r.first_version + u64::from(r.count) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stepping past the first or last key ends the scan instead of
    /// stepping in place (a backward scan of a table whose last batch
    /// ended at version 0, position 0 used to fetch that batch for ever).
    #[test]
    fn step_past_ends_at_the_edges_of_the_key_space() {
        use Direction::*;
        assert_eq!(step_past((0, 0), Backward), None);
        assert_eq!(step_past((3, 0), Backward), Some((2, u64::MAX)));
        assert_eq!(step_past((3, 7), Backward), Some((3, 6)));
        assert_eq!(step_past((3, 7), Forward), Some((3, 8)));
        assert_eq!(step_past((3, u64::MAX), Forward), Some((4, 0)));
        assert_eq!(step_past((u64::MAX, u64::MAX), Forward), None);
    }
}
