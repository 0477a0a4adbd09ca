//! State shared by the writer, the sync lanes, the index flusher and
//! readers. The read paths over it are in `read.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::config::StoreConfig;
use crate::error::StorageError;
use crate::index::IndexState;
use crate::index::ids::IdMap;
use crate::index::manifest::Manifest;
use crate::index::memtable::Memtable;
use crate::segment::{RecordReader, Segment};
use crate::stream_map::StreamHasher;

/// Counters for stats and benches.
#[derive(Debug, Default)]
pub struct Counters {
    /// Appends acknowledged (including idempotent repeats).
    pub appends: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Group commits (one write each).
    pub groups: AtomicU64,
    /// `fdatasync` calls on segment data.
    pub fsyncs: AtomicU64,
    /// Bytes of records written.
    pub bytes: AtomicU64,
    /// Appends refused for a wrong expected version.
    pub conflicts: AtomicU64,
    /// Index tables written by flushes.
    pub flushes: AtomicU64,
    /// Index tables written by merges.
    pub merges: AtomicU64,
    /// Groups the writer delayed because the index fell behind.
    pub index_slowdowns: AtomicU64,
    /// Times the writer stopped until the index caught up.
    pub index_stalls: AtomicU64,
    /// Index flushes and merges that failed (and are retried) since start.
    pub index_failures: AtomicU64,
    /// Scavenges run since start.
    pub scavenges: AtomicU64,
    /// Segments rewritten by scavenges and erases since start.
    pub scavenge_segments: AtomicU64,
    /// Bytes they gave back.
    pub scavenge_bytes_reclaimed: AtomicU64,
    /// Segments the running (or last) scavenge has to rewrite, and has
    /// done: its progress.
    pub scavenge_todo: AtomicU64,
    /// See `scavenge_todo`.
    pub scavenge_done: AtomicU64,
    /// Append and fsync latencies, appends per group commit.
    pub histograms: crate::histogram::EngineHistograms,
}

/// Shared engine state.
#[derive(Debug)]
pub struct Shared {
    /// Configuration. Its `vfs` is `files`.
    pub config: StoreConfig,
    /// The budget of open files every file of the store goes through.
    pub files: Arc<crate::file_cache::FileCache>,
    /// The stream hash of this store's index (seeded; see `StreamHasher`).
    pub hasher: StreamHasher,
    /// `<data>/log`.
    pub log_dir: PathBuf,
    /// `<data>/index`.
    pub index_dir: PathBuf,
    /// The budget of sealed segments' sparse position indexes in memory.
    pub pidx_budget: Arc<crate::segment::PidxBudget>,
    /// Segments in log order. Replaced (copy on write) when one is added.
    pub segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// The stream index.
    pub index: RwLock<IndexState>,
    /// Frozen memtables (high 32 bits) and tables (low 32) of `index`, as
    /// of its last change: what the writer's backpressure looks at.
    pub index_shape: AtomicU64,
    /// Number of durable events: the next position to assign. Readers never
    /// go past it.
    pub head: AtomicU64,
    /// Every position below this one is in an index table (the MANIFEST's
    /// `indexed_through`): the writer drops its id generations up to it.
    pub indexed_through: AtomicU64,
    /// Publishes `head` to subscribers.
    pub head_watch: tokio::sync::watch::Sender<u64>,
    /// The index manifest as last stored (flusher only, after open).
    pub manifest: Mutex<Manifest>,
    /// Set when a write failed: why writes are refused.
    pub writer_failure: Mutex<Option<Arc<StorageError>>>,
    /// Counters.
    pub counters: Counters,
    /// Set by `Store::abandon`: shut down as a crash would, leaving the
    /// preallocated tail and the unflushed index for recovery.
    pub abandoned: std::sync::atomic::AtomicBool,
    /// Set when the store starts closing: a merge in progress stops, and
    /// the writer no longer waits for the index.
    pub closing: std::sync::atomic::AtomicBool,
    /// Held by whoever writes frozen memtables to tables (the flusher
    /// thread, or `close`), one at a time.
    pub flushing: Mutex<()>,
    /// Notified after each flush or merge (and failed attempt), for a
    /// writer waiting for the index to catch up.
    pub index_progress: parking_lot::Condvar,
    /// The mutex `index_progress` waits with.
    pub index_progress_lock: Mutex<()>,
    /// The published lifecycle states (metadata, truncations, deletes).
    pub lifecycle: crate::lifecycle::Lifecycles,
    /// Held by a running scavenge or erase: one at a time.
    pub scavenging: Mutex<()>,
    /// Set when a segment rewrite failed after its rename: the segment
    /// list no longer matches the files, so scavenges and erases are
    /// refused until a restart.
    pub rewrites_poisoned: std::sync::atomic::AtomicBool,
    /// Erasures a replica of a cluster owes (`erasures`).
    pub erasures: crate::erasures::Erasures,
    /// The commit time of the last record written (microseconds).
    pub last_written_us: std::sync::atomic::AtomicI64,
}

