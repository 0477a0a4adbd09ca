//! Event ids are unique in the store for ever: where the writer finds the
//! ids of an append, and what a resend is.
//!
//! The writer owns the ids the index tables do not have yet, in
//! generations ([`WriterIds`]): the current one holds the ids of every
//! event written since the last memtable freeze (published or not: the
//! writer looks up and records an id with one probe), and when the writer
//! decides a freeze it hands that generation to the group's ticket, whose
//! publication freezes the memtable with it, for the flusher to write as
//! the table's `.eids`. Older generations are kept, read-only, until the
//! tables cover them. The index tables as they stood when an append was
//! submitted are looked up on the caller's thread before it is queued
//! ([`precheck`]), so that bloom probes and the rare block read stay off
//! the writer thread; the generations cover everything after.
//!
//! A batch none of whose ids is stored is new. A batch all of whose ids
//! are stored, at consecutive positions forming exactly one earlier batch
//! of the same stream with the same content, is a resend: it is answered
//! with that batch's original result, whatever its expected version says.
//! Anything else that meets a stored id (other content, another stream,
//! part of a batch, new and stored ids mixed, an id twice in one batch) is
//! refused with `DuplicateEventId` and writes nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use logbook_protocol::{EventId, NewEvent};

use crate::error::StorageError;
use crate::index::ids::IdMap;
use crate::shared::Shared;
use crate::stream_map::StreamHasher;

/// What the index tables said of a batch's ids when it was submitted.
#[derive(Debug, Default)]
pub(crate) struct IdCheck {
    /// The tables covered every position below this one.
    pub through: u64,
    /// `(event index, position)` of each id found in them.
    pub found: Vec<(usize, u64)>,
    /// The seeded hash of each event's id, in event order (computed here,
    /// off the writer thread).
    pub hashes: Vec<u64>,
}

impl IdCheck {
    /// The position of event `i`'s id, if the tables had it.
    pub fn found(&self, i: usize) -> Option<u64> {
        self.found.iter().find(|(j, _)| *j == i).map(|(_, p)| *p)
    }
}

/// Looks up `events`' ids in the index tables, on the caller's thread.
pub(crate) fn precheck(shared: &Shared, events: &[NewEvent]) -> Result<IdCheck, StorageError> {
    precheck_ids(shared, events.iter().map(|e| &e.id), events.len())
}

/// [`precheck`] of `n` ids.
pub(crate) fn precheck_ids<'a>(
    shared: &Shared,
    ids: impl Iterator<Item = &'a EventId>,
    n: usize,
) -> Result<IdCheck, StorageError> {
    let tables = Arc::clone(&shared.index.read().tables);
    let through = tables.last().map_or(0, |t| t.end_position);
    let mut found = Vec::new();
    let mut hashes = Vec::with_capacity(n);
    for (i, id) in ids.enumerate() {
        let hash = shared.hasher.hash_id(id);
        hashes.push(hash);
        for t in tables.iter().rev() {
            if let Some(p) = t.ids.get(hash, id)? {
                found.push((i, p));
                break;
            }
        }
    }
    Ok(IdCheck {
        through,
        found,
        hashes,
    })
}

/// Where the writer found an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Position of the stored event.
    pub position: u64,
}

/// The ids of the positions the index tables do not cover yet, by
/// generation (see the module docs).
pub(crate) struct WriterIds {
    hasher: StreamHasher,
    /// Ids of positions from `current_start` on.
    current: IdMap,
    current_start: u64,
    /// Handed to frozen memtables, oldest first, with the positions they
    /// cover; dropped once the tables cover them.
    older: VecDeque<(u64, u64, Arc<IdMap>)>,
    /// Ids a generation is sized for (a memtable's worth), so that it
    /// never rehashes as it fills.
    capacity: usize,
}

impl WriterIds {
    /// The writer's ids at start: `current` holds those of the positions
    /// from `start` on (the unindexed tail recovery replayed), `older`
    /// generations frozen with memtables not yet flushed.
    pub fn new(
        hasher: StreamHasher,
        current: IdMap,
        start: u64,
        older: Vec<(u64, u64, Arc<IdMap>)>,
        capacity: usize,
    ) -> WriterIds {
        let mut ids = WriterIds {
            hasher,
            current,
            current_start: start,
            older: older.into(),
            capacity,
        };
        let more = capacity.saturating_sub(ids.current.len());
        ids.current.reserve(more, |k| hasher.hash_id(k));
        ids
    }

    /// The first position of the current generation.
    pub fn current_start(&self) -> u64 {
        self.current_start
    }

    /// The first position the generations cover: below it, only tables.
    pub fn floor(&self) -> u64 {
        self.older
            .front()
            .map_or(self.current_start, |(s, _, _)| *s)
    }

    /// Where `id` is, if a generation has it.
    #[cfg(test)]
    fn get(&self, hash: u64, id: &EventId) -> Option<Found> {
        self.current
            .get(hash, id)
            .or_else(|| {
                self.older
                    .iter()
                    .rev()
                    .find_map(|(_, _, g)| g.get(hash, id))
            })
            .map(|position| Found { position })
    }

