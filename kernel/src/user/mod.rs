//! User mode: processes, their threads, system calls and faults.
//!
//! A user thread is an LWKT thread like any other — scheduled, preempted,
//! migrated and counted the same way — that also has a user context: its
//! process, its FPU state, and a [`TrapFrame`] at the top of its kernel stack
//! holding its user registers while it is in the kernel (see
//! `arch::syscall`). A system call is that thread running kernel code on its
//! own kernel stack, interrupts enabled: it may block on `tsleep` or a token,
//! and an interrupt thread preempts it as it would any kernel thread. There
//! is no big kernel lock: process and address-space state is under tokens.
//!
//! * [`switch_hook`] — on every switch: save the outgoing user thread's FPU
//!   state, load the incoming one's address space, kernel stack top and FPU
//!   state.
//! * [`before_user_return`] — on every way back to user mode: a reschedule
//!   due, the CPU's user turn (`lwkt::usched`), or the end of a killed
//!   process.
//! * [`fault`] — a user-mode exception kills the process with one report line.
//! * [`process`] — processes, spawning, exit, wait, kill, threads.
//! * [`syscall`] — the system call table.

pub mod account;
pub mod device;
pub mod elf;
pub mod ipc;
pub mod irq;
pub mod process;
pub mod ramdisk;
pub mod syscall;
mod uaccess;
pub mod vecmap;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use lwkt::Thread;
use wyvern_abi::syscall::WaitStatus;

use crate::arch::fpu::FpuState;
use crate::arch::syscall::{enter_user, user_frame};
use crate::arch::trap::TrapFrame;
use crate::arch::{cpu, exception};
use crate::mm::aspace;
use crate::percpu;
use crate::println;
use crate::sched::X86;
pub use process::Process;

const NO_CPU: u32 = u32::MAX;

/// Ids of user threads for FPU ownership: unique, never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The user context of a user thread (owned by the thread; reached through
/// its `SwitchContext::user`).
pub struct UserThread {
    pub process: Arc<Process>,
    pub tid: u64,
    fpu: FpuState,
    kstack_top: u64,
    /// Unique id: "whose FPU state is in this CPU's registers" (`PerCpu::fpu_owner`).
    id: u64,
    /// The CPU whose FPU registers last held this thread's state.
    fpu_cpu: AtomicU32,
    /// Its user stack `[base, top)`.
    stack: (u64, u64),
    /// Its own priority (`SET_PRIORITY`), which it runs at but while it
    /// serves a message (then at its client's).
    base_pri: Arc<AtomicU8>,
    /// Its last look-ups of a connection and a channel (`ipc::Recent`).
    pub recent: ipc::Recent,
}

impl UserThread {
    /// Its own priority (see the field).
    pub fn base_priority(&self) -> u8 {
        self.base_pri.load(Ordering::Relaxed)
    }

    /// Sets the calling thread's own priority (it is this thread): no
    /// lookup in the process's table, where a thread that has just started
    /// may not be recorded yet. Thread context, on this thread.
    pub fn set_own_priority(&self, p: u8) {
        self.base_pri.store(p, Ordering::Relaxed);
        lwkt::setpri::<X86>(lwkt::current::<X86>(), p);
    }
}

/// `td`'s user context, if it is a user thread. `td` is the current thread,
/// or a thread of this CPU that is not running (the switch), so its context
/// cannot be freed meanwhile.
#[inline]
fn user_of(td: &Thread<X86>) -> Option<&'static UserThread> {
    let p = td.context().user.load(Ordering::Relaxed);
    // SAFETY: a non-zero `user` is a leaked `Box<UserThread>`, freed only by
    // its own thread in `exit_current` after zeroing the field (callers'
    // contract: the thread is current or not running).
    (p != 0).then(|| unsafe { &*(p as *const UserThread) })
}

/// The process of thread `td` (0 for a kernel thread). `td` belongs to this
/// CPU and the caller is in a critical section (so `td` is current or not
/// running).
pub fn pid_of(td: &Thread<X86>) -> u64 {
    user_of(td).map_or(0, |u| u.process.pid)
}

/// The thread id of thread `td` in its process (0 for a kernel thread), under
/// the conditions of [`pid_of`].
pub fn tid_of(td: &Thread<X86>) -> u64 {
    user_of(td).map_or(0, |u| u.tid)
}

/// The current thread's user context, if it is a user thread.
///
/// Thread context.
#[inline]
pub fn current() -> Option<&'static UserThread> {
    user_of(lwkt::current::<X86>())
}