impl Shared {
    /// Number of durable events.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The engine's clock: microseconds since the Unix epoch (the test
    /// knob's, if set).
    pub fn now_us(&self) -> i64 {
        match &self.config.testing.clock {
            Some(c) => c.load(Ordering::Acquire),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
        }
    }

    /// The time a scavenge (and a copy to another replica) removes
    /// expired events by: the engine's clock, or on a replica of a cluster
    /// the earlier of it and the last record's commit time (the leader's
    /// clock): a replica whose clock runs ahead must not remove from disk
    /// what the cluster may still serve once an age limit is raised.
    pub fn removal_now_us(&self) -> i64 {
        let now = self.now_us();
        if self.config.keep_removed_ids {
            now.min(self.last_written_us.load(Ordering::Acquire))
        } else {
            now
        }
    }

    /// The published lifecycle state of `name`, if it has one.
    #[inline]
    pub(crate) fn lifecycle_of(&self, name: &str) -> Option<Arc<crate::lifecycle::Entry>> {
        if self.lifecycle.is_empty() {
            return None;
        }
        self.lifecycle.get(self.hasher.hash(name), name)
    }

    /// Number of sync lanes the commit pipeline runs.
    pub(crate) fn lanes(&self) -> usize {
        self.config
            .sync_lanes
            .clamp(1, crate::commit::MAX_SYNC_LANES)
    }

    pub(crate) fn reader(&self, chunk: usize) -> RecordReader {
        RecordReader::new(chunk, self.config.max_record_bytes() as usize)
    }

    /// What the index's backlog asks of the writer (see `flusher`). From
    /// `index_shape`, not the index lock: the commit pipeline takes that
    /// lock for every group it publishes, and the writer asking before each
    /// group would wait behind it (W3 lost 10%).
    pub(crate) fn index_pressure(&self) -> crate::index::flusher::Pressure {
        let shape = self.index_shape.load(Ordering::Acquire);
        crate::index::flusher::Pressure::of((shape >> 32) as usize, (shape & 0xffff_ffff) as usize)
    }

    /// Records the index's shape for [`Shared::index_pressure`]; called
    /// under the index write lock after the frozen memtables or the tables
    /// change.
    pub(crate) fn note_index_shape(&self, g: &IndexState) {
        let frozen = (g.frozen.len() as u64).min(u64::from(u32::MAX));
        let tables = (g.tables.len() as u64).min(u64::from(u32::MAX));
        self.index_shape
            .store((frozen << 32) | tables, Ordering::Release);
    }

    /// Wakes a writer waiting for the index (after a flush or merge).
    pub(crate) fn index_progressed(&self) {
        let _g = self.index_progress_lock.lock();
        self.index_progress.notify_all();
    }

    /// Waits, before the next group, for as long as the index's backlog
    /// asks (see `flusher::Pressure`), unless the store is closing.
    pub(crate) fn wait_for_index(&self) {
        use crate::index::flusher::Pressure;
        let mut stopped = false;
        loop {
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            match self.index_pressure() {
                Pressure::None => return,
                Pressure::Slow(d) => {
                    self.counters
                        .index_slowdowns
                        .fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(d);
                    return;
                }
                Pressure::Stop => {
                    if !stopped {
                        stopped = true;
                        self.counters.index_stalls.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut g = self.index_progress_lock.lock();
                    // Checked again under the lock that progress and
                    // `close` notify with, so neither is missed; the
                    // timeout is a safety net only.
                    if self.index_pressure() == Pressure::Stop
                        && !self.closing.load(Ordering::Relaxed)
                    {
                        self.index_progress
                            .wait_for(&mut g, std::time::Duration::from_millis(100));
                    }
                }
            }
        }
    }

    /// Moves the active memtable to the frozen list, for the flusher, with
    /// `ids`, the event ids of its range (the writer's generation). Returns
    /// false if it was empty.
    pub(crate) fn freeze_active(&self, ids: Arc<IdMap>) -> bool {
        let mut g = self.index.write();
        if g.active.is_empty() {
            return false;
        }
        let start = g.active.end;
        let mut m = std::mem::replace(&mut g.active, Memtable::new(start));
        m.ids = ids;
        g.frozen.push(Arc::new(m));
        self.note_index_shape(&g);
        true
    }
}
