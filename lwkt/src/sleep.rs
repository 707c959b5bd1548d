//! Sleeping on an address, and waking its sleepers (`tsleep`/`wakeup`).
//!
//! Each CPU keeps its own sleep queues: [`BUCKETS`] hash buckets of threads
//! asleep on that CPU, local and protected by its critical section. A global
//! array of CPU sets says, per bucket, which CPUs *may* have sleepers in it.
//! [`wakeup`] wakes local sleepers directly and sends every other CPU in the
//! bucket's set a message to wake its own — no CPU touches another's queue.
//!
//! # Not losing a wakeup
//!
//! The race-free way to sleep on a condition is DragonFly's interlock:
//! [`tsleep_interlock`] puts the thread on its sleep queue *first*, then the
//! caller checks its condition, then [`tsleep`] with [`INTERLOCKED`] blocks —
//! or returns at once if a wakeup already took the thread off the queue in
//! between. A waker changes the condition and then calls `wakeup`.
//!
//! Why no wakeup is lost across CPUs: the sleeper adds its CPU to the bucket's
//! set with a read-modify-write (if not there already) and then reads the
//! condition; the waker writes the condition and then reads the bucket's set
//! with a read-modify-write (`fetch_or(0)`). If the waker's read comes first,
//! the sleeper's read-modify-write reads from it, so the condition the waker
//! wrote is visible to the sleeper, which does not sleep. Otherwise the waker
//! sees the sleeper's CPU in the set and sends it the wakeup message, which
//! that CPU runs in its IPI-dispatch context: before or after the sleeper's
//! whole interlock-and-check, never in the middle (it runs in a critical
//! section).
//!
//! A timeout is a callout on the sleeping thread's CPU that takes it off the
//! queue and marks it timed out. Threads cannot migrate while asleep.
//!
//! # Interrupting a sleep
//!
//! A sleep with [`INTERRUPTIBLE`] also ends when another thread calls
//! [`interrupt`] on the sleeper (a process being killed stops its threads'
//! waits this way). The request is a flag set on the sleeper's own CPU, in
//! its critical section, by message if needed; `tsleep` tests the flag in its
//! critical section before it blocks, so a request is never lost between the
//! sleeper's check of its condition and its sleep. The flag stays set — every
//! later interruptible sleep returns at once — until [`clear_interrupt`].

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering, fence};

use crate::Machine;
use crate::cpu::Cpu;
use crate::crit::{CritGuard, crit_enter};
use crate::sched::Owner;
use crate::slab::{deref, ptr as tdptr};
use crate::thread::{Thread, flags};

/// Sleep-queue buckets per CPU (and sets of CPUs with sleepers, one per
/// bucket, in the world). Idents that share a bucket cost a wakeup a useless
/// IPI to each CPU with sleepers there, so the table is large (DragonFly
/// sizes its own in the thousands); a power of two.
pub const BUCKETS: usize = 512;

/// `tsleep` flag: the caller already called [`tsleep_interlock`] on this ident.
pub const INTERLOCKED: u32 = 1;

/// `tsleep` flag: [`interrupt`] ends the sleep.
pub const INTERRUPTIBLE: u32 = 2;

/// How a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken (by `wakeup`, or scheduled directly).
    Woken,
    /// The timeout expired first.
    TimedOut,
    /// [`interrupt`] ended an [`INTERRUPTIBLE`] sleep (or came before it).
    Interrupted,
}

