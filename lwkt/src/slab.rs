//! Where threads live: slab chunks that are never freed, a small per-CPU cache
//! of free threads with their stacks, and a global pool behind them.
//!
//! Because no `Thread` is ever freed, every thread pointer the scheduler
//! handles points at valid memory; [`deref`] is the one place such a pointer
//! becomes a reference. A slot is *reused* only after its thread exited and
//! its last [`crate::ThreadRef`] was dropped.
//!
//! Allocation order: this CPU's cache (critical section only), then the global
//! pool, then a new chunk of [`CHUNK`] threads. An exiting thread goes back to
//! its CPU's cache with its stack while the cache holds fewer than
//! [`CACHE_MAX`]; beyond that, or when freed from another CPU (a last
//! `ThreadRef` dropped elsewhere), its stack is freed and the bare thread goes
//! to the pool.
//!
//! Lock: the pool has one spinlock (`crate::spin::SpinLock`), taken inside a
//! critical section. It is off the scheduling path: only thread creation with
//! an empty cache, and frees beyond the cache, reach it.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::Machine;
use crate::spin::SpinLock;
use crate::thread::{Thread, flags};

/// Threads per slab chunk.
pub const CHUNK: usize = 64;
/// Free threads (with stacks) a CPU keeps.
pub const CACHE_MAX: u32 = 16;

/// The reference behind a thread pointer (`None` for null).
///
/// Every non-null `*mut Thread` in the scheduler comes from a slab chunk or a
/// CPU's static block (see the module docs), neither of which is ever freed.
#[allow(unsafe_code)]
pub(crate) fn deref<M: Machine>(p: *mut Thread<M>) -> Option<&'static Thread<M>> {
    // SAFETY: by the module invariant, a non-null thread pointer points at a
    // `Thread` in memory that lives for the rest of the kernel's life.
    unsafe { p.as_ref() }
}

/// A thread pointer from a reference.
pub(crate) fn ptr<M: Machine>(td: &'static Thread<M>) -> *mut Thread<M> {
    ptr::from_ref(td).cast_mut()
}

/// A CPU's cache of free threads.
pub struct ThreadCache<M: Machine> {
    head: AtomicPtr<Thread<M>>,
    count: AtomicU32,
}

impl<M: Machine> ThreadCache<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        ThreadCache {
            head: AtomicPtr::new(ptr::null_mut()),
            count: AtomicU32::new(0),
        }
    }

    /// Takes a cached thread. Local, requires critical section.
    pub(crate) fn pop(&self) -> Option<&'static Thread<M>> {
        let td = deref(self.head.load(Ordering::Relaxed))?;
        self.head
            .store(td.free_next.load(Ordering::Relaxed), Ordering::Relaxed);
        self.count
            .store(self.count.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        Some(td)
    }

    /// Caches `td` if there is room. Local, requires critical section.
    pub(crate) fn push(&self, td: &'static Thread<M>) -> bool {
        let n = self.count.load(Ordering::Relaxed);
        if n >= CACHE_MAX {
            return false;
        }
        td.free_next
            .store(self.head.load(Ordering::Relaxed), Ordering::Relaxed);
        self.head.store(ptr(td), Ordering::Relaxed);
        self.count.store(n + 1, Ordering::Relaxed);
        true
    }

    /// Threads cached.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Chunks and the global pool.
pub struct Slab<M: Machine> {
    pool: SpinLock<M, Vec<&'static Thread<M>>>,
    chunks: AtomicU32,
}

impl<M: Machine> Slab<M> {
    pub(crate) fn new() -> Self {
        Slab {
            pool: SpinLock::new(Vec::new()),
            chunks: AtomicU32::new(0),
        }
    }

    /// Threads ever made (chunks × CHUNK).
    pub fn capacity(&self) -> usize {
        self.chunks.load(Ordering::Relaxed) as usize * CHUNK
    }

    /// Bare threads in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.lock().len()
    }

    /// A free thread: from `cache`, else the pool, else a new chunk; `None`
    /// when there is no memory for a chunk (nothing allocated then).
    /// Requires critical section (on the CPU owning `cache`).
    pub(crate) fn alloc(&self, cache: &ThreadCache<M>) -> Option<&'static Thread<M>> {
        if let Some(td) = cache.pop() {
            return Some(td);
        }
        if let Some(td) = self.pool.lock().pop() {
            return Some(td);
        }
        // Room in the pool for every thread there will be, first: the pool
        // never grows but here, so freeing a thread never allocates.
        {
            let mut pool = self.pool.lock();
            let need = (self.capacity() + CHUNK).saturating_sub(pool.len());
            pool.try_reserve(need).ok()?;
        }
        // Built element by element: a whole chunk is too big for a kernel stack.
        let mut v = Vec::new();
        v.try_reserve_exact(CHUNK).ok()?;
        v.extend((0..CHUNK).map(|_| Thread::blank()));
        let base = self.chunks.fetch_add(1, Ordering::Relaxed) as usize * CHUNK;
        let chunk: &'static [Thread<M>] = Box::leak(v.into_boxed_slice());
        for (i, td) in chunk.iter().enumerate() {
            td.index.store((base + i) as u32, Ordering::Relaxed);
            td.set(flags::SLAB);
        }
        self.pool.lock().extend(chunk[1..].iter());
        Some(&chunk[0])
    }

    /// Returns a bare thread (stack already freed) to the pool. Any context
    /// that may take a spinlock.
    pub(crate) fn free_to_pool(&self, td: &'static Thread<M>) {
        self.pool.lock().push(td);
    }
}
