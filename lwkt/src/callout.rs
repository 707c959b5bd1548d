//! Callouts: functions run on a CPU after a number of scheduler ticks.
//!
//! Each CPU has a timing wheel of [`WHEEL`] slots; a callout armed for tick
//! *t* sits in slot *t mod WHEEL* (callouts for later rounds share the slot and
//! stay until their tick). The tick (`hardclock`) only checks whether the
//! current slot holds anything due and, if so, schedules the CPU's softclock
//! thread, a preemptable thread at [`crate::pri::SOFT_TIMER`]; that thread runs
//! the due functions — outside the hard interrupt, with interrupts enabled,
//! and may take tokens, but must not block for long.
//!
//! A callout belongs to the CPU it was armed on: arm and stop it there (the
//! sleep timeout of a thread is armed and stopped by the thread itself, which
//! cannot migrate while asleep). A `Callout` must live as long as it may be
//! armed (`&'static`): threads carry theirs.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::Machine;
use crate::crit::crit_enter;
use crate::thread::NO_CPU;

/// Slots of the wheel.
pub const WHEEL: usize = 256;

/// A function to run after some ticks.
pub struct Callout<M: Machine> {
    next: AtomicPtr<Callout<M>>,
    prev: AtomicPtr<Callout<M>>,
    /// Tick at which it fires. Local to `cpu`.
    deadline: AtomicU64,
    /// `fn(usize)` as an address, and its argument. Local to `cpu`.
    func: AtomicUsize,
    arg: AtomicUsize,
    /// CPU it is armed on, `NO_CPU` when idle. Local to that CPU.
    cpu: AtomicU32,
    /// Taken off the wheel by softclock, not yet called: a `stop` or
    /// `reset` meanwhile clears it, and softclock then does not call it.
    /// Local to the CPU it was armed on.
    taken: AtomicBool,
}

fn cderef<M: Machine>(p: *mut Callout<M>) -> Option<&'static Callout<M>> {
    // SAFETY: callouts on a wheel are `&'static` (`reset` requires it), so a
    // non-null link points at a live callout.
    #[allow(unsafe_code)]
    unsafe {
        p.as_ref()
    }
}

fn cptr<M: Machine>(c: &'static Callout<M>) -> *mut Callout<M> {
    ptr::from_ref(c).cast_mut()
}

impl<M: Machine> Callout<M> {
    /// An idle callout.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const fn new() -> Self {
        Callout {
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            deadline: AtomicU64::new(0),
            func: AtomicUsize::new(0),
            arg: AtomicUsize::new(0),
            cpu: AtomicU32::new(NO_CPU),
            taken: AtomicBool::new(false),
        }
    }

    /// Whether it is armed.
    pub fn is_armed(&self) -> bool {
        self.cpu.load(Ordering::Relaxed) != NO_CPU
    }

    fn call(&self) {
        let f = self.func.load(Ordering::Relaxed);
        // SAFETY: `func` is only ever stored by `reset`, from an `fn(usize)`.
        #[allow(unsafe_code)]
        let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(f) };
        f(self.arg.load(Ordering::Relaxed));
    }
}

impl<M: Machine> Default for Callout<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// A CPU's wheel.
pub struct Wheel<M: Machine> {
    slots: [AtomicPtr<Callout<M>>; WHEEL],
    armed: AtomicU32,
    /// Last tick the softclock thread has run.
    done: AtomicU64,
}

