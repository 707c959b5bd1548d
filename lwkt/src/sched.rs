//! Making threads runnable and not: schedule, deschedule, priorities,
//! migration.
//!
//! A CPU only ever touches its own run queue. Scheduling a thread owned by
//! another CPU sends that CPU a message ([`schedule`]); if the thread moved on
//! in the meantime, the message follows it. Migration is DragonFly's: the
//! thread takes itself off its CPU and switches away; the *old* CPU, once it
//! is off the thread's stack, sends the new CPU a message that adopts and
//! enqueues it ([`migrate_self`]).

use core::ptr;
use core::sync::atomic::Ordering;

use crate::Machine;
use crate::cpu::Cpu;
use crate::crit::{CritGuard, crit_enter};
use crate::slab::{deref, ptr as tdptr};
use crate::thread::{NO_CPU, Thread, flags, pri};

/// Puts `td`, owned by `cpu`, on its run queue unless it is there already,
/// migrating or exiting; asks for a reschedule if it is now the best. A
/// user thread raised to kernel level goes through the user scheduler
/// (`usched::enqueue_raised`). Requires critical section on `cpu`.
pub(crate) fn enqueue<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    if td.has(flags::RUNQ | flags::MIGRATING | flags::EXITING | flags::UKERN) {
        if !td.has(flags::RUNQ | flags::MIGRATING | flags::EXITING) {
            crate::usched::enqueue_raised(cpu, td);
        }
        return;
    }
    debug_assert_eq!(td.cpu(), cpu.index(), "enqueue on a foreign CPU: {td:?}");
    td.set(flags::RUNQ);
    push(cpu, td, true);
}

/// Queues `td` (marked RUNQ) at the tail of its level; asks for a
/// reschedule if it is now the best and `resched` says it may. Requires
/// critical section on `cpu`.
#[inline(always)]
pub(crate) fn push<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>, resched: bool) {
    cpu.runq.push_tail(td);
    if resched && cpu.runq.best().is_some_and(|b| ptr::eq(b, td)) {
        cpu.need_resched();
    }
}

/// Takes `td` off `cpu`'s run queue if it is on it. Requires critical section.
pub(crate) fn dequeue<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) {
    if td.has(flags::RUNQ) {
        td.clear(flags::RUNQ);
        cpu.runq.remove(td);
    }
}

/// Where an operation on a thread must be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This CPU owns it: do it here, now.
    Here,
    /// Another CPU: send it a message.
    There(usize),
    /// Nobody: the thread exited and its slot is free (`td.cpu` is
    /// `NO_CPU`). Nothing runs, sleeps or waits there; drop the operation.
    Nobody,
}

/// The CPU where an operation on `td` must be done: its owner — or, while
/// it migrates away from this CPU (switched out here, not yet adopted
/// there: `td.cpu` still names this CPU), its destination. A message to
/// the destination sent from here travels behind the adoption message this
/// CPU sent when the thread switched out (one FIFO per CPU pair, in
/// order), so it finds the thread adopted; done here instead, it would act
/// on a thread no run queue of this CPU holds, racing the new owner. A
/// free slot has no owner: a wakeup or a forwarded message may name a
/// thread that has exited since. Requires critical section.
pub(crate) fn owner<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>) -> Owner {
    let on = td.cpu.load(Ordering::Acquire);
    if on == NO_CPU {
        return Owner::Nobody;
    }
    if on as usize != cpu.index() {
        return Owner::There(on as usize);
    }
    if td.has(flags::MIGRATING) && !ptr::eq(td, cpu.curthread()) {
        Owner::There(td.migrate_dest.load(Ordering::Relaxed) as usize)
    } else {
        Owner::Here
    }
}

/// Makes `td` runnable. On this CPU it is enqueued at once, and preempts the
/// current thread if it is preemptable and of higher priority; on another CPU
/// the owner is sent a message.
///
/// Any context (hard-interrupt handlers included); never blocks.
pub fn schedule<M: Machine>(td: &'static Thread<M>) {
    debug_assert!(!td.has(flags::IDLE), "scheduling an idle thread");
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let owner = td.cpu();
    if ptr::eq(td, cpu.curthread()) {
        enqueue(cpu, td);
    } else if owner == cpu.index() {
        enqueue(cpu, td);
        if td.has(flags::RUNQ) && td.has(flags::PREEMPTABLE) {
            crate::switch::preempt(td, 1);
        }
    } else if owner != NO_CPU as usize {
        M::world().ipi.send(
            owner,
            schedule_remote::<M>,
            tdptr(td) as usize,
            generation(td),
        );
    }
    drop(g);
}

/// `td`'s generation, for a message about it: the slot may be freed and
/// reused before the message arrives, and the receiver must then drop it
/// rather than act on the slot's new thread.
fn generation<M: Machine>(td: &Thread<M>) -> usize {
    td.generation.load(Ordering::Acquire) as usize
}

/// The thread a message about `(arg, generation)` names, if it is still
/// that thread.
pub(crate) fn still<M: Machine>(arg: usize, generation: usize) -> Option<&'static Thread<M>> {
    deref(arg as *mut Thread<M>)
        .filter(|td| td.generation.load(Ordering::Acquire) as usize == generation)
}

/// IPI-dispatch context, on the CPU a schedule request was sent to.
pub(crate) fn schedule_remote<M: Machine>(arg: usize, generation: usize) {
    if let Some(td) = still::<M>(arg, generation) {
        // If it moved on, `schedule` forwards the request to its new owner.
        schedule::<M>(td);
    }
}

/// Puts the current thread back on the run queue (where it normally is while
/// running). Requires critical section.
pub fn schedule_self<M: Machine>(_g: &CritGuard<M>) {
    let cpu = M::mycpu();
    enqueue(cpu, cpu.curthread());
}

