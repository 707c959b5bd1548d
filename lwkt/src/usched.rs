//! The user scheduler: DragonFly's `usched` layer (`usched_dfly.c`), in
//! Wyvern's shape.
//!
//! LWKT schedules by fixed priority and never moves a thread by itself. User
//! threads need more — fairness among equals by how much CPU each has had
//! lately, and spreading over the CPUs — and get it from this layer above
//! LWKT:
//!
//! * **One current user thread per CPU** (DragonFly's `uschedcp`). A user
//!   thread runs user code only while it is its CPU's current user thread.
//!   On every way back to user mode it [`acquire`]s that turn; while another
//!   thread has it, it waits on the CPU's user queue, off the LWKT run
//!   queue. So LWKT sees at most one user-level thread per CPU.
//! * **User and kernel priority.** The current user thread runs at its user
//!   priority (`pri::USER_IDLE` to `pri::USER_REAL`), in user mode and in
//!   system calls that do not block. When it blocks in the kernel it gives up
//!   the turn (the best waiting thread gets it) and is raised to
//!   [`pri::KERN_USER`]: woken, it runs above every user-level thread until
//!   it is back at user level, so it leaves the kernel promptly (DragonFly's
//!   `lwkt_passive_release` and `lwkt_passive_recover`). A sleep that hands
//!   the CPU to a user thread (the IPC hand-off) hands it the turn too.
//! * **Fairness by a decaying CPU estimate.** Each clock tick charges the
//!   current user thread one tick of `estcpu`; estimates halve every
//!   [`DECAY_TICKS`]. The best waiting thread is the one of highest user
//!   priority, then lowest estimate. The current thread is asked to step
//!   aside when the best waiting one is of a higher priority, or of its own
//!   and [`EST_QUANTUM`] ticks behind it; a thread arriving that far ahead
//!   takes the turn at once, so an interactive thread stays responsive
//!   beside busy ones. A user yield gives the turn to the best waiting
//!   thread of at least the yielder's priority.
//! * **Balancing by messages.** Each CPU publishes its load (its current
//!   user thread and the ones waiting). A CPU with waiting threads pushes one
//!   on its clock to the least loaded CPU when that one is two lower — or
//!   one lower when neither load has changed for [`ROTATE_TICKS`], so that
//!   the odd thread out of an uneven split moves around instead of sharing
//!   a CPU for ever. (A load that comes and goes — a thread that wakes to
//!   work a while and sleeps again — is no uneven split: moving a thread
//!   away from beside it would only start a chain of moves through CPUs
//!   that were balanced all along.) A CPU
//!   whose user side goes idle asks an overloaded CPU for a thread (a pull,
//!   by IPI message). Either way the queue's owner takes the thread off its
//!   own queue and wakes it with a destination; the thread migrates itself.
//!   No CPU touches another's queue. Threads pinned with [`pin`] never move.
//!
//! Everything is local to the owning CPU and done in its critical section,
//! except the published load and the `incoming` count (threads on their way
//! here), which other CPUs read — and the latter increment.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::Machine;
use crate::cpu::{Counter, Cpu};
use crate::crit::crit_enter;
use crate::slab::{deref, ptr as tdptr};
use crate::thread::{NO_CPU, Thread, flags, pri};

/// Ticks between halvings of the CPU estimates (a second at Wyvern's
/// 100 Hz).
pub const DECAY_TICKS: u64 = 100;

/// How far (in ticks of CPU estimate) a waiting thread of the current one's
/// priority must be behind it to take the turn.
pub const EST_QUANTUM: u32 = 3;

/// How long two loads one apart must have stayed as they are before the
/// odd thread out moves from the higher to the lower; so also the period
/// at which it travels on through an uneven split.
pub const ROTATE_TICKS: u64 = 25;

/// Most threads a CPU pushes away on one tick.
const PUSHES_PER_TICK: usize = 4;

/// Why the current user thread should reconsider its turn (`resched`).
const STEP_ASIDE: u32 = 1;
const YIELD: u32 = 2;

