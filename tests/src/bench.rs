//! Reading a benchmark boot (`bench=…`): its `BENCH` lines parsed, checked
//! for form and for the behaviour their counters must show, and turned into
//! figures per operation.
//!
//! `cargo xtask bench` uses it to report; the `bench` integration test uses it
//! to check that the mode boots and emits well-formed results.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wyvern_abi::bench::{COUNTERS, SPECS, Spec, spec};
use wyvern_abi::result::BENCH_TAG;

use crate::qemu::{Apic, Boot};

/// The first `BENCH` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Kernel version.
    pub version: String,
    /// Online CPUs.
    pub ncpus: u32,
    /// The kernel's TSC frequency estimate.
    pub tsc_hz: u64,
    /// Scheduler ticks per second.
    pub hz: u64,
    /// The `bench=` value.
    pub set: String,
    /// Measured repetitions per benchmark.
    pub reps: u32,
    /// Results that follow.
    pub count: u32,
}

/// One result line: a benchmark at one CPU count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub name: String,
    pub cpus: u32,
    pub unit: String,
    /// Operations per repetition.
    pub ops: u64,
    /// TSC ticks of each repetition.
    pub tsc: Vec<u64>,
    /// Counter deltas over the measured repetitions, summed over all CPUs.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Header(Header),
    Result(Raw),
    End { count: u32 },
}

/// Everything one benchmark boot printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchRun {
    pub header: Header,
    pub results: Vec<Raw>,
}

/// Parses the `BENCH` lines of a transcript: one header first, results, one
/// end line last whose count matches.
pub fn parse(transcript: &str) -> Result<BenchRun, String> {
    let mut header = None;
    let mut results = Vec::new();
    let mut ended = None;
    for (n, line) in transcript.lines().enumerate() {
        let Some(json) = line.trim().strip_prefix(BENCH_TAG) else {
            continue;
        };
        let Some(json) = json.strip_prefix(' ') else {
            continue;
        };
        if ended.is_some() {
            return Err(format!("line {}: a BENCH line after the end line", n + 1));
        }
        let parsed: Line = serde_json::from_str(json)
            .map_err(|e| format!("line {}: malformed BENCH line ({e}): {json}", n + 1))?;
        match parsed {
            Line::Header(h) => {
                if header.is_some() || !results.is_empty() {
                    return Err(format!("line {}: header not first or twice", n + 1));
                }
                header = Some(h);
            }
            Line::Result(r) => {
                if header.is_none() {
                    return Err(format!("line {}: a result before the header", n + 1));
                }
                results.push(r);
            }
            Line::End { count } => ended = Some(count),
        }
    }
    let header = header.ok_or("no BENCH header line: the benchmark mode did not start")?;
    let count = ended.ok_or_else(|| {
        format!(
            "no BENCH end line: the run stopped after {} of {} results",
            results.len(),
            header.count
        )
    })?;
    if count as usize != results.len() || header.count != count {
        return Err(format!(
            "{} results, but the header announced {} and the end line {count}",
            results.len(),
            header.count
        ));
    }
    Ok(BenchRun { header, results })
}

/// The (spec, CPU count) pairs a run of `set` on `ncpus` CPUs must report, in
/// order; `None` if `set` names an unknown benchmark.
pub fn expected(set: &str, ncpus: usize) -> Option<Vec<(&'static Spec, usize)>> {
    let specs: Vec<&'static Spec> = if set == "all" || set == "quick" {
        SPECS.iter().collect()
    } else {
        set.split(',').map(spec).collect::<Option<_>>()?
    };
    Some(
        specs
            .into_iter()
            .flat_map(|s| s.cpus.counts(ncpus).map(move |k| (s, k)))
            .collect(),
    )
}

