//! A spinlock held inside a critical section.
//!
//! Holding it inside a critical section means an interrupt on the same CPU is
//! deferred rather than run, so no interrupt handler can try to take the lock
//! while its holder is interrupted (no self-deadlock), and interrupts stay
//! hardware-enabled (they are only recorded, then replayed when the section
//! ends). The waiter spins with `pause` (BUILD-NOTES.md: under QEMU's icount a
//! spin without `pause` starves the holder's vCPU forever).
//!
//! Rules: never wait for another CPU (an IPI answer, a cpusync) while holding
//! one — that CPU may be spinning on the same lock inside its own critical
//! section, where it does not serve IPIs. Exception and NMI handlers must not
//! take spinlocks; the console, which they do use, has its own re-entrant lock.
//!
//! # Ranks
//!
//! A lock made with [`SpinLock::ranked`] carries a [`LockClass`]. In debug
//! builds (the test kernel) each CPU keeps the classes it holds, and taking a
//! ranked lock while holding one of equal or higher rank panics with both
//! names (seeds/004's lockdep, in miniature). The kernel's order, lowest first:
//! stack slots (10), heap (20), kernel page tables (30), frames (40), I/O
//! APICs (50), boot-stack record (60). The stack-slot lists grow on the heap
//! under their lock; the heap claims frames under its own.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use lwkt::CritGuard;

use crate::arch::cpu;
use crate::sched::X86;

/// The name and rank of a ranked spinlock.
#[derive(Debug)]
pub struct LockClass {
    pub name: &'static str,
    pub rank: u8,
}

impl LockClass {
    /// A class.
    pub const fn new(name: &'static str, rank: u8) -> Self {
        LockClass { name, rank }
    }
}

/// Classes held by one CPU, innermost last (debug builds).
pub struct HeldLocks {
    held: [AtomicPtr<LockClass>; MAX_HELD],
    depth: AtomicUsize,
}

const MAX_HELD: usize = 8;

impl HeldLocks {
    /// None held.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const fn new() -> Self {
        HeldLocks {
            held: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_HELD],
            depth: AtomicUsize::new(0),
        }
    }

    fn class(&self, i: usize) -> &'static LockClass {
        let p = self.held[i].load(Ordering::Relaxed);
        // SAFETY: only `push` stores here, from a `&'static LockClass`.
        unsafe { &*p }
    }

    /// Checks `class` against what is held and records it. Own CPU, inside the
    /// lock's critical section.
    fn push(&self, class: &'static LockClass) {
        let d = self.depth.load(Ordering::Relaxed);
        for i in 0..d {
            let h = self.class(i);
            assert!(
                h.rank < class.rank,
                "spinlock rank violation: taking `{}` (rank {}) while holding `{}` (rank {})",
                class.name,
                class.rank,
                h.name,
                h.rank
            );
        }
        assert!(d < MAX_HELD, "more than {MAX_HELD} spinlocks held");
        self.held[d].store(core::ptr::from_ref(class).cast_mut(), Ordering::Relaxed);
        self.depth.store(d + 1, Ordering::Relaxed);
    }

    fn pop(&self, class: &'static LockClass) {
        let d = self.depth.load(Ordering::Relaxed);
        assert!(
            d > 0 && core::ptr::eq(self.class(d - 1), class),
            "spinlock `{}` released out of order",
            class.name
        );
        self.depth.store(d - 1, Ordering::Relaxed);
    }
}

/// A spinlock protecting a `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    class: Option<&'static LockClass>,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serializes all access to `value`; `T: Send` because the value
// moves between CPUs with the lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new unlocked lock of class `class` (checked in debug builds). Every
    /// kernel spinlock has a class: the list of them is the rank order.
    pub const fn ranked(class: &'static LockClass, value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            class: Some(class),
            value: UnsafeCell::new(value),
        }
    }

    fn note_acquired(&self) {
        if cfg!(debug_assertions)
            && let Some(c) = self.class
        {
            crate::percpu::mycpu().held_locks.push(c);
        }
    }

    /// Takes the lock, spinning with `pause` while another CPU holds it. The
    /// calling thread is in a critical section until the guard drops.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let crit = lwkt::crit_enter::<X86>();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                cpu::pause();
            }
        }
        self.note_acquired();
        SpinLockGuard {
            lock: self,
            _crit: crit,
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let crit = lwkt::crit_enter::<X86>();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.note_acquired();
            Some(SpinLockGuard {
                lock: self,
                _crit: crit,
            })
        } else {
            None
        }
    }
}

/// Holds a [`SpinLock`]; dropping it releases the lock, then ends the
/// critical section.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    _crit: CritGuard<X86>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held by this thread.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held by this thread,
        // and `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        if cfg!(debug_assertions)
            && let Some(c) = self.lock.class
        {
            crate::percpu::mycpu().held_locks.pop(c);
        }
        self.lock.locked.store(false, Ordering::Release);
        // `_crit` drops after this body: the section ends once the lock is free.
    }
}
