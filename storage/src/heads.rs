//! The stream heads the writer checks expected versions against: each
//! stream's last version. (Resends are recognised by their event ids; see
//! `dedup.rs`.)
//!
//! Three tiers, looked up in this order:
//! - **pending**: heads changed by the group being built;
//! - **unpublished**: heads of groups written and not yet published (still
//!   in `fdatasync`, or waiting for an older group). The index does not
//!   have these yet, so they are never evicted: a group's heads leave this
//!   tier only once the durable head has passed the group's end, and then
//!   move to the cache. At most `sync_lanes` groups are in flight, so this
//!   tier holds at most that many groups' worth of streams.
//! - **cache**: heads of published groups, bounded; a miss falls back to
//!   the index, which has every published event.
//!
//! Every tier is a [`StreamMap`], keyed by the exact stream name: two
//! streams whose hashes collide never share a slot.

use std::collections::VecDeque;

use crate::stream_map::StreamMap;

/// What the writer knows of a stream.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    /// The stream's last version.
    pub last_version: u64,
}

/// A bounded cache of published heads: two generations, the older dropped
/// when the younger fills (an approximate LRU that costs nothing per hit).
struct HeadCache {
    young: StreamMap<Head>,
    old: StreamMap<Head>,
    half: usize,
}

impl HeadCache {
    fn new(capacity: usize) -> HeadCache {
        HeadCache {
            young: StreamMap::default(),
            old: StreamMap::default(),
            half: (capacity / 2).max(1),
        }
    }

    fn get(&mut self, hash: u64, name: &str) -> Option<Head> {
        if let Some(h) = self.young.get(hash, name) {
            return Some(h.clone());
        }
        let h = self.old.remove(hash, name)?;
        self.insert(hash, name, h.clone());
        Some(h)
    }

    fn insert(&mut self, hash: u64, name: &str, head: Head) {
        if self.young.len() >= self.half && self.young.get(hash, name).is_none() {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(hash, name, head);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// The writer's stream heads (see the module docs).
pub(crate) struct Heads {
    pending: StreamMap<Head>,
    /// Written groups not yet published, oldest first, with the position
    /// after each group's last event.
    unpublished: VecDeque<(u64, StreamMap<Head>)>,
    cache: HeadCache,
}

impl Heads {
    /// Heads with a cache of about `capacity` published streams.
    pub fn new(capacity: usize) -> Heads {
        Heads {
            pending: StreamMap::default(),
            unpublished: VecDeque::new(),
            cache: HeadCache::new(capacity),
        }
    }

    /// The newest head of stream `name` the writer knows, if any; `None`
    /// means: ask the index.
    pub fn get(&mut self, hash: u64, name: &str) -> Option<Head> {
        if let Some(h) = self.pending.get(hash, name) {
            return Some(h.clone());
        }
        for (_, group) in self.unpublished.iter().rev() {
            if let Some(h) = group.get(hash, name) {
                return Some(h.clone());
            }
        }
        self.cache.get(hash, name)
    }

    /// Remembers a head read from the index (published).
    pub fn cache(&mut self, hash: u64, name: &str, head: Head) {
        self.cache.insert(hash, name, head);
    }

    /// Records the head a batch of the group being built leaves.
    pub fn write(&mut self, hash: u64, name: &str, head: Head) {
        self.pending.insert(hash, name, head);
    }

    /// The group being built was written: its heads stay unpublished until
    /// the durable head reaches `end_position`.
    pub fn group_written(&mut self, end_position: u64) {
        if self.pending.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.pending);
        self.unpublished.push_back((end_position, group));
    }

    /// The group being built was not written (its write failed): forget
    /// its heads.
    pub fn group_failed(&mut self) {
        self.pending = StreamMap::default();
    }

    /// Moves the heads of groups that are now published (their end is at
    /// or below `durable`) to the cache.
    pub fn published(&mut self, durable: u64) {
        while let Some((end, _)) = self.unpublished.front() {
            if *end > durable {
                break;
            }
            let Some((_, mut group)) = self.unpublished.pop_front() else {
                break;
            };
            // A later unpublished group may hold a newer head of the same
            // stream; lookups try the unpublished tier first, so the cache
            // holding this older (published) one is harmless.
            for (hash, name, head) in group.drain() {
                self.cache.insert(hash, &name, head);
            }
        }
    }

    /// Streams in the unpublished tier (tests).
    #[cfg(test)]
    fn unpublished_streams(&self) -> usize {
        self.unpublished.iter().map(|(_, g)| g.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_map::StreamHasher;

    fn head(last_version: u64, _first_position: u64) -> Head {
        Head { last_version }
    }

    #[test]
    fn cache_is_bounded_and_checks_names() {
        let mut c = HeadCache::new(4);
        for i in 0..100u64 {
            c.insert(i, &format!("s{i}"), head(i, i));
        }
        assert!(c.len() <= 4);
        assert_eq!(c.get(99, "s99").map(|h| h.last_version), Some(99));
        assert!(c.get(99, "other").is_none(), "a colliding name is a miss");
        assert!(c.get(0, "s0").is_none(), "evicted");
    }

    /// Heads of unpublished groups survive any amount of cache churn, and
    /// colliding names never overwrite each other in any tier.
    #[test]
    fn unpublished_heads_are_never_evicted() {
        let h = StreamHasher::degenerate(1);
        let mut heads = Heads::new(2);
        for i in 0..50u64 {
            heads.write(h.hash(&format!("s{i}")), &format!("s{i}"), head(i, i));
        }
        heads.group_written(50);
        // Churn the cache far past its capacity.
        for i in 0..1000u64 {
            heads.cache(h.hash(&format!("c{i}")), &format!("c{i}"), head(i, 0));
        }
        for i in 0..50u64 {
            let got = heads.get(h.hash(&format!("s{i}")), &format!("s{i}"));
            assert_eq!(got.map(|g| g.last_version), Some(i), "s{i}");
        }
        assert_eq!(heads.unpublished_streams(), 50);
        heads.published(49);
        assert_eq!(heads.unpublished_streams(), 50, "group not yet published");
        heads.published(50);
        assert_eq!(heads.unpublished_streams(), 0);
    }

    #[test]
    fn newest_unpublished_group_wins_and_pending_is_cleared() {
        let mut heads = Heads::new(8);
        heads.write(5, "a", head(0, 0));
        heads.group_written(1);
        heads.write(5, "a", head(1, 1));
        assert_eq!(heads.get(5, "a").map(|g| g.last_version), Some(1));
        heads.group_written(2);
        assert_eq!(heads.get(5, "a").map(|g| g.last_version), Some(1));
        // Only the first group is published: the cache must not take the
        // second group's head from it.
        heads.published(1);
        assert_eq!(heads.get(5, "a").map(|g| g.last_version), Some(1));
        heads.write(5, "b", head(0, 3));
        heads.group_failed();
        assert!(heads.get(5, "b").is_none());
    }
}
