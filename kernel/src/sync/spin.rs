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

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use lwkt::CritGuard;

use crate::arch::cpu;
use crate::sched::X86;

/// A spinlock protecting a `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serializes all access to `value`; `T: Send` because the value
// moves between CPUs with the lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new unlocked lock.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
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
        self.lock.locked.store(false, Ordering::Release);
        // `_crit` drops after this body: the section ends once the lock is free.
    }
}
