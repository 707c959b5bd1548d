//! Sets of CPUs, plain and atomic (256 CPUs at most).

use crate::sync::{AtomicU64, Ordering};

/// Most CPUs a set can hold.
pub const MAX_CPUS: usize = 256;
const WORDS: usize = MAX_CPUS / 64;

/// A set of CPU indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSet([u64; WORDS]);

impl CpuSet {
    /// The empty set.
    pub const fn new() -> Self {
        CpuSet([0; WORDS])
    }

    /// CPUs `0..n`.
    pub fn first(n: usize) -> Self {
        let mut s = CpuSet::new();
        (0..n).for_each(|c| s.insert(c));
        s
    }

    /// Adds `cpu`.
    pub fn insert(&mut self, cpu: usize) {
        self.0[cpu / 64] |= 1 << (cpu % 64);
    }

    /// Removes `cpu`.
    pub fn remove(&mut self, cpu: usize) {
        self.0[cpu / 64] &= !(1 << (cpu % 64));
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The CPUs in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..WORDS).flat_map(move |w| {
            let mut word = self.0[w];
            core::iter::from_fn(move || {
                (word != 0).then(|| {
                    let b = word.trailing_zeros() as usize;
                    word &= word - 1;
                    w * 64 + b
                })
            })
        })
    }
}

/// A set of CPUs that several CPUs update at once.
#[derive(Debug)]
pub struct AtomicCpuSet([AtomicU64; WORDS]);

impl AtomicCpuSet {
    /// The empty set.
    pub fn new() -> Self {
        AtomicCpuSet(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Adds `cpu` (sequentially consistent: it orders with the reader's
    /// `take`/`load` in the signal/poll handshake).
    pub fn insert(&self, cpu: usize) {
        self.0[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::SeqCst);
    }

    /// Removes `cpu`.
    pub fn remove(&self, cpu: usize) {
        self.0[cpu / 64].fetch_and(!(1 << (cpu % 64)), Ordering::SeqCst);
    }

    /// Empties the set and returns what it held.
    pub fn take(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for (i, w) in self.0.iter().enumerate() {
            if w.load(Ordering::SeqCst) != 0 {
                s.0[i] = w.swap(0, Ordering::SeqCst);
            }
        }
        s
    }

    /// The set, read with read-modify-writes (`fetch_or(0)`): each word's
    /// value is the latest in its modification order, not merely a value the
    /// caller may legitimately see. The IPI handshake's final recheck needs
    /// that (see the crate docs).
    pub fn load_latest(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for (i, w) in self.0.iter().enumerate() {
            s.0[i] = w.fetch_or(0, Ordering::SeqCst);
        }
        s
    }

    /// A snapshot.
    pub fn load(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for (i, w) in self.0.iter().enumerate() {
            s.0[i] = w.load(Ordering::SeqCst);
        }
        s
    }

    /// Replaces the set.
    pub fn store(&self, set: CpuSet) {
        for (i, w) in self.0.iter().enumerate() {
            w.store(set.0[i], Ordering::SeqCst);
        }
    }
}

impl Default for AtomicCpuSet {
    fn default() -> Self {
        Self::new()
    }
}
