//! Sets of CPUs, plain and atomic ([`MAX_CPUS`] at most).
//!
//! A plain [`CpuSet`] is a value of fixed size (one bit per possible CPU).
//! An [`AtomicCpuSet`] has the same storage but is made for a machine of
//! `ncpus` CPUs ([`AtomicCpuSet::with_cpus`]) and touches only the words
//! those CPUs need: the hot paths (the IPI dispatch loop, wakeups) read and
//! take its words one read-modify-write each, so a machine of 8 CPUs pays for
//! one word, not for [`MAX_CPUS`]. Its `*_each` methods visit members without
//! building a `CpuSet`.

use crate::sync::{AtomicU64, Ordering};

/// Most CPUs a set can hold.
pub const MAX_CPUS: usize = 1024;
const WORDS: usize = MAX_CPUS / 64;

/// Calls `f` with every CPU whose bit is set in `word` number `w`.
#[inline]
fn each_bit(w: usize, mut word: u64, f: &mut impl FnMut(usize)) {
    while word != 0 {
        let b = word.trailing_zeros() as usize;
        word &= word - 1;
        f(w * 64 + b);
    }
}

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
pub struct AtomicCpuSet {
    w: [AtomicU64; WORDS],
    /// Words in use: enough for the machine's CPUs.
    n: usize,
}

impl AtomicCpuSet {
    /// The empty set, able to hold any CPU up to [`MAX_CPUS`].
    pub fn new() -> Self {
        Self::with_cpus(MAX_CPUS)
    }

    /// The empty set for a machine of `ncpus` CPUs (indices below `ncpus`).
    pub fn with_cpus(ncpus: usize) -> Self {
        assert!((1..=MAX_CPUS).contains(&ncpus), "{ncpus} CPUs");
        AtomicCpuSet {
            w: core::array::from_fn(|_| AtomicU64::new(0)),
            n: ncpus.div_ceil(64),
        }
    }

    #[inline]
    fn words(&self) -> &[AtomicU64] {
        &self.w[..self.n]
    }

    /// Adds `cpu` (sequentially consistent: it orders with the reader's
    /// `take`/`load` in the signal/poll handshake).
    #[inline]
    pub fn insert(&self, cpu: usize) {
        self.words()[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::SeqCst);
    }

    /// Removes `cpu`.
    #[inline]
    pub fn remove(&self, cpu: usize) {
        self.words()[cpu / 64].fetch_and(!(1 << (cpu % 64)), Ordering::SeqCst);
    }

    /// Whether `cpu` is in the set (a plain load).
    #[inline]
    pub fn contains(&self, cpu: usize) -> bool {
        self.words()
            .get(cpu / 64)
            .is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (cpu % 64)) != 0)
    }

    /// Whether the set is empty (plain loads).
    pub fn is_empty(&self) -> bool {
        self.words().iter().all(|w| w.load(Ordering::SeqCst) == 0)
    }

    /// Whether the set is empty, read with read-modify-writes (see
    /// [`AtomicCpuSet::load_latest`]).
    pub fn is_empty_latest(&self) -> bool {
        // Every word is read (no short cut): each read is part of the
        // handshake.
        self.words()
            .iter()
            .fold(0, |acc, w| acc | w.fetch_or(0, Ordering::SeqCst))
            == 0
    }

    /// Empties the set and returns what it held.
    pub fn take(&self) -> CpuSet {
        let mut s = CpuSet::new();
        self.take_each(|c| s.insert(c));
        s
    }

    /// Empties the set, calling `f` with each CPU it held, lowest first.
    /// Each word is taken with one swap before its members are visited.
    pub fn take_each(&self, mut f: impl FnMut(usize)) {
        for (i, w) in self.words().iter().enumerate() {
            if w.load(Ordering::SeqCst) != 0 {
                each_bit(i, w.swap(0, Ordering::SeqCst), &mut f);
            }
        }
    }

    /// The set, read with read-modify-writes (`fetch_or(0)`): each word's
    /// value is the latest in its modification order, not merely a value the
    /// caller may legitimately see. The IPI handshake's final recheck needs
    /// that (see the crate docs).
    pub fn load_latest(&self) -> CpuSet {
        let mut s = CpuSet::new();
        self.for_each_latest(|c| s.insert(c));
        s
    }

    /// Calls `f` with each member, each word read as by
    /// [`AtomicCpuSet::load_latest`] before its members are visited.
    pub fn for_each_latest(&self, mut f: impl FnMut(usize)) {
        for (i, w) in self.words().iter().enumerate() {
            each_bit(i, w.fetch_or(0, Ordering::SeqCst), &mut f);
        }
    }

    /// A snapshot.
    pub fn load(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for (i, w) in self.words().iter().enumerate() {
            s.0[i] = w.load(Ordering::SeqCst);
        }
        s
    }

    /// Whether the set holds exactly the CPUs of `set` (plain loads).
    pub fn equals(&self, set: &CpuSet) -> bool {
        self.words()
            .iter()
            .enumerate()
            .all(|(i, w)| w.load(Ordering::SeqCst) == set.0[i])
            && set.0[self.n..].iter().all(|&w| w == 0)
    }

    /// Replaces the set. `set` holds no CPU beyond the machine's.
    pub fn store(&self, set: CpuSet) {
        debug_assert!(set.0[self.n..].iter().all(|&w| w == 0));
        for (i, w) in self.words().iter().enumerate() {
            w.store(set.0[i], Ordering::SeqCst);
        }
    }
}

impl Default for AtomicCpuSet {
    fn default() -> Self {
        Self::new()
    }
}