/// Bucket of an ident.
pub(crate) fn bucket(ident: usize) -> usize {
    const BITS: u32 = BUCKETS.trailing_zeros();
    (ident >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (usize::BITS - BITS)
}

/// A CPU's sleep queues.
pub struct SleepQueues<M: Machine> {
    heads: [AtomicPtr<Thread<M>>; BUCKETS],
}

impl<M: Machine> SleepQueues<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        SleepQueues {
            heads: [const { AtomicPtr::new(ptr::null_mut()) }; BUCKETS],
        }
    }

    fn insert(&self, b: usize, td: &'static Thread<M>) {
        let head = self.heads[b].load(Ordering::Relaxed);
        td.sq_prev.store(ptr::null_mut(), Ordering::Relaxed);
        td.sq_next.store(head, Ordering::Relaxed);
        if let Some(h) = deref(head) {
            h.sq_prev.store(tdptr(td), Ordering::Relaxed);
        }
        self.heads[b].store(tdptr(td), Ordering::Relaxed);
    }

    fn remove(&self, b: usize, td: &'static Thread<M>) {
        let prev = td.sq_prev.load(Ordering::Relaxed);
        let next = td.sq_next.load(Ordering::Relaxed);
        match deref(prev) {
            Some(p) => p.sq_next.store(next, Ordering::Relaxed),
            None => self.heads[b].store(next, Ordering::Relaxed),
        }
        if let Some(n) = deref(next) {
            n.sq_prev.store(prev, Ordering::Relaxed);
        }
        td.sq_next.store(ptr::null_mut(), Ordering::Relaxed);
        td.sq_prev.store(ptr::null_mut(), Ordering::Relaxed);
    }

    fn is_empty(&self, b: usize) -> bool {
        self.heads[b].load(Ordering::Relaxed).is_null()
    }
}

/// Takes `td` (owned by `cpu`) off its sleep queue if it is on one. Requires
/// critical section on `cpu`.
#[inline]
pub(crate) fn remove_from_sleepq<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    if !td.has(flags::TSLEEPQ) {
        return;
    }
    if td.has(flags::SLEEP_DIRECT) {
        td.clear(flags::TSLEEPQ | flags::SLEEP_DIRECT);
        return;
    }
    remove_from_hash(cpu, td);
}

/// [`remove_from_sleepq`] of a sleeper in a hash queue.
fn remove_from_hash<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    let b = bucket(td.sleep_ident.load(Ordering::Relaxed));
    cpu.sleepq.remove(b, td);
    td.clear(flags::TSLEEPQ);
    if cpu.sleepq.is_empty(b) {
        M::world().sleep_cpus[b].remove(cpu.index());
    }
}

/// Puts the current thread on its CPU's sleep queue for `ident` without
/// blocking: the first half of a race-free sleep (module docs). Check the
/// condition next, then call [`tsleep`] with [`INTERLOCKED`], or
/// [`tsleep_cancel`] if there is no need to sleep.
///
/// Thread context.
pub fn tsleep_interlock<M: Machine>(ident: usize) {
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let td = g.thread();
    if td.has(flags::TSLEEPQ) {
        if td.sleep_ident.load(Ordering::Relaxed) == ident && !td.has(flags::SLEEP_DIRECT) {
            drop(g);
            return;
        }
        remove_from_sleepq(cpu, td);
    }
    let b = bucket(ident);
    td.sleep_ident.store(ident, Ordering::Relaxed);
    cpu.sleepq.insert(b, td);
    td.set(flags::TSLEEPQ);
    let set = &M::world().sleep_cpus[b];
    if !set.contains(cpu.index()) {
        set.insert(cpu.index());
    }
    // The caller reads its condition next: keep that read after our
    // registration.
    fence(Ordering::SeqCst);
    drop(g);
}

/// [`tsleep_interlock`] for a sleeper that only [`wakeup_thread`] wakes —
/// whose waker knows the thread, as an IPC record does: the thread is
/// marked asleep on `ident` but enters no hash queue and no CPU set, so the
/// sleep and its wakeup cost no hashing and no bucket walk. [`tsleep`],
/// [`tsleep_cancel`], [`interrupt`] and the hand-off treat it as any
/// sleep; [`wakeup`] never sees it.
///
/// No wakeup is lost without the set's ordering: a waker on another CPU
/// always sends the sleeper's CPU a message, which runs in that CPU's
/// critical section, before or after the sleeper's whole interlock and
/// check; one on this CPU runs between them or not at all.
///
/// Thread context.
#[inline]
pub(crate) fn tsleep_interlock_direct<M: Machine>(ident: usize) {
    debug_assert_eq!(ident % DIRECT_ALIGN, 0, "direct sleep ident misaligned");
    let g = crit_enter::<M>();
    let td = g.thread();
    if td.has(flags::TSLEEPQ) {
        if td.has(flags::SLEEP_DIRECT) && td.sleep_ident.load(Ordering::Relaxed) == ident {
            drop(g);
            return;
        }
        remove_from_sleepq(M::mycpu(), td);
    }
    td.sleep_ident.store(ident, Ordering::Relaxed);
    td.set(flags::TSLEEPQ | flags::SLEEP_DIRECT);
    drop(g);
}

