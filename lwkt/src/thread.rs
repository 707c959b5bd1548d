//! Threads.
//!
//! A [`Thread`] lives in the thread slab (`slab`) or, for each CPU's boot/idle
//! thread, in that CPU's static block — never on the heap of its own and never
//! freed, so `&'static Thread` is always valid memory. A slot is reused only
//! after its thread exited and every [`ThreadRef`] to it was dropped; the
//! generation number makes a stale [`ThreadId`] detectable.
//!
//! # Field discipline
//!
//! Most fields are *local*: read and written only by the CPU that owns the
//! thread (`cpu`), inside a critical section. They are atomics accessed with
//! `Relaxed` loads and stores only — no read-modify-write, so no `lock` prefix —
//! which lets an interrupt on the same CPU, or a statistics reader elsewhere,
//! read them without a data race. Ownership moves between CPUs only through an
//! IPI message (migration, creation on another CPU), whose FIFO orders
//! everything the old owner wrote before everything the new owner reads.
//! *Shared* fields say so.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::Machine;
use crate::callout::Callout;
use crate::token::TokenStack;

/// Fixed LWKT priorities: higher runs first. Within a priority threads
/// round-robin on the scheduler clock.
pub mod pri {
    /// The idle thread.
    pub const IDLE: u8 = 0;
    /// User threads at their lowest.
    pub const USER_IDLE: u8 = 4;
    /// User threads, normally.
    pub const USER: u8 = 6;
    /// User threads, real-time.
    pub const USER_REAL: u8 = 8;
    /// User threads running in the kernel.
    pub const KERN_USER: u8 = 10;
    /// Kernel daemons (the default for kernel threads).
    pub const KERN_DAEMON: u8 = 12;
    /// Software timers (the per-CPU softclock thread).
    pub const SOFT_TIMER: u8 = 14;
    /// Software interrupts.
    pub const SOFT: u8 = 16;
    /// Threads supporting interrupt threads.
    pub const INT_SUPPORT: u8 = 20;
    /// Interrupt threads.
    pub const INT: u8 = 28;
    /// Highest.
    pub const MAX: u8 = 31;
    /// Number of levels.
    pub const LEVELS: usize = 32;
}

/// Thread flags (`TDF_*` in DragonFly).
pub mod flags {
    /// Executing on its CPU now.
    pub const RUNNING: u32 = 1 << 0;
    /// On its CPU's run queue.
    pub const RUNQ: u32 = 1 << 1;
    /// Preempted; held on its CPU until the preemptor blocks.
    pub const PREEMPT_LOCK: u32 = 1 << 2;
    /// The preemptor blocked and switched back.
    pub const PREEMPT_DONE: u32 = 1 << 3;
    /// Moving to another CPU: may not be enqueued meanwhile.
    pub const MIGRATING: u32 = 1 << 4;
    /// On a sleep queue.
    pub const TSLEEPQ: u32 = 1 << 5;
    /// Has called `exit`.
    pub const EXITING: u32 = 1 << 6;
    /// Exited and switched out for the last time.
    pub const EXITED: u32 = 1 << 7;
    /// May preempt lower-priority threads (interrupt threads).
    pub const PREEMPTABLE: u32 = 1 << 8;
    /// A CPU's idle thread.
    pub const IDLE: u32 = 1 << 9;
    /// Allocated from the slab (not a CPU's boot thread).
    pub const SLAB: u32 = 1 << 10;
    /// Woken by its sleep's timeout rather than a wakeup.
    pub const TIMED_OUT: u32 = 1 << 11;
    /// Its sleep's timeout callout is armed.
    pub const TIMEOUT_ARMED: u32 = 1 << 12;
    /// Asked to stop sleeping ([`crate::interrupt`]): interruptible sleeps
    /// return [`crate::Wake::Interrupted`] until [`crate::clear_interrupt`].
    pub const INTR_REQ: u32 = 1 << 13;
    /// In an interruptible sleep now.
    pub const INTR_SLEEP: u32 = 1 << 14;
    /// A user thread without its CPU's user turn in the kernel (it blocked
    /// there, or is new): it runs raised to [`super::pri::KERN_USER`],
    /// above user priority — or, woken while the running thread holds the
    /// turn and would keep it, behind that thread at its own level — until
    /// it has the turn back ([`crate::usched`]).
    pub const UKERN: u32 = 1 << 15;
    /// On its CPU's user-scheduler queue, waiting for its user turn.
    pub const UQ: u32 = 1 << 16;
    /// Kept on its CPU by its own choice: the balancer never moves it.
    pub const PINNED: u32 = 1 << 17;
    /// With [`TSLEEPQ`]: asleep on its ident *directly*, in no hash queue —
    /// only `crate::sleep::wakeup_thread` (and interrupts, timeouts,
    /// hand-offs) end the sleep.
    pub const SLEEP_DIRECT: u32 = 1 << 18;
}