impl Raw {
    /// A counter (0 when absent: `validate` reports absent ones).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Checks a run's form (every expected benchmark, in order, with every
/// counter and repetition) and the behaviour its counters must show (each
/// operation did what it claims: a switch switched, an interrupt preempted, a
/// cross-CPU operation sent IPIs, the ticks stayed off). Returns every
/// problem found.
///
/// `exact` says the TSC counted instructions (`-icount`). Without it the
/// `tick` figure, a difference of two wall-clock loop timings, may come out
/// as 0 and is let through.
pub fn validate(run: &BenchRun, exact: bool) -> Result<(), Vec<String>> {
    let h = &run.header;
    let mut problems = Vec::new();
    if h.reps == 0 || h.ncpus == 0 || h.tsc_hz == 0 {
        problems.push(format!("header with zero reps, CPUs or TSC rate: {h:?}"));
    }
    match expected(&h.set, h.ncpus as usize) {
        None => problems.push(format!("the header names an unknown set `{}`", h.set)),
        Some(want) => {
            let got: Vec<(&str, usize)> = run
                .results
                .iter()
                .map(|r| (r.name.as_str(), r.cpus as usize))
                .collect();
            let want: Vec<(&str, usize)> = want.iter().map(|(s, k)| (s.name, *k)).collect();
            if got != want {
                problems.push(format!(
                    "results {got:?}, expected {want:?} for `{}` on {} CPUs",
                    h.set, h.ncpus
                ));
            }
        }
    }
    for r in &run.results {
        let mut bad = |what: String| problems.push(format!("{} cpus={}: {what}", r.name, r.cpus));
        match spec(&r.name) {
            None => bad("unknown benchmark".into()),
            Some(s) if s.unit != r.unit => bad(format!("unit `{}`, not `{}`", r.unit, s.unit)),
            Some(_) => {}
        }
        if r.ops == 0 {
            bad("no operations".into());
        }
        if r.tsc.len() != h.reps as usize {
            bad(format!("{} repetitions, not {}", r.tsc.len(), h.reps));
        }
        if r.tsc.contains(&0) && (exact || r.name != "tick") {
            bad(format!("a repetition that took no time: {:?}", r.tsc));
        }
        let keys: Vec<&str> = r.counters.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = COUNTERS.to_vec();
        want.sort_unstable();
        if keys != want {
            bad(format!("counters {keys:?}, expected {want:?}"));
            continue;
        }
        for why in behaviour(r, h.reps) {
            bad(why);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What the counters of `r` must show.
fn behaviour(r: &Raw, reps: u32) -> Vec<String> {
    let total = r.ops * u64::from(reps);
    let c = |n: &str| r.counter(n);
    let mut why = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            why.push(format!("{what} (ops {total}, counters {:?})", r.counters));
        }
    };
    need(c("preempt_weird") == 0, "a weird preemption");
    if r.name == "tick" {
        need(c("ticks") >= total, "fewer ticks than measured");
    } else {
        need(c("ticks") == 0, "a tick while the ticks were stopped");
    }
    match r.name.as_str() {
        "switch" => need(c("switches") >= total, "fewer switches than operations"),
        "wakeup-local" => need(c("wakeups") >= total, "fewer wakeups than operations"),
        "wakeup-cross-near" | "wakeup-cross-far" => {
            // A wakeup that finds its sleeper not yet asleep needs no IPI.
            need(c("wakeups") >= total / 2, "too few wakeups");
            need(c("ipi_sent") >= total / 2, "too few IPI messages");
            need(c("idle_halts") > 0, "no CPU ever halted");
        }
        "ipi-rtt" => need(
            c("ipi_sent") >= 2 * total,
            "fewer than two messages a round trip",
        ),
        "cpusync-all" => need(c("cpusyncs") >= total, "fewer cpusyncs than operations"),
        "token" if r.cpus > 1 => need(c("token_collisions") > 0, "no collision on a shared token"),
        "token" | "token-private" => {
            need(c("token_collisions") == 0, "a collision without sharing")
        }
        "preempt-intr" => need(
            c("preempt_hit") >= total,
            "fewer preemptions than interrupts",
        ),
        "preempt-deferred" => {
            need(c("irqs_replayed") >= total, "fewer replays than interrupts");
            need(
                c("preempt_miss") >= total,
                "fewer refused preemptions than interrupts",
            );
            // The interrupt thread runs at each section's end: a switch
            // there and one back, not also a hit (DragonFly's counters).
            need(
                c("switches") >= 2 * total,
                "the interrupt thread did not run at each section's end",
            );
            need(
                c("preempt_hit") == 0,
                "a refused preemption counted a hit too",
            );
        }
        "thread-create-exit" | "user-thread-create-exit" => {
            need(
                c("created") >= total,
                "fewer threads created than operations",
            );
            need(c("exited") >= total, "fewer threads exited than operations");
        }
        "null-syscall" => need(c("syscalls") >= total, "fewer system calls than operations"),
        // A move is a pull request to the boot CPU and the adoption message
        // back to CPU 1, and the thread switched out there and in here.
        "usched-pull" => need(
            c("ipi_sent") >= 2 * total && c("switches") >= 2 * total,
            "fewer than two IPI messages (the pull, the adoption) or two switches a move",
        ),
        "process-spawn-exit" => {
            need(
                c("created") >= total,
                "fewer threads created than processes",
            );
            need(
                c("syscalls") >= 2 * total,
                "fewer than two system calls a process",
            );
        }
        // The client's call or send and the server's reply-and-receive
        // (MSG_REPLY_WAIT or MSG_REPLY_RECEIVE): two system calls a round
        // trip.
        "ipc-rtt-local" | "ipc-rtt-local-buf" | "ipc-null" => {
            need(
                c("syscalls") >= 2 * total,
                "fewer than two system calls a round trip",
            );
            need(
                c("switches") >= 2 * total,
                "fewer than two switches a round trip",
            );
            if r.name != "ipc-null" {
                // Both ways: the send to the waiting server, and the
                // server's reply-and-receive back to its client.
                need(
                    c("ipc_handoffs") >= 2 * total,
                    "a same-CPU send or reply that did not hand off (fast path not taken)",
                );
            } else {
                // All clients are threads of one process and all servers of
                // another, so their address-space and table tokens are
                // shared by every CPU: a server that meets one held on
                // another CPU is not waiting in receive when its client
                // sends. Every send that does not hand off must be explained
                // by such a collision.
                need(
                    c("ipc_handoffs") + c("token_collisions") >= total,
                    "a same-CPU send that neither handed off nor met a token held elsewhere",
                );
            }
        }
        "ipc-rtt-cross" => {
            need(
                c("syscalls") >= 2 * total,
                "fewer than two system calls a round trip",
            );
            need(
                c("ipi_sent") >= total,
                "fewer IPI messages than round trips",
            );
        }
        "ipc-pulse" => need(
            c("syscalls") >= 2 * total,
            "fewer than two system calls a pulse",
        ),
        _ => {}
    }
    why
}

/// The machine of a benchmark boot, Wyvern's and Linux's beside it:
/// `-smp`, `-icount shift=` (or multi-threaded TCG) and, always, the
/// xAPIC path: QEMU 10 aborts an icount run whose guest reads the x2APIC
/// timer through MSRs ("Bad icount read"), and one path for every QEMU keeps
/// figures comparable (docs/BENCHMARKS.md, "Which APIC").
pub fn machine(image: PathBuf, smp: u32, icount: Option<u32>) -> Boot {
    let mut boot = Boot::new(image);
    boot.smp = smp;
    boot.icount = icount;
    boot.apic = Apic::XApic;
    boot
}

/// How TSC ticks become a cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Under `-icount shift=N`: 2^N ticks per guest instruction, exact.
    Instructions { shift: u32 },
    /// Multi-threaded TCG: ticks at the guest's TSC rate, wall-clock, noisy.
    Nanoseconds { tsc_hz: u64 },
}

impl Scale {
    /// Cost of one operation of a repetition of `ops` operations.
    pub fn per_op(self, tsc: u64, ops: u64) -> f64 {
        let ops = ops.max(1) as f64;
        match self {
            Scale::Instructions { shift } => tsc as f64 / (1u64 << shift) as f64 / ops,
            Scale::Nanoseconds { tsc_hz } => tsc as f64 * 1e9 / tsc_hz as f64 / ops,
        }
    }

