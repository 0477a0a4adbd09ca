//! The in-memory part of the stream index: recent entries, per stream, in
//! version order. Frozen memtables are written to `.sidx` tables off the
//! writer's path.
//!
//! Streams are kept in a [`StreamMap`]: found by the stream hash (the same
//! hash the tables sort by), told apart by name, so two streams whose
//! hashes collide never share a list.

use logbook_protocol::Direction;

use std::sync::Arc;

use crate::index::ids::IdMap;
use crate::stream_map::StreamMap;

/// Where one event lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Stream version.
    pub version: u64,
    /// Global position.
    pub position: u64,
    /// Byte offset of the record holding it, in the segment holding
    /// `position`.
    pub offset: u64,
}

/// Recent index entries.
#[derive(Debug, Default)]
pub struct Memtable {
    streams: StreamMap<Vec<Entry>>,
    /// The event ids of the range: empty while active (the writer keeps
    /// them); the writer's generation for the range once frozen.
    pub ids: Arc<IdMap>,
    len: usize,
    /// Streams created here (entries with version 0).
    new_streams: u64,
    /// Their names, sorted, with the position of their version 0: a
    /// table's names when flushed, a catalog page's share of the memtable
    /// (a range of it, under the index lock, never a walk of every stream).
    new_names: std::collections::BTreeMap<Box<str>, u64>,
    /// Positions covered: entries for every event in `[start, end)`.
    pub start: u64,
    /// See `start`.
    pub end: u64,
}

