//! Data guarded by an LWKT token: [`TokenCell`].
//!
//! A token serializes its holders only while they run: a holder that blocks
//! loses the token until it runs again. So the closure given to
//! [`TokenCell::with`] must not block (no `tsleep`, no other token that might
//! be contended mid-way through a change it must finish atomically); taking
//! spinlocks (the heap, the frame allocator) and running a `cpusync` are fine.
//! The cell uses a pool token hashed from its own address, so it costs no
//! memory of its own (DragonFly's `lwkt_token_pool`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::sched::X86;

/// A `T` reached only under its token.
pub struct TokenCell<T> {
    value: UnsafeCell<T>,
    /// Set while a closure runs: catches re-entry, which would hand out a
    /// second `&mut T` (the token itself lets its holder recurse).
    busy: AtomicBool,
}

// SAFETY: `with` gives out `&mut T` only under the token, to one closure at a
// time (the busy flag refuses re-entry on the holder's own thread), so `T`
// moves between threads only as a borrow under mutual exclusion.
unsafe impl<T: Send> Sync for TokenCell<T> {}

impl<T> TokenCell<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        TokenCell {
            value: UnsafeCell::new(value),
            busy: AtomicBool::new(false),
        }
    }

    /// The cell's token: a caller that must keep several cells stable
    /// together takes their tokens first, then calls [`TokenCell::with`] on
    /// each (re-taking a held token never blocks).
    pub fn token(&self) -> &'static lwkt::Token {
        lwkt::pool_token(core::ptr::from_ref(self) as usize)
    }

    /// The value, without the token: `&mut self` is proof that nobody else
    /// reaches the cell (its owner is being dropped, for one).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Runs `f` on the value under the cell's token. `f` must not block.
    ///
    /// Thread context.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _t = lwkt::gettoken::<X86>(self.token());
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "TokenCell::with re-entered"
        );
        // SAFETY: we hold the token and the busy flag: no other `&mut` exists.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}
