//! A counting semaphore whose signal may win the race against the sleep
//! (Akaros' kthread semaphore, seeds/002).
//!
//! `wait` registers itself on the sleep queue *before* it looks at the count
//! one last time ([`crate::tsleep_interlock`]); a `post` that lands in between
//! finds the sleeper queued and wakes it, so the `tsleep` that follows returns
//! at once — the "signal won the race" case. If the count is already up when
//! looked at, the sleep preparation is undone ([`crate::tsleep_cancel`]).

use core::sync::atomic::{AtomicI64, Ordering, fence};

use crate::Machine;
use crate::sleep::{INTERLOCKED, Wake, tsleep, tsleep_cancel, tsleep_interlock, wakeup_one};

/// A counting semaphore.
#[derive(Debug)]
pub struct Sema {
    count: AtomicI64,
}

impl Sema {
    /// A semaphore holding `n`.
    pub const fn new(n: i64) -> Self {
        Sema {
            count: AtomicI64::new(n),
        }
    }

    fn ident(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    /// The count now.
    pub fn count(&self) -> i64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes one if the count is positive.
    ///
    /// Any context; never blocks.
    pub fn try_wait(&self) -> bool {
        let mut c = self.count.load(Ordering::Relaxed);
        while c > 0 {
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(x) => c = x,
            }
        }
        false
    }

    /// Adds one and wakes a waiter.
    ///
    /// Any context (interrupt handlers included); never blocks.
    pub fn post<M: Machine>(&self) {
        self.count.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        wakeup_one::<M>(self.ident());
    }

    /// Takes one, sleeping while the count is zero.
    ///
    /// Thread context; may block.
    pub fn wait<M: Machine>(&self) {
        self.wait_timeout::<M>(0);
    }

    /// Like [`Sema::wait`], giving up after `ticks` scheduler ticks (0 =
    /// never); returns whether it took one.
    ///
    /// Thread context; may block.
    pub fn wait_timeout<M: Machine>(&self, ticks: u64) -> bool {
        loop {
            if self.try_wait() {
                return true;
            }
            tsleep_interlock::<M>(self.ident());
            if self.count.load(Ordering::SeqCst) > 0 {
                // The post already came: undo the sleep preparation.
                tsleep_cancel::<M>();
                continue;
            }
            if tsleep::<M>(self.ident(), INTERLOCKED, "sema", ticks) == Wake::TimedOut {
                return self.try_wait();
            }
        }
    }
}