/// Index value meaning "none".
pub(crate) const NO_CPU: u32 = u32::MAX;

/// Bit of [`Thread::refs`]: the thread is dead (reaped or reaping).
pub(crate) const REFS_DEAD: u32 = 1 << 31;

const NAME_LEN: usize = 24;

/// A cell that only the thread's lifecycle code touches, never concurrently:
/// creation (before the thread is published), its start (on the thread itself)
/// and reaping (after its last switch-out). See each use.
pub(crate) struct LifecycleCell<T>(UnsafeCell<T>);

// SAFETY: accesses are serialized by the thread lifecycle (type docs): create
// happens-before start (the thread is published through a run queue or an IPI
// FIFO), start happens-before exit, exit happens-before reap (the reaper runs
// after the final switch on the same CPU).
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for LifecycleCell<T> {}

impl<T> LifecycleCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        LifecycleCell(UnsafeCell::new(v))
    }

    /// # Safety
    ///
    /// The caller is the lifecycle step that currently owns the cell (type docs).
    #[allow(clippy::mut_from_ref, unsafe_code)]
    pub(crate) unsafe fn get(&self) -> &mut T {
        // SAFETY: exclusive by the caller's guarantee.
        unsafe { &mut *self.0.get() }
    }
}

/// What a new thread runs.
pub(crate) enum Entry {
    /// A closure (freed when it returns).
    Closure(Box<dyn FnOnce() + Send + 'static>),
    /// A function and its argument: nothing to free, for threads whose code
    /// may never return to `thread_start` (user threads).
    Raw(fn(usize), usize),
}

/// A light-weight kernel thread.
pub struct Thread<M: Machine> {
    /// Slab index (`u32::MAX - cpu` for a CPU's boot thread). Written before
    /// publication.
    pub(crate) index: AtomicU32,
    /// Incremented each time the slot is reused. Shared: Release on reuse.
    pub(crate) generation: AtomicU32,
    name: [AtomicU8; NAME_LEN],
    /// Owning CPU. Shared: written by the owner (or the creator before
    /// publication) with Release, read anywhere with Acquire.
    pub(crate) cpu: AtomicU32,
    /// Priority. Local.
    pub(crate) pri: AtomicU8,
    /// `flags::*`. Local.
    pub(crate) flags: AtomicU32,
    /// Critical-section depth. Local (the thread itself; interrupts read it).
    pub(crate) critcount: AtomicU32,
    /// Run-queue links. Local.
    pub(crate) rq_next: AtomicPtr<Thread<M>>,
    pub(crate) rq_prev: AtomicPtr<Thread<M>>,
    /// All-threads-on-this-CPU links. Local.
    pub(crate) all_next: AtomicPtr<Thread<M>>,
    pub(crate) all_prev: AtomicPtr<Thread<M>>,
    /// Sleep-queue links and channel. Local.
    pub(crate) sq_next: AtomicPtr<Thread<M>>,
    pub(crate) sq_prev: AtomicPtr<Thread<M>>,
    pub(crate) sleep_ident: AtomicUsize,
    /// Why it sleeps (up to 8 bytes of a name). Local.
    wmesg: AtomicU64,
    /// The thread this one preempted. Local.
    pub(crate) preempted: AtomicPtr<Thread<M>>,
    /// Target CPU of a migration in progress. Local.
    pub(crate) migrate_to: AtomicU32,
    /// Where it is migrating (set with `MIGRATING`, kept until adopted):
    /// where operations on it go meanwhile (`sched::elsewhere`).
    pub(crate) migrate_dest: AtomicU32,
    /// User scheduling ([`crate::usched`]): the user priority (0: a kernel
    /// thread). Local.
    pub(crate) upri: AtomicU8,
    /// Decaying CPU-use estimate, in ticks. Local.
    pub(crate) estcpu: AtomicU32,
    /// The decay period (its CPU's ticks / `usched::DECAY_TICKS`) `estcpu`
    /// was last decayed to. Local.
    pub(crate) est_epoch: AtomicU64,
    /// Ticks it was charged as its CPU's user thread. Local (read anywhere).
    pub(crate) uticks: AtomicU64,
    /// User-scheduler queue links. Local.
    pub(crate) uq_next: AtomicPtr<Thread<M>>,
    pub(crate) uq_prev: AtomicPtr<Thread<M>>,
    /// The CPU the balancer sent it to ([`NO_CPU`]: none). Local.
    pub(crate) umove: AtomicU32,
    /// Free-list link in the slab's caches. Local to the cache's owner.
    pub(crate) free_next: AtomicPtr<Thread<M>>,
    /// References from [`ThreadRef`]s, plus [`REFS_DEAD`] once the thread has
    /// switched out for the last time. Shared: atomic read-modify-write; of the
    /// reaper (which sets `REFS_DEAD`) and the last `ThreadRef` drop, exactly
    /// one sees the other's mark and frees the slot.
    pub(crate) refs: AtomicU32,
    /// Times this thread was switched in. Local.
    pub(crate) switches: AtomicU64,
    /// Tokens held. Local.
    pub(crate) tokens: TokenStack<M>,
    /// Sleep timeout.
    pub(crate) timeout: Callout<M>,
    /// Saved machine state.
    pub(crate) ctx: M::Context,
    /// The kernel stack (none for a CPU's boot thread, which runs on the stack
    /// the CPU booted on).
    pub(crate) stack: LifecycleCell<Option<M::Stack>>,
    /// What the thread runs when it starts.
    pub(crate) entry: LifecycleCell<Option<Entry>>,
}

impl<M: Machine> Thread<M> {
    /// A blank thread (const, for CPUs' boot threads and slab chunks).
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn blank() -> Self {
        Thread {
            index: AtomicU32::new(u32::MAX),
            generation: AtomicU32::new(0),
            name: [const { AtomicU8::new(0) }; NAME_LEN],
            cpu: AtomicU32::new(NO_CPU),
            pri: AtomicU8::new(pri::KERN_DAEMON),
            flags: AtomicU32::new(0),
            critcount: AtomicU32::new(0),
            rq_next: AtomicPtr::new(ptr::null_mut()),
            rq_prev: AtomicPtr::new(ptr::null_mut()),
            all_next: AtomicPtr::new(ptr::null_mut()),
            all_prev: AtomicPtr::new(ptr::null_mut()),
            sq_next: AtomicPtr::new(ptr::null_mut()),
            sq_prev: AtomicPtr::new(ptr::null_mut()),
            sleep_ident: AtomicUsize::new(0),
            wmesg: AtomicU64::new(0),
            preempted: AtomicPtr::new(ptr::null_mut()),
            migrate_to: AtomicU32::new(NO_CPU),
            migrate_dest: AtomicU32::new(NO_CPU),
            upri: AtomicU8::new(0),
            estcpu: AtomicU32::new(0),
            est_epoch: AtomicU64::new(0),
            uticks: AtomicU64::new(0),
            uq_next: AtomicPtr::new(ptr::null_mut()),
            uq_prev: AtomicPtr::new(ptr::null_mut()),
            umove: AtomicU32::new(NO_CPU),
            free_next: AtomicPtr::new(ptr::null_mut()),
            refs: AtomicU32::new(0),
            switches: AtomicU64::new(0),
            tokens: TokenStack::new(),
            timeout: Callout::new(),
            ctx: M::NEW_CONTEXT,
            stack: LifecycleCell::new(None),
            entry: LifecycleCell::new(None),
        }
    }

