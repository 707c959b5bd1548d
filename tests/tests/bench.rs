//! The benchmark mode boots and emits well-formed results (the figures
//! themselves are `cargo xtask bench`'s business, not a test's).
//!
//! Each boot runs `bench=quick` under `-icount shift=8`, as `cargo xtask
//! bench` does, and checks with `wyvern_tests::bench::validate` that every
//! benchmark expected at that CPU count reported, in order, with every
//! repetition and counter, and that the counters show what each operation
//! claims (switches switched, interrupts preempted, cross-CPU operations sent
//! IPIs, no tick ran while the ticks were stopped).

use std::time::Duration;

use wyvern_abi::bench::spec;
use wyvern_abi::exit::Verdict;
use wyvern_tests::bench::{self, Scale};
use wyvern_tests::harness::{artifacts, qemu_env};
use wyvern_tests::qemu::{Apic, Boot, End, Outcome, run_captured};

fn boot(smp: u32, bootopt: &str) -> Outcome {
    let art = artifacts();
    let mut b = Boot::new(&art.image);
    b.smp = smp;
    b.icount = Some(8);
    // Benchmarks run the xAPIC path: see docs/BENCHMARKS.md ("Which APIC").
    b.apic = Apic::XApic;
    b.bootopt = format!("{bootopt} fb=off");
    run_captured(&b, &qemu_env(), Duration::from_secs(300), None, false)
        .unwrap_or_else(|e| panic!("cannot boot QEMU: {e:#}"))
}

fn quick(smp: u32) {
    let out = boot(smp, "bench=quick");
    let fail = |why: String| -> ! {
        panic!(
            "bench=quick at -smp {smp}: {why}\n--- last lines ---\n{}",
            out.tail(40)
        )
    };
    if out.end != End::Exited(Verdict::Success) {
        fail(format!("ended with {:?}", out.end));
    }
    let run = bench::parse(&out.transcript).unwrap_or_else(|e| fail(e));
    if let Err(problems) = bench::validate(&run, true) {
        fail(problems.join("\n  "));
    }
    assert_eq!(run.header.ncpus, smp, "the header's CPU count");
    // With its tick stopped and the other CPUs halted, a one-CPU benchmark
    // of the kernel executes the same instructions in every repetition.
    for f in bench::figures(&run, Scale::Instructions { shift: 8 }) {
        if f.cpus == 1 && spec(&f.name).is_some_and(|s| !s.user) {
            assert!(
                f.tsc.windows(2).all(|w| w[0] == w[1]),
                "{} on one CPU: repetitions differ under icount: {:?}",
                f.name,
                f.tsc
            );
        }
    }
}

#[test]
fn bench_quick_1cpu() {
    quick(1);
}

#[test]
fn bench_quick_2cpus() {
    quick(2);
}

#[test]
fn bench_quick_4cpus() {
    quick(4);
}

#[test]
fn bench_quick_8cpus() {
    quick(8);
}

/// An unknown benchmark name is refused with the list of known ones, and the
/// boot fails rather than measuring nothing.
#[test]
fn bench_unknown_name_is_refused() {
    let out = boot(1, "bench=switch,nosuch");
    assert_eq!(out.end, End::Exited(Verdict::Failure), "{}", out.tail(20));
    assert!(
        out.transcript.contains("no benchmark `nosuch`")
            && out.transcript.contains("thread-create-exit"),
        "{}",
        out.tail(20)
    );
}
