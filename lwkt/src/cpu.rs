//! Per-CPU scheduler state: DragonFly's `globaldata`.
//!
//! One [`Cpu`] per CPU, embedded in the kernel's per-CPU block. Everything in
//! it is *local* — read and written by its own CPU inside a critical section
//! (interrupt handlers on that CPU included) — except where a field says
//! *shared*. Local fields are atomics with `Relaxed` plain loads and stores;
//! `reqflags` is changed only through [`Machine::local_or`] /
//! [`Machine::local_and_not`], single instructions that an interrupt on the
//! same CPU cannot split.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::Machine;
use crate::callout::Wheel;
use crate::runq::RunQueue;
use crate::slab::ThreadCache;
use crate::sleep::SleepQueues;
use crate::thread::{Thread, flags, pri};

/// Bits of [`Cpu::reqflags`]: work an interrupt left for the end of a critical
/// section, and requests to the scheduler.
pub mod rqf {
    /// IPI messages are waiting.
    pub const IPIQ: u32 = 1 << 0;
    /// Device interrupts arrived inside a critical section.
    pub const INTPEND: u32 = 1 << 1;
    /// Clock ticks arrived inside a critical section.
    pub const TIMER: u32 = 1 << 2;
    /// A higher-priority thread may run: reschedule at the next opportunity
    /// (a yield, the return to user mode, the idle loop).
    pub const RESCHED: u32 = 1 << 3;
    /// A preemption candidate is recorded (`Cpu::preempt_candidate`): set
    /// with every store of one, cleared before it is taken, so the end of a
    /// critical section and `doreti` learn all they need from this word in
    /// one load. (Set with no candidate left, it costs one needless `splz`.)
    pub const PREEMPT: u32 = 1 << 4;
    /// What `splz` replays when a critical section ends.
    pub const IDLECHECK_MASK: u32 = IPIQ | INTPEND | TIMER;
}

/// A local counter: written by its CPU only, read by anyone.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one (owning CPU only, plain load and store).
    #[inline(always)]
    pub fn inc(&self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The value.
    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A CPU's scheduler counters.
#[derive(Debug, Default)]
pub struct CpuStats {
    /// Thread switches (DragonFly's `switch_count`).
    pub switches: Counter,
    /// Preemptions granted, as DragonFly's `preempt_hit`: a preemptable
    /// thread made runnable got the CPU from the thread it was better than at
    /// once — or at the end of the hard interrupt that made it runnable, where
    /// DragonFly's interrupt path preempts — or was already running ahead of
    /// it in a preemption chain. Each attempt counts once (see `switch`).
    pub preempt_hit: Counter,
    /// Preemptions refused when asked, as DragonFly's `preempt_miss`: the
    /// thread was not better, the current one was in a critical section, the
    /// candidate needs tokens, or it belongs to another CPU. A refused thread
    /// may still get the CPU when the critical section ends: that is a
    /// switch, not also a hit.
    pub preempt_miss: Counter,
    /// Preemptions refused for a reason that should not arise, as
    /// DragonFly's `preempt_weird`: a thread preempting itself, or either
    /// thread already locked in a preemption chain.
    pub preempt_weird: Counter,
    /// Times the idle loop halted the CPU.
    pub idle_halts: Counter,
    /// Clock ticks taken.
    pub ticks: Counter,
    /// Clock ticks that arrived in a critical section and were replayed.
    pub ticks_replayed: Counter,
    /// Device interrupts that arrived in a critical section and were replayed.
    pub irqs_replayed: Counter,
    /// IPI-queue interrupts that arrived in a critical section and were
    /// replayed.
    pub ipiq_replayed: Counter,
    /// Threads this CPU could not run because it could not get all their
    /// tokens (DragonFly's `v_lock_colls`).
    pub token_collisions: Counter,
    /// Passes over the run queue that took tokens in address order, after
    /// [`crate::switch::SPIN_LOOPS`] passes found every runnable thread's
    /// tokens held.
    pub token_sorted: Counter,
    /// Threads woken on this CPU.
    pub wakeups: Counter,
    /// Sleeps that handed the CPU straight to the thread they woke
    /// ([`crate::sleep`]'s hand-off: the IPC fast path).
    pub handoffs: Counter,
    /// Threads created on this CPU.
    pub created: Counter,
    /// Threads exited on this CPU.
    pub exited: Counter,
}

/// A copy of [`CpuStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuStatsSnapshot {
    pub switches: u64,
    pub preempt_hit: u64,
    pub preempt_miss: u64,
    pub preempt_weird: u64,
    pub idle_halts: u64,
    pub ticks: u64,
    pub ticks_replayed: u64,
    pub irqs_replayed: u64,
    pub ipiq_replayed: u64,
    pub token_collisions: u64,
    pub token_sorted: u64,
    pub wakeups: u64,
    pub handoffs: u64,
    pub created: u64,
    pub exited: u64,
}

