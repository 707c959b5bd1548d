//! `cargo xtask run`: boot Wyvern under QEMU, serial on this terminal.
//!
//! COM1 is on the terminal, in raw mode, as QEMU's `-serial stdio` makes
//! it; with standard input from a pipe or a file, xtask forwards it
//! instead and ends the run at its end ([`crate::input`]). The screen and
//! keyboard are there for a person with `--window` (QEMU's GTK, else SDL,
//! display) or `--vnc`; `--no-serial` takes COM1 away, so the guest's
//! console is its screen alone.
//!
//! An interactive boot runs without `-no-reboot`: a reset (the guest's
//! reboot) starts the machine again, and an ACPI power-off ends QEMU with
//! status 0, which counts as success. A `--test` or `--stress` boot keeps
//! the test suite's machine: a reset ends QEMU, and only the kernel's
//! success code (33) is success.

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use wyvern_abi::exit::Verdict;
use wyvern_tests::env::{self, QemuEnv};
use wyvern_tests::harness::unique_temp;
use wyvern_tests::qemu::{Apic, Boot, Serial};

use crate::build::{self, BuildArgs};
use crate::input;

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
    /// Show the screen in a window (QEMU's GTK display, else SDL); what is
    /// typed there goes to the guest's keyboard.
    #[arg(long, conflicts_with = "vnc")]
    pub window: bool,
    /// Serve the screen and keyboard over VNC: `N` or `:N` on 127.0.0.1
    /// port 5900+N, `HOST:N` as given.
    #[arg(long, value_name = "[HOST]:N")]
    pub vnc: Option<String>,
    /// No COM1 (`-serial none`): the guest's console is its screen (with
    /// --window or --vnc).
    #[arg(long)]
    pub no_serial: bool,
    /// With input from a pipe or file: after its end, how long COM1 must
    /// stay quiet before QEMU is told to quit.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub linger: f64,
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
    // The screen's options are checked before the build.
    let display = match (&args.vnc, args.window) {
        (Some(v), _) => Some(format!("vnc={}", vnc_address(v)?)),
        (None, true) => Some(window_display(&env)?),
        (None, false) => None,
    };
    if args.no_serial && display.is_none() {
        bail!("--no-serial leaves no console: add --window or --vnc N");
    }
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
    let interactive = args.test.is_none() && args.stress.is_none();
    boot.no_reboot = !interactive;
    if let Some(d) = display {
        boot.display = d;
        boot.vga = Some("std".into());
    }
    if args.no_serial {
        boot.serial = Serial::None;
    }
    // From a pipe or a file, the input goes through xtask (see `input`).
    let piped = boot.serial == Serial::Stdio && !std::io::stdin().is_terminal();
    if piped {
        boot.monitor = Some(unique_temp("run-monitor", "sock"));
    }
    if args.gdb {
        eprintln!("QEMU waits for a debugger. In another terminal:");
        eprintln!("  gdb {} -ex 'target remote :1234'", kernel.display());
    }
    let linger = Duration::from_secs_f64(args.linger.max(0.0));
    eprintln!(
        "booting {} CPUs ({}), {} MiB{}{}",
        boot.smp,
        apic.name(),
        boot.memory_mib,
        args.icount
            .map(|s| format!(", icount shift={s}"))
            .unwrap_or_default(),
        if piped {
            format!(
                "; input goes to COM1 from the shell's first prompt on, and once it \
                 has ended and COM1 has been quiet for {:.1} s, QEMU is told to quit",
                linger.as_secs_f64()
            )
        } else {
            " (Ctrl-C quits)".into()
        }
    );
    if let Some(d) = boot.display.strip_prefix("vnc=") {
        eprintln!("the screen: a VNC viewer at {d}");
    }
    let status = if piped {
        run_piped(&boot, &env, linger)?
    } else {
        let status = boot
            .command(&env)
            .status()
            .with_context(|| format!("starting {}", env.qemu.display()))?;
        Some(exit_code(status))
    };
    if let Some(m) = &boot.monitor {
        let _ = std::fs::remove_file(m);
    }
    let Some(code) = status else {
        return Ok(ExitCode::SUCCESS);
    };
    match Verdict::from_status(code) {
        Verdict::Success => Ok(ExitCode::SUCCESS),
        Verdict::Failure => {
            eprintln!("xtask: the kernel reported failure (QEMU status 35)");
            Ok(ExitCode::FAILURE)
        }
        Verdict::Other(0) if interactive => {
            eprintln!(
                "xtask: QEMU ended with status 0 (the guest powered off, or QEMU was closed)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Other(c) => {
            eprintln!("xtask: QEMU exited with status {c}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs QEMU with COM1 on pipes, forwarding this process's input; the
/// status QEMU ended with, or `None` when xtask ended it at the end of the
/// input.
fn run_piped(boot: &Boot, env: &QemuEnv, linger: Duration) -> Result<Option<i32>> {
    let mut child = boot
        .command(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", env.qemu.display()))?;
    let monitor = boot.monitor.clone();
    let end = input::forward(
        &mut child,
        std::io::stdin(),
        std::io::stdout(),
        linger,
        |c| quit(c, monitor.as_deref()),
    )?;
    if end.at_end_of_input {
        eprintln!("\nxtask: end of input: QEMU told to quit");
        return Ok(None);
    }
    Ok(Some(exit_code(end.status)))
}

/// Ends QEMU: `quit` on its monitor, a kill if it still runs 5 s later.
fn quit(child: &mut Child, monitor: Option<&std::path::Path>) {
    if let Some(path) = monitor
        && let Ok(mut m) = UnixStream::connect(path)
    {
        let _ = m.write_all(b"quit\n");
        for _ in 0..50 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
}

/// A process status as a code; a signal counts as QEMU's failure (1).
fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or(1)
}

/// The first window display this QEMU has: GTK, else SDL.
fn window_display(env: &QemuEnv) -> Result<String> {
    let out = Command::new(&env.qemu)
        .args(["-display", "help"])
        .output()
        .with_context(|| format!("asking {} for its displays", env.qemu.display()))?;
    let have = display_backends(&String::from_utf8_lossy(&out.stdout));
    ["gtk", "sdl"]
        .into_iter()
        .find(|d| have.iter().any(|h| h == d))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "--window: {} has no GTK or SDL display (it has: {}); on Debian and Ubuntu \
                 they come with the package qemu-system-gui; --vnc N serves the screen to a \
                 VNC viewer instead",
                env.qemu.display(),
                have.join(", ")
            )
        })
}

/// The display names `qemu-system-x86_64 -display help` lists.
fn display_backends(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Available display backend types"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

/// `--vnc`'s value as QEMU's `vnc=` address: a bare display number (with
/// or without the colon) on 127.0.0.1.
fn vnc_address(arg: &str) -> Result<String> {
    let (host, n) = arg.rsplit_once(':').unwrap_or(("", arg));
    if n.parse::<u16>().is_err() {
        bail!("--vnc {arg}: want N, :N or HOST:N (display N is port 5900+N)");
    }
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(format!("{host}:{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_qemu_lists() {
        // QEMU 10.0.2 without its GUI package.
        let help = "Available display backend types:\nnone\ncurses\n\n\
                    Some display backends support suboptions, which can be set with\n";
        assert_eq!(display_backends(help), ["none", "curses"]);
        let gui = "Available display backend types:\nnone\ngtk\nsdl\negl-headless\n";
        assert_eq!(
            display_backends(gui),
            ["none", "gtk", "sdl", "egl-headless"]
        );
    }

    #[test]
    fn vnc_addresses_stay_local_unless_told() {
        assert_eq!(vnc_address("1").unwrap(), "127.0.0.1:1");
        assert_eq!(vnc_address(":7").unwrap(), "127.0.0.1:7");
        assert_eq!(vnc_address("0.0.0.0:2").unwrap(), "0.0.0.0:2");
        assert!(vnc_address(":x").is_err());
        assert!(vnc_address("").is_err());
    }
}