/// Makes `u` the user context loaded on this CPU. Requires critical section.
fn load(u: &UserThread) {
    let me = percpu::mycpu();
    u.process.space.load();
    me.kernel_rsp.store(u.kstack_top, Ordering::Relaxed);
    me.tables.set_rsp0(u.kstack_top);
    let key = u.process.io_key();
    if key != me.io_key.load(Ordering::Relaxed) {
        let mut ranges = [(0u16, 0u32); crate::arch::gdt::MAX_IO_RANGES];
        let n = if key != 0 {
            u.process.io_ports(&mut ranges)
        } else {
            0
        };
        me.tables.set_io(&ranges[..n]);
        me.io_key.store(key, Ordering::Relaxed);
    }
    let here = me.index();
    if me.fpu_owner.load(Ordering::Relaxed) != u.id || u.fpu_cpu.load(Ordering::Relaxed) != here {
        // SAFETY: `u` is about to run on this CPU.
        unsafe { u.fpu.restore() };
        me.fpu_owner.store(u.id, Ordering::Relaxed);
        u.fpu_cpu.store(here, Ordering::Relaxed);
    }
}

/// The machine side of every switch: the outgoing user thread's FPU state is
/// saved (eagerly: see `arch::fpu`), the incoming user thread's address
/// space, kernel stack and FPU state are loaded. Kernel threads leave CR3 as
/// it is (they never touch the user half).
///
/// Requires critical section (the switch).
#[inline(always)]
pub fn switch_hook(from: &Thread<X86>, to: &Thread<X86>) {
    // The common case, kernel thread to kernel thread: two loads and a test.
    let (f, t) = (
        from.context().user.load(Ordering::Relaxed),
        to.context().user.load(Ordering::Relaxed),
    );
    if f | t != 0 {
        switch_user(from, to);
    }
}

#[inline(never)]
fn switch_user(from: &Thread<X86>, to: &Thread<X86>) {
    if let Some(u) = user_of(from) {
        // SAFETY: `from` ran here last, so its state is in this CPU's
        // registers (`load` restored it, or it never left).
        unsafe { u.fpu.save() };
    }
    if let Some(u) = user_of(to) {
        load(u);
    }
}

/// What a new user thread starts with.
struct Start {
    process: Arc<Process>,
    tid: u64,
    frame: TrapFrame,
    fpu: FpuState,
    stack: (u64, u64),
    base_pri: Arc<AtomicU8>,
    /// Room for the thread's [`UserThread`], made by [`spawn_thread`].
    user: Option<Box<core::mem::MaybeUninit<UserThread>>>,
}

/// Starts a user thread: its LWKT thread runs [`thread_main`] with `s`.
/// `None` (and `s` dropped) when there is no memory for it.
fn spawn_thread(name: &str, cpu: usize, mut s: Start) -> Option<lwkt::ThreadRef<X86>> {
    // Every allocation of the new thread is made here, where failing is an
    // error for the caller, not in the thread, where it could only panic.
    s.user = Some(Box::try_new_uninit().ok()?);
    let upri = s.base_pri.load(Ordering::Relaxed);
    let arg = Box::into_raw(Box::try_new(s).ok()?);
    match lwkt::Builder::new(name)
        .priority(lwkt::pri::KERN_USER)
        .user(upri)
        .cpu(cpu)
        .spawn_fn::<X86>(thread_main, arg as usize)
    {
        Ok(td) => Some(td),
        Err(_) => {
            // SAFETY: the thread was not created, so the box is still ours.
            drop(unsafe { Box::from_raw(arg) });
            None
        }
    }
}

/// A new user thread's kernel side: becomes a user thread, then enters user
/// mode and never comes back here. `arg` is its leaked `Box<Start>`.
fn thread_main(arg: usize) {
    let s = {
        // SAFETY: `spawn_thread` leaked this box for us alone; freed at the
        // end of this block (this function never returns).
        let b = unsafe { Box::from_raw(arg as *mut Start) };
        *b
    };
    let td = lwkt::current::<X86>();
    let kstack_top = td.context().kstack_top.load(Ordering::Relaxed);
    let frame = user_frame(kstack_top);
    // SAFETY: the top of the stack was kept for this frame (`context_init`)
    // and nothing else uses it.
    unsafe { frame.write(s.frame) };
    let u = Box::write(
        s.user.expect("spawn_thread allocated it"),
        UserThread {
            process: s.process,
            tid: s.tid,
            fpu: s.fpu,
            kstack_top,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            fpu_cpu: AtomicU32::new(NO_CPU),
            stack: s.stack,
            base_pri: s.base_pri,
            recent: ipc::Recent::new(),
        },
    );
    let g = lwkt::crit_enter::<X86>();
    let u: &'static UserThread = Box::leak(u);
    td.context()
        .user
        .store(core::ptr::from_ref(u) as usize, Ordering::Relaxed);
    load(u);
    drop(g);
    take_turn();
    if u.process.dying() {
        exit_current(None)
    }
    // SAFETY: the frame is this thread's user frame, holding the entry state
    // `process::start_thread` validated; `load` made the space, stack top
    // and FPU state current; nothing of this function is needed again.
    unsafe { enter_user(frame) }
}

