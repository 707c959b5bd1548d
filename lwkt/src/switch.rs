//! Switching threads: `lwkt_switch`, preemption, yields, the scheduler clock
//! and the idle loop (DragonFly's `lwkt_thread.c`).
//!
//! # Switching
//!
//! [`switch`] picks the head of the highest non-empty run-queue level whose
//! tokens it can get (the running thread stays queued while runnable, so it
//! may pick itself); if none, the idle thread. The outgoing thread's tokens are
//! released first and the incoming thread's reacquired before it runs. A
//! thread that cannot have its tokens is passed over and counted as a token
//! collision; after [`SPIN_LOOPS`] failed passes in a row the scheduler
//! acquires tokens in address order, so threads wanting {A, B} and {B, A}
//! both progress. The count is the CPU's, not the call's: a thread that
//! blocked is switched away from through the idle thread, whose retries go
//! on counting. Between failed passes the CPU backs off exponentially (up to
//! 256 pauses), serving its IPIs.
//!
//! The bookkeeping that must happen *after* the outgoing thread's stack is no
//! longer in use — clearing its RUNNING flag, finishing its migration, reaping
//! it if it exited — runs in [`switch_return`] on the incoming thread.
//!
//! # Preemption
//!
//! Only threads marked preemptable (interrupt threads) preempt, and only a
//! lower-priority thread that is outside any critical section and holds no
//! cpusync. The preemptor is switched to directly; the preempted thread keeps
//! its tokens, is marked PREEMPT_LOCK, and is switched back to as soon as the
//! preemptor blocks (the `preempted` chain). One asked for by a hard
//! interrupt happens at the interrupt's end (`doreti`). One refused because
//! the current thread is in a critical section gets the CPU when the section
//! ends — a switch, as DragonFly's reschedule gives it then.
//!
//! The counters mean what DragonFly's `lwkt.preempt_*` mean, each attempt
//! counted once, when it is decided: `preempt_hit` — granted (at once, at the
//! end of the hard interrupt that asked, or the thread was already running
//! ahead in a preemption chain); `preempt_miss` — refused (not better, a
//! critical section, tokens, another CPU's thread), even if the thread runs
//! at the section's end; `preempt_weird` — a thread preempting itself or one
//! already locked in a chain.
//!
//! # Round robin
//!
//! The scheduler clock moves the running thread behind its equals and asks for
//! a reschedule; kernel threads honour it where they yield ([`yield_now`],
//! [`lwkt_yield`]), user threads on their way back to user mode. Kernel threads
//! are never switched out behind their back by an equal — only preempted by an
//! interrupt thread — so code between two blocking points runs as a unit.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::Machine;
use crate::cpu::{Cpu, rqf};
use crate::crit::{crit_enter, crit_exit_td, crit_inc};
use crate::slab::{deref, ptr as tdptr};
use crate::thread::{Thread, flags};

/// Failed passes over the run queue before tokens are taken in address order.
pub const SPIN_LOOPS: u32 = 10;

/// The longest backoff between two failed passes: `1 << BACKOFF_SHIFT`
/// pauses (256, DragonFly's spinlock `BACKOFF_LIMIT`).
const BACKOFF_SHIFT: u32 = 8;

/// The running thread.
///
/// Any context.
#[inline]
pub fn current<M: Machine>() -> &'static Thread<M> {
    M::mycpu().curthread()
}

/// Picks the thread to run next on `cpu` after `td`, getting its tokens.
/// Requires critical section.
///
/// Inlined: the common cases — nothing runnable, or a best thread that
/// needs no tokens — are a few loads; the token passes are out of line.
#[inline(always)]
pub(crate) fn choose_next<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
) -> &'static Thread<M> {
    cpu.clear_resched();
    let Some(first) = cpu.runq.best() else {
        if cpu.contended.load(Ordering::Relaxed) != 0 {
            cpu.contended.store(0, Ordering::Relaxed);
        }
        return &cpu.thread0;
    };
    // The common case, off the counting below: the best thread needs no
    // tokens.
    if first.tokens.is_empty() {
        return first;
    }
    choose_with_tokens(cpu, td)
}

