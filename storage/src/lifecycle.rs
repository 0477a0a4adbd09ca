//! Stream lifecycle in the engine: the published state of every stream
//! that has metadata, a truncation or a deletion, which every read path
//! consults, and its snapshot file.
//!
//! The truth is in the log: each lifecycle operation on `S` is an event of
//! `$$S` whose data is the whole [`StreamLifecycle`] after it (see
//! `logbook_protocol::lifecycle`). The writer resolves an operation
//! against the stream's head at the moment it writes it (so a soft delete
//! covers every event written before it, and none after), keeps its own
//! view of the states it wrote, and the commit pipeline publishes each
//! state here, in group order, before the durable head passes its event:
//! a reader that can see the event sees its effect, and a delete takes
//! effect on every read path the moment it is acknowledged.
//!
//! At start the map is rebuilt from `index/LIFECYCLE`, a snapshot the
//! index flusher writes after each flush (the whole map and `through`, a
//! position below which every lifecycle event is in it), then from the
//! `$$` events at and after `through` in the log. A missing or damaged
//! snapshot costs a scan of the whole log, never a wrong answer: it is
//! derived data.
//!
//! ```text
//! index/LIFECYCLE
//! 0   [8]  magic   "LGBKLIFE"
//! 8   u32  version 1
//! 12  u32  reserved
//! 16  u64  through
//! 24  u64  count
//! 32  u64  seen_head  the durable head when the states were read (their
//!          `last` versions may be from groups up to it: a log recovered
//!          shorter than it makes the snapshot unusable)
//! 40  count x { u64 meta_position | u64 meta_version | u64 last | u32 len | len bytes of JSON }
//!     (last: the stream's last version then, u64::MAX for none)
//! end u32  crc32c over every byte before it
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use logbook_protocol::le;
use logbook_protocol::lifecycle::StreamLifecycle;
use parking_lot::RwLock;

use crate::error::StorageError;
use crate::fs::Vfs;
use crate::stream_map::{StreamHasher, StreamMap};

/// The snapshot's file name, in the index directory.
pub const SNAPSHOT: &str = "LIFECYCLE";
/// Its temporary name while it is replaced.
pub const SNAPSHOT_TMP: &str = "LIFECYCLE.tmp";
const MAGIC: [u8; 8] = *b"LGBKLIFE";
const VERSION: u32 = 3;
const HEADER_LEN: usize = 40;
/// A sane bound on one state's JSON (a stream name, a few numbers and the
/// application's custom keys, which an event's size limit bounds).
const MAX_STATE_BYTES: usize = 64 << 20;
/// `last` of an entry whose stream has no events.
const NO_VERSION: u64 = u64::MAX;

/// One stream's published state.
#[derive(Debug)]
pub struct Entry {
    /// What the latest `$$S` event says.
    pub state: StreamLifecycle,
    /// Where that event is.
    pub meta_position: u64,
    /// Its version in `$$S`.
    pub meta_version: u64,
    /// The stream's last durable version (`u64::MAX`: none), kept up to
    /// date by the commit pipeline, for `max_count`.
    last: AtomicU64,
}

impl Entry {
    /// The stream's last durable version.
    pub fn last(&self) -> Option<u64> {
        let l = self.last.load(Ordering::Acquire);
        (l != NO_VERSION).then_some(l)
    }

    /// The first live version now.
    pub fn first_live(&self) -> u64 {
        self.state.first_live(self.last())
    }

    /// Whether the stream is deleted now: hard, or soft with no event
    /// since.
    pub fn is_deleted(&self) -> bool {
        self.state.is_hard_deleted() || self.state.is_soft_deleted(self.last())
    }
}

