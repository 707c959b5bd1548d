//! What the scheduler needs from the machine.
//!
//! The kernel implements [`Machine`] for x86_64 (`kernel/src/sched/`); the host
//! tests implement it for a simulated machine whose CPUs are batons passed
//! between OS threads (`sim`). Everything else in the crate is portable.

use core::sync::atomic::AtomicU32;

use crate::cpu::Cpu;
use crate::thread::Thread;
use crate::world::World;

/// Scheduler events a machine may record ([`Machine::trace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Event {
    /// Switched to a thread (argument: its slab index).
    Switch = 1,
    /// Preempted by a thread (argument: its slab index).
    Preempt = 2,
    /// A preemption was refused (argument: the candidate's slab index).
    PreemptMiss = 3,
    /// A thread was woken (argument: its slab index).
    Wakeup = 4,
    /// A thread could not get its tokens (argument: its slab index).
    TokenCollision = 5,
    /// A deferred interrupt was replayed (argument: vector, or 0 for a tick).
    Replay = 6,
    /// A thread migrated away (argument: target CPU).
    Migrate = 7,
    /// A thread exited (argument: its slab index).
    Exit = 8,
}

/// The machine under the scheduler.
///
/// `ipi::Platform` supplies the CPU index, the hardware IPI and `pause`.
pub trait Machine: ipi::Platform + Sized + Send + Sync + 'static {
    /// A thread's saved machine state (the kernel keeps its stack pointer; the
    /// callee-saved registers live on the thread's stack).
    type Context: Send + Sync;
    /// A thread's kernel stack.
    type Stack: Send + Sync;

    /// A fresh context, for threads built in `const` contexts (each CPU's
    /// boot/idle thread lives in its static per-CPU block).
    #[allow(clippy::declare_interior_mutable_const)]
    const NEW_CONTEXT: Self::Context;

    /// This CPU's scheduler state. Any context.
    fn mycpu() -> &'static Cpu<Self>;

    /// The scheduler's global state, once [`crate::init`] has run.
    fn world() -> &'static World<Self>;

    /// A new stack, or `None` when memory is exhausted.
    fn stack_alloc() -> Option<Self::Stack>;

    /// Prepares `td`'s context so that the first switch to it runs
    /// [`crate::thread_start`] on `stack`.
    fn context_init(td: &'static Thread<Self>, stack: &Self::Stack);

    /// Saves the current state into `from`'s context and resumes `to`; returns,
    /// when `from` is resumed later, the thread that switched back to it.
    ///
    /// # Safety
    ///
    /// 1. Called by the scheduler only, on the current CPU, with `from` the
    ///    current thread and a critical section held by both.
    /// 2. `to` is not running anywhere (its RUNNING flag was just set by us).
    #[allow(unsafe_code)]
    unsafe fn switch(
        from: &'static Thread<Self>,
        to: &'static Thread<Self>,
    ) -> &'static Thread<Self>;

    /// Like [`Machine::switch`] for a `from` that is exiting and never resumes.
    ///
    /// # Safety
    ///
    /// As for [`Machine::switch`]; `from`'s stack is not freed until `to` runs.
    #[allow(unsafe_code)]
    unsafe fn switch_exit(from: &'static Thread<Self>, to: &'static Thread<Self>) -> !;

    /// Waits for an interrupt: enables interrupts and halts atomically (the
    /// idle loop calls it with interrupts disabled after finding no work).
    fn idle_halt();

    /// Disables interrupts on this CPU; returns whether they were enabled.
    fn interrupts_disable() -> bool;

    /// Restores the interrupt state returned by [`Machine::interrupts_disable`].
    fn interrupts_restore(enabled: bool);

    /// `*word |= bits`, atomic with respect to interrupts on this CPU (one
    /// non-locked instruction on x86; other CPUs never write `word`).
    fn local_or(word: &AtomicU32, bits: u32);

    /// `*word &= !bits`, same rules as [`Machine::local_or`].
    fn local_and_not(word: &AtomicU32, bits: u32);

    /// Records a scheduler event in this CPU's trace ring (see [`Event`]).
    /// Any context, including hard-interrupt handlers; must not block or
    /// take locks. The default records nothing.
    #[inline(always)]
    fn trace(_event: Event, _arg: u64) {}

    /// A point where real hardware may deliver an interrupt and a simulated
    /// machine must be able to (the end of `splz`'s replay, before its
    /// critical section ends: the race window a test has to reach). Real
    /// machines do nothing here.
    #[inline(always)]
    fn interrupt_window() {}

    /// Handles device interrupt `vector` (typically: schedules its interrupt
    /// thread). Called from the hard-interrupt path, or from [`crate::splz`]
    /// when the interrupt arrived inside a critical section; either way inside
    /// a critical section.
    fn dispatch_device(vector: u8);
}
