//! Benchmark mode (`bench=all|quick|NAME[,NAME…]`): measures what the
//! scheduler's operations cost and prints one machine-readable line per
//! figure, for `cargo xtask bench` to tabulate, chart and compare.
//!
//! Each benchmark runs a warm-up repetition, then `reps` measured ones, every
//! one with its own fresh threads. While a benchmark runs, every CPU's tick is
//! stopped (see [`timer::stop_local`]): the workloads never wait for time, and
//! under `-icount` a tick would cost as much as a thousand on real hardware.
//! The tick's own cost is the `tick` benchmark.
//!
//! # Output
//!
//! Progress lines `bench: [i/n] NAME cpus=K`, and lines `BENCH <json>`:
//!
//! * first, `{"type":"header","version":…,"ncpus":…,"tsc_hz":…,"hz":…,`
//!   `"set":…,"reps":…,"count":…}`;
//! * per benchmark and CPU count, `{"type":"result","name":…,"cpus":K,`
//!   `"unit":…,"ops":OPS,"tsc":[T1,…],"counters":{…}}`: `ops` operations per
//!   repetition, `tsc` the TSC ticks of each repetition
//!   (under `-icount shift=S`, 2^S per guest instruction of all CPUs), and
//!   the deltas of every CPU's counters summed over the measured repetitions;
//! * `{"type":"end","count":N}`.
//!
//! Boot options: `reps=` (default 5; `quick` 3), `percent=` (operations as a
//! percentage of each benchmark's default; `quick` 10) and `iters=`
//! (operations per party and repetition for every benchmark, overriding both).

mod parties;
mod workloads;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use wyvern_abi::bench::{COUNTERS, SPECS, Spec};
use wyvern_abi::bootopt::BootOptions;
use wyvern_abi::result::BENCH_TAG;

use crate::arch::qemu::{self, ExitCode};
use crate::arch::{timer, tsc};
use crate::println;
use crate::sched;
use crate::{percpu, stats};
use parties::Rep;

/// A benchmark's workload and its size.
struct Bench {
    spec: &'static Spec,
    /// Operations per party and repetition.
    iters: u64,
    run: Workload,
}

/// A workload: runs one repetition of `n` operations per party on `k` CPUs.
type Workload = fn(u64, usize) -> Rep;

/// The workloads of the benchmarks in `wyvern_abi::bench::SPECS`, by name,
/// with their default operations per party and repetition.
static WORKLOADS: &[(&str, u64, Workload)] = &[
    ("switch", 20_000, workloads::switch),
    ("wakeup-local", 10_000, workloads::wakeup_local),
    ("wakeup-cross-near", 2_000, workloads::wakeup_cross_near),
    ("wakeup-cross-far", 2_000, workloads::wakeup_cross_far),
    ("ipi-rtt", 2_000, workloads::ipi_rtt),
    ("cpusync-all", 500, workloads::cpusync_all),
    ("token", 20_000, workloads::token_shared),
    ("token-private", 20_000, workloads::token_private),
    ("preempt-intr", 2_000, workloads::preempt_intr),
    ("preempt-deferred", 2_000, workloads::preempt_deferred),
    ("thread-create-exit", 2_000, workloads::thread_create_exit),
    ("tick", 100, workloads::tick),
    ("null-syscall", 20_000, workloads::null_syscall),
    (
        "user-thread-create-exit",
        1_000,
        workloads::user_thread_create_exit,
    ),
    ("process-spawn-exit", 100, workloads::process_spawn_exit),
    ("ipc-rtt-local", 5_000, workloads::ipc_rtt_local),
    ("ipc-rtt-local-buf", 5_000, workloads::ipc_rtt_local_buf),
    ("ipc-rtt-cross", 2_000, workloads::ipc_rtt_cross),
    ("ipc-pulse", 5_000, workloads::ipc_pulse),
    ("ipc-null", 2_000, workloads::ipc_null),
    ("usched-pull", 500, workloads::usched_pull),
];

fn bench(spec: &'static Spec) -> Bench {
    let &(_, iters, run) = WORKLOADS
        .iter()
        .find(|w| w.0 == spec.name)
        .unwrap_or_else(|| panic!("benchmark `{}` has no workload", spec.name));
    Bench { spec, iters, run }
}

/// Every CPU's counters summed, in the order of `COUNTERS`.
#[derive(Debug, Clone, Copy, Default)]
struct Counters([u64; COUNTERS.len()]);

impl Counters {
    fn now() -> Self {
        let mut sum = [0u64; COUNTERS.len()];
        for c in stats::all() {
            let v = [
                c.sched.switches,
                c.sched.preempt_hit,
                c.sched.preempt_miss,
                c.sched.preempt_weird,
                c.sched.idle_halts,
                c.sched.wakeups,
                c.sched.token_collisions,
                c.sched.irqs_replayed,
                c.sched.ipiq_replayed,
                c.sched.ticks,
                c.sched.created,
                c.sched.exited,
                percpu::cpu(c.cpu).map_or(0, |p| p.syscalls.get()),
                c.ipi.sent,
                c.ipi.received,
                c.ipi.ipis,
                c.ipi.avoided,
                c.ipi.fifo_full,
                c.ipi.cpusync,
                c.sched.handoffs,
            ];
            for (s, x) in sum.iter_mut().zip(v) {
                *s += x;
            }
        }
        Counters(sum)
    }