    /// Starts the cache misses of looking up `hashes` in every generation,
    /// so that they overlap instead of following one another: a batch's
    /// ids are touched before they are claimed.
    pub fn touch(&self, hashes: &[u64]) {
        for &h in hashes {
            self.current.touch(h);
            for (_, _, g) in &self.older {
                g.touch(h);
            }
        }
    }

    /// Looks `id` up and, if no generation has it, records it at
    /// `position` (one probe of the current generation for both). Returns
    /// where it was, if it was.
    pub fn claim(&mut self, hash: u64, id: EventId, position: u64) -> Option<Found> {
        if let Some(p) = self
            .older
            .iter()
            .rev()
            .find_map(|(_, _, g)| g.get(hash, &id))
        {
            return Some(Found { position: p });
        }
        let hasher = self.hasher;
        self.current
            .insert(hash, id, position, |k| hasher.hash_id(k))
            .map(|position| Found { position })
    }

    /// Undoes [`WriterIds::claim`]: forgets `id` if it was recorded at
    /// `position` (and not before, by another batch).
    pub fn unclaim(&mut self, hash: u64, id: &EventId, position: u64) {
        if self.current.get(hash, id) == Some(position) {
            let hasher = self.hasher;
            self.current.remove(hash, id, |k| hasher.hash_id(k));
        }
    }

    /// Ends the current generation at `end` (a memtable freeze the writer
    /// decided) and returns it, for the frozen memtable.
    pub fn freeze(&mut self, end: u64) -> Arc<IdMap> {
        let next = IdMap::with_capacity(self.capacity);
        let ids = Arc::new(std::mem::replace(&mut self.current, next));
        self.older
            .push_back((self.current_start, end, Arc::clone(&ids)));
        self.current_start = end;
        ids
    }

    /// Drops the generations the index tables now cover.
    pub fn indexed(&mut self, through: u64) {
        while self
            .older
            .front()
            .is_some_and(|(_, end, _)| *end <= through)
        {
            self.older.pop_front();
        }
    }

    /// The current generation, for the memtable frozen at shutdown.
    pub fn take_current(&mut self) -> IdMap {
        std::mem::take(&mut self.current)
    }
}

/// Whether `stored` holds the same event as `new`: same id, type, metadata
/// and data.
pub(crate) fn same_event(stored: &logbook_protocol::RecordedEvent, new: &NewEvent) -> bool {
    stored.id == new.id
        && stored.event_type.as_str() == new.event_type.as_str()
        && stored.metadata == new.metadata
        && stored.data == new.data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(w: &WriterIds, n: u128) -> Option<u64> {
        let id = EventId::from_u128(n);
        w.get(w.hasher.hash_id(&id), &id).map(|f| f.position)
    }

    fn claim(w: &mut WriterIds, first_position: u64, ids: &[u128]) -> Vec<Option<u64>> {
        ids.iter()
            .enumerate()
            .map(|(k, n)| {
                let id = EventId::from_u128(*n);
                w.claim(w.hasher.hash_id(&id), id, first_position + k as u64)
                    .map(|f| f.position)
            })
            .collect()
    }

    #[test]
    fn generations_cover_until_the_tables_do() {
        let mut w = WriterIds::new(StreamHasher::new(3), IdMap::default(), 10, Vec::new(), 4);
        assert_eq!(claim(&mut w, 10, &[1, 2]), vec![None, None]);
        assert_eq!(find(&w, 2), Some(11));
        let frozen = w.freeze(12);
        assert_eq!(frozen.len(), 2);
        assert_eq!(claim(&mut w, 12, &[3, 1]), vec![None, Some(10)]);
        assert_eq!((find(&w, 1), find(&w, 3)), (Some(10), Some(12)));
        assert_eq!(w.floor(), 10);
        w.indexed(11);
        assert_eq!(find(&w, 1), Some(10), "not yet covered by the tables");
        w.indexed(12);
        assert_eq!(find(&w, 1), None);
        assert_eq!(w.floor(), 12);
    }

    #[test]
    fn an_unclaimed_batch_leaves_earlier_ids_alone() {
        let mut w = WriterIds::new(StreamHasher::new(0), IdMap::default(), 0, Vec::new(), 4);
        assert_eq!(claim(&mut w, 0, &[1]), vec![None]);
        // A batch meeting id 1 (and repeating id 2) is refused: its claims
        // are undone, id 1 stays where it was.
        assert_eq!(claim(&mut w, 1, &[2, 1, 2]), vec![None, Some(0), Some(1)]);
        for (k, n) in [2u128, 1, 2].iter().enumerate() {
            let id = EventId::from_u128(*n);
            w.unclaim(w.hasher.hash_id(&id), &id, 1 + k as u64);
        }
        assert_eq!((find(&w, 1), find(&w, 2)), (Some(0), None));
    }
}
