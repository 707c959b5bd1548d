//! Creating threads, their start, exit and reaping.
//!
//! A thread and its stack come from the creating CPU's cache (DragonFly's
//! `gd_freetd` + objcache, Akaros' spare kthread), or the slab. An exiting
//! thread cannot free the stack it runs on: it switches away for the last time
//! with [`Machine::switch_exit`], and the *next* thread on that CPU reaps it in
//! `switch_return`, once nothing runs on that stack — back into the cache with
//! its stack, or its stack freed and the bare thread pooled. A thread that
//! still has [`ThreadRef`]s when it is reaped stays a zombie until the last one
//! is dropped.

use alloc::boxed::Box;
use core::ptr;
use core::sync::atomic::Ordering;

use crate::Machine;
use crate::crit::{crit_exit_td, crit_inc};
use crate::slab::ptr as tdptr;
use crate::thread::{NO_CPU, REFS_DEAD, Thread, ThreadRef, flags, pri};

/// Why a thread could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for a stack.
    NoStack,
    /// No memory for the thread or its closure.
    NoMemory,
    /// The requested CPU does not exist.
    NoSuchCpu,
}

/// How to make a thread: name, CPU, priority, whether it may preempt.
#[derive(Debug, Clone, Copy)]
pub struct Builder<'a> {
    name: &'a str,
    cpu: Option<usize>,
    pri: u8,
    preemptable: bool,
    /// User priority of a user thread (0: a kernel thread).
    user: u8,
}

impl<'a> Builder<'a> {
    /// A kernel daemon named `name` on the creating CPU.
    pub fn new(name: &'a str) -> Self {
        Builder {
            name,
            cpu: None,
            pri: pri::KERN_DAEMON,
            preemptable: false,
            user: 0,
        }
    }

    /// Runs the thread on CPU `cpu`.
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, p: u8) -> Self {
        assert!(p > pri::IDLE && p <= pri::MAX, "priority {p} out of range");
        self.pri = p;
        self
    }

    /// Lets the thread preempt lower-priority threads when it is scheduled
    /// (interrupt threads).
    pub fn preemptable(mut self) -> Self {
        self.preemptable = true;
        self
    }

    /// Makes it a user thread of user priority `p` (`pri::USER_IDLE` to
    /// `pri::USER_REAL`, or a boost above): it starts in the kernel at
    /// [`pri::KERN_USER`] and runs user code only in its CPU's user turn
    /// ([`crate::usched::acquire`]). Its CPU-use estimate starts at its
    /// creator's.
    pub fn user(mut self, p: u8) -> Self {
        assert!(
            p > pri::IDLE && p <= pri::MAX,
            "user priority {p} out of range"
        );
        self.user = p;
        self
    }

    /// Creates the thread and makes it runnable; it runs `f`, then exits.
    ///
    /// Thread context (it may allocate); never blocks.
    pub fn spawn<M: Machine>(
        self,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<ThreadRef<M>, SpawnError> {
        let f = Box::try_new(f).map_err(|_| SpawnError::NoMemory)?;
        spawn::<M>(self, crate::thread::Entry::Closure(f))
    }

    /// Creates the thread and makes it runnable; it runs `f(arg)`, then exits.
    /// Unlike [`Builder::spawn`] nothing is allocated for the entry, so `f`
    /// may end the thread without returning (it owns whatever `arg` names).
    /// If spawning fails, `f` never runs and the caller still owns `arg`.
    ///
    /// Thread context (it may allocate); never blocks.
    pub fn spawn_fn<M: Machine>(
        self,
        f: fn(usize),
        arg: usize,
    ) -> Result<ThreadRef<M>, SpawnError> {
        spawn::<M>(self, crate::thread::Entry::Raw(f, arg))
    }
}

