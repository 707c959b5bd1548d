//! Per-CPU trace rings: the last [`RING`] events of each CPU, with their TSC.
//!
//! Each CPU writes only its own ring (one writer), with plain stores: an
//! interrupt that records an event while the thread it interrupted is between
//! taking a slot and filling it may share the slot with it — the ring is a
//! debugging aid and stays lock-free rather than exact. Readers (the panic path,
//! the `t` console key) read any CPU's ring with relaxed loads.
//!
//! The scheduler's events come through `lwkt::Machine::trace`; the kernel adds
//! its own (interrupts, IPIs sent, markers) with `trace!`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::arch::cpu;
use crate::percpu::{self, PerCpu};
use crate::println;

/// Entries per CPU.
pub const RING: usize = 64;

/// What an entry records. Values 1–31 are the scheduler's (`lwkt::Event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Event {
    /// A device or IPI interrupt vector was taken (argument: vector).
    Interrupt = 32,
    /// An interrupt thread ran its handler (argument: vector).
    IntrThread = 33,
    /// A marker from a test or debugging code (argument: anything).
    Mark = 34,
}

fn name(code: u32) -> &'static str {
    match code {
        1 => "switch",
        2 => "preempt",
        3 => "preempt-miss",
        4 => "wakeup",
        5 => "token-collision",
        6 => "replay",
        7 => "migrate",
        8 => "exit",
        32 => "interrupt",
        33 => "ithread",
        34 => "mark",
        _ => "?",
    }
}

/// One entry. The TSC is kept as `rdtsc` gives it, in halves: two stores,
/// no combining on the recording side.
pub struct Entry {
    tsc_lo: AtomicU32,
    tsc_hi: AtomicU32,
    code: AtomicU32,
    arg: AtomicU64,
}

/// A CPU's ring.
pub struct TraceRing {
    entries: [Entry; RING],
    next: AtomicU32,
}

impl TraceRing {
    /// An empty ring.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const fn new() -> Self {
        TraceRing {
            entries: [const {
                Entry {
                    tsc_lo: AtomicU32::new(0),
                    tsc_hi: AtomicU32::new(0),
                    code: AtomicU32::new(0),
                    arg: AtomicU64::new(0),
                }
            }; RING],
            next: AtomicU32::new(0),
        }
    }

    /// Records `code`/`arg` at the current TSC. Its own CPU only.
    #[inline]
    pub fn record(&self, code: u32, arg: u64) {
        let i = self.next.load(Ordering::Relaxed);
        self.next.store(i.wrapping_add(1), Ordering::Relaxed);
        let e = &self.entries[i as usize % RING];
        let (lo, hi) = cpu::rdtsc_halves();
        e.tsc_lo.store(lo, Ordering::Relaxed);
        e.tsc_hi.store(hi, Ordering::Relaxed);
        e.arg.store(arg, Ordering::Relaxed);
        e.code.store(code, Ordering::Relaxed);
    }

    /// Events recorded since boot.
    pub fn recorded(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }
}

/// Records an event on this CPU's ring. Any context.
#[inline]
pub fn record(code: u32, arg: u64) {
    percpu::mycpu().trace.record(code, arg);
}

/// Records a kernel event: `trace!(Event::Mark, 42)`.
#[macro_export]
macro_rules! trace {
    ($event:expr, $arg:expr) => {
        $crate::trace::record($event as u32, $arg as u64)
    };
}

/// Prints `cpu`'s ring, oldest first, with times relative to `now`.
pub fn dump(cpu: &PerCpu, now: u64) {
    let ring = &cpu.trace;
    let n = ring.recorded();
    println!(
        "trace ring of cpu{} ({n} events recorded, last {}):",
        cpu.index(),
        RING.min(n as usize)
    );
    let first = n.saturating_sub(RING as u32);
    for i in first..n {
        let e = &ring.entries[i as usize % RING];
        let tsc = u64::from(e.tsc_hi.load(Ordering::Relaxed)) << 32
            | u64::from(e.tsc_lo.load(Ordering::Relaxed));
        let code = e.code.load(Ordering::Relaxed);
        let ago = crate::arch::tsc::ticks_to_ns(now.saturating_sub(tsc)) / 1000;
        println!(
            "  -{ago:>8} us  {:<16} {:#x}",
            name(code),
            e.arg.load(Ordering::Relaxed)
        );
    }
}

/// Prints every CPU's ring (the panic path: other CPUs are stopped).
pub fn dump_all() {
    let now = cpu::rdtsc();
    for c in percpu::all() {
        dump(c, now);
    }
}
