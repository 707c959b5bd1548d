//! Linux beside Wyvern (`cargo xtask bench --vs linux`) boots and reports
//! every row it should, well-formed: Debian's kernel package fetched (or
//! taken from `target/linux/`), the program built, Linux booted on a
//! benchmark boot's machine (`-icount shift=8`, the xAPIC path) at 1 and 2
//! CPUs with few operations, its `BENCH` lines parsed and checked by
//! `wyvern_tests::linux::validate`. The figures are not checked.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wyvern_abi::exit::Verdict;

use wyvern_tests::bench::{self, Scale};
use wyvern_tests::harness::qemu_env;
use wyvern_tests::linux;
use wyvern_tests::qemu::{End, run_captured};

/// The kernel, program and initramfs, prepared once for both tests.
fn guest() -> &'static linux::Guest {
    static GUEST: OnceLock<linux::Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        linux::prepare(&root).unwrap_or_else(|e| panic!("preparing Linux: {e:#}"))
    })
}

fn quick(smp: u32) {
    let guest = guest();
    let machine = bench::machine(guest.kernel.vmlinuz.clone(), smp, Some(8));
    let boot = linux::boot(machine, guest, 2, 2);
    let start = Instant::now();
    let out = run_captured(&boot, &qemu_env(), Duration::from_secs(120), None, false)
        .unwrap_or_else(|e| panic!("cannot boot QEMU: {e:#}"));
    let fail = |why: String| -> ! {
        panic!(
            "Linux at -smp {smp}: {why}\n--- last lines ---\n{}",
            out.tail(30)
        )
    };
    // Powered off: QEMU's status 0.
    if out.end != End::Exited(Verdict::Other(0)) {
        fail(format!("ended with {:?}", out.end));
    }
    let run = bench::parse(&out.transcript).unwrap_or_else(|e| fail(e));
    if let Err(problems) = linux::validate(&run, smp) {
        fail(problems.join("\n  "));
    }
    let figures = bench::figures(&run, Scale::Instructions { shift: 8 });
    assert_eq!(figures.len(), linux::expected(smp as usize).len());
    eprintln!(
        "Linux {} at -smp {smp}: {} rows in {:.1} s",
        run.header.version,
        figures.len(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn one_cpu() {
    quick(1);
}

#[test]
fn two_cpus() {
    quick(2);
}