/// Alignment of a direct sleep's ident: the low bits of a wakeup message's
/// word are free to carry a priority ([`wakeup_thread_at`]). IPC records,
/// the only direct sleepers, are aligned to it.
pub(crate) const DIRECT_ALIGN: usize = 64;
/// In a direct wakeup's word: the low five bits are a priority to set.
const WITH_PRI: usize = 32;
const _: () = assert!((crate::pri::MAX as usize) < WITH_PRI && WITH_PRI < DIRECT_ALIGN);

/// Wakes `td` if it sleeps directly on `ident`
/// ([`tsleep_interlock_direct`]); on another CPU by message. A thread that
/// sleeps on something else, or not at all, is left alone. `td` must be a
/// thread slot (slots are never freed); if the thread exited and its slot
/// was reused, a sleeper there is woken only if it sleeps directly on the
/// same ident, and every direct sleeper rechecks its condition.
///
/// Any context; never blocks.
#[inline]
pub(crate) fn wakeup_thread<M: Machine>(td: &'static Thread<M>, ident: usize) {
    debug_assert_eq!(ident % DIRECT_ALIGN, 0, "direct sleep ident misaligned");
    wake_direct::<M>(td, ident);
}

/// [`wakeup_thread`], and sets the woken thread's priority to `pri` first
/// (as [`crate::setpri`] would) — one message across CPUs where a `setpri`
/// and a wakeup would be two. A thread no longer asleep there keeps its
/// priority.
///
/// Any context; never blocks.
#[inline]
pub(crate) fn wakeup_thread_at<M: Machine>(td: &'static Thread<M>, ident: usize, pri: u8) {
    debug_assert_eq!(ident % DIRECT_ALIGN, 0, "direct sleep ident misaligned");
    assert!(pri <= crate::pri::MAX, "priority {pri} out of range");
    wake_direct::<M>(td, ident | WITH_PRI | usize::from(pri));
}

/// Wakes `td` if it sleeps directly on `word`'s ident; with [`WITH_PRI`]
/// in `word`, at the priority below it.
fn wake_direct<M: Machine>(td: &'static Thread<M>, word: usize) {
    let ident = word & !(DIRECT_ALIGN - 1);
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let here = match crate::sched::owner(cpu, td) {
        Owner::There(to) => {
            M::world()
                .ipi
                .send(to, wakeup_thread_remote::<M>, tdptr(td) as usize, word);
            false
        }
        Owner::Here => true,
        // Exited: nobody sleeps there.
        Owner::Nobody => false,
    };
    if here
        && td.has(flags::SLEEP_DIRECT)
        && td.has(flags::TSLEEPQ)
        && td.sleep_ident.load(Ordering::Relaxed) == ident
    {
        if word & WITH_PRI != 0 {
            crate::sched::set_priority(cpu, td, (word & (WITH_PRI - 1)) as u8);
        }
        td.clear(flags::TSLEEPQ | flags::SLEEP_DIRECT);
        cpu.stats.wakeups.inc();
        M::trace(
            crate::Event::Wakeup,
            u64::from(td.index.load(Ordering::Relaxed)),
        );
        crate::sched::schedule::<M>(td);
    }
    drop(g);
}

pub(crate) fn wakeup_thread_remote<M: Machine>(arg: usize, word: usize) {
    // If the thread moved on meanwhile, this forwards to its new owner.
    if let Some(td) = deref(arg as *mut Thread<M>) {
        wake_direct::<M>(td, word);
    }
}

/// Undoes [`tsleep_interlock`] when the condition says there is no need to
/// sleep.
///
/// Thread context.
pub fn tsleep_cancel<M: Machine>() {
    // Only this thread puts itself on a sleep queue: not on one now, it
    // cannot be on one before it returns.
    if !M::mycpu().curthread().has(flags::TSLEEPQ) {
        return;
    }
    let g = crit_enter::<M>();
    remove_from_sleepq(M::mycpu(), g.thread());
    drop(g);
}