/// One CPU's user scheduler.
pub struct UserSched<M: Machine> {
    /// The current user thread. Local.
    cur: AtomicPtr<Thread<M>>,
    /// The current user thread when it may go back to user mode as it is:
    /// at user level, nothing asked of it (null otherwise). [`acquire`]'s
    /// fast path is one comparison with it. Local.
    fast: AtomicPtr<Thread<M>>,
    /// The waiting threads, in arrival order (links in the threads). Local.
    head: AtomicPtr<Thread<M>>,
    tail: AtomicPtr<Thread<M>>,
    waiting: AtomicU32,
    /// The current thread (0 or 1) plus the waiting ones. Shared: written by
    /// the owner, read by balancers.
    load: AtomicU32,
    /// Threads sent here and not arrived yet. Shared: incremented by
    /// senders, decremented by the arriving thread.
    incoming: AtomicU32,
    /// The load smoothed over the last ticks, in sixteenths (each tick
    /// moves it an eighth of the way to the load). Shared like `load`.
    avg: AtomicU32,
    /// The load at the last tick. Local.
    sampled: AtomicU32,
    /// The tick since which the load seen at each tick has stayed the
    /// same — or since a move of the odd thread out found none it could
    /// move (so that the next try is [`ROTATE_TICKS`] later). Shared like
    /// `load`.
    settled: AtomicU64,
    /// [`STEP_ASIDE`] or [`YIELD`] (0: none). Local.
    resched: AtomicU32,
    /// Whether the CPU runs its scheduler (threads may be sent here).
    /// Shared: set once.
    online: AtomicBool,
    /// A pull request is out (at most one at a time). Local.
    pulling: AtomicBool,
    /// One more than the tick of the last refused pull: after a refusal the
    /// next request waits for the next tick. Local.
    refused_tick: AtomicU64,
    /// Counters.
    pub stats: UserStats,
}

/// A CPU's user-scheduler counters.
#[derive(Debug, Default)]
pub struct UserStats {
    /// Turns given to a thread that waited for one (on the user queue or
    /// in `acquire`; a turn taken when free, at a wakeup or a switch, is
    /// not counted).
    pub turns: Counter,
    /// Turns taken from a current thread by a much better arrival.
    pub steals: Counter,
    /// Threads this CPU sent to another (pushes and answered pulls).
    pub pushes: Counter,
    /// Pull requests this CPU sent.
    pub pulls: Counter,
    /// Threads that arrived here from a balancer.
    pub arrivals: Counter,
}

impl<M: Machine> UserSched<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        UserSched {
            cur: AtomicPtr::new(ptr::null_mut()),
            fast: AtomicPtr::new(ptr::null_mut()),
            head: AtomicPtr::new(ptr::null_mut()),
            tail: AtomicPtr::new(ptr::null_mut()),
            waiting: AtomicU32::new(0),
            load: AtomicU32::new(0),
            incoming: AtomicU32::new(0),
            avg: AtomicU32::new(0),
            sampled: AtomicU32::new(0),
            settled: AtomicU64::new(0),
            resched: AtomicU32::new(0),
            online: AtomicBool::new(false),
            pulling: AtomicBool::new(false),
            refused_tick: AtomicU64::new(0),
            stats: UserStats {
                turns: Counter::new(),
                steals: Counter::new(),
                pushes: Counter::new(),
                pulls: Counter::new(),
                arrivals: Counter::new(),
            },
        }
    }

    /// User threads here: the current one and those waiting for a turn.
    ///
    /// Any context (a snapshot).
    pub fn load(&self) -> u32 {
        self.load.load(Ordering::Relaxed)
    }

    /// User threads waiting for a turn here.
    ///
    /// Any context (a snapshot).
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The current user thread, if any. Requires critical section on this
    /// CPU (or a snapshot).
    pub fn current(&self) -> Option<&'static Thread<M>> {
        deref(self.cur.load(Ordering::Relaxed))
    }

    pub(crate) fn cur_ptr(&self) -> *mut Thread<M> {
        self.cur.load(Ordering::Relaxed)
    }

    fn publish(&self) {
        let l = self.waiting.load(Ordering::Relaxed) + u32::from(!self.cur_ptr().is_null());
        self.load.store(l, Ordering::Relaxed);
    }

    /// The smoothed load, rounded to the nearest.
    fn steady(&self) -> u32 {
        (self.avg.load(Ordering::Relaxed) + 8) / 16
    }

    /// What a balancer elsewhere counts here: the load or the smoothed
    /// load, whichever is higher (a CPU whose threads just blocked for a
    /// moment is not empty), plus the threads on their way.
    fn load_seen(&self) -> u32 {
        self.load().max(self.steady()) + self.incoming.load(Ordering::Relaxed)
    }

    /// What this CPU counts as its own load when it gives threads away:
    /// the load or the smoothed load, whichever is lower (a thread that
    /// woke for a moment does not make it overloaded).
    fn load_kept(&self) -> u32 {
        self.load().min(self.steady())
    }

    /// Moves the smoothed load an eighth of the way to the load, and notes
    /// when the load changed. On the clock, at tick `tick`.
    fn smooth(&self, tick: u64) {
        let load = self.load();
        if load != self.sampled.load(Ordering::Relaxed) {
            self.sampled.store(load, Ordering::Relaxed);
            self.settled.store(tick, Ordering::Relaxed);
        }
        let (avg, now) = (self.avg.load(Ordering::Relaxed), load * 16);
        // Rounded away from `avg`, so that it reaches `now`.
        let next = if now >= avg {
            avg + (now - avg).div_ceil(8)
        } else {
            avg - (avg - now).div_ceil(8)
        };
        self.avg.store(next, Ordering::Relaxed);
    }

    /// Whether the load seen at the clock has stayed the same for the last
    /// [`ROTATE_TICKS`] ticks of its CPU, whose tick is `tick`.
    fn settled(&self, tick: u64) -> bool {
        tick.saturating_sub(self.settled.load(Ordering::Relaxed)) >= ROTATE_TICKS
    }
}

