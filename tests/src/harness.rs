//! What an integration test calls to boot one self-test and judge it.
//!
//! A self-test boot passes when both hold: QEMU exited with the success status
//! (33), and the last `TEST` line of the transcript is `TEST <name> ok`. A test
//! may also require lines (substrings) that must appear, which is how the
//! fatal-error tests check that the report was printed. On failure the panic
//! message carries the reason and the symbolized tail of the transcript.
//!
//! The image and kernel come from `WYVERN_IMAGE` and `WYVERN_KERNEL`, which
//! `cargo xtask test` sets after building them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wyvern_abi::exit::Verdict;
use wyvern_abi::result::{TEST_TAG, is_test_ok};

use crate::env::{self, QemuEnv};
use crate::qemu::{Apic, Boot, Disk, End, Outcome, Responder, run_captured};
use crate::symbolize::Symbolizer;

/// Lines of transcript shown in a failure message.
pub(crate) const TAIL_LINES: usize = 80;

/// The built kernel ELF and disk image.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub image: PathBuf,
    pub kernel: PathBuf,
}

/// The artifacts `cargo xtask test` built. Panics with instructions when the
/// tests run without it.
pub fn artifacts() -> Artifacts {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("{name} is not set: run the QEMU tests through `cargo xtask test`")
            })
    };
    Artifacts {
        image: var("WYVERN_IMAGE"),
        kernel: var("WYVERN_KERNEL"),
    }
}

/// QEMU and OVMF, or a panic saying what is missing.
pub fn qemu_env() -> QemuEnv {
    env::detect().unwrap_or_else(|e| panic!("{e}"))
}

/// One self-test boot, configured with the builder methods and run with
/// [`TestBoot::run`].
pub struct TestBoot {
    name: String,
    smp: u32,
    memory_mib: u32,
    opts: Vec<String>,
    deadline: Duration,
    must_contain: Vec<String>,
    responder: Option<Box<dyn Responder>>,
    apic: Apic,
    machine: Vec<String>,
    disk: Disk,
    extra: Vec<String>,
    framebuffer: bool,
    icount: Option<u32>,
}

impl TestBoot {
    /// Boots self-test `name` on `smp` CPUs.
    pub fn new(name: &str, smp: u32) -> Self {
        TestBoot {
            name: name.into(),
            smp,
            memory_mib: 256,
            opts: Vec::new(),
            deadline: Duration::from_secs(120),
            must_contain: Vec::new(),
            responder: None,
            apic: Apic::XApic,
            machine: Vec::new(),
            disk: Disk::Sata,
            extra: Vec::new(),
            framebuffer: false,
            icount: None,
        }
    }

    /// Leaves the kernel's framebuffer console on (tests turn it off unless
    /// they say).
    pub fn framebuffer(mut self) -> Self {
        self.framebuffer = true;
        self
    }

    /// Gives the guest CPUs this local APIC (xAPIC unless set). The boot
    /// must then report running in that mode.
    pub fn apic(mut self, apic: Apic) -> Self {
        self.apic = apic;
        self
    }

    /// Adds a `-machine q35,…` option (`hpet=off`, `kernel-irqchip=split`).
    pub fn machine(mut self, opt: &str) -> Self {
        self.machine.push(opt.into());
        self
    }

    /// Attaches the image as this kind of disk.
    pub fn disk(mut self, disk: Disk) -> Self {
        self.disk = disk;
        self
    }

    /// Runs the guest under `-icount shift=N`: one host thread, the guest
    /// clock driven by instructions, so every CPU gets the same time (a
    /// test of fair shares must not measure the host's scheduling of
    /// vCPU threads).
    pub fn icount(mut self, shift: u32) -> Self {
        self.icount = Some(shift);
        self
    }

    /// Adds QEMU arguments.
    pub fn qemu_args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adds a `key=value` boot option.
    pub fn opt(mut self, opt: &str) -> Self {
        self.opts.push(opt.into());
        self
    }