    fn since(self, before: Counters) -> Counters {
        let mut d = self;
        for (x, b) in d.0.iter_mut().zip(before.0) {
            *x -= b;
        }
        d
    }
}

/// A JSON object built field by field (names and strings here are plain
/// ASCII; quotes and backslashes are escaped all the same).
struct Json(String);

impl Json {
    fn new() -> Self {
        Json(String::from("{"))
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.string(k);
        self.0.push(':');
    }

    fn string(&mut self, s: &str) {
        self.0.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                self.0.push('\\');
            }
            self.0.push(c);
        }
        self.0.push('"');
    }

    fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        self.string(v);
        self
    }

    fn num(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    fn nums(mut self, k: &str, v: impl Iterator<Item = u64>) -> Self {
        self.key(k);
        self.0.push('[');
        for (i, x) in v.enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{x}");
        }
        self.0.push(']');
        self
    }

    fn object(mut self, k: &str, v: Json) -> Self {
        self.key(k);
        self.0.push_str(&v.finish());
        self
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }

    fn print(self) {
        println!("{BENCH_TAG} {}", self.finish());
    }
}

fn tick_off(_: usize) {
    timer::stop_local();
}

fn tick_on(_: usize) {
    timer::start_local();
}

/// Stops or restarts the tick of every online CPU.
fn ticks_everywhere(on: bool) {
    sched::cpusync_online(if on { tick_on } else { tick_off }, 0);
}

/// Runs the benchmarks `set` names and ends the boot. Thread context on the
/// boot CPU (the workloads place their threads by CPU index and use the boot
/// CPU as one end of every pair).
pub fn run(set: &str, opts: &BootOptions) -> ! {
    assert_eq!(percpu::cpu_index(), 0, "benchmarks run from the boot CPU");
    let quick = set == "quick";
    let chosen: Vec<Bench> = if set == "all" || quick {
        SPECS.iter().map(bench).collect()
    } else {
        let mut chosen = Vec::new();
        for name in set.split(',') {
            match wyvern_abi::bench::spec(name) {
                Some(s) => chosen.push(bench(s)),
                None => {
                    println!("bench: no benchmark `{name}`; known: all, quick, or a list of");
                    for s in SPECS {
                        println!("bench:   {:<20} {}", s.name, s.about);
                    }
                    qemu::exit(ExitCode::Failure)
                }
            }
        }
        chosen
    };
    let reps = opts.param("reps").unwrap_or(if quick { 3 } else { 5 });
    let percent = opts
        .param("percent")
        .unwrap_or(if quick { 10 } else { 100 });
    if reps == 0 {
        println!("bench: reps=0 measures nothing");
        qemu::exit(ExitCode::Failure)
    }
    let ncpus = percpu::online().count();
    let runs: Vec<(&Bench, usize)> = chosen
        .iter()
        .flat_map(|b| b.spec.cpus.counts(ncpus).map(move |k| (b, k)))
        .collect();
    Json::new()
        .str("type", "header")
        .str("version", env!("CARGO_PKG_VERSION"))
        .num("ncpus", ncpus as u64)
        .num("tsc_hz", tsc::hz())
        .num("hz", timer::HZ)
        .str("set", set)
        .num("reps", reps)
        .num("count", runs.len() as u64)
        .print();
    for (i, &(b, k)) in runs.iter().enumerate() {
        println!("bench: [{}/{}] {} cpus={k}", i + 1, runs.len(), b.spec.name);
        let n = opts
            .param("iters")
            .unwrap_or(b.iters.saturating_mul(percent) / 100)
            .max(1);
        ticks_everywhere(false);
        // Warm-up: thread caches, stacks and heap reach their steady state.
        (b.run)((n / 10).max(1), k);
        let before = Counters::now();
        let measured: Vec<Rep> = (0..reps).map(|_| (b.run)(n, k)).collect();
        let counters = Counters::now().since(before);
        ticks_everywhere(true);
        let ops = measured[0].ops;
        assert!(
            measured.iter().all(|r| r.ops == ops),
            "{}: repetitions did different numbers of operations",
            b.spec.name
        );
        let mut c = Json::new();
        for (name, v) in COUNTERS.iter().zip(counters.0) {
            c = c.num(name, v);
        }
        Json::new()
            .str("type", "result")
            .str("name", b.spec.name)
            .num("cpus", k as u64)
            .str("unit", b.spec.unit)
            .num("ops", ops)
            .nums("tsc", measured.iter().map(|r| r.tsc))
            .object("counters", c)
            .print();
    }
    Json::new()
        .str("type", "end")
        .num("count", runs.len() as u64)
        .print();
    qemu::exit(ExitCode::Success)
}
