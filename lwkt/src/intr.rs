//! The scheduler's side of hard interrupts: deferral inside critical
//! sections, the clock, the IPI vector, and the way out of a trap.
//!
//! The kernel's trap path calls [`clock_interrupt`], [`ipi_interrupt`] or
//! [`device_interrupt`] with interrupts disabled, then [`doreti`] on the way
//! out. Each first looks at the interrupted thread's critical count: non-zero
//! means the event is recorded on the CPU ([`crate::cpu::rqf`], the pending
//! tick count, the pending vector bits) and the handler returns at once; the
//! end of the critical section replays it ([`crate::splz`]). Zero means the
//! event is handled right there, with the CPU marked as in hard-interrupt
//! code (no `splz`, no switch from inside) and a critical section of its own.
//!
//! A preemptable thread made runnable by a handler is not switched to from
//! inside the handler: the switch happens in [`doreti`], after the handler
//! returned and the interrupt was acknowledged.
//!
//! # Interrupts while handling and replaying
//!
//! Hard handlers run with interrupts disabled for their whole length, and so
//! does the replay of deferred work that [`doreti`] starts (`splz` at a
//! trap's end); the replay `crit_exit` starts runs in thread context with
//! interrupts enabled. DragonFly re-enables interrupts around its replays;
//! Wyvern does not there, on purpose. Every handler here is short and
//! bounded: it records the event, or schedules a thread, or runs the IPI
//! messages queued (IPI-dispatch functions may not block; a cpusync target
//! polls in that loop until released, serving every other CPU's messages
//! meanwhile, which is all an interrupt could bring it). An interrupt let in
//! during a replay would find the replay's critical section and only be recorded, for
//! the same loop to replay a moment later: no handler would run sooner, and
//! each one would cost a trap frame on the stack and a second trip through
//! `doreti`. Interrupts are off only for that loop; the last look at the
//! pending flags happens with them off, and the `iretq` that follows takes
//! whatever arrived meanwhile directly.

use core::sync::atomic::Ordering;

use crate::Machine;
use crate::cpu::{Cpu, rqf};
use crate::crit::{crit_dec_noyield, crit_inc};

/// Runs `f` as hard-interrupt code on the current thread's stack.
fn as_hard_interrupt<M: Machine>(cpu: &'static Cpu<M>, f: impl FnOnce()) {
    let td = cpu.curthread();
    cpu.intr_nesting.store(
        cpu.intr_nesting.load(Ordering::Relaxed) + 1,
        Ordering::Relaxed,
    );
    crit_inc(td);
    f();
    crit_dec_noyield(td);
    cpu.intr_nesting.store(
        cpu.intr_nesting.load(Ordering::Relaxed) - 1,
        Ordering::Relaxed,
    );
}

fn deferring<M: Machine>(cpu: &Cpu<M>) -> bool {
    cpu.curthread().crit_depth() != 0
}