/// [`choose_next`] when the best runnable thread needs tokens: passes over
/// the run queue until a thread gets all of its own. Requires critical
/// section.
#[inline(never)]
fn choose_with_tokens<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
) -> &'static Thread<M> {
    // Failed passes in a row, this CPU's: the idle thread's retries for a
    // blocked thread count too, so they reach the sorted fallback as well.
    // (A count left by passes before a switch to a thread without tokens
    // only brings the sorted order sooner, which is always correct.)
    let mut spinning = cpu.contended.load(Ordering::Relaxed);
    loop {
        let Some(first) = cpu.runq.best() else {
            cpu.contended.store(0, Ordering::Relaxed);
            return &cpu.thread0;
        };
        let sorted = spinning >= SPIN_LOOPS;
        if sorted {
            cpu.stats.token_sorted.inc();
        }
        let mut cand = Some(first);
        while let Some(ntd) = cand {
            if ntd.tokens.is_empty() || crate::token::get_all(ntd, sorted) {
                if spinning != 0 {
                    cpu.contended.store(0, Ordering::Relaxed);
                }
                return ntd;
            }
            cpu.stats.token_collisions.inc();
            M::trace(
                crate::Event::TokenCollision,
                u64::from(ntd.index.load(Ordering::Relaxed)),
            );
            cand = cpu.runq.next_after(ntd);
        }
        spinning = spinning.saturating_add(1);
        cpu.contended.store(spinning, Ordering::Relaxed);
        // Every runnable thread wants a token someone else holds: back off
        // exponentially before the next pass (DragonFly does since 2018), so
        // CPUs contending for the same tokens stop colliding in lockstep
        // and the holders' CPUs get their turn on a machine whose vCPUs
        // share a host thread.
        backoff::<M>(spinning);
        // If the current thread is not runnable, get off its stack through
        // the idle thread (which must not halt: RESCHED keeps it looping; it
        // retries with the count kept above).
        if !td.has(flags::RUNQ) {
            cpu.need_resched();
            return &cpu.thread0;
        }
        // We still run `td` (it is queued), so deferred work may run here: a
        // CPU spinning for a token must keep serving IPIs — the holder may be
        // waiting on one of ours (DragonFly's `splz_check` in this loop).
        if !cpu.in_interrupt() {
            crate::intr::run_deferred::<M>(cpu);
        }
        cpu.clear_resched();
    }
}

/// Pauses `2^min(spinning - 1, BACKOFF_SHIFT)` times after the
/// `spinning`-th failed pass in a row.
fn backoff<M: Machine>(spinning: u32) {
    for _ in 0..1u32 << spinning.saturating_sub(1).min(BACKOFF_SHIFT) {
        M::pause();
    }
}

/// The thread to switch to from `td`: the one `td` preempted if any (a
/// preemptor that blocks or exits gives the CPU straight back), otherwise the
/// best runnable one. Requires critical section.
#[inline(always)]
pub(crate) fn next_thread<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
) -> &'static Thread<M> {
    match deref(td.preempted.load(Ordering::Relaxed)) {
        Some(p) => {
            debug_assert!(p.has(flags::PREEMPT_LOCK));
            p.set(flags::PREEMPT_DONE);
            if !cpu.runq.best().is_some_and(|b| ptr::eq(b, p)) {
                cpu.need_resched();
            }
            p
        }
        None => choose_next(cpu, td),
    }
}

/// Switches to the best runnable thread of this CPU (possibly the current one,
/// which then simply continues). The current thread's tokens are released and
/// reacquired before it runs again.
///
/// Thread context, never from a hard interrupt; may block (if the current
/// thread descheduled itself, this is where it blocks).
pub fn switch<M: Machine>() {
    let cpu = M::mycpu();
    let td = cpu.curthread();
    crit_inc(td);
    switch_in_crit(cpu, td, false);
    crit_exit_td(td);
}

