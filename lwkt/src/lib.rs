//! LWKT: DragonFly BSD's light-weight kernel threads, for Wyvern.
//!
//! Each CPU in a system has its own self-contained thread scheduler: a run
//! queue, a thread list, sleep queues and a callout wheel that only that CPU
//! touches, protected by a critical section and nothing else — no spinlock,
//! no atomic read-modify-write on the hot path. Scheduling, waking or
//! migrating a thread owned by another CPU goes through that CPU's IPI message
//! queue (the `ipi` crate). Serializing tokens, held only while their thread
//! runs, replace locks.
//!
//! # The pieces
//!
//! * [`crit`] — critical sections: a per-thread counter; interrupts arriving
//!   inside one are deferred and replayed at its end ([`splz`]).
//! * [`mod@switch`] — `lwkt_switch`, preemption by interrupt threads, yields, the
//!   scheduler clock, the idle loop.
//! * [`sched`] — schedule, deschedule, priorities, migration.
//! * [`lifecycle`] — thread creation with a per-CPU thread+stack cache, exit,
//!   reaping, join.
//! * [`sleep`] — `tsleep`/`wakeup` on an address, with timeouts.
//! * [`callout`] — per-CPU timing wheel and softclock thread.
//! * [`sema`] — semaphore with the signal-before-sleep race handled.
//! * [`token`] — serializing tokens, pool tokens, rank checking.
//! * [`intr`] — the hard-interrupt side: deferral, clock, IPI vector, `doreti`.
//! * [`usched`] — the user scheduler: one current user thread per CPU,
//!   fairness by a decaying CPU estimate, balancing by IPI messages.
//! * [`ipc`] — synchronous message passing: channels, send/receive/reply,
//!   pulses, the same-CPU handoff fast path, priority inheritance.
//!
//! The machine — switching stacks, the current CPU, IPIs, halting — is the
//! [`Machine`] trait: the kernel implements it for x86_64, the host tests for a
//! simulated machine.
//!
//! # Calling contexts
//!
//! Every public function names its context in its docs, with one vocabulary:
//! *any context*; *requires critical section*; *IPI-dispatch context* (inside
//! the target CPU's critical section, running a message: must not block);
//! *never from a hard interrupt*; *may block*. The claims are checked with
//! `debug_assert!` where they can be.
#![feature(allocator_api)]
#![cfg_attr(not(any(test, loom)), no_std)]
#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod callout;
pub mod cpu;
pub mod crit;
pub mod intr;
pub mod ipc;
pub mod lifecycle;
mod machine;
pub mod runq;
pub mod sched;
pub mod sema;
pub mod slab;
pub mod sleep;
mod spin;
pub mod switch;
mod sync;
pub mod thread;
pub mod token;
pub mod usched;
pub mod world;

#[cfg(all(test, not(loom)))]
mod sim;
#[cfg(all(test, not(loom)))]
mod tests;
#[cfg(all(test, not(loom)))]
mod usched_tests;

pub use cpu::{Cpu, CpuStats, CpuStatsSnapshot, bootstrap_cpu, rqf};
pub use crit::{CritGuard, crit_enter, in_crit, splz};
pub use intr::{clock_interrupt, device_interrupt, doreti, ipi_interrupt};
pub use lifecycle::{Builder, SpawnError, exit, thread_start, trim_cache};
pub use machine::{Event, Machine};
pub use sched::{
    deschedule, deschedule_self, migrate_self, schedule, schedule_self, setpri, setpri_self,
};
pub use sema::Sema;
pub use sleep::{
    INTERLOCKED, INTERRUPTIBLE, Wake, clear_interrupt, interrupt, interrupt_requested, tsleep,
    tsleep_cancel, tsleep_interlock, wakeup, wakeup_one,
};
pub use switch::{current, idle_loop, lwkt_yield, switch, switch_return, yield_now};
pub use thread::{Thread, ThreadId, ThreadName, ThreadRef, flags, pri};
#[cfg(not(loom))]
pub use token::pool_token;
pub use token::{Token, TokenGuard, gettoken, gettoken_shared, trytoken};
pub use world::{World, init, start_cpu};
