//! The scheduler's one spinlock type, for the few structures a token cannot
//! protect because the scheduler itself depends on them (the thread slab's
//! pool). It is taken inside a critical section, so an interrupt on the same
//! CPU cannot run code that wants it, and waits with `pause`.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::Machine;
use crate::crit::{CritGuard, crit_enter};

/// A spinlock protecting a `T`.
pub struct SpinLock<M: Machine, T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
    _m: PhantomData<M>,
}

// SAFETY: the lock serializes all access to `value`, which moves between CPUs
// with it (`T: Send`).
#[allow(unsafe_code)]
unsafe impl<M: Machine, T: Send> Sync for SpinLock<M, T> {}

impl<M: Machine, T> SpinLock<M, T> {
    /// An unlocked lock.
    pub const fn new(v: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(v),
            _m: PhantomData,
        }
    }

    /// Takes the lock inside a critical section held until the guard drops.
    pub fn lock(&self) -> SpinGuard<'_, M, T> {
        let crit = crit_enter::<M>();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                <M as ipi::Platform>::pause();
            }
        }
        SpinGuard {
            lock: self,
            _crit: crit,
        }
    }
}

/// Holds a [`SpinLock`].
pub struct SpinGuard<'a, M: Machine, T> {
    lock: &'a SpinLock<M, T>,
    _crit: CritGuard<M>,
}

impl<M: Machine, T> Deref for SpinGuard<'_, M, T> {
    type Target = T;
    #[allow(unsafe_code)]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this CPU holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<M: Machine, T> DerefMut for SpinGuard<'_, M, T> {
    #[allow(unsafe_code)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this CPU holds the lock, and
        // `&mut self` makes this the only access through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<M: Machine, T> Drop for SpinGuard<'_, M, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        // `_crit` drops after this, ending the critical section.
    }
}
