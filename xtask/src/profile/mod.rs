//! `cargo xtask bench --profile NAME`: where the instructions of one
//! steady-state operation of a benchmark go, function by function.
//!
//! The release image boots in benchmark mode (`bench=NAME reps=1 iters=N`)
//! under `-icount shift=8,align=off,sleep=off`, stopped before its first
//! instruction, with QEMU's gdbstub on a free local TCP port. The profiler
//! speaks the GDB remote protocol itself ([`rsp`]): a hardware breakpoint on
//! the benchmark's marker — `ubench_op` in `ubench`'s measured loops, or
//! `bench_op` in the kernel's `timed` loop — is let pass the warm-up hits
//! (50 by default, all within the benchmark's warm-up repetition: `iters`
//! is chosen so), then removed; from that hit on, the vCPU that hit it is
//! single-stepped until it reaches the marker again, and each pc is
//! symbolized ([`symbols`]) and put on an inferred call stack ([`stacks`]).
//! The result: a table of inclusive and exclusive instructions per
//! function, folded stacks and a flame graph (`inferno`).
//!
//! Single-stepping is deterministic: icount runs the guest on one host
//! thread, the benchmark stopped every CPU's tick, and gdbstub's default
//! step masks interrupts and timers; the same build gives the same trace on
//! every run.
//!
//! With more than one CPU (`ipc-rtt-cross`), gdbstub
//! is all-stop and round-robin: while the profiled vCPU executes, the others
//! do not run at all. They run only while it halts (`hlt` in its idle
//! thread), until it takes an interrupt; for that, steps there let
//! interrupts and timers through (`Qqemu.sstep=1`) and resume the other
//! vCPUs alongside (`vCont;s:T;c`). So such a profile counts the profiled
//! CPU's instructions only: its half of the operation, interrupts included,
//! and none of the other CPU's work. Benchmarks whose operation spins
//! waiting for another CPU (a `pause` loop never halts) cannot be profiled
//! this way and are not offered.

mod report;
mod rsp;
mod stacks;
mod symbols;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wyvern_tests::env;
use wyvern_tests::qemu::{Apic, Boot, pump};

use crate::bench::BenchArgs;
use crate::build::{self, Profile, root};
use rsp::{Remote, reg};
use stacks::{Flow, Folded, ShadowStack, classify, stack_slot};
use symbols::{Symbols, is_kernel};

/// Where a benchmark's marker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// `ubench_op` in the user program `ubench`.
    User,
    /// `bench_op` in the kernel.
    Kernel,
}

/// The benchmarks that can be profiled: their marker and the CPUs to boot.
/// Those tried and seen to give identical profiles run to run. (An
/// `ipc-pulse` operation is one pulse sent; every 65th also holds the
/// server's draining of the full queue — `--warmup 65` after a fresh boot
/// traces that one.) Others with a marker (`user-thread-create-exit`,
/// `wakeup-local`, `token`, `thread-create-exit`, `wakeup-cross-*`) belong
/// here once tried.
const TARGETS: &[(&str, Marker, u32)] = &[
    ("null-syscall", Marker::User, 1),
    ("ipc-rtt-local", Marker::User, 1),
    ("ipc-rtt-local-buf", Marker::User, 1),
    ("ipc-rtt-cross", Marker::User, 2),
    ("ipc-pulse", Marker::User, 1),
    ("switch", Marker::Kernel, 1),
];

/// Instructions after which a trace is given up: an operation that long is
/// waiting for something that will not come (another CPU, while stepping).
const MAX_STEPS: u64 = 2_000_000;

/// A finished trace.
pub struct Trace {
    pub name: String,
    pub folded: Folded,
    pub symbols: Symbols,
    pub cpu: u32,
    pub smp: u32,
    pub warmup: u32,
    pub marker: &'static str,
    pub kernel_insns: u64,
    pub user_insns: u64,
    /// How many times each pc ran, by pc.
    pub pcs: std::collections::BTreeMap<u64, u64>,
    pub qemu: String,
    pub seconds: f64,
}

