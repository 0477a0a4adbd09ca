//! Event ids are unique in the store for ever: where the writer finds the
//! ids of an append, and what a resend is.
//!
//! An id is looked up in, newest first:
//! - **pending**: the group being built (this module);
//! - **unpublished**: groups written and not yet published (this module;
//!   the index does not have them yet, so they are kept until the durable
//!   head passes them, as the stream heads are);
//! - the **memtables**, active and frozen, and any index table flushed
//!   since the caller's pre-check (`Writer::find_id`, under the index lock);
//! - the **index tables** as they stood when the append was submitted:
//!   looked up on the caller's thread before the append is queued
//!   ([`precheck`]), so that bloom probes and the rare block read stay off
//!   the writer thread.
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

use hashbrown::HashTable;
use logbook_protocol::{EventId, NewEvent};

use crate::error::StorageError;
use crate::shared::Shared;
use crate::stream_map::StreamHasher;

/// What the index tables said of a batch's ids when it was submitted.
#[derive(Debug, Default)]
pub(crate) struct IdCheck {
    /// The tables covered every position below this one.
    pub through: u64,
    /// `(event index, position)` of each id found in them.
    pub found: Vec<(usize, u64)>,
}

impl IdCheck {
    /// The position of event `i`'s id, if the tables had it.
    pub fn found(&self, i: usize) -> Option<u64> {
        self.found.iter().find(|(j, _)| *j == i).map(|(_, p)| *p)
    }
}

/// Looks up `events`' ids in the index tables, on the caller's thread.
pub(crate) fn precheck(shared: &Shared, events: &[NewEvent]) -> Result<IdCheck, StorageError> {
    let tables = Arc::clone(&shared.index.read().tables);
    let through = tables.last().map_or(0, |t| t.end_position);
    let mut found = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let hash = shared.hasher.hash_id(&e.id);
        for t in tables.iter().rev() {
            if let Some(p) = t.ids.get(hash, &e.id)? {
                found.push((i, p));
                break;
            }
        }
    }
    Ok(IdCheck { through, found })
}

/// Where the writer found an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Position of the stored event.
    pub position: u64,
    /// The request of the group being built that holds it, if it is that
    /// group's.
    pub pending_req: Option<usize>,
}

/// Ids the index does not have yet: the group being built and the groups
/// written but not yet published.
pub(crate) struct RecentIds {
    hasher: StreamHasher,
    /// id -> (position, request index in the group).
    pending: HashTable<(EventId, u64, usize)>,
    /// Oldest first, with the position after each group's last event.
    unpublished: VecDeque<(u64, HashTable<(EventId, u64)>)>,
}

impl RecentIds {
    pub fn new(hasher: StreamHasher) -> RecentIds {
        RecentIds {
            hasher,
            pending: HashTable::new(),
            unpublished: VecDeque::new(),
        }
    }

    /// Where `id` is, if the group being built or an unpublished one has it.
    pub fn get(&self, hash: u64, id: &EventId) -> Option<Found> {
        if let Some((_, position, req)) = self.pending.find(hash, |(k, _, _)| k == id) {
            return Some(Found {
                position: *position,
                pending_req: Some(*req),
            });
        }
        self.unpublished.iter().rev().find_map(|(_, g)| {
            g.find(hash, |(k, _)| k == id).map(|(_, position)| Found {
                position: *position,
                pending_req: None,
            })
        })
    }

    /// Records the ids of request `req`, written at `first_position` on.
    /// If an id repeats within them, records none and returns it.
    pub fn write(
        &mut self,
        req: usize,
        first_position: u64,
        events: &[NewEvent],
    ) -> Result<(), EventId> {
        for (i, e) in events.iter().enumerate() {
            let hash = self.hasher.hash_id(&e.id);
            if self.pending.find(hash, |(k, _, _)| *k == e.id).is_some() {
                // Only this request's own ids can be here (every id was
                // looked up before): undo them.
                for done in events.iter().take(i) {
                    let h = self.hasher.hash_id(&done.id);
                    if let Ok(entry) = self.pending.find_entry(h, |(k, _, _)| *k == done.id) {
                        entry.remove();
                    }
                }
                return Err(e.id);
            }
            let hasher = self.hasher;
            self.pending.insert_unique(
                hash,
                (e.id, first_position + i as u64, req),
                |(k, _, _)| hasher.hash_id(k),
            );
        }
        Ok(())
    }

    /// The group being built was written; its ids stay here until the
    /// durable head reaches `end_position`.
    pub fn group_written(&mut self, end_position: u64) {
        if self.pending.is_empty() {
            return;
        }
        let hasher = self.hasher;
        let mut group = HashTable::with_capacity(self.pending.len());
        for (id, position, _) in self.pending.drain() {
            group.insert_unique(hasher.hash_id(&id), (id, position), |(k, _)| {
                hasher.hash_id(k)
            });
        }
        self.unpublished.push_back((end_position, group));
    }

    /// The group being built was not written: forget its ids.
    pub fn group_failed(&mut self) {
        self.pending.clear();
    }

    /// Forgets the groups now published (the memtable has their ids).
    pub fn published(&mut self, durable: u64) {
        while self
            .unpublished
            .front()
            .is_some_and(|(end, _)| *end <= durable)
        {
            self.unpublished.pop_front();
        }
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

    fn ev(n: u128) -> NewEvent {
        NewEvent::new(EventId::from_u128(n), "T", "x")
    }

    #[test]
    fn pending_unpublished_and_published() {
        let hasher = StreamHasher::new(3);
        let mut r = RecentIds::new(hasher);
        r.write(0, 10, &[ev(1), ev(2)]).unwrap();
        let h = |n: u128| hasher.hash_id(&EventId::from_u128(n));
        assert_eq!(
            r.get(h(2), &EventId::from_u128(2)),
            Some(Found {
                position: 11,
                pending_req: Some(0)
            })
        );
        r.group_written(12);
        assert_eq!(
            r.get(h(1), &EventId::from_u128(1)),
            Some(Found {
                position: 10,
                pending_req: None
            })
        );
        r.published(11);
        assert!(
            r.get(h(1), &EventId::from_u128(1)).is_some(),
            "not yet published"
        );
        r.published(12);
        assert!(r.get(h(1), &EventId::from_u128(1)).is_none());
    }

    #[test]
    fn an_id_twice_in_a_batch_records_nothing() {
        let mut r = RecentIds::new(StreamHasher::new(0));
        assert_eq!(
            r.write(0, 0, &[ev(1), ev(2), ev(1)]),
            Err(EventId::from_u128(1))
        );
        assert!(r.pending.is_empty());
        r.write(1, 0, &[ev(1)]).unwrap();
        r.group_failed();
        assert!(r.pending.is_empty());
    }
}