/// The LWKT level of a user thread of user priority `upri`: raised (in the
/// kernel without its turn) or at user level.
fn level(upri: u8, raised: bool) -> u8 {
    if raised {
        upri.max(pri::KERN_USER)
    } else {
        upri
    }
}

/// Sets up a new thread's user-scheduler state (`upri` 0: a kernel thread)
/// on creating CPU `cpu`. Before the thread is published.
pub(crate) fn init_thread<M: Machine>(cpu: &Cpu<M>, td: &Thread<M>, upri: u8) {
    td.upri.store(upri, Ordering::Relaxed);
    td.uticks.store(0, Ordering::Relaxed);
    td.umove.store(NO_CPU, Ordering::Relaxed);
    td.uq_next.store(ptr::null_mut(), Ordering::Relaxed);
    td.uq_prev.store(ptr::null_mut(), Ordering::Relaxed);
    let creator = cpu.curthread();
    let est = if creator.is_user() {
        creator.estcpu()
    } else {
        0
    };
    td.estcpu.store(est, Ordering::Relaxed);
    td.est_epoch
        .store(cpu.ticks() / DECAY_TICKS, Ordering::Relaxed);
    if upri != 0 {
        td.pri.store(level(upri, true), Ordering::Relaxed);
        td.set(flags::UKERN);
    }
}

/// Marks this CPU as running its scheduler: balancers may send it threads.
/// Each CPU, once, from `start_cpu`.
pub(crate) fn set_online<M: Machine>(cpu: &Cpu<M>) {
    cpu.usched.online.store(true, Ordering::Release);
}

/// Halves `td`'s estimate once per [`DECAY_TICKS`] of this CPU's clock
/// since it was last decayed. Requires critical section.
fn decay<M: Machine>(cpu: &Cpu<M>, td: &Thread<M>) {
    let now = cpu.ticks() / DECAY_TICKS;
    let then = td.est_epoch.load(Ordering::Relaxed);
    if now != then {
        if now > then {
            let n = (now - then).min(31) as u32;
            td.estcpu.store(td.estcpu() >> n, Ordering::Relaxed);
        }
        td.est_epoch.store(now, Ordering::Relaxed);
    }
}

/// Whether waiting thread `w` should have the turn rather than `td`.
fn better<M: Machine>(w: &Thread<M>, td: &Thread<M>) -> bool {
    let (wp, tp) = (
        w.upri.load(Ordering::Relaxed),
        td.upri.load(Ordering::Relaxed),
    );
    wp > tp || (wp == tp && w.estcpu().saturating_add(EST_QUANTUM) <= td.estcpu())
}

/// Appends `td` (running here) to this CPU's user queue. Requires critical
/// section.
fn uq_insert<M: Machine>(cpu: &Cpu<M>, td: &'static Thread<M>) {
    let us = &cpu.usched;
    debug_assert!(!td.has(flags::UQ));
    td.set(flags::UQ);
    let tail = us.tail.load(Ordering::Relaxed);
    td.uq_prev.store(tail, Ordering::Relaxed);
    td.uq_next.store(ptr::null_mut(), Ordering::Relaxed);
    match deref(tail) {
        Some(t) => t.uq_next.store(tdptr(td), Ordering::Relaxed),
        None => us.head.store(tdptr(td), Ordering::Relaxed),
    }
    us.tail.store(tdptr(td), Ordering::Relaxed);
    let n = us.waiting.load(Ordering::Relaxed);
    us.waiting.store(n + 1, Ordering::Relaxed);
    if n == 0 {
        let w = M::world();
        w.overloaded.insert(cpu.index());
        w.noverloaded.fetch_add(1, Ordering::AcqRel);
    }
    us.publish();
}