impl<M: Machine> Wheel<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        Wheel {
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; WHEEL],
            armed: AtomicU32::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// Callouts armed on this CPU.
    pub fn armed(&self) -> usize {
        self.armed.load(Ordering::Relaxed) as usize
    }

    fn insert(&self, c: &'static Callout<M>) {
        let s = (c.deadline.load(Ordering::Relaxed) % WHEEL as u64) as usize;
        let head = self.slots[s].load(Ordering::Relaxed);
        c.prev.store(ptr::null_mut(), Ordering::Relaxed);
        c.next.store(head, Ordering::Relaxed);
        if let Some(h) = cderef(head) {
            h.prev.store(cptr(c), Ordering::Relaxed);
        }
        self.slots[s].store(cptr(c), Ordering::Relaxed);
        self.armed
            .store(self.armed.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn remove(&self, c: &'static Callout<M>) {
        let s = (c.deadline.load(Ordering::Relaxed) % WHEEL as u64) as usize;
        let (prev, next) = (
            c.prev.load(Ordering::Relaxed),
            c.next.load(Ordering::Relaxed),
        );
        match cderef(prev) {
            Some(p) => p.next.store(next, Ordering::Relaxed),
            None => self.slots[s].store(next, Ordering::Relaxed),
        }
        if let Some(n) = cderef(next) {
            n.prev.store(prev, Ordering::Relaxed);
        }
        c.next.store(ptr::null_mut(), Ordering::Relaxed);
        c.prev.store(ptr::null_mut(), Ordering::Relaxed);
        self.armed
            .store(self.armed.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// Whether anything is due at tick `now` (the tick handler's check).
    pub(crate) fn due(&self, now: u64) -> bool {
        if self.armed.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut p = cderef(self.slots[(now % WHEEL as u64) as usize].load(Ordering::Relaxed));
        while let Some(c) = p {
            if c.deadline.load(Ordering::Relaxed) <= now {
                return true;
            }
            p = cderef(c.next.load(Ordering::Relaxed));
        }
        false
    }

    /// Takes one callout due at or before `now` out of slot `s`.
    fn take_due(&self, s: usize, now: u64) -> Option<&'static Callout<M>> {
        let mut p = cderef(self.slots[s].load(Ordering::Relaxed));
        while let Some(c) = p {
            if c.deadline.load(Ordering::Relaxed) <= now {
                self.remove(c);
                c.cpu.store(NO_CPU, Ordering::Relaxed);
                c.taken.store(true, Ordering::Relaxed);
                return Some(c);
            }
            p = cderef(c.next.load(Ordering::Relaxed));
        }
        None
    }
}

/// Arms `c` to run `func(arg)` on this CPU `ticks` scheduler ticks from now
/// (at least 1), disarming it first if it was armed here.
///
/// Any context on the callout's CPU; never blocks.
pub fn reset<M: Machine>(c: &'static Callout<M>, ticks: u64, func: fn(usize), arg: usize) {
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let on = c.cpu.load(Ordering::Relaxed);
    assert!(
        on == NO_CPU || on == cpu.index,
        "callout armed on cpu{on} reset from cpu{}",
        cpu.index
    );
    if on != NO_CPU {
        cpu.callouts.remove(c);
    }
    // A call softclock took for the old arming will not happen.
    c.taken.store(false, Ordering::Relaxed);
    c.deadline
        .store(cpu.ticks() + ticks.max(1), Ordering::Relaxed);
    c.func.store(func as usize, Ordering::Relaxed);
    c.arg.store(arg, Ordering::Relaxed);
    c.cpu.store(cpu.index, Ordering::Relaxed);
    cpu.callouts.insert(c);
    drop(g);
}

/// Disarms `c`; returns whether it was armed — or taken off the wheel by
/// softclock and not yet called, which it then is not (so a sleeper whose
/// `stop` says false knows its timeout function ran or runs now, and one
/// whose `stop` says true knows it never will). A callout whose function is
/// already running is not waited for.
///
/// Any context on the callout's CPU; never blocks.
pub fn stop<M: Machine>(c: &'static Callout<M>) -> bool {
    let g = crit_enter::<M>();
    let cpu = M::mycpu();
    let on = c.cpu.load(Ordering::Relaxed);
    if on == NO_CPU {
        let was_taken = c.taken.swap(false, Ordering::Relaxed);
        drop(g);
        return was_taken;
    }
    assert_eq!(
        on, cpu.index,
        "callout armed on cpu{on} stopped from cpu{}",
        cpu.index
    );
    cpu.callouts.remove(c);
    c.cpu.store(NO_CPU, Ordering::Relaxed);
    drop(g);
    true
}

/// Calls `c`, which softclock took off the wheel, unless a `stop` or
/// `reset` came in between (a sleeper woken otherwise stops its timeout,
/// and may already sleep again with the same callout re-armed: calling it
/// then timed out the new sleep at once). The check and the call happen
/// in one critical section, so nothing on this CPU slips between them;
/// the function may block (take tokens) as before.
///
/// Thread context on the callout's CPU.
pub(crate) fn fire_taken<M: Machine>(c: &'static Callout<M>) {
    let g = crit_enter::<M>();
    if c.taken.swap(false, Ordering::Relaxed) {
        c.call();
    }
    drop(g);
}

/// Takes `c` off the wheel as softclock does when it is due (for a test
/// that then runs the interleaving softclock's critical section allows).
///
/// Requires critical section; on the callout's CPU.
#[cfg(test)]
pub(crate) fn take_for_test<M: Machine>(c: &'static Callout<M>) {
    let cpu = M::mycpu();
    assert_eq!(c.cpu.load(Ordering::Relaxed), cpu.index);
    cpu.callouts.remove(c);
    c.cpu.store(NO_CPU, Ordering::Relaxed);
    c.taken.store(true, Ordering::Relaxed);
}

/// The softclock thread of a CPU: runs due callouts, then sleeps until the
/// tick schedules it again. Every tick calls `due` for its own slot (replayed
/// ticks included), so no due slot is missed; the thread itself catches up on
/// every tick since it last ran (at most one full turn of the wheel).
pub(crate) fn softclock_main<M: Machine>() {
    loop {
        let g = crit_enter::<M>();
        let cpu = M::mycpu();
        let wheel = &cpu.callouts;
        let now = cpu.ticks();
        let from = wheel.done.load(Ordering::Relaxed) + 1;
        let first = if now >= from + WHEEL as u64 {
            now + 1 - WHEEL as u64
        } else {
            from
        };
        let next = (first..=now).find_map(|t| wheel.take_due((t % WHEEL as u64) as usize, now));
        match next {
            Some(c) => {
                // Let what waited for our critical section run first (it
                // may stop or re-arm `c`: see `fire_taken`).
                drop(g);
                fire_taken(c);
            }
            None => {
                wheel.done.store(now, Ordering::Relaxed);
                crate::sched::deschedule_self(&g);
                crate::switch::switch::<M>();
                drop(g);
            }
        }
    }
}