/// The published lifecycle states.
pub struct Lifecycles {
    map: RwLock<StreamMap<Arc<Entry>>>,
    /// The streams' names, sorted, for the catalog (a state is never
    /// dropped, so a name once here stays).
    sorted: RwLock<std::collections::BTreeSet<Box<str>>>,
    /// Streams deleted now (see [`Lifecycles::deleted`]), kept as states
    /// are published and last versions move.
    deleted: std::sync::atomic::AtomicI64,
    /// Number of entries, readable without the lock (0: the fast path,
    /// nothing to filter).
    count: AtomicU64,
    /// Bumped by every state published: the snapshot is rewritten only
    /// when it changed (or the log moved on far enough).
    pub generation: AtomicU64,
    /// `(generation, through)` of the last snapshot written.
    pub written: parking_lot::Mutex<(u64, u64)>,
    /// Every group below this position is reflected whole: its states and
    /// its streams' last versions (the commit pipeline moves it after both;
    /// the snapshot covers up to it).
    pub noted_through: AtomicU64,
    /// Streams whose state changed since the last scavenge took them;
    /// `true`: every stream (after a start, or a failed scavenge).
    dirty: parking_lot::Mutex<(bool, std::collections::HashSet<String>)>,
}

impl Default for Lifecycles {
    fn default() -> Lifecycles {
        Lifecycles {
            map: RwLock::default(),
            sorted: RwLock::default(),
            deleted: std::sync::atomic::AtomicI64::new(0),
            count: AtomicU64::new(0),
            noted_through: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            written: parking_lot::Mutex::new((u64::MAX, 0)),
            dirty: parking_lot::Mutex::new((true, std::collections::HashSet::new())),
        }
    }
}