    /// The owning CPU.
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Acquire) as usize
    }

    /// The priority.
    pub fn priority(&self) -> u8 {
        self.pri.load(Ordering::Relaxed)
    }

    /// Its scheduling priority as priority inheritance and the views see
    /// it: a user thread's user priority (whatever level it runs at in the
    /// kernel), a kernel thread's priority.
    pub fn sched_priority(&self) -> u8 {
        match self.upri.load(Ordering::Relaxed) {
            0 => self.pri.load(Ordering::Relaxed),
            p => p,
        }
    }

    /// Whether it is a user thread (made with [`crate::Builder::user`]).
    pub fn is_user(&self) -> bool {
        self.upri.load(Ordering::Relaxed) != 0
    }

    /// Clock ticks charged to it as its CPU's current user thread.
    pub fn user_ticks(&self) -> u64 {
        self.uticks.load(Ordering::Relaxed)
    }

    /// Its decaying CPU-use estimate (ticks).
    pub fn estcpu(&self) -> u32 {
        self.estcpu.load(Ordering::Relaxed)
    }

    /// The flags (`flags::*`), as the owning CPU last wrote them.
    pub fn flag_bits(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    pub(crate) fn has(&self, f: u32) -> bool {
        self.flags.load(Ordering::Relaxed) & f != 0
    }

    /// Sets flags. Owner only (a plain load and store).
    pub(crate) fn set(&self, f: u32) {
        self.flags
            .store(self.flags.load(Ordering::Relaxed) | f, Ordering::Relaxed);
    }

    /// Clears flags. Owner only.
    pub(crate) fn clear(&self, f: u32) {
        self.flags
            .store(self.flags.load(Ordering::Relaxed) & !f, Ordering::Relaxed);
    }

    /// Current critical-section depth.
    pub fn crit_depth(&self) -> u32 {
        self.critcount.load(Ordering::Relaxed)
    }

    /// Times the thread was switched in.
    pub fn switch_count(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Sets the name (truncated to 24 bytes). Before the thread is published.
    pub(crate) fn set_name(&self, name: &str) {
        let bytes = name.as_bytes();
        for (i, b) in self.name.iter().enumerate() {
            b.store(bytes.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// The name.
    pub fn name(&self) -> ThreadName {
        ThreadName(core::array::from_fn(|i| {
            self.name[i].load(Ordering::Relaxed)
        }))
    }

    /// What the thread sleeps on, if it sleeps.
    pub fn wmesg(&self) -> ThreadName {
        let mut n = [0u8; NAME_LEN];
        n[..8].copy_from_slice(&self.wmesg.load(Ordering::Relaxed).to_le_bytes());
        ThreadName(n)
    }

    /// Inlined: a constant message (every caller's) folds into one store.
    #[inline(always)]
    pub(crate) fn set_wmesg(&self, wmesg: &str) {
        let mut b = [0u8; 8];
        let n = wmesg.len().min(8);
        b[..n].copy_from_slice(&wmesg.as_bytes()[..n]);
        self.wmesg.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }

    /// This thread's identity.
    pub fn id(&'static self) -> ThreadId {
        ThreadId {
            index: self.index.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// Token references on the thread's stack (held while it runs).
    pub fn tokens_held(&self) -> usize {
        self.tokens.len()
    }

    /// The saved machine state (for the machine's switch code).
    pub fn context(&self) -> &M::Context {
        &self.ctx
    }
}

impl<M: Machine> fmt::Debug for Thread<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "thread {} `{}` cpu{} pri {} flags {:#x} crit {}",
            self.index.load(Ordering::Relaxed),
            self.name(),
            self.cpu.load(Ordering::Relaxed),
            self.priority(),
            self.flag_bits(),
            self.crit_depth()
        )
    }
}

/// A thread's name (or sleep message) as stored: NUL-padded bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ThreadName([u8; NAME_LEN]);

impl ThreadName {
    /// As a string (up to the first NUL; invalid UTF-8 shows as `?`).
    pub fn as_str(&self) -> &str {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.0[..end]).unwrap_or("?")
    }
}

impl fmt::Display for ThreadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ThreadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A thread's identity: slab index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThreadId {
    pub index: u32,
    pub generation: u32,
}

/// A counted reference to a thread: the slot is not reused while one exists,
/// so [`ThreadRef::join`] and the accessors stay valid after the thread exits.
pub struct ThreadRef<M: Machine> {
    td: &'static Thread<M>,
}

impl<M: Machine> ThreadRef<M> {
    /// Takes a reference to `td` (any context).
    pub fn new(td: &'static Thread<M>) -> Self {
        td.refs.fetch_add(1, Ordering::AcqRel);
        ThreadRef { td }
    }

    /// The thread.
    pub fn thread(&self) -> &'static Thread<M> {
        self.td
    }

    /// Takes over a reference counted earlier and never dropped (one a
    /// message carried as a raw pointer).
    pub(crate) fn adopt(td: &'static Thread<M>) -> Self {
        ThreadRef { td }
    }
}

impl<M: Machine> Clone for ThreadRef<M> {
    fn clone(&self) -> Self {
        ThreadRef::new(self.td)
    }
}

impl<M: Machine> Drop for ThreadRef<M> {
    fn drop(&mut self) {
        // The last reference to a dead thread frees it (see `Thread::refs`).
        if self.td.refs.fetch_sub(1, Ordering::AcqRel) == REFS_DEAD | 1 {
            crate::lifecycle::release_zombie(self.td);
        }
    }
}

impl<M: Machine> core::ops::Deref for ThreadRef<M> {
    type Target = Thread<M>;
    fn deref(&self) -> &Thread<M> {
        self.td
    }
}

impl<M: Machine> fmt::Debug for ThreadRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.td, f)
    }
}
