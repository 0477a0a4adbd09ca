//! Engine configuration. Every field states its default and unit.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::StorageError;
use crate::fs::{OsFs, Vfs};
use crate::{commit, record, segment};

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the `fdatasync` that covers it returned (the default, and the
    /// only mode that keeps acknowledged events through a power cut).
    #[default]
    Fsync,
    /// After the `write` reached the OS page cache, without `fdatasync`.
    /// Survives a process crash, not a power cut or kernel panic. FOR TESTS
    /// AND BENCHMARKS ONLY.
    Os,
}

/// What recovery does when it finds damaged bytes that are not a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open, naming file and offset (the default: an operator
    /// decides; nothing acknowledged is silently dropped).
    #[default]
    Strict,
    /// Truncate the log at the first damaged record of the last segment and
    /// go on, logging what was cut. Everything after it is lost.
    TruncateDamagedTail,
}

/// Engine configuration.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Data directory. Default `./logbook-data`.
    pub data_dir: PathBuf,
    /// Largest segment file, in bytes of records. Default 256 MiB. Must hold
    /// at least one batch of `max_batch_bytes`.
    pub segment_bytes: u64,
    /// When appends are acknowledged. Default [`Durability::Fsync`].
    pub durability: Durability,
    /// Largest event (type + metadata + data), in bytes. Default 4 MiB.
    pub max_event_bytes: u64,
    /// Largest batch (one append), in bytes of its log record. Default
    /// 15 MiB, so that an append fits in the protocol's default 16 MiB frame.
    pub max_batch_bytes: u64,
    /// Most events in one batch. Default 10,000; at most 65,535.
    pub max_batch_events: u32,
    /// The writer stops gathering appends into a group commit once it holds
    /// this many bytes. Default 4 MiB. A single batch larger than this is
    /// still written, alone.
    pub max_group_bytes: u64,
    /// Groups that may be in `fdatasync` at once (1 to 4). Default 2. More
    /// than one lets the next group start syncing while the previous one
    /// still is, which this kind of disk completes nearly as fast as one
    /// sync alone; replies and visibility stay in group order.
    pub sync_lanes: usize,
    /// Bound of the queue of appends waiting for the writer. Default 4,096.
    /// A full queue makes `append` wait: backpressure instead of unbounded
    /// memory.
    pub writer_queue: usize,
    /// Bound of the same queue in bytes: appends queued, and those in the
    /// group being written and synced, together hold at most this much
    /// (their records' bytes plus 128 per event). Default 64 MiB. A full
    /// queue makes `append` wait (first come, first served). An append
    /// larger than the whole bound waits for the queue to be empty.
    pub writer_queue_bytes: u64,
    /// Index entries held in memory before they are written to a table, and
    /// so the most events recovery replays from the log. Default 1,000,000
    /// (about 40 MiB of memory). Also flushed whenever a segment is sealed.
    pub index_flush_entries: usize,
    /// Streams whose head (last version, last batch) the writer caches.
    /// Default 100,000. A miss costs one index lookup and one record read.
    pub head_cache_streams: usize,
    /// Active segments grow by writing zeros this many bytes ahead, so that
    /// each group commit's fdatasync overwrites allocated blocks instead of
    /// committing a new file size (measured about 1.5-2x faster on ext4).
    /// Default 8 MiB; 0 disables preallocation.
    pub preallocate_bytes: u64,
    /// Bytes read per `pread` when scanning the log. Default 256 KiB.
    pub read_chunk_bytes: usize,
    /// What to do with damage that is not a torn tail. Default strict.
    pub recovery: RecoveryMode,
    /// Most segment and index files kept open for reading at once.
    /// Default 1,024. The others are closed (least recently used first)
    /// and reopened when next read; the active segment and files being
    /// written are always open on top of this. A store therefore needs
    /// about this many descriptors whatever its size, and if the process
    /// runs out anyway, opening a file closes half of the cached ones and
    /// tries again.
    pub max_open_files: usize,
    /// Whether a scavenge keeps the ids of the events it removes (a
    /// replica of a cluster: see `record::FLAG_REMOVED`), rather than
    /// removing them whole. Default false (one server: the index keeps
    /// the ids). With it, a scavenge appends no `$scavenges` events and
    /// seals no segment (the log is the cluster's, the same on every
    /// replica), and it removes a record's events only when all of them
    /// are removed.
    pub keep_removed_ids: bool,
    /// The file system. Default the OS's; tests use `MemFs`.
    pub vfs: Arc<dyn Vfs>,
    /// Knobs for tests only; the defaults are what production runs.
    #[doc(hidden)]
    pub testing: TestKnobs,
}