fn spawn<M: Machine>(b: Builder<'_>, f: crate::thread::Entry) -> Result<ThreadRef<M>, SpawnError> {
    let world = M::world();
    let g = crate::crit::crit_enter::<M>();
    let cpu = M::mycpu();
    let target = b.cpu.unwrap_or(cpu.index());
    if target >= world.cpus.len() {
        return Err(SpawnError::NoSuchCpu);
    }
    let Some(td) = world.slab.alloc(&cpu.cache) else {
        return Err(SpawnError::NoMemory);
    };
    // SAFETY: the thread is free (from the cache or pool, or fresh): this
    // creation step is the only one touching its lifecycle cells.
    #[allow(unsafe_code)]
    let (stack_cell, entry_cell) = unsafe { (td.stack.get(), td.entry.get()) };
    if stack_cell.is_none() {
        match M::stack_alloc() {
            Some(s) => *stack_cell = Some(s),
            None => {
                world.slab.free_to_pool(td);
                return Err(SpawnError::NoStack);
            }
        }
    }
    *entry_cell = Some(f);
    td.set_name(b.name);
    td.pri.store(b.pri, Ordering::Relaxed);
    td.flags.store(
        flags::SLAB | if b.preemptable { flags::PREEMPTABLE } else { 0 },
        Ordering::Relaxed,
    );
    crate::usched::init_thread(cpu, td, b.user);
    // New threads start inside the critical section `switch` holds for them;
    // `thread_start` leaves it.
    td.critcount.store(1, Ordering::Relaxed);
    td.migrate_to.store(NO_CPU, Ordering::Relaxed);
    td.preempted.store(ptr::null_mut(), Ordering::Relaxed);
    td.switches.store(0, Ordering::Relaxed);
    M::context_init(td, stack_cell.as_ref().expect("stack set above"));
    let r = ThreadRef::new(td);
    td.cpu.store(target as u32, Ordering::Release);
    cpu.stats.created.inc();
    if target == cpu.index() {
        adopt(cpu, td);
    } else {
        world
            .ipi
            .send(target, adopt_remote::<M>, tdptr(td) as usize, 0);
    }
    drop(g);
    Ok(r)
}

/// The new owner takes the thread in and makes it runnable.
fn adopt<M: Machine>(cpu: &'static crate::Cpu<M>, td: &'static Thread<M>) {
    cpu.allq_insert(td);
    crate::sched::schedule::<M>(td);
}

fn adopt_remote<M: Machine>(arg: usize, _: usize) {
    if let Some(td) = crate::slab::deref(arg as *mut Thread<M>) {
        adopt(M::mycpu(), td);
    }
}

/// Where every new thread starts, on its own stack, called by the machine's
/// start-up code with the thread that switched to it.
pub fn thread_start<M: Machine>(prev: &'static Thread<M>) -> ! {
    crate::switch::switch_return::<M>(prev);
    let td = M::mycpu().curthread();
    // SAFETY: this is the thread's start step, the only one touching its entry
    // cell now (creation finished before it was published).
    #[allow(unsafe_code)]
    let f = unsafe { td.entry.get().take() }.expect("thread started without an entry");
    crit_exit_td(td);
    match f {
        crate::thread::Entry::Closure(f) => f(),
        crate::thread::Entry::Raw(f, arg) => f(arg),
    }
    exit::<M>()
}

/// Ends the current thread: it is taken off every queue, joiners are woken
/// once it is gone, and it switches away for the last time. Its stack and
/// struct are reaped by the next thread to run on this CPU.
///
/// Thread context, outside critical sections, holding no tokens.
pub fn exit<M: Machine>() -> ! {
    let cpu = M::mycpu();
    let td = cpu.curthread();
    assert!(!td.has(flags::IDLE), "the idle thread cannot exit");
    assert_eq!(
        td.crit_depth(),
        0,
        "thread exiting inside a critical section"
    );
    assert!(td.tokens.is_empty(), "thread exiting while holding tokens");
    crit_inc(td);
    crate::sleep::remove_from_sleepq(cpu, td);
    crate::sched::dequeue(cpu, td);
    if ptr::eq(cpu.usched.cur_ptr(), td) {
        crate::usched::release(cpu, td);
    }
    cpu.allq_remove(td);
    td.set(flags::EXITING);
    cpu.stats.exited.inc();
    M::trace(
        crate::Event::Exit,
        u64::from(td.index.load(Ordering::Relaxed)),
    );
    let ntd = crate::switch::next_thread::<M>(cpu, td);
    cpu.stats.switches.inc();
    ntd.set(flags::RUNNING);
    cpu.curthread.store(tdptr(ntd), Ordering::Relaxed);
    // `ntd` came from our run queue or is our idle thread: not running, since
    // we are; `td`'s stack is reaped only in `switch_return` on `ntd`.
    #[allow(unsafe_code)]
    // SAFETY: `td` current and in a critical section, `ntd` idle (see above).
    unsafe {
        M::switch_exit(td, ntd)
    }
}

