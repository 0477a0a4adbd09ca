//! The stream index: which events each stream has, and where they are. An
//! LSM, as KurrentDB's PTables: the writer's entries go to the active
//! memtable; a full (or sealed-segment) memtable is frozen and written by
//! the flusher to an immutable sorted table; tables of one level are merged
//! into the next.
//!
//! - [`memtable`]: recent entries in memory, per stream.
//! - [`table`]: the `.sidx` table format, lookups and merges' iterators.
//! - [`ids`]: the event-id index: each table's `.eids` companion, and the
//!   memtable's id map.
//! - [`manifest`]: `index/MANIFEST`, the live tables and how far they cover
//!   the log.
//! - [`flusher`]: the thread that writes and merges tables.
//! - [`blocks`]: the block layout both index files are written in.
//!
//! Entries are keyed by the stream hash ([`crate::stream_map::StreamHasher`],
//! seeded per store); hashes may collide, so every reader confirms the
//! stream name in the record an entry points at.

pub(crate) mod blocks;
pub(crate) mod flusher;
pub(crate) mod ids;
pub(crate) mod manifest;
pub(crate) mod memtable;
pub(crate) mod names;
pub(crate) mod table;

use std::sync::Arc;

use manifest::Manifest;
use memtable::Memtable;
use table::Table;

/// The stream index: an LSM of one active memtable, memtables waiting to be
/// flushed, and immutable tables. Each covers a contiguous range of log
/// positions; oldest first.
#[derive(Debug)]
pub struct IndexState {
    /// Receives the writer's entries.
    pub active: Memtable,
    /// Frozen, waiting for the flusher; oldest first.
    pub frozen: Vec<Arc<Memtable>>,
    /// On disk; oldest first.
    pub tables: Arc<Vec<Arc<Table>>>,
    /// Streams whose first event is in `tables` (the MANIFEST's count).
    pub indexed_streams: u64,
    /// The durable MANIFEST that lists exactly `tables` (swapped with them
    /// under the index lock), for backups: taking it needs no wait for a
    /// flush or merge in progress.
    pub manifest: Arc<Manifest>,
}

impl IndexState {
    /// Streams with at least one durable event.
    pub fn streams(&self) -> u64 {
        self.indexed_streams
            + self.frozen.iter().map(|m| m.new_streams()).sum::<u64>()
            + self.active.new_streams()
    }
}