/// Settings that exist only to make tests reach corners. Never set them in
/// production.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct TestKnobs {
    /// Every stream name hashes to this value: every stream collides with
    /// every other, in the index and in every in-memory map. Proves that
    /// collisions cost time, never correctness.
    pub degenerate_stream_hash: Option<u64>,
    /// Merges wait here before writing their table, while it is closed:
    /// a merge that takes as long as a test likes.
    pub merge_gate: Option<Arc<Gate>>,
    /// Sparse position index entries of sealed segments kept in memory
    /// (default 4M): small, so that tests drop and reload them all the
    /// time.
    pub pidx_budget_entries: Option<usize>,
    /// The engine's clock, in microseconds since the Unix epoch (commit
    /// timestamps and `max_age`); `None`: the system clock. Tests move it
    /// to age events without waiting.
    pub clock: Option<Arc<std::sync::atomic::AtomicI64>>,
    /// Called at each step of a segment rewrite (crash tests stop there).
    pub scavenge_hook: Option<ScavengeHook>,
    /// Index tables are written in this format (1 or 2: without stream
    /// names), as an earlier build wrote them, to test the upgrade.
    pub table_format: Option<u32>,
}

/// A callback at each step of a segment rewrite (tests only).
#[doc(hidden)]
#[derive(Clone)]
pub struct ScavengeHook(pub Arc<dyn Fn(crate::scavenge::ScavengeStep) + Send + Sync>);

impl std::fmt::Debug for ScavengeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScavengeHook")
    }
}

/// A gate background work waits at while it is closed (tests only).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Gate {
    /// (open, how many wait at it now)
    state: parking_lot::Mutex<(bool, usize)>,
    changed: parking_lot::Condvar,
}

impl Gate {
    /// A closed gate.
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Opens it for good: everyone waiting goes on.
    pub fn open(&self) {
        self.state.lock().0 = true;
        self.changed.notify_all();
    }

    /// Blocks until someone waits at the gate.
    pub fn wait_until_blocked(&self) {
        let mut s = self.state.lock();
        while s.1 == 0 && !s.0 {
            self.changed.wait(&mut s);
        }
    }

    /// Waits while the gate is closed, unless `give_up` says to stop.
    pub(crate) fn pass(&self, give_up: impl Fn() -> bool) {
        let mut s = self.state.lock();
        s.1 += 1;
        self.changed.notify_all();
        while !s.0 && !give_up() {
            // Re-checks `give_up` (a store closing) now and then.
            self.changed
                .wait_for(&mut s, std::time::Duration::from_millis(20));
        }
        s.1 -= 1;
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("./logbook-data"),
            segment_bytes: 256 << 20,
            durability: Durability::Fsync,
            max_event_bytes: 4 << 20,
            max_batch_bytes: 15 << 20,
            max_batch_events: 10_000,
            max_group_bytes: 4 << 20,
            sync_lanes: 2,
            writer_queue: 4096,
            writer_queue_bytes: 64 << 20,
            index_flush_entries: 1_000_000,
            head_cache_streams: 100_000,
            preallocate_bytes: 8 << 20,
            read_chunk_bytes: 256 << 10,
            recovery: RecoveryMode::Strict,
            max_open_files: 1024,
            keep_removed_ids: false,
            vfs: Arc::new(OsFs),
            testing: TestKnobs::default(),
        }
    }
}

impl StoreConfig {
    /// A configuration for `data_dir` with defaults elsewhere.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            ..StoreConfig::default()
        }
    }

    /// Largest record the log accepts: one full batch.
    pub fn max_record_bytes(&self) -> u64 {
        self.max_batch_bytes
    }

    pub(crate) fn validate(&self) -> Result<(), StorageError> {
        let bad = |m: String| Err(StorageError::InvalidConfig(m));
        if self.max_batch_events == 0 || self.max_batch_events > u32::from(u16::MAX) {
            return bad(format!(
                "max_batch_events must be 1..=65535, got {}",
                self.max_batch_events
            ));
        }
        if self.max_batch_bytes < record::MIN_RECORD_LEN as u64
            || self.max_batch_bytes > u64::from(u32::MAX)
        {
            return bad(format!(
                "max_batch_bytes {} out of range",
                self.max_batch_bytes
            ));
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > self.max_batch_bytes {
            return bad(format!(
                "max_event_bytes ({}) must be between 1 and max_batch_bytes ({})",
                self.max_event_bytes, self.max_batch_bytes
            ));
        }
        if self.segment_bytes < segment::HEADER_LEN + self.max_batch_bytes {
            return bad(format!(
                "segment_bytes ({}) must hold a header and one full batch of max_batch_bytes ({})",
                self.segment_bytes, self.max_batch_bytes
            ));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!("segment_bytes {} above 4 GiB", self.segment_bytes));
        }
        if self.sync_lanes == 0 || self.sync_lanes > commit::MAX_SYNC_LANES {
            return bad(format!(
                "sync_lanes must be 1..={}, got {}",
                commit::MAX_SYNC_LANES,
                self.sync_lanes
            ));
        }
        if self.writer_queue == 0
            || self.writer_queue_bytes == 0
            || self.index_flush_entries == 0
            || self.head_cache_streams == 0
        {
            return bad(
                "writer_queue, writer_queue_bytes, index_flush_entries and head_cache_streams must be positive"
                    .into(),
            );
        }
        Ok(())
    }
}