/// Takes `td` off this CPU's user queue. Requires critical section.
fn uq_remove<M: Machine>(cpu: &Cpu<M>, td: &'static Thread<M>) {
    let us = &cpu.usched;
    debug_assert!(td.has(flags::UQ));
    td.clear(flags::UQ);
    let (prev, next) = (
        td.uq_prev.load(Ordering::Relaxed),
        td.uq_next.load(Ordering::Relaxed),
    );
    match deref(prev) {
        Some(p) => p.uq_next.store(next, Ordering::Relaxed),
        None => us.head.store(next, Ordering::Relaxed),
    }
    match deref(next) {
        Some(n) => n.uq_prev.store(prev, Ordering::Relaxed),
        None => us.tail.store(prev, Ordering::Relaxed),
    }
    td.uq_next.store(ptr::null_mut(), Ordering::Relaxed);
    td.uq_prev.store(ptr::null_mut(), Ordering::Relaxed);
    let n = us.waiting.load(Ordering::Relaxed) - 1;
    us.waiting.store(n, Ordering::Relaxed);
    if n == 0 {
        let w = M::world();
        w.overloaded.remove(cpu.index());
        w.noverloaded.fetch_sub(1, Ordering::AcqRel);
    }
    us.publish();
}

/// The waiting thread that should go next: highest user priority, then
/// lowest estimate, then longest waiting. Requires critical section.
fn uq_best<M: Machine>(cpu: &Cpu<M>) -> Option<&'static Thread<M>> {
    let mut best: Option<&'static Thread<M>> = None;
    let mut p = deref(cpu.usched.head.load(Ordering::Relaxed));
    while let Some(w) = p {
        decay(cpu, w);
        let wins = best.is_none_or(|b| {
            let (wp, bp) = (
                w.upri.load(Ordering::Relaxed),
                b.upri.load(Ordering::Relaxed),
            );
            wp > bp || (wp == bp && w.estcpu() < b.estcpu())
        });
        if wins {
            best = Some(w);
        }
        p = deref(w.uq_next.load(Ordering::Relaxed));
    }
    best
}

/// Makes `w` this CPU's current user thread, at its user level. The caller
/// makes it runnable if it is not. Requires critical section.
fn designate<M: Machine>(cpu: &'static Cpu<M>, w: &'static Thread<M>) {
    let us = &cpu.usched;
    us.cur.store(tdptr(w), Ordering::Relaxed);
    us.fast.store(ptr::null_mut(), Ordering::Relaxed);
    us.resched.store(0, Ordering::Relaxed);
    us.stats.turns.inc();
    if w.has(flags::UKERN) {
        w.clear(flags::UKERN);
        crate::sched::set_level(cpu, w, w.upri.load(Ordering::Relaxed));
    }
    us.publish();
}

/// Raises user thread `td` of this CPU to its kernel level. Requires
/// critical section.
fn raise<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    if !td.has(flags::UKERN) {
        td.set(flags::UKERN);
        crate::sched::set_level(cpu, td, level(td.upri.load(Ordering::Relaxed), true));
    }
}

/// `td`, this CPU's current user thread, stops running here — it blocks,
/// migrates or exits: it is raised, and the turn goes to the best waiting
/// thread; if none, the CPU's user side is idle and asks an overloaded CPU
/// for work.
///
/// Requires critical section (the switch or the exit), on `td`.
#[inline(never)]
pub(crate) fn release<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    debug_assert!(ptr::eq(cpu.usched.cur_ptr(), td) && !td.has(flags::RUNQ));
    // Off the run queue: raising is a mark and a store.
    td.set(flags::UKERN);
    td.pri.store(
        level(td.upri.load(Ordering::Relaxed), true),
        Ordering::Relaxed,
    );
    cpu.usched.cur.store(ptr::null_mut(), Ordering::Relaxed);
    cpu.usched.fast.store(ptr::null_mut(), Ordering::Relaxed);
    match uq_best(cpu) {
        Some(w) => {
            uq_remove(cpu, w);
            designate(cpu, w);
            crate::sched::enqueue(cpu, w);
        }
        None => {
            cpu.usched.publish();
            pull(cpu);
        }
    }
}