/// The body of [`switch`] from `td`, the current thread of `cpu`, for
/// callers that hold a critical section across it already (so the switch
/// opens none of its own: it only has to be in one) and have `cpu` and `td`
/// at hand. `queued`: the caller knows `td` is on the run queue. Requires
/// critical section; may block.
#[inline(always)]
fn switch_in_crit<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>, queued: bool) {
    debug_assert!(
        !cpu.in_interrupt(),
        "lwkt switch from a hard-interrupt handler"
    );
    debug_assert!(td.has(flags::RUNNING) && td.crit_depth() > 0);
    crate::token::release_all(td);
    let ntd = if !queued && !td.has(flags::RUNQ) && ptr::eq(cpu.usched.cur_ptr(), td) {
        // The current user thread blocks: its turn goes (`usched`).
        crate::usched::switch_away(cpu, td)
    } else {
        next_thread(cpu, td)
    };
    if !ptr::eq(ntd, td) {
        switch_to(cpu, td, ntd);
    }
}

/// Switches from the current thread `td` straight to `ntd`, a runnable
/// thread of this CPU chosen by the caller rather than by the run queue (the
/// IPC hand-off: `sleep::tsleep_handoff`). `td` holds no tokens and `ntd`
/// needs none. Requires critical section.
pub(crate) fn switch_direct<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
    ntd: &'static Thread<M>,
) {
    debug_assert!(!cpu.in_interrupt() && td.tokens.is_empty() && ntd.tokens.is_empty());
    crit_inc(td);
    switch_to(cpu, td, ntd);
    crit_exit_td(td);
}

/// Performs the switch from `td` to `ntd` on `cpu` and, once `td` runs again,
/// the post-switch bookkeeping. Requires critical section.
#[inline(always)]
fn switch_to<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>, ntd: &'static Thread<M>) {
    assert!(
        !ntd.has(flags::RUNNING),
        "lwkt: switching to a thread already running: {ntd:?}"
    );
    debug_assert!(
        ntd.crit_depth() > 0,
        "switching to a thread outside a critical section"
    );
    cpu.stats.switches.inc();
    M::trace(
        crate::Event::Switch,
        u64::from(ntd.index.load(Ordering::Relaxed)),
    );
    ntd.set(flags::RUNNING);
    ntd.switches
        .store(ntd.switches.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    cpu.curthread.store(tdptr(ntd), Ordering::Relaxed);
    #[allow(unsafe_code)]
    // SAFETY: `td` is this CPU's current thread, both in critical sections
    // (condition 1); `ntd` was not RUNNING (asserted) and is marked so by us (2).
    let prev = unsafe { M::switch(td, ntd) };
    switch_return::<M>(prev);
}

/// Bookkeeping after a switch, on the incoming thread: the outgoing thread
/// `otd` is no longer on its stack.
///
/// Called by [`switch`] and by the start of every new thread. Requires
/// critical section.
///
/// Inlined for the common case: `otd` neither migrates nor exits. RUNNING
/// is cleared first in every case: nothing else runs on this CPU before the
/// migration message or the reaping, which come after it as before.
#[inline(always)]
pub fn switch_return<M: Machine>(otd: &'static Thread<M>) {
    otd.clear(flags::RUNNING);
    if otd.migrate_to.load(Ordering::Relaxed) != crate::thread::NO_CPU || otd.has(flags::EXITING) {
        switch_return_slow(otd);
    }
}

/// [`switch_return`] for an outgoing thread that migrates or exits, its
/// RUNNING flag cleared. Requires critical section.
#[inline(never)]
fn switch_return_slow<M: Machine>(otd: &'static Thread<M>) {
    let to = otd.migrate_to.load(Ordering::Relaxed);
    if to != crate::thread::NO_CPU && !otd.has(flags::PREEMPT_LOCK) {
        debug_assert!(otd.has(flags::MIGRATING));
        otd.migrate_to
            .store(crate::thread::NO_CPU, Ordering::Relaxed);
        crate::sched::send_setcpu::<M>(otd, to as usize);
    }
    if otd.has(flags::EXITING) {
        crate::lifecycle::reap::<M>(otd);
    }
}

