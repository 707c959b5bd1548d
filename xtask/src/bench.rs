//! `cargo xtask bench`: boot the benchmark mode, report what the scheduler's
//! operations cost.
//!
//! By default one boot of the release kernel at `-smp 8` under
//! `-icount shift=8`, where the guest TSC advances 256 per guest instruction
//! of any CPU: the figures are instructions per operation, the same on every
//! run. The result is a table on the terminal, a JSON report and two SVG
//! charts in `target/bench/` (`<timestamp>.*` and `latest.*`), and with
//! `--compare OLD.json` the ratio of every figure to an earlier report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use wyvern_abi::bench::{Cpus, SPECS, spec};
use wyvern_abi::exit::Verdict;
use wyvern_tests::bench::{self as wb, BenchRun, Figure, Scale};
use wyvern_tests::env;
use wyvern_tests::qemu::{End, Responder, run_captured};

use crate::build::{self, Profile, root};
use crate::chart;

#[derive(Args)]
pub struct BenchArgs {
    /// Only these benchmarks (comma-separated; `--list` shows them).
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub only: Vec<String>,
    /// A tenth of the operations and 3 repetitions: a quick look.
    #[arg(long)]
    pub quick: bool,
    /// Measured repetitions of each benchmark.
    #[arg(long)]
    pub reps: Option<u32>,
    /// Operations per thread and repetition, for every benchmark (instead of
    /// each one's default).
    #[arg(long)]
    pub iters: Option<u64>,
    /// Number of CPUs.
    #[arg(long, default_value_t = 8)]
    pub smp: u32,
    /// `-icount shift=SHIFT`: 2^SHIFT TSC ticks per guest instruction.
    #[arg(long, default_value_t = 8)]
    pub shift: u32,
    /// Multi-threaded TCG instead of icount: wall-clock nanoseconds, noisy.
    #[arg(long)]
    pub no_icount: bool,
    /// Boot this many times and check that every figure repeats exactly.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Print the ratio of every figure to this earlier report.
    #[arg(long, value_name = "OLD.json")]
    pub compare: Option<PathBuf>,
    /// With --compare: compare this saved report instead of running.
    #[arg(long, value_name = "NEW.json", requires = "compare")]
    pub report: Option<PathBuf>,
    /// Directory for the reports and charts.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Seconds after which a boot is killed.
    #[arg(long, default_value_t = 1200)]
    pub deadline: u64,
    /// List the benchmarks and exit.
    #[arg(long)]
    pub list: bool,
    /// Also write the figures as the Markdown table docs/BENCHMARKS.md shows.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
    /// Instead of measuring, profile one operation of this benchmark:
    /// instructions per function (inclusive, exclusive), folded stacks, a
    /// flame graph and every pc's count in --out (profile-NAME.txt, .folded,
    /// .svg, .pcs)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["only", "quick", "compare", "runs"])]
    pub profile: Option<String>,
    /// With --profile: operations let pass before the one traced.
    #[arg(long, default_value_t = 50, requires = "profile")]
    pub warmup: u32,
    /// Also boot Debian's Linux kernel on the same machine and report its
    /// counterparts beside Wyvern's figures (table, report, charts). One
    /// boot running every counterpart; --quick and --reps apply to it,
    /// --only, --iters and --runs do not.
    #[arg(long, value_name = "KERNEL", value_parser = ["linux"])]
    pub vs: Option<String>,
}

/// Where a report came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD`, and whether tracked files had changes.
    pub git_rev: String,
    pub git_dirty: bool,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: String,
    /// The QEMU command line of the boot.
    pub qemu_command: Vec<String>,
    /// The boot options.
    pub bootopt: String,
}

