//! `cargo xtask bench --vs linux`: Debian's Linux kernel measured beside
//! Wyvern, on the same QEMU, the same `-icount shift`, the same `-smp` and
//! machine options ([`wyvern_tests::bench::machine`]), in the same run.
//!
//! [`wyvern_tests::linux`] fetches the kernel package, builds the program
//! (`xtask/linux/bench.c`) and its initramfs, and knows its rows; this
//! module boots it once at the benchmark's CPU count (the program measures
//! every count up to it, as Wyvern's boot does), keeps the figures with the
//! package's name, version and sha256 in the report, and sets each Linux
//! figure beside the Wyvern figure it stands for: the table, its Markdown
//! and the charts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use wyvern_abi::exit::Verdict;
use wyvern_tests::bench::{self as wb, Figure, Scale};
use wyvern_tests::env;
use wyvern_tests::linux::{self as lx, row_of};
use wyvern_tests::qemu::{End, Responder, run_captured};

use crate::bench::BenchArgs;
use crate::build::root;

/// Linux's half of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinuxReport {
    /// The Debian package booted (`linux-image-6.1.0-57-amd64`), its
    /// version and the sha256 of its `.deb`.
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// `uname -r` in the guest.
    pub release: String,
    /// Its `CONFIG_HZ`: the tick that keeps running in Linux's figures (0:
    /// its package carries no config).
    pub hz: u32,
    /// The QEMU command line of the boot.
    pub qemu_command: Vec<String>,
    /// Measured repetitions, and seconds the boot took.
    pub reps: u32,
    pub seconds: f64,
    /// What each Linux benchmark does, by name.
    pub rows: BTreeMap<String, String>,
    pub figures: Vec<Figure>,
}

/// Shows the program's progress lines.
struct Progress;

impl Responder for Progress {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        if let Some(rest) = line.trim().strip_prefix("bench: ") {
            eprintln!("bench: Linux {rest}");
        }
        None
    }
}

/// Boots Linux on the machine of `args` and reads its figures.
pub fn measure(args: &BenchArgs) -> Result<LinuxReport> {
    let env = env::ensure()?;
    let guest = lx::prepare(&root())?;
    let k = &guest.kernel;
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 5 });
    let percent = if args.quick { 10 } else { 100 };
    let icount = (!args.no_icount).then_some(args.shift);
    let machine = wb::machine(k.vmlinuz.clone(), args.smp, icount);
    let boot = lx::boot(machine, &guest, reps, percent);
    let command = boot.command(&env);
    let qemu_command = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    eprintln!(
        "bench: Linux {} {} (sha256 {}) at -smp {}, {}",
        k.package,
        k.version,
        k.sha256,
        args.smp,
        env::qemu_version(&env)
    );
    let start = Instant::now();
    let deadline = Duration::from_secs(args.deadline);
    let outcome = run_captured(&boot, &env, deadline, Some(Box::new(Progress)), false)?;
    let transcript = root().join("target/linux/last-boot.txt");
    std::fs::write(&transcript, &outcome.transcript)
        .with_context(|| format!("writing {}", transcript.display()))?;
    let tail = || outcome.tail(30);
    match &outcome.end {
        // reboot(RB_POWER_OFF): QEMU ends with status 0.
        End::Exited(Verdict::Other(0)) => {}
        End::Deadline(d) => bail!(
            "Linux did not finish within {} s (--deadline): QEMU killed\n--- last lines ---\n{}",
            d.as_secs(),
            tail()
        ),
        end => bail!(
            "the Linux boot failed ({end:?})\n--- last lines ---\n{}",
            tail()
        ),
    }
    let run = wb::parse(&outcome.transcript)
        .map_err(|e| anyhow::anyhow!("Linux's output: {e}\n--- last lines ---\n{}", tail()))?;
    if let Err(p) = lx::validate(&run, args.smp) {
        bail!(
            "Linux's results are not what was expected:\n  {}",
            p.join("\n  ")
        );
    }
    let scale = match icount {
        Some(shift) => Scale::Instructions { shift },
        None => Scale::Nanoseconds {
            tsc_hz: run.header.tsc_hz,
        },
    };
    Ok(LinuxReport {
        package: k.package.clone(),
        version: k.version.clone(),
        sha256: k.sha256.clone(),
        release: run.header.version.clone(),
        hz: k.hz,
        qemu_command,
        reps: run.header.reps,
        seconds: start.elapsed().as_secs_f64(),
        rows: lx::ROWS
            .iter()
            .map(|r| (r.name.to_owned(), r.what.to_owned()))
            .collect(),
        figures: wb::figures(&run, scale),
    })
}