impl std::fmt::Debug for Lifecycles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycles")
            .field("streams", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl Lifecycles {
    /// Whether no stream has a lifecycle state (reads filter nothing).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Streams with a state.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The state of `name` (hash `hash`), if it has one.
    #[inline]
    pub fn get(&self, hash: u64, name: &str) -> Option<Arc<Entry>> {
        if self.is_empty() {
            return None;
        }
        self.map.read().get(hash, name).cloned()
    }

    /// Publishes `state`, recorded by the `$$` event at `meta_position`
    /// (version `meta_version`), unless a later one is already there
    /// (replays are idempotent). `last` is the stream's last durable
    /// version, if known better than the state says.
    pub fn apply(
        &self,
        hash: u64,
        state: StreamLifecycle,
        meta_position: u64,
        meta_version: u64,
        last: Option<u64>,
    ) {
        let mut map = self.map.write();
        let name = state.stream.clone();
        let prev = map.get(hash, &name).cloned();
        if prev
            .as_ref()
            .is_some_and(|p| p.meta_position >= meta_position)
        {
            return;
        }
        let last = [
            prev.as_ref().and_then(|p| p.last()),
            state.last_version,
            last,
        ]
        .into_iter()
        .flatten()
        .max();
        let entry = Arc::new(Entry {
            state,
            meta_position,
            meta_version,
            last: AtomicU64::new(last.unwrap_or(NO_VERSION)),
        });
        let change = i64::from(entry.is_deleted())
            - i64::from(prev.as_ref().is_some_and(|p| p.is_deleted()));
        self.deleted.fetch_add(change, Ordering::AcqRel);
        if map.insert(hash, &name, entry).is_none() {
            self.count.fetch_add(1, Ordering::Release);
            self.sorted.write().insert(name.as_str().into());
        }
        drop(map);
        self.generation.fetch_add(1, Ordering::Release);
        let mut dirty = self.dirty.lock();
        if !dirty.0 {
            dirty.1.insert(name);
        }
    }

    /// Notes that `name`'s last durable version is now `last` (after an
    /// append), if it has a state.
    pub fn note_last(&self, hash: u64, name: &str, last: u64) {
        if let Some(e) = self.get(hash, name) {
            let was = e.is_deleted();
            e.last.fetch_max(last, Ordering::AcqRel);
            if e.last.load(Ordering::Acquire) == NO_VERSION {
                e.last.store(last, Ordering::Release);
            }
            // An append after a soft delete brings the stream back.
            if was && !e.is_deleted() {
                self.deleted.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Up to `max` stream names from `start` on (inclusive), sorted.
    pub fn names_from(&self, start: &str, max: usize) -> Vec<String> {
        self.sorted
            .read()
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take(max)
            .map(|n| n.to_string())
            .collect()
    }

    /// The streams a scavenge must look at: those whose state changed
    /// since the last one took them (all, after a start), and every one
    /// kept to an age or a count (time and appends remove their events).
    pub fn take_dirty(&self) -> Vec<String> {
        let (all, set) = std::mem::take(&mut *self.dirty.lock());
        let mut out: Vec<String> = if all {
            self.all().iter().map(|e| e.state.stream.clone()).collect()
        } else {
            let mut v: Vec<String> = set.into_iter().collect();
            v.extend(
                self.all()
                    .iter()
                    .filter(|e| {
                        e.state.metadata.max_age_secs.is_some()
                            || e.state.metadata.max_count.is_some()
                    })
                    .map(|e| e.state.stream.clone()),
            );
            v
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether a scavenge may find anything to do: a stream's state
    /// changed since the last one (or the store started), or a stream is
    /// kept to an age or a count.
    pub fn scavenge_due(&self) -> bool {
        if self.is_empty() {
            return false;
        }
        {
            let dirty = self.dirty.lock();
            if dirty.0 || !dirty.1.is_empty() {
                return true;
            }
        }
        self.map.read().iter().any(|(_, _, e)| {
            e.state.metadata.max_age_secs.is_some() || e.state.metadata.max_count.is_some()
        })
    }

    /// Gives streams back to the dirty set (a scavenge failed).
    pub fn mark_all_dirty(&self) {
        self.dirty.lock().0 = true;
    }

    /// Gives `streams` to the next scavenge (this one could not remove
    /// all of their events).
    pub fn mark_dirty(&self, streams: Vec<String>) {
        self.dirty.lock().1.extend(streams);
    }

    /// Streams deleted now: hard, or soft with no event since (a counter
    /// the commit pipeline keeps, for the figures).
    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Acquire).max(0) as u64
    }

    /// Every state, for the writer's view and the snapshot.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.map
            .read()
            .iter()
            .map(|(_, _, e)| Arc::clone(e))
            .collect()
    }

    /// Encodes the snapshot: every state, with `through`.
    pub fn encode_snapshot(entries: &[Arc<Entry>], through: u64, seen_head: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + entries.len() * 128);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&through.to_le_bytes());
        b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        b.extend_from_slice(&seen_head.to_le_bytes());
        for e in entries {
            let json = e.state.to_json();
            b.extend_from_slice(&e.meta_position.to_le_bytes());
            b.extend_from_slice(&e.meta_version.to_le_bytes());
            b.extend_from_slice(&e.last.load(Ordering::Acquire).to_le_bytes());
            b.extend_from_slice(&(json.len() as u32).to_le_bytes());
            b.extend_from_slice(&json);
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a snapshot into `(through, seen_head, states)`, each state
    /// with its event's position and version.
    pub fn decode_snapshot(b: &[u8]) -> Result<(u64, u64, Vec<Snapshotted>), &'static str> {
        let body = crate::fs::checked_file(b, &MAGIC, VERSION, HEADER_LEN)?;
        let through = le::try_u64(body, 16).ok_or("short header")?;
        let count = le::try_u64(body, 24).ok_or("short header")?;
        let seen_head = le::try_u64(body, 32).ok_or("short header")?;
        let mut at = HEADER_LEN;
        let mut out = Vec::new();
        for _ in 0..count {
            let position = le::try_u64(body, at).ok_or("entry overruns")?;
            let version = le::try_u64(body, at + 8).ok_or("entry overruns")?;
            let last = le::try_u64(body, at + 16).ok_or("entry overruns")?;
            let len = le::try_u32(body, at + 24).ok_or("entry overruns")? as usize;
            if len > MAX_STATE_BYTES {
                return Err("entry too large");
            }
            let json = body.get(at + 28..at + 28 + len).ok_or("entry overruns")?;
            let state = StreamLifecycle::from_json(json).map_err(|_| "entry is not a state")?;
            out.push(Snapshotted {
                state,
                meta_position: position,
                meta_version: version,
                last: (last != NO_VERSION).then_some(last),
            });
            at += 28 + len;
        }
        if at != body.len() {
            return Err("trailing bytes");
        }
        Ok((through, seen_head, out))
    }

    /// Loads the snapshot from `dir`: `None` if there is none or it is
    /// damaged (the caller rebuilds from the log).
    pub fn load_snapshot(vfs: &dyn Vfs, dir: &Path) -> Option<(u64, u64, Vec<Snapshotted>)> {
        let path = dir.join(SNAPSHOT);
        if !vfs.exists(&path) {
            return None;
        }
        match crate::fs::read_whole(vfs, &path) {
            Ok(b) => match Lifecycles::decode_snapshot(&b) {
                Ok(s) => Some(s),
                Err(why) => {
                    tracing::warn!(path = %path.display(), why, "lifecycle snapshot ignored: rebuilding it from the log");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "lifecycle snapshot unreadable: rebuilding it from the log");
                None
            }
        }
    }

    /// Replaces the snapshot in `dir` with the current states, covering
    /// every lifecycle event below `through` (which the caller loaded as
    /// the durable head before calling: every state published below it is
    /// in the map already).
    pub fn store_snapshot(
        &self,
        vfs: &dyn Vfs,
        dir: &Path,
        through: u64,
        head: impl Fn() -> u64,
    ) -> Result<(), StorageError> {
        let entries = self.all();
        let bytes = Lifecycles::encode_snapshot(&entries, through, head());
        crate::fs::replace_file(vfs, dir, SNAPSHOT, SNAPSHOT_TMP, &bytes)
    }

    /// Loads a decoded snapshot into an empty map.
    pub fn load(&self, hasher: &StreamHasher, states: Vec<Snapshotted>) {
        for s in states {
            let hash = hasher.hash(&s.state.stream);
            self.apply(hash, s.state, s.meta_position, s.meta_version, s.last);
        }
    }
}

/// A lifecycle operation on its way to the writer, which resolves it
/// against the stream's head when it writes it. The request carrying it
/// appends to `$$target`.
#[derive(Debug)]
pub(crate) struct Op {
    /// The stream operated on.
    pub target: logbook_protocol::StreamName,
    /// Its hash.
    pub target_hash: u64,
    /// What to do.
    pub kind: OpKind,
}

/// The state an event of `$$target` records, if it is a lifecycle state
/// (a `$$` stream a client wrote before such names were reserved may hold
/// others).
pub(crate) fn recorded_state(
    target: &str,
    event_type: &str,
    data: &[u8],
) -> Option<StreamLifecycle> {
    use logbook_protocol::lifecycle as lc;
    let lifecycle_type = [
        lc::EVENT_METADATA,
        lc::EVENT_TRUNCATED,
        lc::EVENT_DELETED,
        lc::EVENT_TOMBSTONE,
    ]
    .contains(&event_type);
    StreamLifecycle::from_json(data)
        .ok()
        .filter(|s| lifecycle_type && s.stream == target)
}

/// What a lifecycle operation does.
#[derive(Debug)]
pub(crate) enum OpKind {
    /// Replace the metadata (truncate_before only rises).
    SetMetadata(logbook_protocol::lifecycle::StreamMetadata),
    /// Raise truncate_before to this version.
    Truncate(u64),
    /// Delete the stream if it is at `expected`.
    Delete {
        mode: logbook_protocol::lifecycle::Deletion,
        expected: logbook_protocol::ExpectedVersion,
        /// An erase: every earlier setting is forgotten too.
        erase: bool,
    },
    /// Take this state, written as it was on another replica
    /// ([`crate::Store::ingest`]): the writer writes the copied event as
    /// it is.
    Restore(StreamLifecycle),
}

impl Op {
    /// The state after this operation, from `prev` (the stream's state,
    /// if any) and `last` (its last version), and the event type that
    /// records it; or why it is refused.
    pub fn resolve(
        &self,
        prev: Option<&StreamLifecycle>,
        last: Option<u64>,
        now_us: i64,
    ) -> Result<(StreamLifecycle, &'static str), crate::error::AppendError> {
        use crate::error::AppendError;
        use logbook_protocol::lifecycle as lc;
        let target = self.target.as_str();
        let erase = matches!(self.kind, OpKind::Delete { erase: true, .. });
        if prev.is_some_and(StreamLifecycle::is_hard_deleted) && !erase {
            return Err(AppendError::StreamDeleted {
                stream: target.to_owned(),
            });
        }
        let mut next = prev.cloned().unwrap_or_else(|| StreamLifecycle {
            stream: target.to_owned(),
            ..StreamLifecycle::default()
        });
        let tb = next.metadata.truncate_before;
        let raise = |to: u64| Some(tb.map_or(to, |t| t.max(to)));
        let kind = match &self.kind {
            // Not resolved: the state is the one written elsewhere.
            OpKind::Restore(state) => return Ok((state.clone(), lc::EVENT_METADATA)),
            OpKind::SetMetadata(m) => {
                // What the old settings removed stays removed (a scavenge
                // may have taken it already): the old max_count's cut
                // becomes part of truncate_before.
                let cut = prev.map_or(0, |p| p.first_live(last));
                // And so does what an old max_age removed.
                next.expired_before_us = prev.and_then(|p| p.min_timestamp(now_us));
                next.metadata = m.clone();
                next.metadata.truncate_before = match (m.truncate_before, cut) {
                    (Some(v), _) => raise(v.max(cut)),
                    (None, 0) => tb,
                    (None, c) => raise(c),
                };
                lc::EVENT_METADATA
            }
            OpKind::Truncate(v) => {
                next.metadata.truncate_before = raise(*v);
                lc::EVENT_TRUNCATED
            }
            OpKind::Delete {
                mode,
                expected,
                erase,
            } => {
                if *erase {
                    // Forgets every earlier setting: the tombstone is then
                    // the same whatever state a replica had before it (one
                    // that copied its log from a scavenged replica lacks
                    // the older states of an erased stream).
                    next = StreamLifecycle {
                        stream: target.to_owned(),
                        erased: true,
                        ..StreamLifecycle::default()
                    };
                }
                let actual = effective_version(prev, last);
                if !expected.admits(actual.map(logbook_protocol::StreamVersion)) {
                    return Err(AppendError::WrongExpectedVersion {
                        stream: target.to_owned(),
                        expected: *expected,
                        actual: actual.map(logbook_protocol::StreamVersion),
                    });
                }
                let end = last.map_or(0, |l| l + 1);
                next.metadata.truncate_before = if *erase { Some(end) } else { raise(end) };
                next.deleted = Some(*mode);
                next.deleted_last = last;
                match mode {
                    lc::Deletion::Soft => lc::EVENT_DELETED,
                    lc::Deletion::Hard => lc::EVENT_TOMBSTONE,
                }
            }
        };
        next.last_version = last;
        Ok((next, kind))
    }
}

/// The version an expected-version check sees for a stream whose last
/// version is `last`: none for a soft-deleted stream with no event since
/// the delete (it reads as not found, and is recreated by an append that
/// expects no stream).
pub(crate) fn effective_version(state: Option<&StreamLifecycle>, last: Option<u64>) -> Option<u64> {
    match state {
        Some(s) if s.is_soft_deleted(last) => None,
        _ => last,
    }
}

/// One state of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshotted {
    /// The state.
    pub state: StreamLifecycle,
    /// Its event's position.
    pub meta_position: u64,
    /// Its event's version in `$$S`.
    pub meta_version: u64,
    /// The stream's last version when the snapshot was taken.
    pub last: Option<u64>,
}

/// Which events of one record a read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// All of them (the stream has no lifecycle state).
    All,
    /// None (hard-deleted, or wholly below the first live version).
    None,
    /// Versions from `first_live` on.
    From { first_live: u64 },
}