/// A benchmark report: everything `--compare` and the charts need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// When it was measured (UTC, RFC 3339).
    pub when: String,
    /// Kernel version.
    pub wyvern: String,
    pub provenance: Provenance,
    /// How TSC ticks became costs.
    pub scale: Scale,
    /// Unit of every cost: instructions (exact) or ns (wall-clock).
    pub unit: String,
    /// Wall-clock figures vary from run to run.
    pub noisy: bool,
    pub smp: u32,
    pub tsc_hz: u64,
    /// The `bench=` set and its repetitions.
    pub set: String,
    pub reps: u32,
    /// Boots measured, and the figures that were not the same in all of them
    /// (with their spread in percent of the median); empty when all repeated.
    pub runs: u32,
    pub differing: BTreeMap<String, f64>,
    /// Seconds the boots took.
    pub seconds: f64,
    pub figures: Vec<Figure>,
    /// With `--vs linux`: Linux's figures, measured beside these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<crate::linux::LinuxReport>,
}

pub fn bench_cmd(args: &BenchArgs) -> Result<ExitCode> {
    if let Some(name) = &args.profile {
        return crate::profile::profile_cmd(args, name);
    }
    if args.list {
        for s in SPECS {
            println!("{:<20} per {:<16} {}", s.name, s.unit, s.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let new = match &args.report {
        Some(path) => load(path)?,
        None => {
            let mut report = measure(args)?;
            if args.vs.is_some() {
                report.linux = Some(crate::linux::measure(args)?);
            }
            print_table(&report);
            if let Some(l) = &report.linux {
                crate::linux::print_table(&report.unit, &report.figures, l);
            }
            save(&report, &root().join(&args.out))?;
            report
        }
    };
    if let Some(path) = &args.markdown {
        let mut md = markdown_table(&new);
        if let Some(l) = &new.linux {
            md = format!(
                "{md}\n{}",
                crate::linux::markdown(&new.unit, &new.figures, l)
            );
        }
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: Markdown table in {}", path.display());
    }
    if let Some(old) = &args.compare {
        compare(&load(old)?, &new);
    }
    Ok(ExitCode::SUCCESS)
}

/// The counters docs/BENCHMARKS.md's table shows: (column, counter).
const MD_COLUMNS: [(&str, &str); 11] = [
    ("switches", "switches"),
    ("p.hit", "preempt_hit"),
    ("p.miss", "preempt_miss"),
    ("p.weird", "preempt_weird"),
    ("IPI msgs", "ipi_sent"),
    ("IPIs", "ipis"),
    ("avoided", "ipi_avoided"),
    ("FIFO full", "fifo_full"),
    ("collisions", "token_collisions"),
    ("halts", "idle_halts"),
    ("handoffs", "ipc_handoffs"),
];

/// A per-operation counter as the table writes it: `·` for none, else up to
/// three decimals without trailing zeros.
fn md_counter(v: f64) -> String {
    if v == 0.0 {
        return "·".into();
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "0" { "<0.001".into() } else { s.into() }
}

/// The figures of `r` as a Markdown table (docs/BENCHMARKS.md).
fn markdown_table(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::from("| benchmark | CPUs | per | min | median | max |");
    for (c, _) in MD_COLUMNS {
        let _ = write!(out, " {c} |");
    }
    out.push_str("\n|---|--:|---|--:|--:|--:|");
    out.push_str(&"--:|".repeat(MD_COLUMNS.len()));
    out.push('\n');
    for f in &r.figures {
        let _ = write!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            f.name, f.cpus, f.unit, f.min, f.median, f.max
        );
        for (_, k) in MD_COLUMNS {
            let v = f.counters_per_op.get(k).copied().unwrap_or(0.0);
            let _ = write!(out, " {} |", md_counter(v));
        }
        out.push('\n');
    }
    out
}

fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

/// The `bench=` value for the arguments.
fn set(args: &BenchArgs) -> Result<String> {
    if args.only.is_empty() {
        return Ok(if args.quick { "quick" } else { "all" }.into());
    }
    for name in &args.only {
        if spec(name).is_none() {
            bail!("no benchmark `{name}` (cargo xtask bench --list shows them)");
        }
    }
    Ok(args.only.join(","))
}

/// Shows which benchmark a boot is at, on one line when stderr is a terminal.
struct Progress {
    run: u32,
    runs: u32,
    start: Instant,
    tty: bool,
}

impl Progress {
    fn show(&self, what: &str) {
        let line = format!(
            "bench: boot {}/{} {what} ({:.0} s)",
            self.run,
            self.runs,
            self.start.elapsed().as_secs_f64()
        );
        if self.tty {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

impl Responder for Progress {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        if let Some(rest) = line.trim().strip_prefix("bench: [") {
            self.show(&format!("[{rest}"));
        } else if line.contains("CPUs online") {
            self.show("booted");
        }
        None
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn measure(args: &BenchArgs) -> Result<Report> {
    let set = set(args)?;
    let env = env::ensure()?;
    let (_kernel, image) = build::build_image(Profile::Release)?;
    // The machine Linux runs on too (`--vs linux`).
    let mut boot = wb::machine(image, args.smp, (!args.no_icount).then_some(args.shift));
    let mut opts = vec![format!("bench={set}"), "fb=off".to_owned()];
    let quick_list = args.quick && !args.only.is_empty();
    if let Some(r) = args.reps.or(quick_list.then_some(3)) {
        opts.push(format!("reps={r}"));
    }
    if quick_list {
        opts.push("percent=10".to_owned());
    }
    if let Some(i) = args.iters {
        opts.push(format!("iters={i}"));
    }
    boot.bootopt = opts.join(" ");
    let command = boot.command(&env);
    let qemu_command = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let tty = std::io::stderr().is_terminal();
    eprintln!(
        "bench: {} at -smp {}, {}; {}",
        set,
        args.smp,
        match boot.icount {
            Some(s) => format!("-icount shift={s} (exact instruction counts)"),
            None => "multi-threaded TCG (wall-clock, noisy)".to_owned(),
        },
        env::qemu_version(&env)
    );
    let start = Instant::now();
    let mut runs: Vec<BenchRun> = Vec::new();
    for run in 1..=args.runs.max(1) {
        let progress = Progress {
            run,
            runs: args.runs.max(1),
            start,
            tty,
        };
        progress.show("booting");
        let outcome = run_captured(
            &boot,
            &env,
            Duration::from_secs(args.deadline),
            Some(Box::new(progress)),
            false,
        )?;
        if tty {
            eprintln!();
        }
        let parsed = wb::parse(&outcome.transcript).and_then(|r| {
            wb::validate(&r, boot.icount.is_some()).map_err(|p| p.join("\n  "))?;
            Ok(r)
        });
        match (&outcome.end, parsed) {
            (End::Exited(Verdict::Success), Ok(r)) => runs.push(r),
            (end, parsed) => bail!(
                "the benchmark boot failed ({end:?}{})\n--- last lines ---\n{}",
                parsed.err().map(|e| format!(": {e}")).unwrap_or_default(),
                outcome.tail(40)
            ),
        }
    }
    let first = &runs[0];
    let scale = match boot.icount {
        Some(shift) => Scale::Instructions { shift },
        None => Scale::Nanoseconds {
            tsc_hz: first.header.tsc_hz,
        },
    };
    let figures = wb::figures(first, scale);
    let differing = spread(&runs, scale);
    Ok(Report {
        when: rfc3339(SystemTime::now()),
        wyvern: first.header.version.clone(),
        provenance: Provenance {
            git_rev: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()),
            qemu_version: env::qemu_version(&env),
            qemu_command,
            bootopt: boot.bootopt.clone(),
        },
        scale,
        unit: scale.unit().into(),
        noisy: boot.icount.is_none(),
        smp: args.smp,
        tsc_hz: first.header.tsc_hz,
        set,
        reps: first.header.reps,
        runs: runs.len() as u32,
        differing,
        seconds: start.elapsed().as_secs_f64(),
        figures,
        linux: None,
    })
}

/// The figures whose repetitions were not identical in every run, with the
/// spread of their medians across runs in percent.
fn spread(runs: &[BenchRun], scale: Scale) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let all: Vec<Vec<Figure>> = runs.iter().map(|r| wb::figures(r, scale)).collect();
    for (i, f) in all[0].iter().enumerate() {
        let same = all
            .iter()
            .all(|figs| figs.get(i).is_some_and(|g| g.tsc == f.tsc));
        if !same {
            let medians: Vec<f64> = all
                .iter()
                .filter_map(|figs| figs.get(i))
                .map(|g| g.median)
                .collect();
            let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = medians.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            out.insert(
                format!("{}/{}", f.name, f.cpus),
                (hi - lo) * 100.0 / f.median.max(f64::MIN_POSITIVE),
            );
        }
    }
    out
}

/// The per-operation counters the table shows: (column, counter).
const COLUMNS: [(&str, &str); 9] = [
    ("switch", "switches"),
    ("p.hit", "preempt_hit"),
    ("p.miss", "preempt_miss"),
    ("p.weird", "preempt_weird"),
    ("ipi.msg", "ipi_sent"),
    ("avoided", "ipi_avoided"),
    ("fifofull", "fifo_full"),
    ("colls", "token_collisions"),
    ("halts", "idle_halts"),
];

fn print_table(r: &Report) {
    println!();
    println!(
        "Wyvern {} bench: {} per operation{}, -smp {}, {} x {} repetitions; {}",
        r.wyvern,
        r.unit,
        match r.scale {
            Scale::Instructions { shift } => format!(" (-icount shift={shift}, all CPUs)"),
            Scale::Nanoseconds { .. } => " (wall-clock under multi-threaded TCG: NOISY)".into(),
        },
        r.smp,
        r.set,
        r.reps,
        r.provenance.qemu_version
    );
    print!(
        "{:<19}{:>4} {:<16}{:>8} {:>10} {:>10} {:>10} |",
        "benchmark", "cpus", "per", "ops/rep", "min", "median", "max"
    );
    for (c, _) in COLUMNS {
        print!("{c:>9}");
    }
    println!();
    for f in &r.figures {
        print!(
            "{:<19}{:>4} {:<16}{:>8} {:>10.1} {:>10.1} {:>10.1} |",
            f.name, f.cpus, f.unit, f.ops, f.min, f.median, f.max
        );
        for (_, k) in COLUMNS {
            let v = f.counters_per_op.get(k).copied().unwrap_or(0.0);
            if v == 0.0 {
                print!("{:>9}", "-");
            } else {
                print!("{v:>9.3}");
            }
        }
        println!();
    }
    println!("(counters are per operation, summed over every CPU, over the measured repetitions)");
    let scaling: BTreeSet<&str> = r
        .figures
        .iter()
        .filter(|f| spec(&f.name).is_some_and(|s| s.cpus == Cpus::Scaling))
        .map(|f| f.name.as_str())
        .collect();
    if !scaling.is_empty() {
        println!(
            "\nscaling: median {} per operation by CPUs (x: relative to 1 CPU; {})",
            r.unit,
            if r.noisy {
                "elapsed time per operation of all CPUs together: 1/k would be perfect"
            } else {
                "instructions of all CPUs: flat is perfect"
            }
        );
        for s in SPECS.iter().filter(|s| scaling.contains(s.name)) {
            let pts: Vec<&Figure> = r.figures.iter().filter(|f| f.name == s.name).collect();
            let base = pts.first().map_or(1.0, |f| f.median);
            let cells: Vec<String> = pts
                .iter()
                .map(|f| format!("{}: {:.1} ({:.2}x)", f.cpus, f.median, f.median / base))
                .collect();
            println!("  {:<15} {}", s.name, cells.join("   "));
        }
    }
    if r.runs > 1 {
        if r.differing.is_empty() {
            println!("\n{} boots: every figure identical in all of them", r.runs);
        } else {
            println!(
                "\n{} boots: {} of {} figures identical; the others' medians spread by:",
                r.runs,
                r.figures.len() - r.differing.len(),
                r.figures.len()
            );
            for (k, v) in &r.differing {
                println!("  {k:<24} {v:.3} %");
            }
        }
    }
}

fn save(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp: String = r
        .when
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let json = serde_json::to_string_pretty(r)?;
    let title = format!(
        "Wyvern {} ({}), -smp {}, {}{}",
        r.wyvern,
        &r.provenance.git_rev[..r.provenance.git_rev.len().min(10)],
        r.smp,
        match r.scale {
            Scale::Instructions { shift } => format!("-icount shift={shift}"),
            Scale::Nanoseconds { .. } => "wall-clock (noisy)".into(),
        },
        if r.provenance.git_dirty {
            ", modified tree"
        } else {
            ""
        }
    );
    // Cost chart: each benchmark at its smallest CPU count (the scaling
    // chart has the rest).
    let mut seen = BTreeSet::new();
    let base: Vec<&Figure> = r
        .figures
        .iter()
        .filter(|f| seen.insert(f.name.clone()))
        .collect();
    for name in [stamp.as_str(), "latest"] {
        let json_path = dir.join(format!("{name}.json"));
        std::fs::write(&json_path, &json)
            .with_context(|| format!("writing {}", json_path.display()))?;
        chart::cost(
            &dir.join(format!("{name}-cost.svg")),
            &title,
            &r.unit,
            &base,
            &r.linux
                .as_ref()
                .map(|l| crate::linux::beside(&base, &l.figures))
                .unwrap_or_default(),
        )?;
        chart::scaling(
            &dir.join(format!("{name}-scaling.svg")),
            &title,
            &r.unit,
            r.noisy,
            &r.figures,
            r.linux.as_ref().map_or(&[][..], |l| l.figures.as_slice()),
        )?;
    }
    println!(
        "\nreport: {}/{stamp}.json (and latest.json), charts {stamp}-cost.svg, {stamp}-scaling.svg",
        dir.display()
    );
    Ok(())
}

fn compare(old: &Report, new: &Report) {
    println!(
        "\ncompared with {} ({}{}):",
        old.when,
        &old.provenance.git_rev[..old.provenance.git_rev.len().min(10)],
        if old.provenance.git_dirty {
            ", modified"
        } else {
            ""
        }
    );
    if old.unit != new.unit || old.smp != new.smp {
        println!(
            "  warning: old is {} at -smp {}, new is {} at -smp {}: ratios mix different things",
            old.unit, old.smp, new.unit, new.smp
        );
    }
    if old.noisy || new.noisy {
        println!("  warning: wall-clock figures are noisy; small ratios mean nothing");
    }
    println!(
        "{:<19}{:>4} {:>12} {:>12} {:>8} {:>8} {:>8}  counters per op that changed",
        "benchmark", "cpus", "old median", "new median", "median", "min", "max"
    );
    let olds: BTreeMap<(String, u32), &Figure> = old.figures.iter().map(|f| (f.key(), f)).collect();
    for f in &new.figures {
        let Some(o) = olds.get(&f.key()) else {
            println!("{:<19}{:>4}   (new)", f.name, f.cpus);
            continue;
        };
        let ratio = |a: f64, b: f64| if b == 0.0 { f64::NAN } else { a / b };
        let changed: Vec<String> = f
            .counters_per_op
            .iter()
            .filter_map(|(k, &v)| {
                let w = o.counters_per_op.get(k).copied().unwrap_or(0.0);
                // Ignore set-up noise: a change must be a hundredth of an
                // event per operation and 1 % of the value.
                let d = (v - w).abs();
                (d >= 0.01 && d >= 0.01 * v.abs().max(w.abs()))
                    .then(|| format!("{k} {w:.2}->{v:.2}"))
            })
            .collect();
        println!(
            "{:<19}{:>4} {:>12.1} {:>12.1} {:>7.3}x {:>7.3}x {:>7.3}x  {}",
            f.name,
            f.cpus,
            o.median,
            f.median,
            ratio(f.median, o.median),
            ratio(f.min, o.min),
            ratio(f.max, o.max),
            changed.join(", ")
        );
    }
    for o in &old.figures {
        if !new.figures.iter().any(|f| f.key() == o.key()) {
            println!("{:<19}{:>4}   (gone)", o.name, o.cpus);
        }
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_263_845), "2026-11-21T12:24:05Z");
    }
}