    /// Sets the guest memory.
    pub fn memory(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the deadline after which the host kills QEMU.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// Requires a transcript line containing `text`.
    pub fn must_contain(mut self, text: &str) -> Self {
        self.must_contain.push(text.into());
        self
    }

    /// Lets `r` answer serial lines with input.
    pub fn responder(mut self, r: impl Responder + 'static) -> Self {
        self.responder = Some(Box::new(r));
        self
    }

    /// The option line this boot passes.
    pub fn bootopt(&self) -> String {
        let mut s = format!(
            "test={} fb={}",
            self.name,
            if self.framebuffer { "on" } else { "off" }
        );
        for o in &self.opts {
            s.push(' ');
            s.push_str(o);
        }
        s
    }

    /// Boots and judges; panics with the reason and transcript on failure.
    /// An x2APIC boot on a QEMU without x2APIC panics at once with the
    /// reason (`cargo xtask test` skips those boots and says so).
    pub fn run(mut self) -> Outcome {
        let art = artifacts();
        let env = qemu_env();
        if self.apic == Apic::X2Apic
            && let Some(why) = env.x2apic_unsupported()
        {
            panic!("cannot boot `{}` with x2APIC: {why}", self.name);
        }
        let mut boot = Boot::new(&art.image);
        boot.smp = self.smp;
        boot.memory_mib = self.memory_mib;
        boot.bootopt = self.bootopt();
        boot.apic = self.apic;
        boot.machine = self.machine.clone();
        boot.disk = self.disk;
        boot.extra = self.extra.clone();
        boot.icount = self.icount;
        boot.monitor = Some(unique_temp("monitor", "sock"));
        self.must_contain
            .push(format!("local APIC: {} mode", self.apic.name()));
        let outcome = run_captured(&boot, &env, self.deadline, self.responder, false)
            .unwrap_or_else(|e| panic!("cannot boot QEMU: {e:#}"));
        if let Err(why) = judge(&self.name, &self.must_contain, &outcome) {
            // The whole transcript, for what the tail below does not show.
            let saved = save_transcript(
                &art.kernel,
                &format!("{}-smp{}-{}", self.name, self.smp, self.apic.name()),
                &outcome.transcript,
            );
            let why = format!("{why}\n{saved}");
            let transcript = symbolized(&art.kernel, &outcome.tail(TAIL_LINES));
            panic!(
                "self-test `{}` at -smp {} ({} guest) failed: {why}\n{}\n(boot options `{}`, {:.1} s)\n\
                 --- serial transcript, last {TAIL_LINES} lines ---\n{transcript}\n--- end ---",
                self.name,
                self.smp,
                self.apic.name(),
                boot.describe(&env),
                boot.bootopt,
                outcome.elapsed.as_secs_f64()
            );
        }
        outcome
    }
}

/// A path in the temporary directory no other boot of any test process
/// uses: `wyvern-KIND-PID-N.EXT`.
pub fn unique_temp(kind: &str, ext: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "wyvern-{kind}-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Keeps a failed boot's whole `text` under `target/transcripts` (beside
/// `kernel`'s `target`) as `STEM-PID.log`; says where, or why not.
pub fn save_transcript(kernel: &Path, stem: &str, text: &str) -> String {
    let dir = kernel
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("transcripts"))
        .unwrap_or_else(|| std::env::temp_dir().join("wyvern-transcripts"));
    let file = dir.join(format!("{stem}-{}.log", std::process::id()));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, text))
        .map(|()| format!("whole transcript: {}", file.display()))
        .unwrap_or_else(|e| format!("transcript not saved: {e}"))
}

/// `text` with the kernel's backtrace lines symbolized against `kernel`,
/// where it can be read.
pub fn symbolized(kernel: &Path, text: &str) -> String {
    match Symbolizer::new(kernel) {
        Ok(s) => s.annotate(text),
        Err(_) => text.to_owned(),
    }
}

/// Why a boot of test `name` did not pass, if it did not.
pub fn judge(name: &str, must_contain: &[String], outcome: &Outcome) -> Result<(), String> {
    let status = match &outcome.end {
        End::Exited(Verdict::Success) => None,
        End::Exited(Verdict::Failure) => Some("the kernel exited with the failure code".to_owned()),
        End::Exited(Verdict::Other(code)) => Some(format!(
            "QEMU exited with status {code} (not the kernel's success code 33: a QEMU error, \
             a triple-fault reset, or no exit at all)"
        )),
        End::Signalled => Some("QEMU was killed by a signal".to_owned()),
        End::Deadline(d) => Some(format!("no verdict within the {} s deadline", d.as_secs())),
    };
    let last_test = outcome
        .lines()
        .filter(|l| l.trim_start().starts_with(TEST_TAG))
        .last();
    let line_ok = last_test.is_some_and(|l| is_test_ok(l.trim(), name));
    let missing: Vec<&String> = must_contain
        .iter()
        .filter(|m| !outcome.transcript.contains(m.as_str()))
        .collect();
    match (status, line_ok, missing.is_empty()) {
        (None, true, true) => Ok(()),
        (status, _, _) => {
            let mut why = Vec::new();
            if let Some(s) = status {
                why.push(s);
            }
            if !line_ok {
                why.push(match last_test {
                    Some(l) => format!("last TEST line is `{}`, not `TEST {name} ok`", l.trim()),
                    None => format!("no `TEST {name} ok` line"),
                });
            }
            if !missing.is_empty() {
                why.push(format!("missing report lines: {missing:?}"));
            }
            Err(why.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(end: End, transcript: &str) -> Outcome {
        Outcome {
            end,
            transcript: transcript.into(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn both_conditions_are_needed() {
        let ok = outcome(End::Exited(Verdict::Success), "boot\nTEST boot ok\n");
        assert!(judge("boot", &[], &ok).is_ok());
        let no_line = outcome(End::Exited(Verdict::Success), "boot\n");
        assert!(judge("boot", &[], &no_line).is_err());
        let bad_code = outcome(End::Exited(Verdict::Other(1)), "TEST boot ok\n");
        assert!(judge("boot", &[], &bad_code).is_err());
        let failed = outcome(End::Exited(Verdict::Failure), "TEST boot FAILED: x\n");
        assert!(
            judge("boot", &[], &failed)
                .unwrap_err()
                .contains("failure code")
        );
        let late = outcome(End::Deadline(Duration::from_secs(5)), "TEST boot ok\n");
        assert!(judge("boot", &[], &late).is_err());
        let reset = outcome(End::Exited(Verdict::Other(0)), "");
        assert!(judge("boot", &[], &reset).is_err());
    }

    #[test]
    fn last_test_line_wins_and_reports_are_required() {
        let two = outcome(
            End::Exited(Verdict::Success),
            "TEST a ok\nTEST a FAILED: later\n",
        );
        assert!(judge("a", &[], &two).is_err());
        let ok = outcome(
            End::Exited(Verdict::Success),
            "FATAL TRAP: #PF\nTEST pf ok\n",
        );
        assert!(judge("pf", &["FATAL TRAP: #PF".into()], &ok).is_ok());
        assert!(judge("pf", &["cr2=".into()], &ok).is_err());
    }
}