/// Takes the current thread off the run queue: the next [`crate::switch()`]
/// blocks it until someone schedules it. Requires critical section.
pub fn deschedule_self<M: Machine>(_g: &CritGuard<M>) {
    let cpu = M::mycpu();
    dequeue(cpu, cpu.curthread());
}

/// Takes `td` off its CPU's run queue (by message if that is another CPU; the
/// effect is then asynchronous).
///
/// Any context; never blocks.
pub fn deschedule<M: Machine>(td: &'static Thread<M>) {
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    match owner(cpu, td) {
        Owner::There(to) => {
            M::world().ipi.send(
                to,
                deschedule_remote::<M>,
                tdptr(td) as usize,
                generation(td),
            );
        }
        Owner::Here => dequeue(cpu, td),
        Owner::Nobody => {}
    }
    drop(g);
}

pub(crate) fn deschedule_remote<M: Machine>(arg: usize, generation: usize) {
    if let Some(td) = still::<M>(arg, generation) {
        deschedule::<M>(td);
    }
}

/// Sets the current thread's priority (requeued at the tail of its new
/// level). Does not switch: yield if you want the new order to take effect.
///
/// Thread context.
pub fn setpri_self<M: Machine>(p: u8) {
    assert!(p <= pri::MAX, "priority {p} out of range");
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let td = cpu.curthread();
    set_priority(cpu, td, p);
    drop(g);
}

/// Sets `td`'s priority: a kernel thread's LWKT level, a user thread's user
/// priority — and its level with it unless it is raised to kernel level
/// (`usched`). Requires critical section on `td`'s CPU.
pub(crate) fn set_priority<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>, p: u8) {
    let level = if td.is_user() {
        td.upri.store(p, Ordering::Relaxed);
        if td.has(flags::UKERN) {
            p.max(pri::KERN_USER)
        } else {
            p
        }
    } else {
        p
    };
    set_level(cpu, td, level);
}

/// Sets `td`'s LWKT level, requeued at the tail of it if it is queued.
/// Requires critical section on `td`'s CPU.
pub(crate) fn set_level<M: Machine>(cpu: &'static Cpu<M>, td: &'static Thread<M>, p: u8) {
    if !td.has(flags::RUNQ) {
        td.pri.store(p, Ordering::Relaxed);
        return;
    }
    cpu.runq.remove(td);
    td.pri.store(p, Ordering::Relaxed);
    cpu.runq.push_tail(td);
    // The running thread needs a reschedule only if something else is now
    // better; another, if it is now the best.
    let best = cpu.runq.best().is_some_and(|b| ptr::eq(b, td));
    if best != td.has(flags::RUNNING) {
        cpu.need_resched();
    }
}

/// Sets `td`'s priority, on its own CPU (by message if that is another one).
///
/// Any context; never blocks.
pub fn setpri<M: Machine>(td: &'static Thread<M>, p: u8) {
    assert!(p <= pri::MAX, "priority {p} out of range");
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    match owner(cpu, td) {
        Owner::There(to) => {
            // The priority rides in the low byte, the generation above it.
            M::world().ipi.send(
                to,
                setpri_remote::<M>,
                tdptr(td) as usize,
                generation(td) << 8 | usize::from(p),
            );
        }
        Owner::Here => set_priority(cpu, td, p),
        Owner::Nobody => {}
    }
    drop(g);
}

pub(crate) fn setpri_remote<M: Machine>(arg: usize, word: usize) {
    if let Some(td) = still::<M>(arg, word >> 8) {
        setpri::<M>(td, word as u8);
    }
}

/// Moves the current thread to CPU `to` and returns running there.
///
/// Thread context, outside critical sections of the caller's own (the move
/// itself is done in one); may block. Tokens are released and reacquired
/// across the move, as across any switch.
pub fn migrate_self<M: Machine>(to: usize) {
    let cpu = M::mycpu();
    assert!(to < M::world().cpus.len(), "no CPU {to}");
    if to == cpu.index() {
        return;
    }
    let td = cpu.curthread();
    assert!(!td.has(flags::IDLE), "the idle thread cannot migrate");
    let g = crit_enter::<M>();
    crate::sleep::remove_from_sleepq(cpu, td);
    td.set(flags::MIGRATING);
    dequeue(cpu, td);
    cpu.allq_remove(td);
    td.migrate_to.store(to as u32, Ordering::Relaxed);
    td.migrate_dest.store(to as u32, Ordering::Relaxed);
    M::trace(crate::Event::Migrate, to as u64);
    crate::switch::switch::<M>();
    // Running on `to` now.
    let here = M::mycpu();
    debug_assert_eq!(here.index(), to);
    here.allq_insert(td);
    drop(g);
}

/// After a migrating thread switched out for the last time on its old CPU:
/// hand it to `to`. Requires critical section (on the old CPU).
pub(crate) fn send_setcpu<M: Machine>(td: &'static Thread<M>, to: usize) {
    M::world()
        .ipi
        .send(to, setcpu_remote::<M>, tdptr(td) as usize, 0);
}

/// IPI-dispatch context on the new CPU: adopt the thread and enqueue it.
fn setcpu_remote<M: Machine>(arg: usize, _: usize) {
    let Some(td) = deref(arg as *mut Thread<M>) else {
        return;
    };
    let cpu = M::mycpu();
    debug_assert!(!td.has(flags::RUNNING | flags::PREEMPT_LOCK));
    td.cpu.store(cpu.index, Ordering::Release);
    td.clear(flags::MIGRATING);
    enqueue(cpu, td);
}
