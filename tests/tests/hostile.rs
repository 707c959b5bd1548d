//! Hostile and careless programs against the interactive system, at 1 and 8
//! CPUs and 128 and 256 MiB: the host types into the shell what an operator
//! would — start a `hostile` program (`userland/src/bin/hostile.rs`), look
//! with `ps`, kill what misbehaves — and checks, for every row of the
//! threat list of issue 13:
//!
//! - the exact error each refused request gets (the `hostile:` lines);
//! - that the shell's `ps` answers within a second of guest time while the
//!   programs run (every `ps` prints how long it took);
//! - that the operator can end every program, orphans included;
//! - and, when the shell quits, that the kernel test (`hostile`) finds every
//!   process gone and the kernel's frames and heap back at their baseline,
//!   and QEMU ends with the success code.

use std::time::Duration;

use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::{Apic, Responder};

/// What the host waits for after typing a command.
#[derive(Debug, Clone)]
enum Wait {
    /// A line containing this.
    Line(&'static str),
    /// `n` lines containing this.
    Lines(&'static str, usize),
    /// The end of a `ps` listing.
    Ps,
    /// The shell's answer to `kill`.
    Kill,
}

/// One step of the script: type, then wait.
#[derive(Debug, Clone)]
enum Step {
    Type(String, Wait),
    /// `ps`, then kill every `hostile` process it lists (one at a time).
    PsAndKillHostile,
    /// `ps`, learning the console's and the shell's pids.
    PsLearnServices,
    /// `spawn hostile pm-kill CONSOLE SHELL`.
    PmKillServices,
    /// `kill` the orphan pid the last `hostile: orphan pid N` line named.
    KillOrphan,
}

struct Script {
    steps: Vec<Step>,
    at: usize,
    waiting: Option<Wait>,
    seen: usize,
    /// Rows of the listing `ps` is printing.
    ps_rows: Vec<(u64, String)>,
    console: u64,
    shell: u64,
    orphan: u64,
    /// Pids still to kill, with `kill` typed for the first.
    to_kill: Vec<u64>,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Script {
            steps,
            at: 0,
            waiting: None,
            seen: 0,
            ps_rows: Vec::new(),
            console: 0,
            shell: 0,
            orphan: 0,
            to_kill: Vec::new(),
        }
    }

    /// Starts step `self.at`; returns what to type.
    fn start(&mut self) -> Option<Vec<u8>> {
        let step = self.steps.get(self.at)?.clone();
        self.seen = 0;
        let (text, wait) = match step {
            Step::Type(t, w) => (t, w),
            Step::PsAndKillHostile | Step::PsLearnServices => ("ps".into(), Wait::Ps),
            Step::PmKillServices => (
                format!("spawn hostile pm-kill {} {}", self.console, self.shell),
                Wait::Line("hostile (pid"),
            ),
            Step::KillOrphan => (format!("kill {}", self.orphan), Wait::Kill),
        };
        self.waiting = Some(wait);
        Some(format!("{text}\r").into_bytes())
    }

    /// The step's wait was met: what comes next.
    fn done(&mut self) -> Option<Vec<u8>> {
        let step = self.steps[self.at].clone();
        match step {
            Step::PsLearnServices => {
                for (pid, name) in &self.ps_rows {
                    match name.as_str() {
                        "console" => self.console = *pid,
                        "shell" => self.shell = *pid,
                        _ => {}
                    }
                }
            }
            Step::PsAndKillHostile if self.to_kill.is_empty() => {
                let mut pids: Vec<u64> = self
                    .ps_rows
                    .iter()
                    // Pid 0: a thread of an ending process that has left
                    // its process already (`ps` shows it briefly), not one
                    // to kill.
                    .filter(|(p, n)| n == "hostile" && *p != 0)
                    .map(|(p, _)| *p)
                    .collect();
                pids.sort_unstable();
                pids.dedup();
                if !pids.is_empty() {
                    self.to_kill = pids;
                    let pid = self.to_kill[0];
                    self.waiting = Some(Wait::Kill);
                    self.seen = 0;
                    return Some(format!("kill {pid}\r").into_bytes());
                }
            }
            Step::PsAndKillHostile => {
                self.to_kill.remove(0);
                if let Some(&pid) = self.to_kill.first() {
                    self.waiting = Some(Wait::Kill);
                    self.seen = 0;
                    return Some(format!("kill {pid}\r").into_bytes());
                }
            }
            _ => {}
        }
        self.ps_rows.clear();
        self.at += 1;
        self.start()
    }
}

impl Responder for Script {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        if line.contains("shell: ready on") && self.at == 0 && self.waiting.is_none() {
            return self.start();
        }
        // (The program's lines may follow the shell's prompt on one line.)
        if let Some((_, rest)) = line.split_once("hostile: orphan pid ") {
            self.orphan = rest.trim().parse().unwrap_or(0);
        }
        // A `ps` row: CPU PID PRI STATE SWITCHES NAME [WAIT].
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6
            && cols[0].parse::<u32>().is_ok()
            && let Ok(pid) = cols[1].parse::<u64>()
            && cols[2].parse::<u32>().is_ok()
        {
            self.ps_rows.push((pid, cols[5].to_owned()));
        }
        let met = match self.waiting.as_ref()? {
            Wait::Line(s) => line.contains(s),
            Wait::Lines(s, n) => {
                if line.contains(s) {
                    self.seen += 1;
                }
                self.seen >= *n
            }
            Wait::Ps => line.contains(" threads (listed in "),
            Wait::Kill => line.starts_with("killed ") || line.starts_with("kill "),
        };
        if !met {
            return None;
        }
        self.waiting = None;
        self.done()
    }
}

