//! Critical sections, and the deferred work that runs when they end.
//!
//! A critical section is a per-thread counter: entering increments it, leaving
//! decrements it — a plain load and store on the current thread, plus a
//! compiler fence so the protected accesses stay inside. It does **not**
//! disable interrupts. An interrupt that arrives while the current thread's
//! count is non-zero is recorded in its CPU's `reqflags` (and pending masks)
//! and returns at once; the 1 → 0 transition of the count replays it
//! ([`splz`]). A critical section prevents preemption and migration, not
//! blocking: a thread may block inside one, and its count is saved and
//! restored with it.
//!
//! [`CritGuard`] is the section: `#[must_use]`, not `Send` (it belongs to the
//! thread that entered), dropping it leaves the section. Functions that
//! require a critical section take `&CritGuard` as a witness.

use core::marker::PhantomData;
use core::sync::atomic::{Ordering, compiler_fence};

use crate::Machine;
use crate::cpu::rqf;
use crate::thread::Thread;

/// An open critical section of the current thread.
#[must_use = "dropping the guard ends the critical section at once"]
pub struct CritGuard<M: Machine> {
    td: &'static Thread<M>,
    /// Not `Send`/`Sync`: the section belongs to the thread that entered it.
    _not_send: PhantomData<*const ()>,
}

impl<M: Machine> CritGuard<M> {
    /// The thread in the section.
    pub fn thread(&self) -> &'static Thread<M> {
        self.td
    }
}

#[inline(always)]
pub(crate) fn crit_inc<M: Machine>(td: &Thread<M>) {
    td.critcount
        .store(td.critcount.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// Leaves one level without running deferred work (for the scheduler's own
/// bookkeeping, which runs the work itself).
#[inline(always)]
pub(crate) fn crit_dec_noyield<M: Machine>(td: &Thread<M>) -> u32 {
    compiler_fence(Ordering::SeqCst);
    let n = td.critcount.load(Ordering::Relaxed);
    debug_assert!(n > 0, "critical section count underflow on {td:?}");
    td.critcount.store(n - 1, Ordering::Relaxed);
    n - 1
}

/// Enters a critical section of the current thread.
///
/// Any context (a hard-interrupt handler included).
#[inline(always)]
pub fn crit_enter<M: Machine>() -> CritGuard<M> {
    let td = M::mycpu().curthread();
    crit_inc(td);
    CritGuard {
        td,
        _not_send: PhantomData,
    }
}

impl<M: Machine> Drop for CritGuard<M> {
    #[inline(always)]
    fn drop(&mut self) {
        crit_exit_td(self.td);
    }
}

/// Leaves a level; on the last one, replays what interrupts deferred.
#[inline(always)]
pub(crate) fn crit_exit_td<M: Machine>(td: &'static Thread<M>) {
    if crit_dec_noyield(td) == 0 {
        let cpu = M::mycpu();
        // Deferred interrupts, or a deferred preemption (`rqf::PREEMPT`).
        if cpu.reqflags.load(Ordering::Relaxed) & (rqf::IDLECHECK_MASK | rqf::PREEMPT) != 0 {
            maybe_splz::<M>();
        }
    }
}

/// Whether the current thread is in a critical section.
pub fn in_crit<M: Machine>() -> bool {
    M::mycpu().curthread().crit_depth() > 0
}

/// Runs the deferred work if this is thread context (not a hard-interrupt
/// handler) and the current thread is outside any critical section.
#[cold]
fn maybe_splz<M: Machine>() {
    let cpu = M::mycpu();
    if cpu.in_interrupt() || cpu.curthread().crit_depth() != 0 {
        return;
    }
    splz::<M>();
}

/// Replays the interrupts and IPI processing deferred by critical sections on
/// this CPU, then performs a deferred preemption if one is due.
///
/// Thread context, outside any critical section (it opens its own).
///
/// Never inlined: its callers (`crit_exit`, `doreti`) reach it only when
/// something was deferred, and inlined it makes their common path save
/// registers it does not use — which the compiler decided differently from
/// build to build, moving `tick` and `null-syscall` by a few instructions.
#[inline(never)]
pub fn splz<M: Machine>() {
    let cpu = M::mycpu();
    let td = cpu.curthread();
    debug_assert!(!cpu.in_interrupt(), "splz from a hard-interrupt handler");
    loop {
        crit_inc(td);
        crate::intr::run_deferred::<M>(cpu);
        M::interrupt_window();
        crit_dec_noyield(td);
        // An interrupt taken after the replay's last look and before the
        // decrement was deferred again: nobody else would replay it (with
        // the tick stopped, not for ever). Outside the section now, any
        // later one is taken directly, so this look is the last needed.
        if cpu.reqflags.load(Ordering::Relaxed) & rqf::IDLECHECK_MASK == 0 {
            break;
        }
    }
    crate::switch::preempt_pending::<M>();
}