impl CpuStats {
    /// A copy of the counters.
    pub fn snapshot(&self) -> CpuStatsSnapshot {
        CpuStatsSnapshot {
            switches: self.switches.get(),
            preempt_hit: self.preempt_hit.get(),
            preempt_miss: self.preempt_miss.get(),
            preempt_weird: self.preempt_weird.get(),
            idle_halts: self.idle_halts.get(),
            ticks: self.ticks.get(),
            ticks_replayed: self.ticks_replayed.get(),
            irqs_replayed: self.irqs_replayed.get(),
            ipiq_replayed: self.ipiq_replayed.get(),
            token_collisions: self.token_collisions.get(),
            token_sorted: self.token_sorted.get(),
            wakeups: self.wakeups.get(),
            handoffs: self.handoffs.get(),
            created: self.created.get(),
            exited: self.exited.get(),
        }
    }
}

/// One CPU's scheduler.
pub struct Cpu<M: Machine> {
    /// Index of this CPU.
    pub(crate) index: u32,
    /// The running thread.
    pub(crate) curthread: AtomicPtr<Thread<M>>,
    /// The thread this CPU booted on, which becomes its idle thread.
    pub(crate) thread0: Thread<M>,
    /// Runnable threads.
    pub runq: RunQueue<M>,
    /// `rqf::*`.
    pub(crate) reqflags: AtomicU32,
    /// Depth of hard-interrupt handling on this CPU.
    pub(crate) intr_nesting: AtomicU32,
    /// Clock ticks deferred by a critical section.
    pub(crate) pending_ticks: AtomicU32,
    /// Device vectors deferred by a critical section, one bit each.
    pub(crate) pending_irqs: [AtomicU64; 4],
    /// A preemptable thread scheduled while we could not switch to it
    /// (non-null only with [`rqf::PREEMPT`] set in `reqflags`).
    pub(crate) preempt_candidate: AtomicPtr<Thread<M>>,
    /// The candidate's attempt was refused and counted a miss already (its
    /// switch at the section's end counts nothing); otherwise it was asked
    /// for in a hard interrupt and is counted when `doreti` decides it.
    pub(crate) preempt_refused: AtomicBool,
    /// Passes over the run queue in a row that could run nothing because
    /// every runnable thread's tokens were held, across the idle thread's
    /// retries too (a blocked thread's switch retries through it); zero
    /// again once a thread gets its tokens or nothing is runnable.
    pub(crate) contended: AtomicU32,
    /// Threads owned by this CPU.
    pub(crate) allq_head: AtomicPtr<Thread<M>>,
    pub(crate) nthreads: AtomicU32,
    /// Cached free threads (with their stacks).
    pub(crate) cache: ThreadCache<M>,
    /// Threads asleep on this CPU.
    pub(crate) sleepq: SleepQueues<M>,
    /// Callouts armed on this CPU.
    pub(crate) callouts: Wheel<M>,
    /// This CPU's softclock thread.
    pub(crate) softclock: AtomicPtr<Thread<M>>,
    /// Scheduler clock ticks taken (the callout wheel's time).
    pub(crate) ticks: AtomicU64,
    /// The user scheduler's side of this CPU.
    pub usched: crate::usched::UserSched<M>,
    /// Counters.
    pub stats: CpuStats,
}

impl<M: Machine> Cpu<M> {
    /// The scheduler state of CPU `index`, before [`crate::bootstrap_cpu`].
    #[allow(clippy::declare_interior_mutable_const)]
    pub const fn new(index: u32) -> Self {
        Cpu {
            index,
            curthread: AtomicPtr::new(ptr::null_mut()),
            thread0: Thread::blank(),
            runq: RunQueue::new(),
            reqflags: AtomicU32::new(0),
            intr_nesting: AtomicU32::new(0),
            pending_ticks: AtomicU32::new(0),
            pending_irqs: [const { AtomicU64::new(0) }; 4],
            preempt_candidate: AtomicPtr::new(ptr::null_mut()),
            preempt_refused: AtomicBool::new(false),
            contended: AtomicU32::new(0),
            allq_head: AtomicPtr::new(ptr::null_mut()),
            nthreads: AtomicU32::new(0),
            cache: ThreadCache::new(),
            sleepq: SleepQueues::new(),
            callouts: Wheel::new(),
            softclock: AtomicPtr::new(ptr::null_mut()),
            ticks: AtomicU64::new(0),
            usched: crate::usched::UserSched::new(),
            stats: CpuStats {
                switches: Counter::new(),
                preempt_hit: Counter::new(),
                preempt_miss: Counter::new(),
                preempt_weird: Counter::new(),
                idle_halts: Counter::new(),
                ticks: Counter::new(),
                ticks_replayed: Counter::new(),
                irqs_replayed: Counter::new(),
                ipiq_replayed: Counter::new(),
                token_collisions: Counter::new(),
                token_sorted: Counter::new(),
                wakeups: Counter::new(),
                handoffs: Counter::new(),
                created: Counter::new(),
                exited: Counter::new(),
            },
        }
    }