fn t(cmd: &str, wait: Wait) -> Step {
    Step::Type(cmd.to_owned(), wait)
}

/// The whole list, in one boot.
fn script() -> Vec<Step> {
    vec![
        Step::PsLearnServices,
        // Every right it lacks, refused with the right error.
        t("spawn hostile rights", Wait::Line("hostile (pid")),
        // The services cannot be killed by a program.
        Step::PmKillServices,
        // Nobody ends the run with a forged pulse.
        t("spawn hostile pulse-procman", Wait::Line("hostile (pid")),
        // A spinner on every CPU: refused real-time, the shell still lists.
        t(
            "spawn hostile spin-all &",
            Wait::Line("hostile: real-time priority"),
        ),
        Step::PsAndKillHostile,
        // An orphan spinner: the operator ends it.
        t("spawn hostile orphan", Wait::Line("hostile: orphan pid")),
        Step::KillOrphan,
        // Spawning without waiting ends in a refusal; the shell still spawns.
        t("spawn hostile spawn-flood 300", Wait::Line("hostile (pid")),
        t("spawn true", Wait::Line("true (pid")),
        // Three hundred spawns through the process manager, each waited for.
        t("spawn hostile pm-spawn 300", Wait::Line("hostile (pid")),
        // Memory and kernel objects taken until refused; then ended.
        t("spawn hostile hog 4 &", Wait::Lines("-until: ", 4)),
        Step::PsAndKillHostile,
        t("spawn true", Wait::Line("true (pid")),
        // The same on memory given back page by page.
        t("spawn hostile scatter &", Wait::Lines("objects-until: ", 4)),
        Step::PsAndKillHostile,
        t("spawn true", Wait::Line("true (pid")),
        // A receive id kept across 40,000 later round trips.
        t(
            "spawn hostile stale-rcvid 40000",
            Wait::Line("hostile (pid"),
        ),
        // A flood of newlines; then the shell lists.
        t("spawn hostile newlines 16384", Wait::Line("hostile (pid")),
        t("ps", Wait::Ps),
        t("quit", Wait::Line("shell: bye")),
    ]
}