/// Blocks the current thread until a [`wakeup`] on `ident`, or for at most
/// `timeout` scheduler ticks if non-zero. With [`INTERLOCKED`] in `flags` the
/// thread was already queued by [`tsleep_interlock`] and returns at once if a
/// wakeup came since. `wmesg` says why, for `ps`.
///
/// Thread context, never from a hard interrupt or the idle thread; blocks.
/// Tokens are released while asleep and reacquired before it returns. A
/// critical section is allowed and kept.
pub fn tsleep<M: Machine>(ident: usize, flags_: u32, wmesg: &str, timeout: u64) -> Wake {
    let cpu = M::mycpu();
    assert!(!cpu.in_interrupt(), "tsleep from a hard-interrupt handler");
    let g = crit_enter::<M>();
    let td = g.thread();
    assert!(!td.has(flags::IDLE), "the idle thread cannot sleep");
    if flags_ & INTERLOCKED != 0 {
        if !td.has(flags::TSLEEPQ) {
            // Woken between the interlock and now.
            drop(g);
            return Wake::Woken;
        }
        debug_assert_eq!(td.sleep_ident.load(Ordering::Relaxed), ident);
    } else {
        drop(g);
        tsleep_interlock::<M>(ident);
        return tsleep::<M>(ident, flags_ | INTERLOCKED, wmesg, timeout);
    }
    if let Some(early) = prepare_sleep(cpu, td, flags_, wmesg, timeout) {
        drop(g);
        return early;
    }
    crate::sched::deschedule_self(&g);
    crate::switch::switch::<M>();
    let r = finish_sleep::<M>(td);
    drop(g);
    r
}

/// The part of a sleep before the switch: the interrupt check, the timeout,
/// the message. `Some` when the sleep ends before it starts (an interrupt was
/// requested). Requires critical section; the thread is on its sleep queue.
/// Inlined, so the constant `wmesg` of the hand-off's callers folds.
#[inline(always)]
fn prepare_sleep<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
    flags_: u32,
    wmesg: &str,
    timeout: u64,
) -> Option<Wake> {
    if flags_ & INTERRUPTIBLE != 0 {
        if td.has(flags::INTR_REQ) {
            remove_from_sleepq(cpu, td);
            return Some(Wake::Interrupted);
        }
        td.set(flags::INTR_SLEEP);
    }
    td.clear(flags::TIMED_OUT);
    if timeout > 0 {
        td.set(flags::TIMEOUT_ARMED);
        crate::callout::reset::<M>(&td.timeout, timeout, endtsleep::<M>, tdptr(td) as usize);
    }
    td.set_wmesg(wmesg);
    None
}

/// The part of a sleep after the thread runs again: woken, timed out, or
/// scheduled directly. Threads do not migrate while asleep, so this is still
/// the CPU it slept on. Requires critical section.
#[inline(always)]
fn finish_sleep<M: Machine>(td: &'static Thread<M>) -> Wake {
    let cpu = M::mycpu();
    if td.has(flags::TIMEOUT_ARMED) {
        crate::callout::stop::<M>(&td.timeout);
        td.clear(flags::TIMEOUT_ARMED);
    }
    remove_from_sleepq(cpu, td);
    td.set_wmesg("");
    let interrupted = td.has(flags::INTR_SLEEP) && td.has(flags::INTR_REQ);
    td.clear(flags::INTR_SLEEP);
    if td.has(flags::TIMED_OUT) {
        td.clear(flags::TIMED_OUT);
        Wake::TimedOut
    } else if interrupted {
        Wake::Interrupted
    } else {
        Wake::Woken
    }
}

