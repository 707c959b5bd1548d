//! A spinlock held with interrupts disabled on the holding CPU.
//!
//! Holding it with interrupts off means no interrupt handler on the same CPU can
//! try to take it while the holder is interrupted, so it cannot self-deadlock;
//! the waiter spins with `pause` (BUILD-NOTES.md: under QEMU's icount a spin
//! without `pause` starves the holder's vCPU forever).
//!
//! Exceptions and NMIs still arrive. Their handlers must not take spinlocks;
//! the console, which they do use, has its own re-entrant lock
//! (`console::ConsoleLock`).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::cpu;

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

    /// Takes the lock, spinning with `pause` while another CPU holds it.
    /// Interrupts are disabled on this CPU until the guard drops.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let irq = cpu::interrupts_save_disable();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                cpu::pause();
            }
        }
        SpinLockGuard { lock: self, irq }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let irq = cpu::interrupts_save_disable();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(SpinLockGuard { lock: self, irq })
        } else {
            cpu::interrupts_restore(irq);
            None
        }
    }
}

/// Holds a [`SpinLock`]; dropping it releases the lock and restores interrupts.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    irq: bool,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held by this CPU.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held by this CPU, and
        // `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        cpu::interrupts_restore(self.irq);
    }
}
