//! `cargo xtask`: build, boot, test and package Wyvern.
//!
//! Every command builds what it needs first. The kernel is built for
//! `x86_64-unknown-none` (the kernel crate forces its target), then wrapped with
//! the `bootloader` crate into a UEFI disk image, then booted under
//! `qemu-system-x86_64 -machine q35` with OVMF.

mod bench;
mod build;
mod chart;
mod input;
mod linux;
mod profile;
mod run;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot, test and package Wyvern",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel ELF (`target/x86_64-unknown-none/<profile>/wyvern`).
    Build(build::BuildArgs),
    /// Write the bootable UEFI disk image, e.g. for a USB stick.
    Image(build::ImageArgs),
    /// Build, then boot Wyvern under QEMU with serial on this terminal (or a window, VNC).
    Run(run::RunArgs),
    /// Run every test: host unit tests of each crate, then every QEMU boot test.
    Test(test::TestArgs),
    /// Measure the scheduler's costs under QEMU: table, JSON report, SVG charts.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => build::build_cmd(&a),
        Command::Image(a) => build::image_cmd(&a),
        Command::Run(a) => run::run_cmd(&a),
        Command::Test(a) => test::test_cmd(&a),
        Command::Bench(a) => bench::bench_cmd(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