/// The sleep hand-off from `td` (going to sleep, off the run queue) to `to`,
/// about to run at `to_pri` in its place: a user thread handed the CPU by
/// the current user thread gets its turn too (it runs on the sleeper's
/// behalf — the IPC call to a server); otherwise the sleeper's turn goes as
/// when it blocks. Requires critical section, in `sleep::tsleep_handoff`.
#[inline(always)]
pub(crate) fn handoff<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
    to: &'static Thread<M>,
    to_pri: u8,
) {
    let us = &cpu.usched;
    let had_turn = ptr::eq(us.cur_ptr(), td);
    if !to.is_user() {
        to.pri.store(to_pri, Ordering::Relaxed);
        if had_turn {
            release(cpu, td);
        }
        return;
    }
    to.upri.store(to_pri, Ordering::Relaxed);
    if had_turn {
        td.set(flags::UKERN);
        td.pri.store(
            level(td.upri.load(Ordering::Relaxed), true),
            Ordering::Relaxed,
        );
        to.clear(flags::UKERN);
        to.pri.store(to_pri, Ordering::Relaxed);
        us.cur.store(tdptr(to), Ordering::Relaxed);
        // Lowered, its turn fresh: straight back to user mode when done.
        us.resched.store(0, Ordering::Relaxed);
        us.fast.store(tdptr(to), Ordering::Relaxed);
    } else {
        to.pri
            .store(level(to_pri, to.has(flags::UKERN)), Ordering::Relaxed);
    }
}

/// Makes the current thread its CPU's current user thread before it goes
/// back to user mode: waits for the turn while another thread has it,
/// steps aside if the clock or a yield asked for it, lowers itself to user
/// level, and lets any kernel thread above that level run first. Returns
/// `false`, without the turn, when the thread was interrupted
/// ([`crate::interrupt`]: its process is ending); the caller ends it, or
/// clears the request and calls again.
///
/// Thread context, on a user thread, outside critical sections, interrupts
/// enabled or not; may block, and may return on another CPU (a balancer
/// moved it while it waited).
#[inline(always)]
pub fn acquire<M: Machine>() -> bool {
    may_return::<M>() || acquire_slow::<M>(M::mycpu().curthread())
}

/// Whether the current thread may go back to user mode as it is: it has
/// its CPU's user turn, at user level, and nothing was asked of it (the
/// fast path of [`acquire`]: one comparison).
///
/// Any context (a snapshot; meaningful on the way back to user mode).
#[inline(always)]
pub fn may_return<M: Machine>() -> bool {
    // The running thread is never null: equal means `fast` is set.
    let cpu = M::mycpu();
    cpu.usched.fast.load(Ordering::Relaxed) == cpu.curthread.load(Ordering::Relaxed)
}

#[cold]
fn acquire_slow<M: Machine>(td: &'static Thread<M>) -> bool {
    debug_assert!(td.is_user(), "acquire on a kernel thread: {td:?}");
    debug_assert!(td.crit_depth() == 0 && !M::mycpu().in_interrupt());
    // Whether it let better kernel threads run already: once is enough (one
    // that cannot get its tokens yields back at once, and spinning on it
    // here — interrupts may be off — would never let the holder finish).
    let mut yielded = false;
    loop {
        let to = td.umove.load(Ordering::Relaxed);
        if to != NO_CPU {
            // A balancer sent it elsewhere while it waited.
            td.umove.store(NO_CPU, Ordering::Relaxed);
            crate::sched::migrate_self::<M>(to as usize);
            let g = crit_enter::<M>();
            let here = M::mycpu();
            here.usched.incoming.fetch_sub(1, Ordering::AcqRel);
            here.usched.stats.arrivals.inc();
            // Whatever brought it (a push or our pull), a new pull may go.
            here.usched.pulling.store(false, Ordering::Relaxed);
            drop(g);
            continue;
        }
        let g = crit_enter::<M>();
        let cpu = M::mycpu();
        let us = &cpu.usched;
        if td.has(flags::INTR_REQ) {
            if td.has(flags::UQ) {
                uq_remove(cpu, td);
            }
            drop(g);
            return false;
        }
        decay(cpu, td);
        match us.current() {
            None => {
                if td.has(flags::UQ) {
                    uq_remove(cpu, td);
                }
                designate(cpu, td);
            }
            Some(c) if ptr::eq(c, td) => {
                let why = us.resched.swap(0, Ordering::Relaxed);
                if why != 0
                    && let Some(w) = uq_best(cpu)
                    && (better(w, td)
                        || (why == YIELD
                            && w.upri.load(Ordering::Relaxed) >= td.upri.load(Ordering::Relaxed)))
                {
                    // Step aside: `w` has the turn, we wait for the next.
                    uq_remove(cpu, w);
                    designate(cpu, w);
                    crate::sched::enqueue(cpu, w);
                    wait(cpu, td);
                    drop(g);
                    continue;
                }
                if td.has(flags::UKERN) {
                    td.clear(flags::UKERN);
                    crate::sched::set_level(cpu, td, td.upri.load(Ordering::Relaxed));
                }
                if why == YIELD && !yielded && td.has(flags::RUNQ) && cpu.runq.has_peer_after(td) {
                    // Nobody waits for the turn, but threads woken here wait
                    // behind us at our level: a yield lets them run (they
                    // queue for the turn, or take it if we block later).
                    yielded = true;
                    cpu.runq.rotate(td);
                    crate::switch::switch::<M>();
                    drop(g);
                    continue;
                }
            }
            Some(c) => {
                decay(cpu, c);
                if !better(td, c) {
                    wait(cpu, td);
                    drop(g);
                    continue;
                }
                // Far ahead of the current thread, which is not running
                // (we are): take its turn; raised, it finds the turn gone
                // on its way out and waits.
                us.stats.steals.inc();
                raise(cpu, c);
                if td.has(flags::UQ) {
                    uq_remove(cpu, td);
                }
                designate(cpu, td);
            }
        }
        // Ours. Kernel threads above user level first; then check the
        // turn again (it may have been taken meanwhile).
        if !yielded && !cpu.runq.best().is_some_and(|b| ptr::eq(b, td)) {
            yielded = true;
            crate::switch::switch::<M>();
            drop(g);
            continue;
        }
        us.fast.store(tdptr(td), Ordering::Relaxed);
        drop(g);
        return true;
    }
}