pub fn profile_cmd(args: &BenchArgs, name: &str) -> Result<std::process::ExitCode> {
    let Some(&(_, marker, smp)) = TARGETS.iter().find(|t| t.0 == name) else {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
        bail!(
            "cannot profile `{name}`: --profile supports these benchmarks (a marker in \
             their loop, and an operation that runs on one CPU or halts while it waits \
             for the other): {}",
            names.join(", ")
        );
    };
    let trace = trace(args, name, marker, smp)?;
    report::write(&trace, &root().join(&args.out))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The guest's serial output, collected while it runs.
struct Guest {
    child: Child,
    serial: Arc<Mutex<String>>,
}

impl Guest {
    fn tail(&self, n: usize) -> String {
        let s = self.serial.lock().expect("serial lock");
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local TCP port (free when asked: QEMU binds it a moment later).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(l.local_addr()?.port())
}

fn trace(args: &BenchArgs, name: &str, marker: Marker, smp: u32) -> Result<Trace> {
    let env = env::ensure()?;
    let (kernel, image) = build::build_image(Profile::Release)?;
    let ubench: PathBuf = root().join("target/x86_64-unknown-none/release/ubench");
    let symbols = Symbols::load(
        &kernel,
        (marker == Marker::User).then_some((ubench.as_path(), "ubench")),
    )?;
    let marker_name = match marker {
        Marker::User => "ubench`ubench_op",
        Marker::Kernel => "bench_op",
    };
    let marker_fn = symbols
        .by_name(marker_name)
        .with_context(|| format!("no symbol `{marker_name}`"))?;
    let marker_pc = symbols.func(marker_fn).start;
    let warmup = args.warmup;
    // The benchmark's warm-up repetition does a tenth of `iters`: make the
    // skipped hits and the traced one fall inside it, in one process.
    let iters = args.iters.unwrap_or(20 * (u64::from(warmup) + 2));
    if iters / 10 < u64::from(warmup) + 2 {
        bail!(
            "--iters {iters}: the warm-up repetition ({}) must exceed --warmup {warmup} + 1",
            iters / 10
        );
    }
    let port = free_port()?;
    let mut boot = Boot::new(image);
    boot.smp = smp;
    boot.icount = Some(8);
    boot.apic = Apic::XApic;
    boot.bootopt = format!("bench={name} fb=off reps=1 iters={iters}");
    boot.extra = vec!["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()];
    let start = Instant::now();
    eprintln!(
        "profile: {name} at -smp {smp}, -icount shift=8, {}; {warmup} warm-up operations, then one traced",
        env::qemu_version(&env)
    );
    let mut child = boot
        .command(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", env.qemu.display()))?;
    let serial = Arc::new(Mutex::new(String::new()));
    pump(
        child.stdout.take().context("QEMU stdout")?,
        serial.clone(),
        None,
        false,
    );
    pump(
        child.stderr.take().context("QEMU stderr")?,
        serial.clone(),
        None,
        false,
    );
    let guest = Guest { child, serial };
    let deadline = Duration::from_secs(args.deadline);
    let traced = Remote::connect(port, Duration::from_secs(10)).and_then(|mut remote| {
        let t = run(
            &mut remote,
            &symbols,
            marker_fn,
            marker_pc,
            warmup,
            smp,
            deadline,
            start,
        );
        remote.kill();
        t
    });
    let traced = traced.map_err(|e| {
        anyhow::anyhow!("{e:#}\n--- last lines of the guest ---\n{}", guest.tail(20))
    })?;
    drop(guest);
    Ok(Trace {
        name: name.to_owned(),
        folded: traced.folded,
        symbols,
        cpu: traced.cpu,
        smp,
        warmup,
        marker: match marker {
            Marker::User => "ubench_op",
            Marker::Kernel => "bench_op",
        },
        kernel_insns: traced.kernel,
        user_insns: traced.user,
        pcs: traced.pcs,
        qemu: env::qemu_version(&env),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What [`run`] traced.
struct Traced {
    /// The profiled CPU's index.
    cpu: u32,
    folded: Folded,
    /// Instructions at kernel and at user addresses.
    kernel: u64,
    user: u64,
    pcs: std::collections::BTreeMap<u64, u64>,
}

/// Lets `warmup` marker hits pass, then traces the next operation on the
/// vCPU that hit it.
#[allow(clippy::too_many_arguments)]
fn run(
    remote: &mut Remote,
    symbols: &Symbols,
    marker_fn: usize,
    marker_pc: u64,
    warmup: u32,
    smp: u32,
    deadline: Duration,
    start: Instant,
) -> Result<Traced> {
    remote.hw_break(marker_pc, true)?;
    let mut thread = 0;
    for hit in 0..=warmup {
        if start.elapsed() > deadline {
            bail!("deadline passed after {hit} marker hits");
        }
        thread = remote.cont()?;
        let pc = remote.register(reg::RIP)?;
        if pc != marker_pc {
            bail!("stopped at {pc:#x}, not at the marker {marker_pc:#x}");
        }
        // Step over the breakpoint before going on (gdb's way).
        remote.hw_break(marker_pc, false)?;
        if hit < warmup {
            remote.step(thread, false)?;
            remote.hw_break(marker_pc, true)?;
        }
    }
    // The ELF's code is what runs where the symbols say.
    let want = symbols
        .code_at(marker_pc)
        .context("the marker has no code")?;
    let got = remote.memory(marker_pc, want.len())?;
    if got != want {
        bail!(
            "the guest's code at the marker {marker_pc:#x} is not the ELF's: \
             load address or build mismatch"
        );
    }
    let rsp = remote.register(reg::RSP)?;
    let ret = u64::from_le_bytes(
        remote
            .memory(rsp, 8)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("short read of the return address"))?,
    );
    let caller = symbols.find(ret.wrapping_sub(1));
    let slot = is_kernel(rsp).then(|| stack_slot(rsp));
    let mut stack = ShadowStack::new(vec![caller, marker_fn], slot);
    let mut folded = Folded::default();
    folded.add(stack.frames());
    let mut pcs = std::collections::BTreeMap::from([(marker_pc, 1)]);
    let others = smp > 1;
    if others {
        remote.ok("Qqemu.sstep=1")?;
    }
    let mut code_cache: HashMap<u64, Flow> = HashMap::new();
    let (mut pc, mut func) = (marker_pc, marker_fn);
    let mut steps = 0u64;
    loop {
        let stopped = remote.step(thread, others)?;
        if stopped != thread {
            bail!("vCPU {stopped} stopped while stepping vCPU {thread}");
        }
        let next = remote.register(reg::RIP)?;
        if next == marker_pc {
            break;
        }
        steps += 1;
        if steps > MAX_STEPS || (steps.is_multiple_of(4096) && start.elapsed() > deadline) {
            bail!(
                "no second marker hit after {steps} instructions: the operation waits for \
                 something that does not run while one vCPU is stepped"
            );
        }
        let flow = match symbols.code_at(pc) {
            Some(code) => classify(code),
            None => match code_cache.get(&pc) {
                Some(&f) => f,
                None => {
                    let f = classify(&remote.memory(pc, 16).unwrap_or_default());
                    code_cache.insert(pc, f);
                    f
                }
            },
        };
        let f = symbols.find(next);
        let slot = if flow == Flow::Return || f != func {
            let rsp = remote.register(reg::RSP)?;
            is_kernel(rsp).then(|| stack_slot(rsp))
        } else {
            None
        };
        stack.step(f, next == symbols.func(f).start, flow, slot);
        folded.add(stack.frames());
        *pcs.entry(next).or_insert(0) += 1;
        pc = next;
        func = f;
    }
    let kernel = pcs
        .iter()
        .filter(|&(&pc, _)| is_kernel(pc))
        .map(|(_, &n)| n)
        .sum();
    let user = folded.total() - kernel;
    Ok(Traced {
        cpu: thread - 1,
        folded,
        kernel,
        user,
        pcs,
    })
}