/// A Linux figure and the Wyvern figure it stands beside.
pub struct Pair<'a> {
    pub linux: &'a Figure,
    pub wyvern: Option<&'a Figure>,
    /// The Wyvern benchmark it stands for.
    pub counterpart: Option<&'static str>,
    pub what: &'static str,
}

impl Pair<'_> {
    /// Linux's median over Wyvern's.
    pub fn ratio(&self) -> Option<f64> {
        self.wyvern
            .filter(|w| w.median > 0.0)
            .map(|w| self.linux.median / w.median)
    }
}

/// Every Linux figure with its Wyvern counterpart at the same CPU count.
pub fn pairs<'a>(wyvern: &'a [Figure], linux: &'a [Figure]) -> Vec<Pair<'a>> {
    linux
        .iter()
        .map(|l| {
            let row = row_of(&l.name);
            let counterpart = row.and_then(|r| r.wyvern);
            Pair {
                linux: l,
                wyvern: counterpart
                    .and_then(|c| wyvern.iter().find(|w| w.name == c && w.cpus == l.cpus)),
                counterpart,
                what: row.map_or("", |r| r.what),
            }
        })
        .collect()
}

/// For each of `base` (Wyvern's figures in the cost chart), Linux's figure of
/// the same name and CPU count.
pub fn beside<'a>(base: &[&Figure], linux: &'a [Figure]) -> Vec<Option<&'a Figure>> {
    base.iter()
        .map(|w| linux.iter().find(|l| l.name == w.name && l.cpus == w.cpus))
        .collect()
}

fn per_op(f: &Figure, counter: &str) -> f64 {
    f.counters_per_op.get(counter).copied().unwrap_or(0.0)
}

fn cell(f: Option<&Figure>) -> String {
    f.map_or_else(|| "-".into(), |f| format!("{:.1}", f.median))
}