/// Makes `td`, a user thread raised to kernel level (blocked in the kernel,
/// or new), runnable on this CPU (`sched::enqueue`):
///
/// * if the CPU's user turn is free and nobody waits for it, `td` takes it
///   now, at user level: on its way out it has nothing more to do (there
///   is no other user-level thread here to run above);
/// * if the running thread is the current user thread and `td` would only
///   queue behind it for the turn, it is queued behind it at its user
///   level, without a reschedule (preempting would be two switches for
///   nothing): it runs at the next switch here — the holder blocking, at
///   the latest the next tick's round robin;
/// * otherwise it is queued raised, above every user-level thread, and
///   asks for a reschedule.
///
/// Requires critical section on `cpu`.
#[inline(never)]
pub(crate) fn enqueue_raised<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    let us = &cpu.usched;
    let cur = us.cur_ptr();
    td.set(flags::RUNQ);
    if cur.is_null() && us.waiting() == 0 && td.umove.load(Ordering::Relaxed) == NO_CPU {
        td.pri
            .store(td.upri.load(Ordering::Relaxed), Ordering::Relaxed);
        take_free_turn(cpu, td);
        crate::sched::push(cpu, td, true);
        return;
    }
    let upri = td.upri.load(Ordering::Relaxed);
    let (pri, resched) = match deref(cur) {
        // It would only queue behind the running current user thread:
        // behind it at its own level, no reschedule (the next switch here,
        // at the latest the next tick's round robin, runs it).
        Some(c) if cur == cpu.curthread.load(Ordering::Relaxed) && !better(td, c) => (upri, false),
        _ => (level(upri, true), true),
    };
    td.pri.store(pri, Ordering::Relaxed);
    crate::sched::push(cpu, td, resched);
}

/// `td`, this CPU's current user thread, blocks (`switch`): it gives up the
/// turn ([`release`]), and the thread to run next is picked; if that is a
/// user thread woken in the kernel while `td` had the turn (the client its
/// reply woke) and the turn is still free, it takes it now. Returns the
/// next thread. Requires critical section (the switch), on `td`.
#[inline(never)]
pub(crate) fn switch_away<M: Machine>(
    cpu: &'static Cpu<M>,
    td: &'static Thread<M>,
) -> &'static Thread<M> {
    if cpu.usched.waiting() != 0 {
        // The turn goes to the best waiting thread (which may run next).
        release(cpu, td);
        return crate::switch::next_thread(cpu, td);
    }
    td.set(flags::UKERN);
    td.pri.store(
        level(td.upri.load(Ordering::Relaxed), true),
        Ordering::Relaxed,
    );
    let ntd = crate::switch::next_thread(cpu, td);
    if ntd.has(flags::UKERN) && !ptr::eq(ntd, td) && ntd.umove.load(Ordering::Relaxed) == NO_CPU {
        // Straight from one to the other (the client its reply woke): the
        // load stays, nobody waits.
        take_on_switch(cpu, ntd);
        return ntd;
    }
    let us = &cpu.usched;
    us.cur.store(ptr::null_mut(), Ordering::Relaxed);
    us.fast.store(ptr::null_mut(), Ordering::Relaxed);
    us.publish();
    pull(cpu);
    ntd
}

