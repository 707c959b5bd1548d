//! A small ordered map on a sorted `Vec` whose insertion fails instead of
//! aborting when the heap cannot grow it: the tables a system call changes
//! (processes, a process's threads) must answer `NoMemory`, never panic.
//! Lookups are binary searches; the tables are bounded (a few hundred
//! entries), so an insertion's move of the tail costs little.

use alloc::vec::Vec;

/// The map.
pub struct VecMap<K, V> {
    items: Vec<(K, V)>,
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        VecMap { items: Vec::new() }
    }

    fn find(&self, k: &K) -> Result<usize, usize> {
        self.items.binary_search_by(|(key, _)| key.cmp(k))
    }

    /// Inserts or replaces; fails (changing nothing) when the heap cannot
    /// make room.
    pub fn try_insert(&mut self, k: K, v: V) -> Result<(), V> {
        match self.find(&k) {
            Ok(i) => {
                self.items[i].1 = v;
                Ok(())
            }
            Err(i) => {
                if self.items.try_reserve(1).is_err() {
                    return Err(v);
                }
                self.items.insert(i, (k, v));
                Ok(())
            }
        }
    }

    /// The value of `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.find(k).ok().map(|i| &self.items[i].1)
    }

    /// The value of `k`, mutable.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.find(k).ok().map(|i| &mut self.items[i].1)
    }

    /// The first entry in key order.
    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.items.first().map(|(k, v)| (k, v))
    }

    /// Removes `k` and returns its value. The last entry's removal gives
    /// the allocation back (a table that was large once holds nothing while
    /// the system is idle).
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let v = self.find(k).ok().map(|i| self.items.remove(i).1);
        self.release_if_empty();
        v
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.iter().map(|(_, v)| v)
    }

    /// Keeps the entries `f` says to (and gives the allocation back if
    /// none is left).
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.items.retain_mut(|(k, v)| f(k, v));
        self.release_if_empty();
    }

    /// Removes everything (keeps the allocation).
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Gives the allocation back if the map is empty (a table that was
    /// large once holds nothing while the system is idle).
    pub fn release_if_empty(&mut self) {
        if self.items.is_empty() {
            self.items = Vec::new();
        }
    }
}
