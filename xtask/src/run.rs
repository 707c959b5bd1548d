//! `cargo xtask run`: boot Wyvern under QEMU, serial on this terminal.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use wyvern_abi::exit::Verdict;
use wyvern_tests::env;
use wyvern_tests::qemu::{Apic, Boot};

use crate::build::{self, BuildArgs};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Number of CPUs.
    #[arg(long, default_value_t = 8)]
    pub smp: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Wait for a debugger on localhost:1234 before the first instruction.
    #[arg(long)]
    pub gdb: bool,
    /// Deterministic mode: `-icount shift=SHIFT` (guest TSC = 2^SHIFT per instruction).
    #[arg(long, value_name = "SHIFT")]
    pub icount: Option<u32>,
    /// The guest CPUs' local APIC: `x2apic` (the default where QEMU has it,
    /// 9.0 and later, except under --icount) or `xapic`.
    #[arg(long, value_enum)]
    pub apic: Option<ApicArg>,
    /// Boot straight into a self-test (as `cargo xtask test` does).
    #[arg(long, value_name = "NAME")]
    pub test: Option<String>,
    /// Run a stress workload on every CPU and report: token, sleep or nop.
    #[arg(long, value_name = "KIND", conflicts_with = "test")]
    pub stress: Option<String>,
    /// How long the stress workload runs.
    #[arg(long, default_value_t = 5, requires = "stress")]
    pub seconds: u64,
    /// More boot options, `key=value` words (see wyvern_abi::bootopt).
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    /// Extra arguments passed to QEMU as they are.
    #[arg(last = true)]
    pub qemu_args: Vec<String>,
}

/// `--apic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApicArg {
    Xapic,
    X2apic,
}

pub fn run_cmd(args: &RunArgs) -> Result<ExitCode> {
    let env = env::ensure()?;
    let apic = match args.apic {
        Some(ApicArg::Xapic) => Apic::XApic,
        Some(ApicArg::X2apic) => {
            if let Some(why) = env.x2apic_unsupported() {
                bail!("--apic x2apic: {why}");
            }
            if args.icount.is_some() {
                bail!(
                    "--apic x2apic with --icount: QEMU aborts an icount run whose guest \
                     programs its timer through x2APIC MSRs (\"Bad icount read\"); use xapic"
                );
            }
            Apic::X2Apic
        }
        None if args.icount.is_some() || env.x2apic_unsupported().is_some() => Apic::XApic,
        None => Apic::X2Apic,
    };
    let (kernel, image) = build::build_image(args.build.profile())?;
    let mut boot = Boot::new(image);
    boot.smp = args.smp;
    boot.memory_mib = args.memory;
    boot.icount = args.icount;
    boot.gdb = args.gdb;
    boot.apic = apic;
    let mut opts: Vec<String> = args.test.iter().map(|t| format!("test={t}")).collect();
    if let Some(kind) = &args.stress {
        opts.push(format!("stress={kind}"));
        opts.push(format!("seconds={}", args.seconds));
    }
    opts.extend(args.opts.iter().cloned());
    boot.bootopt = opts.join(" ");
    boot.extra = args.qemu_args.clone();
    if args.gdb {
        eprintln!("QEMU waits for a debugger. In another terminal:");
        eprintln!("  gdb {} -ex 'target remote :1234'", kernel.display());
    }
    eprintln!(
        "booting {} CPUs ({}), {} MiB{} (Ctrl-C quits)",
        boot.smp,
        apic.name(),
        boot.memory_mib,
        args.icount
            .map(|s| format!(", icount shift={s}"))
            .unwrap_or_default()
    );
    let status = boot
        .command(&env)
        .status()
        .with_context(|| format!("starting {}", env.qemu.display()))?;
    let verdict = status.code().map(Verdict::from_status);
    match verdict {
        Some(Verdict::Success) => Ok(ExitCode::SUCCESS),
        Some(Verdict::Failure) => {
            eprintln!("xtask: the kernel reported failure (QEMU status 35)");
            Ok(ExitCode::FAILURE)
        }
        Some(Verdict::Other(c)) => {
            eprintln!("xtask: QEMU exited with status {c}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::FAILURE),
    }
}