/// `td`, a user thread without the turn about to run on this CPU, takes the
/// turn (nobody waits for it) at user level. Requires critical section.
fn take_on_switch<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    {
        // At its user level (requeued if it was raised; it is about to run:
        // no reschedule for it), then anything now better runs at its
        // first chance.
        let upri = td.upri.load(Ordering::Relaxed);
        take_free_turn(cpu, td);
        if td.priority() != upri {
            cpu.runq.remove(td);
            td.pri.store(upri, Ordering::Relaxed);
            cpu.runq.push_tail(td);
            if cpu.runq.best_priority().is_some_and(|p| p > upri) {
                cpu.need_resched();
            }
        }
    }
}

/// `td` (not running, its level set to user level by the caller) becomes
/// the current user thread, free to go back to user mode. Nobody waits, so
/// the load is 1. Requires critical section.
fn take_free_turn<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    let us = &cpu.usched;
    debug_assert_eq!(us.waiting(), 0);
    td.clear(flags::UKERN);
    us.cur.store(tdptr(td), Ordering::Relaxed);
    us.resched.store(0, Ordering::Relaxed);
    us.fast.store(tdptr(td), Ordering::Relaxed);
    us.load.store(1, Ordering::Relaxed);
}

/// Waits on this CPU's user queue for a turn (or a move, or an interrupt):
/// off the run queue, raised. Requires critical section, on `td`.
fn wait<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    crate::sched::dequeue(cpu, td);
    if !td.has(flags::UKERN) {
        td.set(flags::UKERN);
        td.pri.store(
            level(td.upri.load(Ordering::Relaxed), true),
            Ordering::Relaxed,
        );
    }
    if !td.has(flags::UQ) {
        uq_insert(cpu, td);
    }
    crate::switch::switch::<M>();
}

/// A thread waiting on this CPU's user queue was interrupted
/// ([`crate::interrupt`]): it must run to see it. Requires critical section
/// on its CPU.
pub(crate) fn interrupt_waiting<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    if td.has(flags::UQ) {
        crate::sched::enqueue(cpu, td);
        cpu.need_resched();
    }
}

/// Asks that the current user thread give its turn, on its way back to user
/// mode, to the best waiting thread of at least its priority (a user
/// yield). Nothing happens if none waits.
///
/// Thread context, on a user thread.
pub fn yield_user<M: Machine>() {
    debug_assert!(
        !M::mycpu().in_interrupt(),
        "yield_user from a hard interrupt"
    );
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    if ptr::eq(cpu.usched.cur_ptr(), g.thread()) {
        cpu.usched.resched.store(YIELD, Ordering::Relaxed);
        cpu.usched.fast.store(ptr::null_mut(), Ordering::Relaxed);
    }
    drop(g);
}

/// Pins the current thread to its CPU (`true`: the balancer never moves it)
/// or frees it to be moved. Move it first if it should be elsewhere.
///
/// Thread context.
pub fn pin<M: Machine>(pinned: bool) {
    debug_assert!(!M::mycpu().in_interrupt(), "pin from a hard interrupt");
    let g = crit_enter::<M>();
    let td = g.thread();
    if pinned {
        td.set(flags::PINNED);
    } else {
        td.clear(flags::PINNED);
    }
    drop(g);
}

/// The user side of the scheduler clock: charges the current user thread
/// the tick if it is the one running, asks it to step aside if a waiting
/// thread should go first, and balances.
///
/// Hard-interrupt context (the clock) or `splz` replaying it.
pub(crate) fn clock<M: Machine>(cpu: &'static Cpu<M>) {
    let us = &cpu.usched;
    us.smooth(cpu.ticks());
    if let Some(c) = us.current()
        && ptr::eq(c, cpu.curthread())
    {
        decay(cpu, c);
        c.estcpu
            .store(c.estcpu().saturating_add(1), Ordering::Relaxed);
        c.uticks.store(c.user_ticks() + 1, Ordering::Relaxed);
        if us.waiting() != 0
            && us.resched.load(Ordering::Relaxed) == 0
            && uq_best(cpu).is_some_and(|w| better(w, c))
        {
            us.resched.store(STEP_ASIDE, Ordering::Relaxed);
            us.fast.store(ptr::null_mut(), Ordering::Relaxed);
        }
    }
    if us.waiting() != 0 {
        balance(cpu);
    }
}