    /// The unit of [`Scale::per_op`].
    pub fn unit(self) -> &'static str {
        match self {
            Scale::Instructions { .. } => "instructions",
            Scale::Nanoseconds { .. } => "ns",
        }
    }
}

/// One benchmark at one CPU count, as figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub cpus: u32,
    /// What one operation is.
    pub unit: String,
    /// Operations per repetition.
    pub ops: u64,
    /// Raw TSC ticks of each repetition.
    pub tsc: Vec<u64>,
    /// Cost per operation of each repetition (in the run's scale's unit).
    pub per_op: Vec<f64>,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Counter deltas over the measured repetitions.
    pub counters: BTreeMap<String, u64>,
    /// The same per operation.
    pub counters_per_op: BTreeMap<String, f64>,
}

impl Figure {
    /// The key that identifies a figure across runs.
    pub fn key(&self) -> (String, u32) {
        (self.name.clone(), self.cpus)
    }
}

/// The median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// A run's figures in `scale`.
pub fn figures(run: &BenchRun, scale: Scale) -> Vec<Figure> {
    run.results
        .iter()
        .map(|r| {
            let per_op: Vec<f64> = r.tsc.iter().map(|&t| scale.per_op(t, r.ops)).collect();
            let total = (r.ops * r.tsc.len() as u64).max(1) as f64;
            Figure {
                name: r.name.clone(),
                cpus: r.cpus,
                unit: r.unit.clone(),
                ops: r.ops,
                tsc: r.tsc.clone(),
                min: per_op.iter().copied().fold(f64::INFINITY, f64::min),
                median: median(&per_op),
                max: per_op.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                per_op,
                counters: r.counters.clone(),
                counters_per_op: r
                    .counters
                    .iter()
                    .map(|(k, &v)| (k.clone(), v as f64 / total))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(set: &[(&str, u64)]) -> String {
        let mut m: BTreeMap<&str, u64> = COUNTERS.iter().map(|&k| (k, 0)).collect();
        for &(k, v) in set {
            m.insert(k, v);
        }
        serde_json::to_string(&m).unwrap()
    }

    fn result(name: &str, cpus: u32, unit: &str, set: &[(&str, u64)]) -> String {
        format!(
            "BENCH {{\"type\":\"result\",\"name\":\"{name}\",\"cpus\":{cpus},\"unit\":\"{unit}\",\
             \"ops\":100,\"tsc\":[25600,51200],\"counters\":{}}}\n",
            counters(set)
        )
    }

    fn transcript(results: &[String]) -> String {
        let mut t = String::from("Wyvern booting\n\x1b[0mnoise\n");
        t += &format!(
            "BENCH {{\"type\":\"header\",\"version\":\"0.1.0\",\"ncpus\":1,\"tsc_hz\":1000000000,\
             \"hz\":100,\"set\":\"switch,preempt-intr\",\"reps\":2,\"count\":{}}}\n",
            results.len()
        );
        t += "bench: [1/2] switch cpus=1\n";
        for r in results {
            t += r;
        }
        t += &format!("BENCH {{\"type\":\"end\",\"count\":{}}}\n", results.len());
        t
    }

    fn good() -> Vec<String> {
        vec![
            result("switch", 1, "switch", &[("switches", 200)]),
            result("preempt-intr", 1, "interrupt", &[("preempt_hit", 200)]),
        ]
    }

    #[test]
    fn parses_and_validates_a_good_run() {
        let run = parse(&transcript(&good())).unwrap();
        assert_eq!(run.header.reps, 2);
        assert_eq!(run.results.len(), 2);
        validate(&run, true).unwrap();
        let f = figures(&run, Scale::Instructions { shift: 8 });
        assert_eq!(f[0].per_op, vec![1.0, 2.0]);
        assert_eq!((f[0].min, f[0].median, f[0].max), (1.0, 1.5, 2.0));
        assert_eq!(f[0].counters_per_op["switches"], 1.0);
        let ns = figures(
            &run,
            Scale::Nanoseconds {
                tsc_hz: 2_000_000_000,
            },
        );
        assert_eq!(ns[0].per_op, vec![128.0, 256.0]);
    }

    #[test]
    fn refuses_malformed_and_truncated_runs() {
        let t = transcript(&good());
        assert!(parse(&t.replace("\"type\":\"end\"", "\"type\":\"fin\"")).is_err());
        let cut: String = t.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert!(parse(&cut).unwrap_err().contains("no BENCH end line"));
        assert!(
            parse("nothing here\n")
                .unwrap_err()
                .contains("no BENCH header")
        );
        assert!(parse(&t.replace("\"ops\":100", "\"ops\":\"many\"")).is_err());
        assert!(parse(&t.replace("\"count\":2}", "\"count\":3}")).is_err());
    }

    #[test]
    fn finds_wrong_shapes_and_behaviour() {
        let mut rs = good();
        rs.swap(0, 1);
        let run = parse(&transcript(&rs)).unwrap();
        assert!(validate(&run, true).unwrap_err()[0].contains("expected"));

        let lazy = vec![
            result("switch", 1, "switch", &[("switches", 10)]),
            result(
                "preempt-intr",
                1,
                "interrupt",
                &[("preempt_hit", 200), ("ticks", 3)],
            ),
        ];
        let problems = validate(&parse(&transcript(&lazy)).unwrap(), true).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("fewer switches"));
        assert!(problems[1].contains("a tick while the ticks were stopped"));

        let missing = good()[0].replace("\"fifo_full\":0,", "");
        let run = parse(&transcript(&[missing, good()[1].clone()])).unwrap();
        assert!(validate(&run, true).unwrap_err()[0].contains("counters"));
    }

    #[test]
    fn a_zero_tick_is_noise_only_in_wall_clock_mode() {
        let t = "BENCH {\"type\":\"header\",\"version\":\"0.1.0\",\"ncpus\":1,\"tsc_hz\":1,\
                 \"hz\":100,\"set\":\"tick\",\"reps\":2,\"count\":1}\n"
            .to_owned()
            + &result("tick", 1, "tick", &[("ticks", 200)]).replace("[25600,51200]", "[25600,0]")
            + "BENCH {\"type\":\"end\",\"count\":1}\n";
        let run = parse(&t).unwrap();
        assert!(validate(&run, true).unwrap_err()[0].contains("took no time"));
        validate(&run, false).unwrap();
    }

    #[test]
    fn expected_sets() {
        let all = expected("all", 8).unwrap();
        assert_eq!(all.first().map(|(s, k)| (s.name, *k)), Some(("switch", 1)));
        assert_eq!(all.len(), 36);
        assert_eq!(expected("quick", 1).unwrap().len(), 16);
        assert!(expected("switch,nope", 8).is_none());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