    /// This CPU's index.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// The running thread.
    pub fn curthread(&self) -> &'static Thread<M> {
        crate::slab::deref(self.curthread.load(Ordering::Relaxed))
            .expect("CPU has no current thread (lwkt::bootstrap_cpu not called)")
    }

    /// The boot/idle thread.
    pub fn idle_thread(&'static self) -> &'static Thread<M> {
        &self.thread0
    }

    /// Scheduler ticks taken.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Threads owned by this CPU.
    pub fn thread_count(&self) -> usize {
        self.nthreads.load(Ordering::Relaxed) as usize
    }

    /// The request flags.
    pub fn reqflags(&self) -> u32 {
        self.reqflags.load(Ordering::Relaxed)
    }

    /// Asks for a reschedule at the next opportunity. Local.
    pub(crate) fn need_resched(&self) {
        M::local_or(&self.reqflags, rqf::RESCHED);
    }

    pub(crate) fn clear_resched(&self) {
        M::local_and_not(&self.reqflags, rqf::RESCHED);
    }

    /// Whether a reschedule was asked for.
    pub fn resched_wanted(&self) -> bool {
        self.reqflags.load(Ordering::Relaxed) & rqf::RESCHED != 0
    }

    /// Whether hard-interrupt code is running on this CPU.
    pub fn in_interrupt(&self) -> bool {
        self.intr_nesting.load(Ordering::Relaxed) != 0
    }

    /// Visits every thread this CPU owns (requires critical section on this
    /// CPU).
    pub fn for_each_thread(&self, mut f: impl FnMut(&'static Thread<M>)) {
        let mut p = crate::slab::deref(self.allq_head.load(Ordering::Relaxed));
        while let Some(td) = p {
            f(td);
            p = crate::slab::deref(td.all_next.load(Ordering::Relaxed));
        }
    }

    /// Adds `td` to this CPU's thread list (local, requires critical section).
    pub(crate) fn allq_insert(&self, td: &'static Thread<M>) {
        let head = self.allq_head.load(Ordering::Relaxed);
        td.all_prev.store(ptr::null_mut(), Ordering::Relaxed);
        td.all_next.store(head, Ordering::Relaxed);
        if let Some(h) = crate::slab::deref(head) {
            h.all_prev
                .store(ptr::from_ref(td).cast_mut(), Ordering::Relaxed);
        }
        self.allq_head
            .store(ptr::from_ref(td).cast_mut(), Ordering::Relaxed);
        self.nthreads
            .store(self.nthreads.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Removes `td` from this CPU's thread list (local, requires critical
    /// section).
    pub(crate) fn allq_remove(&self, td: &'static Thread<M>) {
        let prev = td.all_prev.load(Ordering::Relaxed);
        let next = td.all_next.load(Ordering::Relaxed);
        match crate::slab::deref(prev) {
            Some(p) => p.all_next.store(next, Ordering::Relaxed),
            None => self.allq_head.store(next, Ordering::Relaxed),
        }
        if let Some(n) = crate::slab::deref(next) {
            n.all_prev.store(prev, Ordering::Relaxed);
        }
        td.all_next.store(ptr::null_mut(), Ordering::Relaxed);
        td.all_prev.store(ptr::null_mut(), Ordering::Relaxed);
        self.nthreads
            .store(self.nthreads.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }
}

/// Makes the calling context CPU `cpu`'s boot thread (its future idle thread):
/// from here on critical sections work on this CPU. First thing each CPU does
/// once its per-CPU block is installed.
pub fn bootstrap_cpu<M: Machine>(cpu: &'static Cpu<M>) {
    let td = &cpu.thread0;
    td.index.store(u32::MAX - cpu.index, Ordering::Relaxed);
    td.cpu.store(cpu.index, Ordering::Release);
    td.pri.store(pri::IDLE, Ordering::Relaxed);
    td.flags
        .store(flags::RUNNING | flags::IDLE, Ordering::Relaxed);
    td.set_name("idle");
    cpu.curthread
        .store(ptr::from_ref(td).cast_mut(), Ordering::Relaxed);
    cpu.allq_insert(td);
}