/// Records `ntd` as the thread to preempt for when that becomes possible,
/// unless the one recorded already is at least as good: the best goes
/// first, and `preempt_pending` finds the others on the run queue after it.
/// `refused`: its attempt was counted a miss already. Returns whether `ntd`
/// was recorded.
fn set_candidate<M: Machine>(cpu: &Cpu<M>, ntd: &'static Thread<M>, refused: bool) -> bool {
    let cur = deref(cpu.preempt_candidate.load(Ordering::Relaxed));
    if cur.is_some_and(|c| !ptr::eq(c, ntd) && c.priority() >= ntd.priority()) {
        return false;
    }
    cpu.preempt_candidate.store(tdptr(ntd), Ordering::Relaxed);
    cpu.preempt_refused.store(refused, Ordering::Relaxed);
    M::local_or(&cpu.reqflags, rqf::PREEMPT);
    true
}

/// The best thread on this CPU's run queue if it may preempt the current
/// one (preemptable, better, not running, holding no tokens): what a
/// candidate slot that kept only the best woken thread did not record.
fn next_candidate<M: Machine>(cpu: &Cpu<M>) -> Option<&'static Thread<M>> {
    let td = cpu.curthread();
    cpu.runq.best().filter(|b| {
        b.has(flags::PREEMPTABLE)
            && !b.has(flags::RUNNING)
            && b.priority() > td.priority()
            && b.tokens.is_empty()
    })
}

/// Why a preemption is not done now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Refusal {
    /// Not now, perhaps later: DragonFly's `preempt_miss`.
    Miss,
    /// Should not arise: DragonFly's `preempt_weird`.
    Weird,
}

/// DragonFly's `lwkt_preempt` tests, in its order: whether the current
/// thread `td` may be preempted by `ntd` now, given the critical-section
/// depth `depth` the caller itself holds. `Ok(false)`: `ntd` is already
/// running ahead of `td` in a preemption chain (DragonFly counts that a hit
/// and has nothing to do).
fn may_preempt<M: Machine>(
    cpu: &Cpu<M>,
    td: &'static Thread<M>,
    ntd: &'static Thread<M>,
    depth: u32,
) -> Result<bool, Refusal> {
    if ntd.priority() <= td.priority()
        || td.crit_depth() > depth
        || ntd.cpu() != cpu.index()
        || !ntd.tokens.is_empty()
    {
        return Err(Refusal::Miss);
    }
    if ptr::eq(td, ntd) || td.has(flags::PREEMPT_LOCK) || ntd.has(flags::PREEMPT_LOCK) {
        return Err(Refusal::Weird);
    }
    if deref(ntd.preempted.load(Ordering::Relaxed)).is_some() {
        return Ok(false);
    }
    if ntd.has(flags::RUNNING) {
        return Err(Refusal::Weird);
    }
    Ok(true)
}

/// Tries to preempt the current thread in favour of `ntd`, which was just
/// made runnable on this CPU. `depth` is the critical-section depth the
/// caller itself holds (preemption is allowed only if that is all of it).
/// Returns whether it preempted (and the preemptor has blocked since).
///
/// Counts each attempt once, with DragonFly's meanings (`CpuStats`): a hit,
/// a miss or a weird case. A miss leaves `ntd` as the candidate to switch to
/// at the end of the critical section (a switch, not also a hit). From a
/// hard-interrupt handler nothing is decided: `ntd` becomes the candidate
/// and `doreti` decides and counts.
///
/// Requires critical section (of depth `depth`).
pub(crate) fn preempt<M: Machine>(ntd: &'static Thread<M>, depth: u32) -> bool {
    let cpu = M::mycpu();
    let td = cpu.curthread();
    if cpu.in_interrupt() && ntd.priority() > td.priority() {
        // Asked from a hard-interrupt handler: `doreti` does it. One it
        // will not do (a better candidate is recorded) is a miss now.
        if !set_candidate(cpu, ntd, false) {
            cpu.stats.preempt_miss.inc();
        }
        return false;
    }
    match may_preempt(cpu, td, ntd, depth) {
        Err(Refusal::Miss) => {
            cpu.stats.preempt_miss.inc();
            M::trace(
                crate::Event::PreemptMiss,
                u64::from(ntd.index.load(Ordering::Relaxed)),
            );
            if ntd.priority() > td.priority() && ntd.cpu() == cpu.index() {
                set_candidate(cpu, ntd, true);
            }
            false
        }
        Err(Refusal::Weird) => {
            cpu.stats.preempt_weird.inc();
            false
        }
        Ok(false) => {
            cpu.stats.preempt_hit.inc();
            false
        }
        Ok(true) => {
            cpu.stats.preempt_hit.inc();
            preempt_to(cpu, td, ntd);
            true
        }
    }
}