/// Whether the current thread, about to sleep with `flags_`, may instead
/// hand its CPU straight to `to` — a thread of this CPU asleep on `to_ident`
/// that is to run at priority `to_pri` — with [`tsleep_handoff`]. The
/// guards of the IPC fast path that belong to the scheduler: nothing but
/// the sleep itself stands between the two threads, and no runnable thread
/// of this CPU is more urgent than `to` will be.
///
/// Requires critical section (the caller's only one); the answer holds
/// until the caller leaves it or blocks.
#[inline(always)]
pub(crate) fn can_handoff<M: Machine>(
    g: &CritGuard<M>,
    flags_: u32,
    to: &'static Thread<M>,
    to_ident: usize,
    to_pri: u8,
) -> bool {
    let cpu = M::mycpu();
    let td = g.thread();
    if cpu.in_interrupt()
        || td.crit_depth() != 1
        || !td.preempted.load(Ordering::Relaxed).is_null()
        || (flags_ & INTERRUPTIBLE != 0 && td.has(flags::INTR_REQ))
    {
        return false;
    }
    if to.cpu() != cpu.index()
        || !to.has(flags::TSLEEPQ)
        || to.has(
            flags::RUNQ
                | flags::RUNNING
                | flags::MIGRATING
                | flags::EXITING
                | flags::PREEMPT_LOCK
                | flags::IDLE,
        )
        || to.sleep_ident.load(Ordering::Relaxed) != to_ident
        || !to.tokens.is_empty()
    {
        return false;
    }
    // The best runnable thread once we are off the run queue.
    let best = match cpu.runq.best() {
        Some(b) if ptr::eq(b, td) => cpu.runq.next_after(td),
        other => other,
    };
    best.is_none_or(|b| b.priority() <= to_pri)
}

/// Sleeps on `ident` like [`tsleep`] with [`INTERLOCKED`] and no timeout,
/// but wakes `to` and switches to it directly instead of going through the
/// run queue: `to` runs at `to_pri` in the sleeper's place, ahead of
/// runnable threads of that priority (the sleeper gave it its turn). Counts
/// a wakeup and a hand-off.
///
/// Requires critical section: the caller's only one, entered before
/// [`can_handoff`] said yes, and not left since; the caller holds no tokens
/// and is on its sleep queue for `ident` ([`tsleep_interlock`]). Blocks.
#[inline(always)]
pub(crate) fn tsleep_handoff<M: Machine>(
    g: &CritGuard<M>,
    ident: usize,
    flags_: u32,
    wmesg: &str,
    to: &'static Thread<M>,
    to_pri: u8,
) -> Wake {
    let cpu = M::mycpu();
    let td = g.thread();
    debug_assert!(can_handoff(
        g,
        flags_,
        to,
        to.sleep_ident.load(Ordering::Relaxed),
        to_pri
    ));
    debug_assert!(td.tokens.is_empty(), "hand-off while holding tokens");
    debug_assert!(
        td.has(flags::TSLEEPQ) && td.sleep_ident.load(Ordering::Relaxed) == ident,
        "hand-off without tsleep_interlock"
    );
    if prepare_sleep(cpu, td, flags_, wmesg, 0).is_some() {
        unreachable!("can_handoff checked the interrupt request");
    }
    crate::sched::deschedule_self(g);
    remove_from_sleepq(cpu, to);
    crate::usched::handoff(cpu, td, to, to_pri);
    // Queued as a running thread is (so it may pick itself later), without
    // asking for a reschedule: it is about to run.
    to.set(flags::RUNQ);
    cpu.runq.push_tail(to);
    cpu.stats.wakeups.inc();
    cpu.stats.handoffs.inc();
    M::trace(
        crate::Event::Wakeup,
        u64::from(to.index.load(Ordering::Relaxed)),
    );
    crate::switch::switch_direct::<M>(cpu, td, to);
    finish_sleep::<M>(td)
}

/// The timeout of a sleep (a callout on the sleeper's CPU).
fn endtsleep<M: Machine>(arg: usize) {
    let Some(td) = deref(arg as *mut Thread<M>) else {
        return;
    };
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    td.clear(flags::TIMEOUT_ARMED);
    if td.has(flags::TSLEEPQ) {
        remove_from_sleepq(cpu, td);
        td.set(flags::TIMED_OUT);
        crate::sched::schedule::<M>(td);
    }
    drop(g);
}

/// Asks `td` to stop sleeping: its current [`INTERRUPTIBLE`] sleep ends
/// with [`Wake::Interrupted`], and so does every later one at once, until
/// [`clear_interrupt`]. Takes effect on `td`'s CPU, asynchronously if that is
/// another one; holding the reference keeps the thread slot from being
/// reused meanwhile.
///
/// Thread context or IPI-dispatch context; never blocks.
pub fn interrupt<M: Machine>(td: &crate::ThreadRef<M>) {
    debug_assert!(
        !M::mycpu().in_interrupt(),
        "interrupt() from a hard-interrupt handler"
    );
    // The message holds a reference of its own, released by the receiver.
    let held = core::mem::ManuallyDrop::new(td.clone());
    interrupt_on_owner::<M>(tdptr(held.thread()) as usize);
}