/// The least loaded other online CPU and its load, looking from the next
/// CPU on (so that equals share the arrivals).
fn least_loaded<M: Machine>(me: usize) -> Option<(usize, u32)> {
    let cpus = &M::world().cpus;
    let n = cpus.len();
    let mut best: Option<(usize, u32)> = None;
    for k in 1..n {
        let i = (me + k) % n;
        let us = &cpus[i].usched;
        if !us.online.load(Ordering::Acquire) {
            continue;
        }
        let l = us.load_seen();
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((i, l));
            if l == 0 {
                break;
            }
        }
    }
    best
}

/// Pushes waiting threads to less loaded CPUs. Requires critical section
/// (the clock).
fn balance<M: Machine>(cpu: &'static Cpu<M>) {
    let us = &cpu.usched;
    for _ in 0..PUSHES_PER_TICK {
        if us.waiting() == 0 {
            return;
        }
        let mine = us.load_kept();
        let Some((to, theirs)) = least_loaded::<M>(cpu.index()) else {
            return;
        };
        // One apart, and both as they are for a while: move the odd one
        // out (and it will move on from there after as long again).
        let rotate = mine == theirs + 1
            && us.settled(cpu.ticks())
            && M::world().cpus[to]
                .usched
                .settled(M::world().cpus[to].ticks());
        if !(mine >= theirs + 2 || rotate) {
            return;
        }
        if !send_one(cpu, to) {
            if rotate {
                // Nothing movable (pinned, or already on its way): look
                // again in ROTATE_TICKS, not on every tick.
                us.settled.store(cpu.ticks(), Ordering::Relaxed);
            }
            return;
        }
        if rotate {
            return;
        }
    }
}

/// Takes a movable waiting thread (the latest arrival that is not pinned)
/// off this CPU's user queue and wakes it to move to CPU `to`. Returns
/// whether there was one. Requires critical section.
fn send_one<M: Machine>(cpu: &'static Cpu<M>, to: usize) -> bool {
    let mut p = deref(cpu.usched.tail.load(Ordering::Relaxed));
    while let Some(w) = p {
        if !w.has(flags::PINNED) && w.umove.load(Ordering::Relaxed) == NO_CPU {
            break;
        }
        p = deref(w.uq_prev.load(Ordering::Relaxed));
    }
    let Some(w) = p else {
        return false;
    };
    uq_remove(cpu, w);
    w.umove.store(to as u32, Ordering::Relaxed);
    M::world().cpus[to]
        .usched
        .incoming
        .fetch_add(1, Ordering::AcqRel);
    cpu.usched.stats.pushes.inc();
    M::trace(crate::Event::Migrate, to as u64);
    crate::sched::enqueue(cpu, w);
    // It must run to leave, at once.
    cpu.need_resched();
    true
}

/// This CPU's user side went idle: ask an overloaded CPU for a thread. One
/// request at a time; after a refusal, none before the next tick (a CPU
/// whose user side goes idle and busy at a high rate — a server — would
/// otherwise ask on every block). Requires critical section.
fn pull<M: Machine>(cpu: &'static Cpu<M>) {
    let world = M::world();
    let us = &cpu.usched;
    if world.noverloaded.load(Ordering::Relaxed) == 0
        || us.pulling.load(Ordering::Relaxed)
        || us.refused_tick.load(Ordering::Relaxed) == cpu.ticks() + 1
    {
        return;
    }
    let me = cpu.index();
    let n = world.cpus.len();
    for k in 1..n {
        let i = (me + k) % n;
        if world.overloaded.contains(i) {
            us.pulling.store(true, Ordering::Relaxed);
            us.stats.pulls.inc();
            world.ipi.send(i, pull_remote::<M>, me, 0);
            return;
        }
    }
}

/// IPI-dispatch context, on an overloaded CPU: CPU `to` asks for a thread;
/// it gets one, or a refusal.
fn pull_remote<M: Machine>(to: usize, _: usize) {
    let cpu = M::mycpu();
    // Its load now (it asked because it has nothing), and what is on its way.
    let them = &M::world().cpus[to].usched;
    let theirs = them.load() + them.incoming.load(Ordering::Relaxed);
    if cpu.usched.waiting() != 0 && cpu.usched.load() >= theirs + 2 && send_one(cpu, to) {
        return;
    }
    M::world().ipi.send(to, pull_refused::<M>, 0, 0);
}

/// IPI-dispatch context, on a CPU whose pull was refused.
fn pull_refused<M: Machine>(_: usize, _: usize) {
    let cpu = M::mycpu();
    cpu.usched.pulling.store(false, Ordering::Relaxed);
    cpu.usched
        .refused_tick
        .store(cpu.ticks() + 1, Ordering::Relaxed);
}