/// Runs on the thread that switched in after `td` exited (`switch_return`):
/// wakes joiners, then frees `td` unless references remain. Requires critical
/// section.
pub(crate) fn reap<M: Machine>(td: &'static Thread<M>) {
    td.clear(flags::EXITING | flags::RUNNING);
    td.set(flags::EXITED);
    // Of this mark and the last `ThreadRef` drop, exactly one sees the other.
    // Joiners hold references, so with none left there is nobody to wake.
    let refs = td.refs.fetch_or(REFS_DEAD, Ordering::AcqRel) & !REFS_DEAD;
    if refs == 0 {
        free_local(M::mycpu(), td);
    } else {
        crate::sleep::wakeup::<M>(tdptr(td) as usize);
    }
}

/// Resets `td` for reuse.
fn reset<M: Machine>(td: &'static Thread<M>) {
    td.generation.store(
        td.generation.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Release,
    );
    td.flags.store(flags::SLAB, Ordering::Relaxed);
    td.cpu.store(NO_CPU, Ordering::Release);
    td.set_name("");
    td.set_wmesg("");
    td.refs.store(0, Ordering::Release);
}

/// Frees `td` on its last CPU: into the cache with its stack, or stack freed
/// and the thread pooled. Requires critical section.
fn free_local<M: Machine>(cpu: &'static crate::Cpu<M>, td: &'static Thread<M>) {
    reset(td);
    if !cpu.cache.push(td) {
        drop_stack(td);
        M::world().slab.free_to_pool(td);
    }
}

/// Frees a zombie whose last reference was just dropped: into this CPU's
/// cache if it died here, otherwise stack freed and thread pooled.
///
/// Any context that may enter a critical section.
pub(crate) fn release_zombie<M: Machine>(td: &'static Thread<M>) {
    let g = crate::crit::crit_enter::<M>();
    let cpu = M::mycpu();
    if td.cpu() == cpu.index() {
        free_local(cpu, td);
    } else {
        reset(td);
        drop_stack(td);
        M::world().slab.free_to_pool(td);
    }
    drop(g);
}

fn drop_stack<M: Machine>(td: &'static Thread<M>) {
    // SAFETY: the thread is dead and unpublished (reaped, no references): this
    // freeing step is the only one touching its stack cell.
    #[allow(unsafe_code)]
    let stack = unsafe { td.stack.get().take() };
    drop(stack);
}

/// Frees the stacks of every thread in this CPU's cache, moving the bare
/// threads to the pool (memory accounting: after this, thread churn has left
/// nothing behind but slab chunks).
///
/// Thread context.
pub fn trim_cache<M: Machine>() {
    let g = crate::crit::crit_enter::<M>();
    let cpu = M::mycpu();
    while let Some(td) = cpu.cache.pop() {
        drop_stack(td);
        M::world().slab.free_to_pool(td);
    }
    drop(g);
}

impl<M: Machine> ThreadRef<M> {
    /// Waits until the thread has exited and switched out for the last time.
    ///
    /// Thread context; may block.
    pub fn join(&self) {
        let ident = tdptr(self.thread()) as usize;
        loop {
            crate::sleep::tsleep_interlock::<M>(ident);
            if self.has_exited() {
                crate::sleep::tsleep_cancel::<M>();
                return;
            }
            crate::sleep::tsleep::<M>(ident, crate::sleep::INTERLOCKED, "join", 0);
        }
    }

    /// Whether the thread has exited and switched out for the last time.
    pub fn has_exited(&self) -> bool {
        self.thread().refs.load(Ordering::Acquire) & REFS_DEAD != 0
    }
}
