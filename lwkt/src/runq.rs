//! A CPU's run queue: 32 priority levels, each a FIFO, and a bitmap of the
//! non-empty levels. Picking the best thread is one `bsr` and one load.
//!
//! Local to its CPU and touched only inside that CPU's critical section; the
//! links live in the threads (`rq_next`/`rq_prev`). As in DragonFly, the
//! running thread stays on the queue while it is runnable: a thread blocks by
//! taking itself off, and `switch` picks the head of the highest level, which
//! may be the thread already running.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::Machine;
use crate::thread::{Thread, pri};

fn load<M: Machine>(p: &AtomicPtr<Thread<M>>) -> Option<&'static Thread<M>> {
    crate::slab::deref(p.load(Ordering::Relaxed))
}

fn store<M: Machine>(p: &AtomicPtr<Thread<M>>, td: Option<&'static Thread<M>>) {
    p.store(
        td.map_or(ptr::null_mut(), |t| ptr::from_ref(t).cast_mut()),
        Ordering::Relaxed,
    );
}

/// The run queue.
pub struct RunQueue<M: Machine> {
    /// Bit `p` set: level `p` is not empty.
    bits: AtomicU32,
    heads: [AtomicPtr<Thread<M>>; pri::LEVELS],
    tails: [AtomicPtr<Thread<M>>; pri::LEVELS],
    count: AtomicU32,
}

impl<M: Machine> RunQueue<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        RunQueue {
            bits: AtomicU32::new(0),
            heads: [const { AtomicPtr::new(ptr::null_mut()) }; pri::LEVELS],
            tails: [const { AtomicPtr::new(ptr::null_mut()) }; pri::LEVELS],
            count: AtomicU32::new(0),
        }
    }

    /// Threads queued.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bits.load(Ordering::Relaxed) == 0
    }

    /// The head of the highest non-empty level.
    pub fn best(&self) -> Option<&'static Thread<M>> {
        let bits = self.bits.load(Ordering::Relaxed);
        if bits == 0 {
            return None;
        }
        load(&self.heads[31 - bits.leading_zeros() as usize])
    }

    /// Highest priority queued, if any.
    pub fn best_priority(&self) -> Option<u8> {
        let bits = self.bits.load(Ordering::Relaxed);
        (bits != 0).then(|| 31 - bits.leading_zeros() as u8)
    }

    /// The thread after `td` in pick order: the next at its level, else the
    /// head of the next lower non-empty level.
    pub fn next_after(&self, td: &'static Thread<M>) -> Option<&'static Thread<M>> {
        if let Some(n) = load(&td.rq_next) {
            return Some(n);
        }
        let p = td.priority() as u32;
        let lower = self.bits.load(Ordering::Relaxed) & ((1u32 << p) - 1);
        (lower != 0).then(|| load(&self.heads[31 - lower.leading_zeros() as usize]))?
    }

    /// Appends `td` at the tail of its level.
    pub(crate) fn push_tail(&self, td: &'static Thread<M>) {
        let p = td.priority() as usize;
        let tail = load(&self.tails[p]);
        store(&td.rq_next, None);
        store(&td.rq_prev, tail);
        match tail {
            Some(t) => store(&t.rq_next, Some(td)),
            None => {
                store(&self.heads[p], Some(td));
                self.bits.store(
                    self.bits.load(Ordering::Relaxed) | 1 << p,
                    Ordering::Relaxed,
                );
            }
        }
        store(&self.tails[p], Some(td));
        self.count
            .store(self.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Unlinks `td` (which is queued).
    pub(crate) fn remove(&self, td: &'static Thread<M>) {
        let p = td.priority() as usize;
        let (prev, next) = (load(&td.rq_prev), load(&td.rq_next));
        match prev {
            Some(pv) => store(&pv.rq_next, next),
            None => store(&self.heads[p], next),
        }
        match next {
            Some(nx) => store(&nx.rq_prev, prev),
            None => store(&self.tails[p], prev),
        }
        if load(&self.heads[p]).is_none() {
            self.bits.store(
                self.bits.load(Ordering::Relaxed) & !(1 << p),
                Ordering::Relaxed,
            );
        }
        store(&td.rq_next, None);
        store(&td.rq_prev, None);
        self.count
            .store(self.count.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// Whether `td` has another thread of its priority queued behind it.
    pub(crate) fn has_peer_after(&self, td: &'static Thread<M>) -> bool {
        load(&td.rq_next).is_some()
    }

    /// Moves `td` (which is queued) to the tail of its level (round-robin).
    ///
    /// What `remove` then `push_tail` would do, without their work on the
    /// level's bit and the count, which do not change: a tail stays where
    /// it is, and any other thread has a successor that keeps the level
    /// non-empty.
    #[inline]
    pub(crate) fn rotate(&self, td: &'static Thread<M>) {
        let Some(next) = load(&td.rq_next) else {
            return;
        };
        let p = td.priority() as usize;
        let prev = load(&td.rq_prev);
        match prev {
            Some(pv) => store(&pv.rq_next, Some(next)),
            None => store(&self.heads[p], Some(next)),
        }
        store(&next.rq_prev, prev);
        // `td` had a successor, so the level's tail is another thread.
        let tail = load(&self.tails[p]);
        debug_assert!(tail.is_some_and(|t| !ptr::eq(t, td)));
        if let Some(t) = tail {
            store(&t.rq_next, Some(td));
        }
        store(&td.rq_prev, tail);
        store(&td.rq_next, None);
        store(&self.tails[p], Some(td));
    }
}