/// The clock tick's hard handler. Hard-interrupt context (interrupts
/// disabled), called by the kernel's timer vector after it re-armed the timer.
pub fn clock_interrupt<M: Machine>() {
    let cpu = M::mycpu();
    if deferring(cpu) {
        cpu.pending_ticks.store(
            cpu.pending_ticks.load(Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        M::local_or(&cpu.reqflags, rqf::TIMER);
        return;
    }
    as_hard_interrupt(cpu, || crate::switch::hardclock::<M>(cpu));
}

/// The IPI-queue vector's hard handler. Hard-interrupt context.
pub fn ipi_interrupt<M: Machine>() {
    let cpu = M::mycpu();
    if deferring(cpu) {
        M::local_or(&cpu.reqflags, rqf::IPIQ);
        return;
    }
    as_hard_interrupt(cpu, || {
        M::world().ipi.process();
    });
}

/// A device interrupt on `vector`. Hard-interrupt context; the kernel has
/// already masked the source and acknowledged the APIC. Either calls
/// [`Machine::dispatch_device`] now or records the vector for `splz`.
pub fn device_interrupt<M: Machine>(vector: u8) {
    let cpu = M::mycpu();
    if deferring(cpu) {
        let w = &cpu.pending_irqs[usize::from(vector / 64)];
        w.store(
            w.load(Ordering::Relaxed) | 1 << (vector % 64),
            Ordering::Relaxed,
        );
        M::local_or(&cpu.reqflags, rqf::INTPEND);
        return;
    }
    as_hard_interrupt(cpu, || M::dispatch_device(vector));
}

/// The way out of a trap: a preemption the handler asked for happens here,
/// then deferred work if any. `to_user` says the trap returns to user mode,
/// where a pending reschedule is honoured too. Hard-interrupt context
/// (interrupts disabled), after the handler.
///
/// Inlined: on most ways out there is nothing to do, which one look at the
/// request flags tells (no deferred work, no preemption candidate —
/// `rqf::PREEMPT` — and, to user mode, no reschedule: the checks below
/// would all find nothing either); the rest is out of line.
#[inline(always)]
pub fn doreti<M: Machine>(to_user: bool) {
    let cpu = M::mycpu();
    let mask = if to_user {
        rqf::IDLECHECK_MASK | rqf::PREEMPT | rqf::RESCHED
    } else {
        rqf::IDLECHECK_MASK | rqf::PREEMPT
    };
    if cpu.reqflags.load(Ordering::Relaxed) & mask == 0 {
        return;
    }
    doreti_work::<M>(cpu, to_user);
}

/// What [`doreti`] does when something is pending. Hard-interrupt context.
#[inline(never)]
fn doreti_work<M: Machine>(cpu: &'static Cpu<M>, to_user: bool) {
    if cpu.in_interrupt() || cpu.curthread().crit_depth() != 0 {
        // A nested trap, or one that interrupted a critical section: the
        // outer level (or the section's end) does this.
        return;
    }
    if cpu.reqflags.load(Ordering::Relaxed) & rqf::IDLECHECK_MASK != 0 {
        crate::crit::splz::<M>();
    } else if !cpu.preempt_candidate.load(Ordering::Relaxed).is_null() {
        // Looked at before the call: on most ways out there is none (only
        // this CPU sets it, in its critical sections, and interrupts are
        // off here, so it cannot appear after the look).
        crate::switch::preempt_pending::<M>();
    }
    if to_user && cpu.resched_wanted() {
        crate::switch::yield_to_best::<M>();
    }
}

/// Replays what interrupts deferred. Runs inside `splz`'s critical section,
/// interrupts enabled: an interrupt arriving meanwhile is deferred again and
/// picked up by the next pass of the loop.
pub(crate) fn run_deferred<M: Machine>(cpu: &'static Cpu<M>) {
    loop {
        let flags = cpu.reqflags.load(Ordering::Relaxed) & rqf::IDLECHECK_MASK;
        if flags == 0 {
            return;
        }
        if flags & rqf::IPIQ != 0 {
            M::local_and_not(&cpu.reqflags, rqf::IPIQ);
            cpu.stats.ipiq_replayed.inc();
            M::world().ipi.process();
        }
        if flags & rqf::TIMER != 0 {
            // Take the count with interrupts off: the tick handler increments it.
            let irq = M::interrupts_disable();
            let n = cpu.pending_ticks.load(Ordering::Relaxed);
            cpu.pending_ticks.store(0, Ordering::Relaxed);
            M::local_and_not(&cpu.reqflags, rqf::TIMER);
            M::interrupts_restore(irq);
            for _ in 0..n {
                cpu.stats.ticks_replayed.inc();
                M::trace(crate::Event::Replay, 0);
                crate::switch::hardclock::<M>(cpu);
            }
        }
        if flags & rqf::INTPEND != 0 {
            let irq = M::interrupts_disable();
            M::local_and_not(&cpu.reqflags, rqf::INTPEND);
            let pending: [u64; 4] = core::array::from_fn(|i| {
                let v = cpu.pending_irqs[i].load(Ordering::Relaxed);
                cpu.pending_irqs[i].store(0, Ordering::Relaxed);
                v
            });
            M::interrupts_restore(irq);
            for (w, mut bits) in pending.into_iter().enumerate() {
                while bits != 0 {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    cpu.stats.irqs_replayed.inc();
                    M::trace(crate::Event::Replay, u64::from((w * 64) as u32 + b));
                    M::dispatch_device((w * 64) as u8 + b as u8);
                }
            }
        }
    }
}
