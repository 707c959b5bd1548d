//! The per-CPU tick: [`HZ`] interrupts a second from each CPU's local APIC
//! timer.
//!
//! TSC-deadline mode when the CPU has it (each tick arms the next at a fixed
//! TSC period from the previous deadline, so ticks do not drift with handler
//! latency); otherwise the LAPIC timer's periodic mode, with its bus clock
//! measured against the TSC by the boot CPU (all local APIC timers share that
//! clock). The boot option `timer=` forces either.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use wyvern_abi::bootopt::TimerChoice;

use super::apic::{self, VECTOR_TIMER, with_lapic};
use super::trap::{self, TrapFrame};
use super::{cpu, tsc};
use crate::percpu::mycpu;

/// Scheduler clock ticks per second on each CPU.
pub const HZ: u64 = 100;

/// Timer mode in use on every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    TscDeadline,
    Periodic,
}

const MODE_DEADLINE: u8 = 1;
const MODE_PERIODIC: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(0);
/// TSC ticks per scheduler tick.
static TSC_PER_TICK: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer counts (divide 16) per scheduler tick, periodic mode.
static LAPIC_PER_TICK: AtomicU32 = AtomicU32::new(0);

/// The mode in use.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        MODE_DEADLINE => Mode::TscDeadline,
        _ => Mode::Periodic,
    }
}

fn cpu_has_tsc_deadline() -> bool {
    cpu::cpuid(1, 0).ecx & (1 << 24) != 0
}

/// Chooses the mode from the boot option and the CPU. Boot CPU, once, after
/// the TSC is calibrated and before the local APICs are enabled (their LVT
/// timer mode depends on it).
pub fn select(choice: TimerChoice) -> Mode {
    let deadline = match choice {
        TimerChoice::Auto => cpu_has_tsc_deadline(),
        TimerChoice::Deadline => {
            assert!(
                cpu_has_tsc_deadline(),
                "timer=deadline, but this CPU has no TSC-deadline timer"
            );
            true
        }
        TimerChoice::Periodic => false,
    };
    TSC_PER_TICK.store(tsc::hz() / HZ, Ordering::Relaxed);
    MODE.store(
        if deadline {
            MODE_DEADLINE
        } else {
            MODE_PERIODIC
        },
        Ordering::Relaxed,
    );
    mode()
}

/// Calibrates the LAPIC timer (periodic mode) and registers the tick handler.
/// Boot CPU, once, after its local APIC is enabled, interrupts off.
pub fn init_global() {
    if mode() == Mode::Periodic {
        // Count the LAPIC timer down for 10 ms of TSC time.
        let start = u32::MAX;
        let window = tsc::ns_to_ticks(10_000_000);
        let counted = with_lapic(|l| {
            l.start_count(start);
            let t0 = cpu::rdtsc();
            while cpu::rdtsc() - t0 < window {
                cpu::pause();
            }
            let left = l.current();
            l.stop_timer();
            start - left
        });
        let per_second = u64::from(counted) * 100;
        LAPIC_PER_TICK.store((per_second / HZ).max(1) as u32, Ordering::Relaxed);
    }
    trap::register(VECTOR_TIMER, tick);
}

/// Whether the local APIC should be set up in TSC-deadline mode.
pub fn uses_deadline() -> bool {
    mode() == Mode::TscDeadline
}

/// Starts this CPU's tick: every CPU once at bring-up, and again after
/// [`stop_local`]. Any context.
pub fn start_local() {
    match mode() {
        Mode::TscDeadline => {
            let first = cpu::rdtsc() + TSC_PER_TICK.load(Ordering::Relaxed);
            mycpu().timer_deadline.store(first, Ordering::Relaxed);
            with_lapic(|l| l.set_tsc_deadline(first));
        }
        Mode::Periodic => with_lapic(|l| l.set_periodic(LAPIC_PER_TICK.load(Ordering::Relaxed))),
    }
}

/// Stops this CPU's tick until the next [`start_local`]. The benchmarks use
/// it: under `-icount` a 100 Hz tick of virtual time comes every ~39,000
/// guest instructions, a thousand times its real-hardware weight, and every
/// idle CPU's tick would be counted in the measured CPU's figures. Any
/// context.
pub fn stop_local() {
    match mode() {
        Mode::TscDeadline => with_lapic(|l| l.set_tsc_deadline(0)),
        Mode::Periodic => with_lapic(|l| l.stop_timer()),
    }
}

/// The tick: count it, arm the next (deadline mode), acknowledge, and hand it
/// to the scheduler (which defers it inside a critical section).
fn tick(_frame: &mut TrapFrame) {
    let me = mycpu();
    me.ticks.inc();
    crate::intr::testdev_tick(me.index() as usize, me.ticks.get());
    if mode() == Mode::TscDeadline {
        let period = TSC_PER_TICK.load(Ordering::Relaxed);
        let cpu = mycpu();
        let mut next = cpu.timer_deadline.load(Ordering::Relaxed) + period;
        let now = cpu::rdtsc();
        if next <= now {
            // We fell behind (a long interrupts-off stretch, or the host
            // descheduled the vCPU): resume from now rather than fire a burst.
            next = now + period;
        }
        cpu.timer_deadline.store(next, Ordering::Relaxed);
        with_lapic(|l| l.set_tsc_deadline(next));
    }
    apic::eoi();
    if crate::sched::ready() {
        lwkt::clock_interrupt::<crate::sched::X86>();
    }
}