fn interrupt_on_owner<M: Machine>(arg: usize) {
    let Some(td) = deref(arg as *mut Thread<M>) else {
        return;
    };
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    match crate::sched::owner(cpu, td) {
        Owner::There(to) => {
            // Its owner's, or (migrating) its destination's: `flags` are
            // written by one CPU at a time.
            M::world().ipi.send(to, interrupt_remote::<M>, arg, 0);
            drop(g);
        }
        Owner::Here => {
            td.set(flags::INTR_REQ);
            if td.has(flags::INTR_SLEEP) && td.has(flags::TSLEEPQ) {
                remove_from_sleepq(cpu, td);
                crate::sched::schedule::<M>(td);
            }
            crate::usched::interrupt_waiting(cpu, td);
            drop(g);
            // Release the message's reference (see `interrupt`).
            drop(crate::ThreadRef::adopt(td));
        }
        // The message's reference keeps the thread from exiting and its
        // slot from being freed.
        Owner::Nobody => unreachable!("interrupting a freed thread slot"),
    }
}

fn interrupt_remote<M: Machine>(arg: usize, _: usize) {
    // If the thread moved on meanwhile, this forwards to its new owner.
    interrupt_on_owner::<M>(arg);
}

/// Clears the current thread's interrupt request ([`interrupt`]).
///
/// Thread context.
pub fn clear_interrupt<M: Machine>() {
    let g = crit_enter::<M>();
    g.thread().clear(flags::INTR_REQ);
    drop(g);
}

/// Whether someone asked the current thread to stop sleeping.
///
/// Thread context.
pub fn interrupt_requested<M: Machine>() -> bool {
    M::mycpu().curthread().has(flags::INTR_REQ)
}

/// Wakes up to `max` of this CPU's sleepers on `ident`; returns how many.
/// Requires critical section.
fn wakeup_local<M: Machine>(cpu: &'static Cpu<M>, ident: usize, max: usize) -> usize {
    let b = bucket(ident);
    let mut woke = 0;
    let mut p = deref(cpu.sleepq.heads[b].load(Ordering::Relaxed));
    while let Some(td) = p {
        p = deref(td.sq_next.load(Ordering::Relaxed));
        if td.sleep_ident.load(Ordering::Relaxed) != ident {
            continue;
        }
        remove_from_sleepq(cpu, td);
        cpu.stats.wakeups.inc();
        M::trace(
            crate::Event::Wakeup,
            u64::from(td.index.load(Ordering::Relaxed)),
        );
        crate::sched::schedule::<M>(td);
        woke += 1;
        if woke == max {
            break;
        }
    }
    woke
}

fn wakeup_remote<M: Machine>(ident: usize, max: usize) {
    let g = crit_enter::<M>();
    wakeup_local(M::mycpu(), ident, max);
    drop(g);
}

/// Wakes every thread asleep on `ident`, on every CPU.
///
/// Any context (hard-interrupt handlers included); never blocks.
pub fn wakeup<M: Machine>(ident: usize) {
    wake::<M>(ident, usize::MAX);
}

/// Wakes one thread asleep on `ident`: one on this CPU if there is one,
/// otherwise at most one on each other CPU that has sleepers there (so
/// possibly several; a woken thread must recheck its condition anyway).
///
/// Any context; never blocks.
pub fn wakeup_one<M: Machine>(ident: usize) {
    wake::<M>(ident, 1);
}

fn wake<M: Machine>(ident: usize, max: usize) {
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let woke = wakeup_local(cpu, ident, max);
    if woke < max {
        let world = M::world();
        let me = cpu.index();
        world.sleep_cpus[bucket(ident)].for_each_latest(|c| {
            if c != me {
                world.ipi.send(c, wakeup_remote::<M>, ident, max);
            }
        });
    }
    drop(g);
}
