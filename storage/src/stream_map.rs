//! [`StreamMap`]: the one map keyed by stream name that the memtable, the
//! writer's stream heads and its per-group pending heads all use.
//!
//! Entries are found by the store's stream hash ([`StreamHasher`]) and told
//! apart by the exact name, so two streams whose hashes collide are two
//! entries and never overwrite each other (before this map, each user kept
//! a hash-keyed map plus its own side list for collisions, and one of them,
//! the head cache, had none). The hash is computed once per request and
//! passed in, not recomputed per lookup.
//!
//! Keys are compact owned copies of names (`Box<str>`), never slices of a
//! network buffer: a cached name must not keep a client's whole request
//! frame alive.

use hashbrown::HashTable;

/// The hash of a stream name that the index stores and every in-memory
/// map uses: xxh3 keyed by a per-store random seed kept in the MANIFEST, so
/// that clients cannot compute colliding names offline. Stores created
/// before the seed existed use seed 0, which is plain (unseeded) xxh3, so
/// their index tables stay valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHasher {
    seed: u64,
    /// Test-only: every name hashes to this (a degenerate hash, to prove
    /// that collisions are harmless everywhere).
    degenerate: Option<u64>,
}

impl StreamHasher {
    /// The hasher with `seed` (0: unseeded xxh3).
    pub fn new(seed: u64) -> StreamHasher {
        StreamHasher {
            seed,
            degenerate: None,
        }
    }

    /// A hasher that maps every name to `hash`: every stream collides with
    /// every other. For tests of collision handling only.
    pub fn degenerate(hash: u64) -> StreamHasher {
        StreamHasher {
            seed: 0,
            degenerate: Some(hash),
        }
    }

    /// The seed (persisted in the MANIFEST).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The hash of an event id (same seed: clients choose ids too). Not
    /// degenerate under the test knob, which is about stream names.
    #[inline]
    pub fn hash_id(&self, id: &logbook_protocol::EventId) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(&id.0, self.seed)
    }

    /// The hash of `name`.
    #[inline]
    pub fn hash(&self, name: &str) -> u64 {
        match self.degenerate {
            Some(h) => h,
            None => xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), self.seed),
        }
    }
}

struct Slot<V> {
    hash: u64,
    name: Box<str>,
    value: V,
}

/// A map from stream name to `V`, looked up by `(hash, name)`.
pub(crate) struct StreamMap<V> {
    table: HashTable<Slot<V>>,
}

impl<V> Default for StreamMap<V> {
    fn default() -> Self {
        StreamMap {
            table: HashTable::new(),
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for StreamMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.table.iter().map(|s| (&s.name, &s.value)))
            .finish()
    }
}

impl<V> StreamMap<V> {
    /// Number of streams.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The value of stream `name` (whose hash is `hash`).
    #[inline]
    pub fn get(&self, hash: u64, name: &str) -> Option<&V> {
        self.table
            .find(hash, |s| s.hash == hash && &*s.name == name)
            .map(|s| &s.value)
    }

    /// The value of stream `name`, mutably.
    #[inline]
    pub fn get_mut(&mut self, hash: u64, name: &str) -> Option<&mut V> {
        self.table
            .find_mut(hash, |s| s.hash == hash && &*s.name == name)
            .map(|s| &mut s.value)
    }

    /// The value of stream `name`, inserted with `make` if absent.
    pub fn get_or_insert_with(
        &mut self,
        hash: u64,
        name: &str,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        let entry = self
            .table
            .entry(hash, |s| s.hash == hash && &*s.name == name, |s| s.hash);
        &mut entry
            .or_insert_with(|| Slot {
                hash,
                name: Box::from(name),
                value: make(),
            })
            .into_mut()
            .value
    }

    /// Sets the value of stream `name`; returns the previous one.
    pub fn insert(&mut self, hash: u64, name: &str, value: V) -> Option<V> {
        match self.get_mut(hash, name) {
            Some(v) => Some(std::mem::replace(v, value)),
            None => {
                self.table.insert_unique(
                    hash,
                    Slot {
                        hash,
                        name: Box::from(name),
                        value,
                    },
                    |s| s.hash,
                );
                None
            }
        }
    }

    /// Removes stream `name`; returns its value.
    pub fn remove(&mut self, hash: u64, name: &str) -> Option<V> {
        match self
            .table
            .find_entry(hash, |s| s.hash == hash && &*s.name == name)
        {
            Ok(e) => Some(e.remove().0.value),
            Err(_) => None,
        }
    }

    /// Every stream as `(hash, name, value)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str, &V)> + '_ {
        self.table.iter().map(|s| (s.hash, &*s.name, &s.value))
    }

    /// Empties the map, yielding every stream as `(hash, name, value)`.
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, Box<str>, V)> + '_ {
        self.table.drain().map(|s| (s.hash, s.name, s.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_names_are_separate_entries() {
        let h = StreamHasher::degenerate(7);
        let mut m: StreamMap<u64> = StreamMap::default();
        for (i, name) in ["a", "b", "c", "a"].iter().enumerate() {
            m.insert(h.hash(name), name, i as u64);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(7, "a"), Some(&3));
        assert_eq!(m.get(7, "b"), Some(&1));
        assert_eq!(m.get(7, "zzz"), None);
        assert_eq!(m.get(8, "a"), None, "same name, other hash: not found");
        *m.get_or_insert_with(7, "d", || 10) += 1;
        assert_eq!(m.get(7, "d"), Some(&11));
        assert_eq!(m.remove(7, "b"), Some(1));
        assert_eq!(m.get(7, "b"), None);
        assert_eq!(m.get(7, "c"), Some(&2));
        let mut all: Vec<_> = m.drain().map(|(_, n, v)| (n.to_string(), v)).collect();
        all.sort();
        assert_eq!(
            all,
            vec![("a".into(), 3), ("c".into(), 2), ("d".into(), 11)]
        );
        assert!(m.is_empty());
    }

    #[test]
    fn seed_zero_is_plain_xxh3_and_seeds_differ() {
        // Stores made before the seed existed hashed with plain xxh3: seed 0
        // must give the same values, or their index tables would be lost.
        assert_eq!(
            StreamHasher::new(0).hash("account-42"),
            xxhash_rust::xxh3::xxh3_64(b"account-42")
        );
        assert_ne!(
            StreamHasher::new(1).hash("account-42"),
            StreamHasher::new(2).hash("account-42")
        );
    }
}
