//! Every CPU's counters in one place, and the table the `s` console key and
//! every self-test print.

use crate::percpu::{self, PerCpu};
use crate::println;
use crate::sched;

/// One CPU's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuCounters {
    pub cpu: u32,
    pub ticks: u64,
    pub interrupts: u64,
    pub nmis: u64,
    pub sched: lwkt::CpuStatsSnapshot,
    pub ipi: ipi::StatsSnapshot,
}

/// A snapshot of `c`'s counters.
pub fn of(c: &PerCpu) -> CpuCounters {
    CpuCounters {
        cpu: c.index(),
        ticks: c.ticks.get(),
        interrupts: c.traps.get(),
        nmis: c.nmis.get(),
        sched: c.lwkt.stats.snapshot(),
        ipi: if sched::ready() {
            sched::world().ipi.stats(c.index() as usize).snapshot()
        } else {
            ipi::StatsSnapshot::default()
        },
    }
}

/// Snapshots of every online CPU.
pub fn all() -> alloc::vec::Vec<CpuCounters> {
    percpu::online().map(of).collect()
}

/// Prints the counters of every online CPU as a table. Allocates nothing:
/// the panic path prints it, perhaps because the heap ran out.
pub fn dump() {
    println!(
        "stats: cpu   ticks   intrs switches  p.hit p.miss p.weird  halts ipi.sent  ipi.rx avoided fifofull  colls replay.t replay.i"
    );
    for c in percpu::online().map(of) {
        println!(
            "stats: {:>3} {:>7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>7} {:>7} {:>8} {:>6} {:>8} {:>8}",
            c.cpu,
            c.ticks,
            c.interrupts,
            c.sched.switches,
            c.sched.preempt_hit,
            c.sched.preempt_miss,
            c.sched.preempt_weird,
            c.sched.idle_halts,
            c.ipi.sent,
            c.ipi.received,
            c.ipi.avoided,
            c.ipi.fifo_full,
            c.sched.token_collisions,
            c.sched.ticks_replayed,
            c.sched.irqs_replayed,
        );
    }
}

/// Per-vector interrupt counts of CPU `c` that are non-zero.
pub fn vectors(c: &PerCpu) -> impl Iterator<Item = (usize, u64)> + '_ {
    c.vectors
        .iter()
        .enumerate()
        .map(|(v, n)| (v, n.get()))
        .filter(|&(_, n)| n != 0)
}
