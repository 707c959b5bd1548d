//! `cargo xtask test`: every test there is.
//!
//! 1. Host unit tests of every crate that runs on the host (`abi`, `ipi`,
//!    `lwkt`, `xtask`, and the harness's own tests) — seconds — and the loom
//!    models of the IPI queues (`ipi/tests/loom.rs`, built with `--cfg
//!    loom`) — about two minutes.
//! 2. The kernel built with the `ktest` profile (optimized, debug assertions on)
//!    and its disk image.
//! 3. Every QEMU integration test in `tests/tests/`, each one boot, with
//!    `WYVERN_IMAGE` and `WYVERN_KERNEL` pointing at what step 2 built.
//!
//! QEMU and OVMF are installed first if missing, and QEMU replaced by one
//! that has x2APIC under TCG where that can be done (see `wyvern_tests::env`).
//! Every boot test that involves CPUs, interrupts, timers, user mode, IPC or
//! the shell runs once per local APIC mode (`name::xapic`, `name::x2apic`);
//! with a QEMU older than 9.0 the x2APIC half is skipped, listed, and the
//! reason printed, in the step's report and in the final line.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use wyvern_tests::env;

use crate::build::{self, Profile, cargo};

#[derive(Args)]
pub struct TestArgs {
    /// Only host unit tests (no kernel build, no QEMU).
    #[arg(long)]
    pub host_only: bool,
    /// Only QEMU tests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// QEMU boots run at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: u32,
}

fn run(step: &str, mut cmd: std::process::Command) -> Result<()> {
    let t = Instant::now();
    eprintln!("xtask test: {step}");
    let status = cmd.status()?;
    if !status.success() {
        bail!("{step} failed");
    }
    eprintln!(
        "xtask test: {step}: ok in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How the x2APIC half of a boot test is named (`apic_tests!`).
const X2APIC_SUFFIX: &str = "::x2apic";

/// The names of the QEMU boot tests (`file-less`, as libtest lists them),
/// those matching `filter` only.
fn boot_tests(filter: Option<&str>) -> Result<Vec<String>> {
    let mut list = cargo();
    list.args(["test", "--package", "wyvern-tests", "--test", "*", "--"])
        .args(["--list", "--format", "terse"]);
    if let Some(f) = filter {
        list.arg(f);
    }
    let out = list.output()?;
    if !out.status.success() {
        bail!(
            "listing the boot tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

pub fn test_cmd(args: &TestArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let mut skipped: Option<(usize, String)> = None;
    let qemu = if args.host_only {
        None
    } else {
        Some(env::ensure()?)
    };

    let mut host = cargo();
    host.args([
        "test",
        "--workspace",
        "--exclude",
        "wyvern-kernel",
        "--exclude",
        "wyvern-tests",
        "--exclude",
        "wyvern-user",
    ]);
    run("host unit tests", host)?;
    // The loom models of the IPI queues: the crate built with `--cfg loom`
    // (its own target directory, so the builds above and below stay cached).
    let mut loom = cargo();
    loom.args(["test", "--package", "ipi", "--release", "--test", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", crate::build::root().join("target/loom"));
    run("loom models of the IPI queues", loom)?;
    let mut harness = cargo();
    harness.args(["test", "--package", "wyvern-tests", "--lib"]);
    run("harness unit tests", harness)?;

    if let Some(qemu) = qemu {
        eprintln!("xtask test: {}", env::qemu_version(&qemu));
        let t = Instant::now();
        let (kernel, image) = build::build_image(Profile::Ktest)?;
        eprintln!(
            "xtask test: kernel and image built in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut boots = cargo();
        boots
            .args([
                "test",
                "--no-fail-fast",
                "--package",
                "wyvern-tests",
                "--test",
                "*",
                "--",
            ])
            .arg(format!("--test-threads={}", args.jobs.max(1)))
            .env("WYVERN_IMAGE", &image)
            .env("WYVERN_KERNEL", &kernel);
        if let Some(f) = &args.filter {
            boots.arg(f);
        }
        if let Some(why) = qemu.x2apic_unsupported() {
            let names = boot_tests(args.filter.as_deref())?
                .into_iter()
                .filter(|n| n.ends_with(X2APIC_SUFFIX))
                .collect::<Vec<_>>();
            eprintln!(
                "xtask test: SKIPPING {} x2APIC boot tests: {why}",
                names.len()
            );
            for n in &names {
                eprintln!("xtask test:   skipped {n}");
            }
            skipped = Some((names.len(), why));
            boots.args(["--skip", X2APIC_SUFFIX]);
        }
        run("QEMU boot tests", boots)?;
    }
    match skipped {
        None => eprintln!(
            "xtask test: all passed in {:.1} s",
            start.elapsed().as_secs_f64()
        ),
        Some((n, why)) => eprintln!(
            "xtask test: all that ran passed in {:.1} s; {n} x2APIC boot tests SKIPPED: {why}",
            start.elapsed().as_secs_f64()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
