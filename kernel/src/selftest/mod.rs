//! Self-tests: one boot runs one named test and ends QEMU with its verdict.
//!
//! A test passes when it returns (the kernel prints `TEST <name> ok` and exits
//! with the success code), or — for a test whose purpose is to provoke a fatal
//! error (a page fault, a panic, a stack overflow) — when exactly that error
//! reaches [`crate::fatal::die`] after its report was printed. The host checks
//! both the exit status and the final `TEST` line, and for the fatal tests the
//! report lines too.
//!
//! A failing check prints `TEST <name> FAILED: <why>` and exits with the
//! failure code at once ([`fail`], `check!`).

mod basic;
mod instruments;
mod sched;
pub(crate) mod smp;
mod user;

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::sync::Arc;
use alloc::vec::Vec;

use lwkt::{Builder, Sema, ThreadRef};

use crate::arch::qemu::{self, ExitCode};
use crate::fatal::Fatal;
use crate::println;
use crate::sched::X86;
use wyvern_abi::result::{TEST_FAILED, TEST_OK, TEST_TAG};

/// What a test's boot should end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The test returns.
    Return,
    /// A kernel panic.
    Panic,
    /// A fatal trap with this vector.
    Trap(u8),
    /// A kernel stack overflow.
    StackOverflow,
}

/// A self-test.
pub struct SelfTest {
    pub name: &'static str,
    pub expect: Expect,
    pub run: fn(),
}

/// Every self-test the kernel knows.
static TESTS: &[&[SelfTest]] = &[
    basic::TESTS,
    smp::TESTS,
    sched::TESTS,
    instruments::TESTS,
    user::TESTS,
];

/// Index + 1 of the running test in the flattened list; 0 = none.
static CURRENT: AtomicUsize = AtomicUsize::new(0);

fn all() -> impl Iterator<Item = &'static SelfTest> {
    TESTS.iter().flat_map(|t| t.iter())
}

fn current() -> Option<&'static SelfTest> {
    match CURRENT.load(Ordering::Acquire) {
        0 => None,
        n => all().nth(n - 1),
    }
}

/// Runs test `name` and ends the boot with its verdict.
pub fn run(name: &str) -> ! {
    let Some((i, test)) = all().enumerate().find(|(_, t)| t.name == name) else {
        println!("{TEST_TAG} {name} {TEST_FAILED} no such test");
        println!("known tests:");
        for t in all() {
            println!("  {}", t.name);
        }
        qemu::exit(ExitCode::Failure);
    };
    CURRENT.store(i + 1, Ordering::Release);
    println!("running self-test {name}");
    (test.run)();
    crate::stats::dump();
    match test.expect {
        Expect::Return => {
            println!("{TEST_TAG} {name} {TEST_OK}");
            qemu::exit(ExitCode::Success)
        }
        other => fail(format_args!("returned, but expected {other:?}")),
    }
}

/// Online CPUs.
fn ncpus() -> usize {
    crate::smp::online() as usize
}

/// A thread on CPU `cpu`, or the test fails.
fn spawn_on(cpu: usize, name: &str, f: impl FnOnce() + Send + 'static) -> ThreadRef<X86> {
    Builder::new(name)
        .cpu(cpu)
        .spawn::<X86>(f)
        .unwrap_or_else(|e| fail(format_args!("spawn on cpu{cpu}: {e:?}")))
}

/// Waits for every thread of `refs` to exit.
fn join_all(refs: Vec<ThreadRef<X86>>) {
    for r in refs {
        r.join();
    }
}

/// Makes every IPI FIFO there can be: each is allocated the first time its
/// sending CPU uses it (`ipi` crate docs), so a test that compares kernel
/// memory with a baseline makes them all before taking it. A cpusync from
/// every CPU sends from each to every other.
fn make_all_ipi_fifos() {
    let refs = (0..ncpus())
        .map(|c| {
            spawn_on(c, "fifos", || {
                crate::sched::cpusync_online(|_| {}, 0);
            })
        })
        .collect();
    join_all(refs);
}

/// Frees every CPU's cache of exited threads and their stacks.
fn trim_all_caches() {
    let refs = (0..ncpus())
        .map(|c| spawn_on(c, "trim", lwkt::trim_cache::<X86>))
        .collect();
    join_all(refs);
    // The trimming threads themselves exited into the caches: once more, and
    // this time only those (without stacks of their own left cached).
    let refs = (0..ncpus())
        .map(|c| spawn_on(c, "trim", lwkt::trim_cache::<X86>))
        .collect();
    join_all(refs);
}

/// Grows the thread slab past the most threads a test that creates and
/// exits threads on many CPUs can hold at once besides its live ones —
/// every CPU's cache full ([`lwkt::slab::CACHE_MAX`] each) — plus `live`, by
/// making that many threads at once (spread over the CPUs) and letting them
/// exit. Slab chunks are never freed, so a test comparing kernel memory
/// with a baseline calls this before taking it: otherwise a round whose
/// exits happen to fill more CPUs' caches than the warm-up did grows the
/// slab by a chunk, which is no leak.
fn grow_thread_slab(live: usize) {
    let n = ncpus() * lwkt::slab::CACHE_MAX as usize + live;
    let gate = Arc::new(Sema::new(0));
    let refs: Vec<ThreadRef<X86>> = (0..n)
        .map(|i| {
            let gate = gate.clone();
            spawn_on(i % ncpus(), "slab", move || gate.wait::<X86>())
        })
        .collect();
    for _ in 0..n {
        gate.post::<X86>();
    }
    join_all(refs);
}

/// Fails the running test with `why` and ends the boot.
pub fn fail(why: fmt::Arguments) -> ! {
    let name = current().map_or("<none>", |t| t.name);
    crate::stats::dump();
    println!("{TEST_TAG} {name} {TEST_FAILED} {why}");
    qemu::exit(ExitCode::Failure)
}

/// Fails the running test unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            $crate::selftest::fail(format_args!($($why)+));
        }
    };
}

/// Called by `fatal::die`: a test that provoked exactly this error passes.
pub fn verdict_on_fatal(kind: Fatal) -> ExitCode {
    let Some(test) = current() else {
        return ExitCode::Failure;
    };
    let expected = match (test.expect, kind) {
        (Expect::Panic, Fatal::Panic) => true,
        (Expect::Trap(v), Fatal::Trap { vector, .. }) => v == vector,
        (Expect::StackOverflow, Fatal::StackOverflow { .. }) => true,
        _ => false,
    };
    if expected {
        println!("{TEST_TAG} {} {TEST_OK}", test.name);
        ExitCode::Success
    } else {
        println!("{TEST_TAG} {} {TEST_FAILED} fatal {kind:?}", test.name);
        ExitCode::Failure
    }
}