/// Switches from `td` to `ntd` as a preemption, and back once `ntd` blocks.
/// Requires critical section (of the depth `may_preempt` allowed).
fn preempt_to<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>, ntd: &'static Thread<M>) {
    M::trace(
        crate::Event::Preempt,
        u64::from(ntd.index.load(Ordering::Relaxed)),
    );
    ntd.preempted.store(tdptr(td), Ordering::Relaxed);
    td.set(flags::PREEMPT_LOCK);
    switch_to(cpu, td, ntd);
    // The preemptor blocked and `switch` gave the CPU straight back to us.
    debug_assert!(td.has(flags::PREEMPT_DONE));
    ntd.preempted.store(ptr::null_mut(), Ordering::Relaxed);
    td.clear(flags::PREEMPT_LOCK | flags::PREEMPT_DONE);
}

/// Performs a preemption that was deferred, if it is still due and now
/// allowed: one asked for by a hard interrupt (decided and counted here),
/// or one refused earlier (counted then; done here without counting).
/// Thread context outside critical sections, or the end of a trap.
///
/// Iterative: what interrupts deferred while the preemptor ran (it may have
/// been raised again before it blocked — an interrupt storm) is replayed
/// here and the next preemption done in this loop, never through a nested
/// `crit_exit` → `splz` → `preempt_pending`, which under a storm grew the
/// preempted thread's stack without bound (the boot CPU's idle stack
/// overflowed so).
pub(crate) fn preempt_pending<M: Machine>() {
    let cpu = M::mycpu();
    loop {
        // The flag first: a candidate an interrupt records between the two
        // sets it again (and is taken by the swap, or stays).
        M::local_and_not(&cpu.reqflags, rqf::PREEMPT);
        let cand = cpu
            .preempt_candidate
            .swap(ptr::null_mut(), Ordering::Relaxed);
        let Some(ntd) = deref(cand) else {
            return;
        };
        let refused = cpu.preempt_refused.load(Ordering::Relaxed);
        let td = cpu.curthread();
        if td.crit_depth() != 0 || cpu.in_interrupt() {
            cpu.preempt_candidate.store(cand, Ordering::Relaxed);
            M::local_or(&cpu.reqflags, rqf::PREEMPT);
            return;
        }
        // Still runnable here, not running, and still better than us?
        if !(ntd.cpu() == cpu.index()
            && ntd.has(flags::RUNQ)
            && !ntd.has(flags::RUNNING)
            && ntd.has(flags::PREEMPTABLE)
            && ntd.priority() > td.priority())
        {
            if !refused {
                cpu.stats.preempt_miss.inc();
            }
            return;
        }
        crit_inc(td);
        let switched = if refused {
            // Counted a miss when refused: the switch it gets now is not
            // also a hit.
            let ok = may_preempt(cpu, td, ntd, 1) == Ok(true);
            if ok {
                preempt_to(cpu, td, ntd);
            }
            ok
        } else {
            preempt(ntd, 1)
        };
        if cpu.reqflags() & rqf::IDLECHECK_MASK != 0 {
            crate::intr::run_deferred::<M>(cpu);
        }
        // Others woken with it, which the slot did not keep: their attempts
        // were decided (misses) when the slot refused them.
        if switched
            && cpu.preempt_candidate.load(Ordering::Relaxed).is_null()
            && let Some(next) = next_candidate(cpu)
        {
            cpu.preempt_candidate.store(tdptr(next), Ordering::Relaxed);
            cpu.preempt_refused.store(true, Ordering::Relaxed);
            M::local_or(&cpu.reqflags, rqf::PREEMPT);
        }
        crate::crit::crit_dec_noyield(td);
        // A refused preemption (a miss leaves its candidate for the next
        // section's end) ends the loop: trying again at once would refuse
        // again, for ever — and before this was a loop, recursed until the
        // stack overflowed.
        if !switched {
            return;
        }
    }
}