impl Memtable {
    /// An empty memtable covering nothing, starting at `start`.
    pub fn new(start: u64) -> Memtable {
        Memtable {
            start,
            end: start,
            ..Memtable::default()
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Streams whose first event is here.
    pub fn new_streams(&self) -> u64 {
        self.new_streams
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds the entries of one record: `count` events of `name` starting at
    /// `first_version` / `first_position`. Versions must continue the
    /// stream's entries (the writer guarantees it).
    pub fn insert(
        &mut self,
        hash: u64,
        name: &str,
        first_version: u64,
        first_position: u64,
        count: u64,
        offset: u64,
    ) {
        // The map copies the name: the caller's may be a slice of a large
        // network buffer that must not be kept alive by the index.
        let entries = self.streams.get_or_insert_with(hash, name, Vec::new);
        entries.extend((0..count).map(|i| Entry {
            version: first_version + i,
            position: first_position + i,
            offset,
        }));
        self.len += count as usize;
        if first_version == 0 && count > 0 {
            self.new_streams += 1;
            self.new_names.insert(name.into(), first_position);
        }
        self.end = self.end.max(first_position + count);
    }

    fn entries(&self, hash: u64, name: &str) -> &[Entry] {
        self.streams.get(hash, name).map_or(&[], Vec::as_slice)
    }

    /// The stream's last entry here, if any.
    pub fn last(&self, hash: u64, name: &str) -> Option<Entry> {
        self.entries(hash, name).last().copied()
    }

    /// Appends to `out` up to `limit` entries of the stream, from version
    /// `from` in `direction` (inclusive), among those at positions below
    /// `below` (a reader's durable head: the active memtable receives
    /// entries just before the head moves past them, and a reader must
    /// neither see those nor let them take the place of older ones in its
    /// `limit`).
    #[allow(clippy::too_many_arguments)]
    pub fn range(
        &self,
        hash: u64,
        name: &str,
        from: u64,
        direction: Direction,
        limit: usize,
        below: u64,
        out: &mut Vec<Entry>,
    ) {
        let e = self.entries(hash, name);
        // Versions and positions both increase along a stream's entries,
        // so those below the head are a prefix.
        let visible = e.partition_point(|x| x.position < below);
        let e = e.get(..visible).unwrap_or_default();
        match direction {
            Direction::Forward => {
                let i = e.partition_point(|x| x.version < from);
                out.extend(e.iter().skip(i).take(limit));
            }
            Direction::Backward => {
                let i = e.partition_point(|x| x.version <= from);
                out.extend(e.iter().take(i).rev().take(limit));
            }
        }
    }

    /// The names of the streams whose version 0 is here, sorted (a
    /// table's names when flushed).
    pub fn new_stream_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.new_names.keys().map(|n| &**n)
    }

    /// The names from `start` on (inclusive) whose version 0 is at a
    /// position below `below` (a reader's durable head), sorted.
    pub fn new_stream_names_from<'a>(
        &'a self,
        start: &str,
        below: u64,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        self.new_names
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .filter(move |(_, p)| **p < below)
            .map(|(n, _)| &**n)
    }

    /// All entries as `(hash, entry)`, sorted by hash, then version, then
    /// position: the order of a `.sidx` table.
    pub fn sorted_entries(&self) -> Vec<(u64, Entry)> {
        let mut out: Vec<(u64, Entry)> = Vec::with_capacity(self.len);
        for (h, _, entries) in self.streams.iter() {
            out.extend(entries.iter().map(|e| (h, *e)));
        }
        out.sort_unstable_by_key(|(h, e)| (*h, e.version, e.position));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_in_both_directions() {
        let mut m = Memtable::new(0);
        let hasher = crate::stream_map::StreamHasher::new(0);
        let h = hasher.hash("a");
        m.insert(h, "a", 0, 0, 3, 32);
        m.insert(hasher.hash("b"), "b", 0, 3, 1, 500);
        m.insert(h, "a", 3, 4, 2, 900);
        assert_eq!(m.len(), 6);
        assert_eq!((m.start, m.end), (0, 6));
        let mut out = Vec::new();
        m.range(h, "a", 1, Direction::Forward, 3, u64::MAX, &mut out);
        assert_eq!(
            out.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(out[2].position, 4);
        assert_eq!(out[2].offset, 900);
        out.clear();
        m.range(h, "a", 3, Direction::Backward, 10, u64::MAX, &mut out);
        assert_eq!(
            out.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![3, 2, 1, 0]
        );
        out.clear();
        m.range(h, "a", u64::MAX, Direction::Backward, 1, u64::MAX, &mut out);
        assert_eq!(out[0].version, 4);
        assert_eq!(m.last(h, "a").unwrap().version, 4);
        assert!(m.last(h, "zzz").is_none());
    }

    #[test]
    fn colliding_hashes_keep_streams_apart() {
        let mut m = Memtable::new(0);
        // Force a collision by inserting two names under one hash.
        m.insert(7, "a", 0, 0, 2, 32);
        m.insert(7, "b", 0, 2, 1, 99);
        m.insert(7, "a", 2, 3, 1, 200);
        let mut out = Vec::new();
        m.range(7, "a", 0, Direction::Forward, 10, u64::MAX, &mut out);
        assert_eq!(
            out.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
        out.clear();
        m.range(7, "b", 0, Direction::Forward, 10, u64::MAX, &mut out);
        assert_eq!(out.iter().map(|e| e.position).collect::<Vec<_>>(), vec![2]);
        assert_eq!(m.sorted_entries().len(), 4);
    }

    /// Entries at or past a reader's head are invisible and do not use up
    /// the limit: a backward read of one event finds the newest one below.
    #[test]
    fn ranges_stop_below_the_head() {
        let mut m = Memtable::new(0);
        m.insert(1, "a", 0, 0, 5, 32);
        let mut out = Vec::new();
        m.range(1, "a", u64::MAX, Direction::Backward, 1, 3, &mut out);
        assert_eq!(out.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2]);
        out.clear();
        m.range(1, "a", 1, Direction::Forward, 10, 3, &mut out);
        assert_eq!(
            out.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        out.clear();
        m.range(1, "a", 0, Direction::Forward, 10, 0, &mut out);
        assert!(out.is_empty());
    }
}
