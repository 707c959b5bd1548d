//! A CPU's run queue: 32 priority levels, each a FIFO, and a bitmap of the
//! non-empty levels. Picking the best thread is one `bsr` and one load.
//!
//! Local to its CPU and touched only inside that CPU's critical section; the
//! links live in the threads (`rq_next`/`rq_prev`). As in DragonFly, the
//! running thread stays on the queue while it is runnable: a thread blocks by
//! taking itself off, and `switch` picks the head of the highest level, which
//! may be the thread already running.
//!
//! Each level is a ring: its threads are linked in a circle, the head's
//! `rq_prev` is the tail, and a thread alone at its level links to itself
//! (only a thread off the queue has null links). So the round robin of a
//! yield — the head goes behind its equals — is one store: the level's head
//! moves to the next thread.

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
    /// The first thread of each level's ring.
    heads: [AtomicPtr<Thread<M>>; pri::LEVELS],
    count: AtomicU32,
}

impl<M: Machine> RunQueue<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        RunQueue {
            bits: AtomicU32::new(0),
            heads: [const { AtomicPtr::new(ptr::null_mut()) }; pri::LEVELS],
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

    /// The head of `td`'s level.
    fn head_of(&self, td: &'static Thread<M>) -> Option<&'static Thread<M>> {
        load(&self.heads[td.priority() as usize])
    }

    /// The thread after `td` (which is queued) in pick order: the next at
    /// its level, else the head of the next lower non-empty level.
    pub fn next_after(&self, td: &'static Thread<M>) -> Option<&'static Thread<M>> {
        let n = load(&td.rq_next);
        if !opt_eq(n, self.head_of(td)) {
            return n;
        }
        let p = td.priority() as u32;
        let lower = self.bits.load(Ordering::Relaxed) & ((1u32 << p) - 1);
        (lower != 0).then(|| load(&self.heads[31 - lower.leading_zeros() as usize]))?
    }

    /// Links `td` into its level's ring at the tail, without the count.
    fn link_tail(&self, td: &'static Thread<M>) {
        let p = td.priority() as usize;
        match load(&self.heads[p]) {
            Some(head) => {
                let tail = load(&head.rq_prev);
                store(&td.rq_next, Some(head));
                store(&td.rq_prev, tail);
                if let Some(t) = tail {
                    store(&t.rq_next, Some(td));
                }
                store(&head.rq_prev, Some(td));
            }
            None => {
                store(&td.rq_next, Some(td));
                store(&td.rq_prev, Some(td));
                store(&self.heads[p], Some(td));
                self.bits.store(
                    self.bits.load(Ordering::Relaxed) | 1 << p,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Unlinks `td` from its level's ring, without the count.
    fn unlink(&self, td: &'static Thread<M>) {
        let p = td.priority() as usize;
        let (prev, next) = (load(&td.rq_prev), load(&td.rq_next));
        if opt_eq(next, Some(td)) {
            // Alone at its level.
            store(&self.heads[p], None);
            self.bits.store(
                self.bits.load(Ordering::Relaxed) & !(1 << p),
                Ordering::Relaxed,
            );
        } else {
            if let Some(pv) = prev {
                store(&pv.rq_next, next);
            }
            if let Some(nx) = next {
                store(&nx.rq_prev, prev);
            }
            if opt_eq(load(&self.heads[p]), Some(td)) {
                store(&self.heads[p], next);
            }
        }
        store(&td.rq_next, None);
        store(&td.rq_prev, None);
    }

    /// Appends `td` at the tail of its level.
    pub(crate) fn push_tail(&self, td: &'static Thread<M>) {
        self.link_tail(td);
        self.count
            .store(self.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Unlinks `td` (which is queued).
    pub(crate) fn remove(&self, td: &'static Thread<M>) {
        self.unlink(td);
        self.count
            .store(self.count.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// Whether `td` (which is queued) has another thread of its priority
    /// queued behind it.
    pub(crate) fn has_peer_after(&self, td: &'static Thread<M>) -> bool {
        !opt_eq(load(&td.rq_next), self.head_of(td))
    }

    /// Moves `td` (which is queued) to the tail of its level (round-robin).
    ///
    /// The head of a ring gets there by the level's head moving on to the
    /// next thread (alone, it is its own next: nothing changes); a tail
    /// stays where it is; any other thread is unlinked and linked again
    /// before the head. The level stays non-empty and the count the same.
    #[inline]
    pub(crate) fn rotate(&self, td: &'static Thread<M>) {
        let p = td.priority() as usize;
        let head = load(&self.heads[p]);
        let next = load(&td.rq_next);
        if opt_eq(head, Some(td)) {
            store(&self.heads[p], next);
        } else if !opt_eq(next, head) {
            self.unlink(td);
            self.link_tail(td);
        }
    }
}

/// Whether two thread references are the same thread (or both none).
#[inline(always)]
fn opt_eq<M: Machine>(a: Option<&'static Thread<M>>, b: Option<&'static Thread<M>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => ptr::eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