/// Yields to threads of equal or higher priority if the scheduler asked for it
/// (DragonFly's `lwkt_yield`): cheap enough to call in a loop; switches at most
/// about once a tick.
///
/// Thread context; may block.
pub fn lwkt_yield<M: Machine>() {
    let cpu = M::mycpu();
    if cpu.reqflags() & rqf::IDLECHECK_MASK != 0 && cpu.curthread().crit_depth() == 0 {
        crate::crit::splz::<M>();
    }
    if cpu.resched_wanted() {
        yield_to_best::<M>();
    }
}

/// Switches to the best runnable thread, staying runnable.
pub(crate) fn yield_to_best<M: Machine>() {
    let g = crit_enter::<M>();
    crate::sched::schedule_self::<M>(&g);
    // Inside `g`: the switch needs no section of its own.
    switch_in_crit(M::mycpu(), g.thread(), false);
    drop(g);
}

/// Gives the CPU to the next thread of the same priority, if any (explicit
/// round robin: the current thread goes behind its equals).
///
/// Thread context; may block.
pub fn yield_now<M: Machine>() {
    // The CPU looked up before the section, with no store between: one
    // lookup serves both.
    let cpu = M::mycpu();
    let g = crit_enter::<M>();
    let td = g.thread();
    // Inside `g`: the switch needs no section of its own. Two calls, so
    // the common one knows `td` is queued without testing it again.
    if td.has(flags::RUNQ) {
        cpu.runq.rotate(td);
        switch_in_crit(cpu, td, true);
    } else {
        crate::sched::enqueue(cpu, td);
        switch_in_crit(cpu, td, false);
    }
    drop(g);
}

/// The scheduler clock, on every tick of every CPU: counts the tick, rotates
/// the running thread behind its equals (asking for a reschedule if it
/// moved), wakes the softclock thread when callouts are due, and polls the IPI
/// queues for passive messages.
///
/// Hard-interrupt context, or `splz` replaying a deferred tick.
pub(crate) fn hardclock<M: Machine>(cpu: &'static Cpu<M>) {
    cpu.ticks
        .store(cpu.ticks.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    cpu.stats.ticks.inc();
    let td = cpu.curthread();
    if td.has(flags::RUNQ) {
        if cpu.runq.best().is_some_and(|b| ptr::eq(b, td)) {
            if cpu.runq.has_peer_after(td) {
                cpu.runq.rotate(td);
                cpu.need_resched();
            }
        } else {
            cpu.need_resched();
        }
    } else if !cpu.runq.is_empty() {
        cpu.need_resched();
    }
    crate::usched::clock(cpu);
    if cpu.callouts.due(cpu.ticks())
        && let Some(sc) = deref(cpu.softclock.load(Ordering::Relaxed))
    {
        crate::sched::schedule::<M>(sc);
    }
    let world = M::world();
    if world.ipi.has_pending() {
        world.ipi.process();
    }
}

/// The idle loop: switch to runnable threads, otherwise halt with interrupts
/// enabled. Work is looked for with interrupts disabled and the halt is
/// `sti; hlt`, so an interrupt between the check and the halt wakes the halt
/// instead of being lost. Never spins.
///
/// The CPU's boot thread calls it once it has nothing more to do.
pub fn idle_loop<M: Machine>() -> ! {
    let cpu = M::mycpu();
    let td = cpu.curthread();
    assert!(
        ptr::eq(td, &cpu.thread0),
        "idle_loop on a thread other than the boot thread"
    );
    loop {
        if !cpu.runq.is_empty() || cpu.reqflags() & (rqf::RESCHED | rqf::IDLECHECK_MASK) != 0 {
            if cpu.reqflags() & rqf::IDLECHECK_MASK != 0 && td.crit_depth() == 0 {
                crate::crit::splz::<M>();
            }
            switch::<M>();
            continue;
        }
        let irq = M::interrupts_disable();
        if cpu.runq.is_empty() && cpu.reqflags() & (rqf::RESCHED | rqf::IDLECHECK_MASK) == 0 {
            cpu.stats.idle_halts.inc();
            M::idle_halt();
        } else {
            M::interrupts_restore(irq);
        }
    }
}
