//! Stress workloads in the manner of seeds/004's `bkl-stress`: one thread per
//! CPU hammering one thing for a while, then a per-CPU report of operations,
//! switches, token collisions and the contention rate.
//!
//! * `token` — take and release one shared exclusive token as fast as possible.
//! * `sleep` — sleep for one tick, over and over.
//! * `nop` — count, yielding every 1024 counts (the control).
//!
//! Run with `cargo xtask run --stress token --seconds 5` (boot options
//! `stress=token seconds=5`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use lwkt::{Builder, Token};

use crate::arch::{cpu, tsc};
use crate::percpu;
use crate::println;
use crate::sched::X86;

/// What each CPU's thread does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token,
    Sleep,
    Nop,
}

impl Kind {
    /// Parses a boot option value.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "token" => Some(Kind::Token),
            "sleep" => Some(Kind::Sleep),
            "nop" => Some(Kind::Nop),
            _ => None,
        }
    }
}

/// One CPU's results.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuResult {
    pub ops: u64,
    pub switches: u64,
    pub collisions: u64,
}

static STRESS_TOKEN: Token = Token::new("stress");
/// Touched only under `STRESS_TOKEN`.
static UNDER_TOKEN: AtomicU64 = AtomicU64::new(0);

/// Runs `kind` on every online CPU for `seconds`; returns per-CPU results.
///
/// Thread context; blocks for the duration.
pub fn run(kind: Kind, seconds: u64) -> Vec<CpuResult> {
    let cpus: Vec<_> = percpu::online().collect();
    let before: Vec<(u64, u64)> = cpus
        .iter()
        .map(|c| {
            (
                c.lwkt.stats.switches.get(),
                c.lwkt.stats.token_collisions.get(),
            )
        })
        .collect();
    let end = cpu::rdtsc() + tsc::ns_to_ticks(seconds * 1_000_000_000);
    let ops: Arc<Vec<AtomicU64>> = Arc::new(cpus.iter().map(|_| AtomicU64::new(0)).collect());
    let refs: Vec<_> = (0..cpus.len())
        .map(|i| {
            let ops = ops.clone();
            Builder::new("stress")
                .cpu(i)
                .spawn::<X86>(move || {
                    let mut n = 0u64;
                    while cpu::rdtsc() < end {
                        match kind {
                            Kind::Token => {
                                let _t = lwkt::gettoken::<X86>(&STRESS_TOKEN);
                                let v = UNDER_TOKEN.load(Ordering::Relaxed);
                                UNDER_TOKEN.store(v + 1, Ordering::Relaxed);
                            }
                            Kind::Sleep => {
                                let ident = core::ptr::from_ref(&ops[i]) as usize;
                                lwkt::tsleep::<X86>(ident, 0, "stress", 1);
                            }
                            Kind::Nop => {
                                if n.is_multiple_of(1024) {
                                    lwkt::lwkt_yield::<X86>();
                                }
                            }
                        }
                        n += 1;
                    }
                    ops[i].store(n, Ordering::Relaxed);
                })
                .expect("no memory for a stress thread")
        })
        .collect();
    for r in refs {
        r.join();
    }
    cpus.iter()
        .zip(before)
        .enumerate()
        .map(|(i, (c, (s0, c0)))| CpuResult {
            ops: ops[i].load(Ordering::Relaxed),
            switches: c.lwkt.stats.switches.get() - s0,
            collisions: c.lwkt.stats.token_collisions.get() - c0,
        })
        .collect()
}

/// Prints a report.
pub fn print(kind: Kind, seconds: u64, results: &[CpuResult]) {
    println!("stress {kind:?} for {seconds} s on {} CPUs:", results.len());
    println!("stress:  cpu        ops   ops/s   switches  collisions  contention");
    let mut total = CpuResult::default();
    for (i, r) in results.iter().enumerate() {
        println!(
            "stress: {i:>4} {:>10} {:>7} {:>10} {:>11} {:>10.1}%",
            r.ops,
            r.ops / seconds.max(1),
            r.switches,
            r.collisions,
            rate(r.collisions, r.ops)
        );
        total.ops += r.ops;
        total.switches += r.switches;
        total.collisions += r.collisions;
    }
    println!(
        "stress:  all {:>10} {:>7} {:>10} {:>11} {:>10.1}%",
        total.ops,
        total.ops / seconds.max(1),
        total.switches,
        total.collisions,
        rate(total.collisions, total.ops)
    );
}

/// Collisions per operation, in percent.
fn rate(collisions: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        collisions as f64 * 100.0 / ops as f64
    }
}