fn ratio_cell(p: &Pair) -> String {
    p.ratio().map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

fn heading(l: &LinuxReport) -> String {
    format!(
        "Linux {} (Debian {} {}, sha256 {}), CONFIG_HZ={}, {} repetitions",
        l.release, l.package, l.version, l.sha256, l.hz, l.reps
    )
}

/// The side-by-side table on the terminal.
pub fn print_table(unit: &str, wyvern: &[Figure], l: &LinuxReport) {
    println!("\nbeside {}: median {unit} per operation", heading(l));
    println!(
        "{:<24}{:>4} {:>10} {:>10} {:>7} | {:>8} {:>7} {:>7}  {:<22} Linux does",
        "benchmark", "cpus", "Wyvern", "Linux", "L/W", "switches", "ticks", "IPIs", "counterpart"
    );
    for p in pairs(wyvern, &l.figures) {
        let c = |k: &str| format!("{:.3}", per_op(p.linux, k));
        println!(
            "{:<24}{:>4} {:>10} {:>10} {:>7} | {:>8} {:>7} {:>7}  {:<22} {}",
            p.linux.name,
            p.linux.cpus,
            cell(p.wyvern),
            cell(Some(p.linux)),
            ratio_cell(&p),
            c("switches"),
            c("ticks"),
            c("ipis"),
            p.counterpart.unwrap_or("-"),
            p.what
        );
    }
    println!(
        "(Linux's counters per operation, all CPUs: switches, timer ticks, reschedule and call IPIs)"
    );
}

/// The side-by-side table as Markdown.
pub fn markdown(unit: &str, wyvern: &[Figure], l: &LinuxReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{}; median {unit} per operation (min–max of Linux's repetitions; Linux's \
         switches, timer ticks and IPIs per operation, all CPUs)\n\n\
         | benchmark | CPUs | Wyvern | Linux | Linux / Wyvern | Linux min–max | switches | ticks | IPIs | what Linux does |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
        heading(l)
    );
    for p in pairs(wyvern, &l.figures) {
        let name = match p.counterpart {
            Some(c) if c != p.linux.name => format!("{} (beside {c})", p.linux.name),
            _ => p.linux.name.clone(),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {:.1}–{:.1} | {:.2} | {:.2} | {:.2} | {} |",
            p.linux.cpus,
            cell(p.wyvern),
            cell(Some(p.linux)),
            ratio_cell(&p),
            p.linux.min,
            p.linux.max,
            per_op(p.linux, "switches"),
            per_op(p.linux, "ticks"),
            per_op(p.linux, "ipis"),
            p.what
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(name: &str, cpus: u32, median: f64) -> Figure {
        Figure {
            name: name.into(),
            cpus,
            unit: "op".into(),
            ops: 1,
            tsc: vec![1],
            per_op: vec![median],
            min: median,
            median,
            max: median,
            counters: BTreeMap::new(),
            counters_per_op: BTreeMap::new(),
        }
    }

    fn report(figures: Vec<Figure>) -> LinuxReport {
        LinuxReport {
            package: "linux-image-6.1.0-57-amd64".into(),
            version: "6.1.192-3".into(),
            sha256: "ab".into(),
            release: "6.1.0-57-amd64".into(),
            hz: 250,
            qemu_command: vec![],
            reps: 5,
            seconds: 1.0,
            rows: BTreeMap::new(),
            figures,
        }
    }

    #[test]
    fn pairs_by_counterpart_and_cpus() {
        let w = vec![
            fig("switch", 1, 200.0),
            fig("switch", 2, 210.0),
            fig("ipc-rtt-local", 1, 4000.0),
            fig("token", 1, 170.0),
        ];
        let l = vec![
            fig("switch", 1, 2000.0),
            fig("switch", 2, 2100.0),
            fig("switch", 4, 2200.0),
            fig("ipc-rtt-local-unix", 1, 12000.0),
            fig("loop", 1, 2.0),
        ];
        let p = pairs(&w, &l);
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].ratio(), Some(10.0));
        assert_eq!(p[1].wyvern.map(|f| f.cpus), Some(2));
        assert!(p[2].wyvern.is_none(), "no Wyvern switch at 4 CPUs");
        assert_eq!(p[3].counterpart, Some("ipc-rtt-local"));
        assert_eq!(p[3].ratio(), Some(3.0));
        assert!(p[4].counterpart.is_none() && p[4].ratio().is_none());

        let base: Vec<&Figure> = vec![&w[0], &w[2], &w[3]];
        let b = beside(&base, &l);
        assert_eq!(b[0].map(|f| f.median), Some(2000.0));
        assert!(b[1].is_none(), "the socket row is not ipc-rtt-local's bar");
        assert!(b[2].is_none());
    }

    #[test]
    fn markdown_rows() {
        let w = vec![fig("switch", 1, 200.0)];
        let mut l = vec![fig("switch", 1, 500.0), fig("ipc-rtt-local-unix", 1, 9.0)];
        l[0].min = 499.0;
        let md = markdown("instructions", &w, &report(l));
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].contains("linux-image-6.1.0-57-amd64 6.1.192-3, sha256 ab"));
        assert_eq!(lines[3].matches('|').count(), 11);
        assert!(lines[4].starts_with(
            "| switch | 1 | 200.0 | 500.0 | 2.50 | 499.0–500.0 | 0.00 | 0.00 | 0.00 | sched_yield"
        ));
        assert!(
            lines[5].starts_with("| ipc-rtt-local-unix (beside ipc-rtt-local) | 1 | - | 9.0 | - |")
        );
    }

    #[test]
    fn reports_with_and_without_linux_load() {
        let old: crate::bench::Report =
            serde_json::from_str(include_str!("../../docs/bench/baseline.json")).unwrap();
        assert!(old.linux.is_none());
        let mut new = old.clone();
        new.linux = Some(report(vec![fig("switch", 1, 1.0)]));
        let json = serde_json::to_string(&new).unwrap();
        let back: crate::bench::Report = serde_json::from_str(&json).unwrap();
        let l = back.linux.unwrap();
        assert_eq!(
            (l.package.as_str(), l.sha256.as_str()),
            ("linux-image-6.1.0-57-amd64", "ab")
        );
        assert_eq!(l.figures, new.linux.unwrap().figures);
        let plain = serde_json::to_string(&old).unwrap();
        assert!(
            !plain.contains("\"linux\""),
            "no linux field when there is none"
        );
    }
}
