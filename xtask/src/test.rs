//! `cargo xtask test`: every test there is.
//!
//! 1. Host unit tests of every crate that runs on the host (`abi`, `ipi`,
//!    `lwkt`, `xtask`, and the harness's own tests) — seconds.
//! 2. The kernel built with the `ktest` profile (optimized, debug assertions on)
//!    and its disk image.
//! 3. Every QEMU integration test in `tests/tests/`, each one boot, with
//!    `WYVERN_IMAGE` and `WYVERN_KERNEL` pointing at what step 2 built.
//!
//! QEMU and OVMF are installed first if missing (see `wyvern_tests::env`).

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

pub fn test_cmd(args: &TestArgs) -> Result<ExitCode> {
    let start = Instant::now();
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
            .args(["test", "--package", "wyvern-tests", "--test", "*", "--"])
            .arg(format!("--test-threads={}", args.jobs.max(1)))
            .env("WYVERN_IMAGE", &image)
            .env("WYVERN_KERNEL", &kernel);
        if let Some(f) = &args.filter {
            boots.arg(f);
        }
        run("QEMU boot tests", boots)?;
    }
    eprintln!(
        "xtask test: all passed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