impl Window {
    /// The window of a record of `stream` with versions `[first, first +
    /// count)` committed at `ts`, at `now_us`.
    pub fn of(entry: Option<&Entry>, first: u64, count: u64, ts: i64, now_us: i64) -> Window {
        let Some(e) = entry else {
            return Window::All;
        };
        if e.state.is_hard_deleted() {
            return Window::None;
        }
        let min_ts = e.state.min_timestamp(now_us);
        if min_ts.is_some_and(|m| ts < m) {
            return Window::None;
        }
        let first_live = e.first_live();
        if first_live >= first + count {
            return Window::None;
        }
        if first_live <= first {
            return Window::All;
        }
        Window::From { first_live }
    }

    /// Whether the event of version `v` is in the window.
    #[inline]
    pub fn admits(&self, v: u64) -> bool {
        match *self {
            Window::All => true,
            Window::None => false,
            Window::From { first_live } => v >= first_live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
    use proptest::prelude::*;

    fn state(name: &str, tb: Option<u64>, deleted: Option<Deletion>) -> StreamLifecycle {
        StreamLifecycle {
            stream: name.into(),
            metadata: StreamMetadata {
                truncate_before: tb,
                ..Default::default()
            },
            deleted,
            last_version: Some(4),
            ..Default::default()
        }
    }

    #[test]
    fn apply_keeps_the_latest_and_tracks_the_last_version() {
        let l = Lifecycles::default();
        assert!(l.is_empty());
        l.apply(1, state("a", Some(2), None), 10, 0, None);
        l.apply(1, state("a", Some(1), None), 5, 0, None);
        let e = l.get(1, "a").expect("present");
        assert_eq!(e.meta_position, 10);
        assert_eq!(e.state.metadata.truncate_before, Some(2));
        assert_eq!(e.last(), Some(4));
        l.note_last(1, "a", 9);
        assert_eq!(l.get(1, "a").map(|e| e.last()), Some(Some(9)));
        l.apply(1, state("a", Some(3), None), 11, 1, None);
        assert_eq!(
            l.get(1, "a").map(|e| e.last()),
            Some(Some(9)),
            "kept across states"
        );
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn windows() {
        let l = Lifecycles::default();
        l.apply(1, state("a", Some(3), None), 10, 0, None);
        let e = l.get(1, "a");
        assert_eq!(Window::of(e.as_deref(), 0, 2, 0, 0), Window::None);
        assert_eq!(Window::of(e.as_deref(), 3, 2, 0, 0), Window::All);
        let w = Window::of(e.as_deref(), 2, 2, 0, 0);
        assert!(!w.admits(2) && w.admits(3));
        l.apply(1, state("a", None, Some(Deletion::Hard)), 11, 1, None);
        assert_eq!(
            Window::of(l.get(1, "a").as_deref(), 5, 1, 0, 0),
            Window::None
        );
        assert_eq!(Window::of(None, 0, 1, 0, 0), Window::All);
    }

    proptest! {
        #[test]
        fn snapshot_round_trips(n in 0usize..20, through in any::<u64>()) {
            let l = Lifecycles::default();
            for i in 0..n {
                l.apply(i as u64, state(&format!("s{i}"), Some(i as u64), None), 100 + i as u64, i as u64, None);
            }
            let b = Lifecycles::encode_snapshot(&l.all(), through, 9);
            let (t, seen, got) = Lifecycles::decode_snapshot(&b).expect("decodes");
            prop_assert_eq!(seen, 9);
            prop_assert_eq!(t, through);
            prop_assert_eq!(got.len(), n);
            for s in got {
                let e = l.get(s.meta_version, &s.state.stream).expect("present");
                prop_assert_eq!(&e.state, &s.state);
                prop_assert_eq!(e.meta_position, s.meta_position);
            }
        }

        #[test]
        fn damaged_snapshots_are_refused(n in 1usize..5, at in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
            let l = Lifecycles::default();
            for i in 0..n {
                l.apply(i as u64, state(&format!("s{i}"), Some(1), None), i as u64 + 1, 0, None);
            }
            let b = Lifecycles::encode_snapshot(&l.all(), 7, 8);
            let mut flipped = b.clone();
            let i = at.index(flipped.len());
            flipped[i] ^= 1 << bit;
            prop_assert!(Lifecycles::decode_snapshot(&flipped).is_err());
            let c = cut.index(b.len());
            prop_assert!(Lifecycles::decode_snapshot(&b[..c]).is_err());
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Lifecycles::decode_snapshot(&b);
        }
    }
}