fn hostile(cpus: u32, mib: u32, apic: Apic) {
    let out = TestBoot::new("hostile", cpus)
        .apic(apic)
        .memory(mib)
        .deadline(Duration::from_secs(240))
        .framebuffer()
        .responder(Script::new(script()))
        .must_contain("hostile: rights: every request refused as it must be")
        .must_contain("hostile: real-time priority: Err(Denied)")
        .must_contain("hostile: pulses to procman")
        .must_contain("hostile: spawn-flood: ")
        .must_contain("hostile: pm-spawn: 300 spawned and waited")
        .must_contain("hostile: map-until: ")
        .must_contain("hostile: objects-until: ")
        .must_contain("hostile: scatter: ")
        .must_contain(
            "hostile: stale-rcvid: 40000 round trips, old rcvid reused: false, reply on it: Err(Stale), client ended 0",
        )
        .must_contain("hostile: newlines: 16384 asked")
        .must_contain("shell: bye")
        .must_contain("hostile: every process ended; kernel memory back to baseline")
        .run();
    let lines: Vec<&str> = out.lines().collect();
    let fail = |why: String| -> ! { panic!("{why}\n--- last lines ---\n{}", out.tail(60)) };
    // The services are not killed by a program: each PM_KILL and KILL of
    // them refused.
    let kills: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("hostile: PM_KILL") || l.contains("hostile: KILL"))
        .collect();
    if kills.len() != 4
        || kills
            .iter()
            .any(|l| !(l.ends_with("Err(Denied)") || l.ends_with("Err(NotFound)")))
    {
        fail(format!(
            "the services' kills were not all refused: {kills:?}"
        ));
    }
    // Spawning without waiting stops at the account's limit.
    let flood = lines
        .iter()
        .find(|l| l.contains("hostile: spawn-flood: "))
        .unwrap_or_else(|| fail("no spawn-flood line".into()));
    if !flood.ends_with("then Some(Limit)") {
        fail(format!("spawn-flood did not end at the limit: {flood}"));
    }
    // Memory and objects refused with their errors, never anything else.
    for l in lines.iter().filter(|l| l.contains("-until: ")) {
        let ok = if l.contains("map-until") {
            l.ends_with("then NoMemory")
        } else {
            l.contains("channels then Limit") || l.contains("channels then NoMemory")
        };
        if !ok {
            fail(format!("unexpected refusal: {l}"));
        }
    }
    // Every `ps` answered within a second of guest time.
    for l in lines.iter().filter(|l| l.contains(" threads (listed in ")) {
        let ms: u64 = l
            .rsplit("listed in ")
            .next()
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        if ms >= 1000 {
            fail(format!("`ps` took {ms} ms: {l}"));
        }
    }
    // The operator's kills worked.
    if let Some(i) = lines
        .iter()
        .position(|l| l.starts_with("kill ") && l.contains(": "))
    {
        fail(format!(
            "a kill of a hostile process was refused: {:#?}",
            &lines[i.saturating_sub(40)..(i + 2).min(lines.len())]
        ));
    }
}

#[test]
fn hostile_1cpu_128m_xapic() {
    hostile(1, 128, Apic::XApic);
}

#[test]
fn hostile_8cpus_256m_xapic() {
    hostile(8, 256, Apic::XApic);
}

#[test]
fn hostile_1cpu_256m_xapic() {
    hostile(1, 256, Apic::XApic);
}

#[test]
fn hostile_8cpus_128m_xapic() {
    hostile(8, 128, Apic::XApic);
}

mod hostile_1cpu_128m {
    use super::*;

    #[test]
    fn x2apic() {
        hostile(1, 128, Apic::X2Apic);
    }
}

mod hostile_8cpus_256m {
    use super::*;

    #[test]
    fn x2apic() {
        hostile(8, 256, Apic::X2Apic);
    }
}