/// Ends the current user thread: it stops being a user thread (kernel PML4,
/// no FPU state), its process records the end (and ends with it if it was the
/// last), and the LWKT thread exits. `code` is its exit code, `None` when its
/// process was killed or exited.
///
/// Thread context, interrupts enabled, outside critical sections, holding no
/// tokens, with nothing on the stack that needs dropping.
pub fn exit_current(code: Option<i64>) -> ! {
    let td = lwkt::current::<X86>();
    let g = lwkt::crit_enter::<X86>();
    let raw = td.context().user.swap(0, Ordering::Relaxed);
    assert!(raw != 0, "exit_current on a kernel thread");
    aspace::unload(0);
    let me = percpu::mycpu();
    // This function never returns: everything it owns is dropped explicitly
    // or inside a block that ends before `lwkt::exit`.
    let (process, tid, stack) = {
        // SAFETY: `raw` is this thread's leaked `Box<UserThread>`
        // (thread_main), taken out of the context above, so nothing else
        // reaches it any more.
        let u = unsafe { Box::from_raw(raw as *mut UserThread) };
        if me.fpu_owner.load(Ordering::Relaxed) == u.id {
            me.fpu_owner.store(0, Ordering::Relaxed);
        }
        let UserThread {
            process,
            tid,
            stack,
            fpu,
            ..
        } = *u;
        drop(fpu);
        (process, tid, stack)
    };
    drop(g);
    process.thread_exited(tid, code, stack);
    drop(process);
    lwkt::exit::<X86>()
}

/// On every way back to user mode, with interrupts disabled: runs what the
/// thread owes first — a preemption or reschedule due (`doreti`), and the end
/// of its process if it is being killed. Returns when the thread may go back
/// to user mode with `frame`.
#[inline]
pub fn before_user_return(frame: &mut TrapFrame) {
    lwkt::doreti::<X86>(true);
    if !lwkt::usched::may_return::<X86>() {
        take_turn();
    }
    if let Some(u) = current()
        && u.process.dying()
    {
        cpu::interrupts_enable();
        exit_current(None)
    }
    debug_assert!(frame.user_mode());
}

/// [`before_user_return`] for the system-call path, which has the current
/// thread's user context `u` at hand already (a thread's context changes only
/// in [`exit_current`], which does not return), so it is not looked up again.
/// Same conditions.
#[inline(always)]
pub fn before_syscall_return(u: &UserThread, frame: &TrapFrame) {
    lwkt::doreti::<X86>(true);
    if !lwkt::usched::may_return::<X86>() {
        take_turn();
    }
    if u.process.dying() {
        cpu::interrupts_enable();
        exit_current(None)
    }
    debug_assert!(frame.user_mode());
}

/// Takes this CPU's user turn (`lwkt::usched`), waiting for it if another
/// user thread has it; returns without it only if the process is ending
/// (the caller then ends the thread). The current thread is a user thread.
#[cold]
#[inline(never)]
fn take_turn() {
    while !lwkt::usched::acquire::<X86>() {
        if current().is_some_and(|u| u.process.dying()) {
            return;
        }
        // An interrupt that was not a kill: nothing to end.
        lwkt::clear_interrupt::<X86>();
    }
}

/// A not-present fault at user address `addr` of the current user thread:
/// maps it if a stack grows there. Returns whether to retry the access.
///
/// Exception context of a user thread, interrupts as the faulting code had
/// them.
pub fn demand_page(addr: u64) -> bool {
    current().is_some_and(|u| u.process.space.fault_in(addr))
}

/// A fault in user mode: one report line, the process is killed, this thread
/// ends. Exception context, from user mode, on the thread's kernel stack.
pub fn fault(frame: &TrapFrame, addr: Option<u64>) -> ! {
    let Some(u) = current() else {
        panic!("user-mode fault on a kernel thread: {frame:?}");
    };
    let p = &u.process;
    println!(
        "user fault: pid {} `{}` thread {} on cpu {}: {} at rip {:#x}{}; process killed",
        p.pid,
        p.name,
        u.tid,
        percpu::cpu_index(),
        exception::name(frame.vector),
        frame.rip,
        match addr {
            Some(a) => alloc::format!(", address {a:#x}"),
            None => alloc::string::String::new(),
        }
    );
    p.kill(WaitStatus {
        kind: WaitStatus::KILLED,
        code: 0,
        vector: frame.vector,
        rip: frame.rip,
        addr: addr.unwrap_or(0),
    });
    cpu::interrupts_enable();
    exit_current(None)
}
