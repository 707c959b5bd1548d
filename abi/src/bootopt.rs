//! Boot options: what one boot of the single kernel binary does.
//!
//! The text form is a line of space-separated `key=value` words, for example
//! `test=pagefault fb=off`. The host hands it to the guest as the QEMU `fw_cfg` file
//! [`FW_CFG_NAME`] (`-fw_cfg name=opt/wyvern/bootopt,string=…`); on real hardware
//! the file is absent and the kernel boots [`Mode::Interactive`] with defaults.
//!
//! Unknown keys and malformed words are errors, not ignored: a typo in a test's
//! options must fail that boot at once rather than boot interactively until the
//! host's deadline.

/// Name of the QEMU `fw_cfg` file that carries the options.
pub const FW_CFG_NAME: &str = "opt/wyvern/bootopt";

/// Longest option line the kernel reads; longer lines are an error.
pub const MAX_LEN: usize = 512;

/// What the boot does once the kernel is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Boot to the console (the default, and what real hardware gets).
    Interactive,
    /// Run one named self-test, print its result line and exit QEMU.
    Test(&'a str),
    /// Run one named benchmark (or `all`), print its results and exit QEMU.
    Bench(&'a str),
    /// Run one named stress workload for `seconds=` and report.
    Stress(&'a str),
}

/// Minimum level of kernel log records that are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

/// Which local APIC timer mode drives the tick (`timer=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerChoice {
    /// TSC-deadline when the CPU has it, else periodic (the default).
    Auto,
    /// TSC-deadline; the boot fails if the CPU lacks it.
    Deadline,
    /// The LAPIC timer's periodic mode, calibrated against the TSC.
    Periodic,
}

/// Which local APIC mode the kernel should run in (`apic=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicChoice {
    /// x2APIC when the CPU has it, else xAPIC (the default).
    Auto,
    /// xAPIC, unless the firmware locked x2APIC or an APIC id needs it.
    XApic,
    /// x2APIC; a CPU without it runs xAPIC and the boot says so.
    X2Apic,
}

/// Which reference clock measures the TSC (`tscref=`), for testing each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscRef {
    /// CPUID, else the first of HPET, ACPI PM timer and PIT that works (the
    /// default).
    Auto,
    /// Skip CPUID; start at the HPET.
    Hpet,
    /// Skip CPUID and the HPET; start at the ACPI PM timer.
    PmTimer,
    /// Skip everything but the PIT.
    Pit,
}

/// Keys a mode reads for its own parameters (all take unsigned integers).
pub const PARAM_KEYS: &[&str] = &[
    "seconds", "iters", "reps", "percent", "rate", "cpus", "seed", "global",
];

/// The parsed options. Borrowed from the text they were parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOptions<'a> {
    /// What the boot does.
    pub mode: Mode<'a>,
    /// Mirror the console on the UEFI framebuffer (`fb=on|off`, default on).
    pub framebuffer: bool,
    /// Log level (`log=error|warn|info|debug|trace`, default info).
    pub log_level: LogLevel,
    /// Tick source (`timer=auto|deadline|periodic`, default auto).
    pub timer: TimerChoice,
    /// Local APIC mode (`apic=auto|xapic|x2apic`, default auto).
    pub apic: ApicChoice,
    /// TSC reference (`tscref=auto|hpet|pmtimer|pit`, default auto).
    pub tscref: TscRef,
    /// The IPC fast paths — a send switching straight to a waiting server,
    /// a reply-and-receive straight back to its client (`ipcfast=on|off`,
    /// default on). Off, every message takes the general path: for
    /// testing that both give the same results.
    pub ipc_fast: bool,
    text: &'a str,
}

/// Why an option line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOptError<'a> {
    /// The line is longer than [`MAX_LEN`].
    TooLong,
    /// A word without `=`, or with an empty key or value.
    Malformed(&'a str),
    /// A key this kernel does not know.
    UnknownKey(&'a str),
    /// A known key with a value it does not take.
    BadValue(&'a str),
    /// Two mode keys (`test`, `bench`, `stress`), or one key twice.
    Conflict(&'a str),
}

impl core::fmt::Display for BootOptError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootOptError::TooLong => write!(f, "option line longer than {MAX_LEN} bytes"),
            BootOptError::Malformed(w) => write!(f, "malformed option `{w}` (want key=value)"),
            BootOptError::UnknownKey(k) => write!(f, "unknown option key `{k}`"),
            BootOptError::BadValue(w) => write!(f, "bad value in option `{w}`"),
            BootOptError::Conflict(w) => write!(f, "option `{w}` conflicts with an earlier one"),
        }
    }
}

impl Default for BootOptions<'_> {
    fn default() -> Self {
        BootOptions {
            mode: Mode::Interactive,
            framebuffer: true,
            log_level: LogLevel::Info,
            timer: TimerChoice::Auto,
            apic: ApicChoice::Auto,
            tscref: TscRef::Auto,
            ipc_fast: true,
            text: "",
        }
    }
}

impl<'a> BootOptions<'a> {
    /// Parses an option line.
    pub fn parse(text: &'a str) -> Result<Self, BootOptError<'a>> {
        if text.len() > MAX_LEN {
            return Err(BootOptError::TooLong);
        }
        let mut opts = BootOptions {
            text,
            ..BootOptions::default()
        };
        let mut mode_set = false;
        for (i, word) in text.split_ascii_whitespace().enumerate() {
            let (key, value) = split_word(word)?;
            // One key may appear once: an earlier word with the same key is a conflict.
            if text
                .split_ascii_whitespace()
                .take(i)
                .any(|w| w.split('=').next() == Some(key))
            {
                return Err(BootOptError::Conflict(word));
            }
            match key {
                "test" | "bench" | "stress" => {
                    if mode_set {
                        return Err(BootOptError::Conflict(word));
                    }
                    mode_set = true;
                    opts.mode = match key {
                        "test" => Mode::Test(value),
                        "bench" => Mode::Bench(value),
                        _ => Mode::Stress(value),
                    };
                }
                "fb" => {
                    opts.framebuffer = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(BootOptError::BadValue(word)),
                    }
                }
                "log" => {
                    opts.log_level = match value {
                        "error" => LogLevel::Error,
                        "warn" => LogLevel::Warn,
                        "info" => LogLevel::Info,
                        "debug" => LogLevel::Debug,
                        "trace" => LogLevel::Trace,
                        _ => return Err(BootOptError::BadValue(word)),
                    }
                }
                "timer" => {
                    opts.timer = match value {
                        "auto" => TimerChoice::Auto,
                        "deadline" => TimerChoice::Deadline,
                        "periodic" => TimerChoice::Periodic,
                        _ => return Err(BootOptError::BadValue(word)),
                    }
                }
                "apic" => {
                    opts.apic = match value {
                        "auto" => ApicChoice::Auto,
                        "xapic" => ApicChoice::XApic,
                        "x2apic" => ApicChoice::X2Apic,
                        _ => return Err(BootOptError::BadValue(word)),
                    }
                }
                "tscref" => {
                    opts.tscref = match value {
                        "auto" => TscRef::Auto,
                        "hpet" => TscRef::Hpet,
                        "pmtimer" => TscRef::PmTimer,
                        "pit" => TscRef::Pit,
                        _ => return Err(BootOptError::BadValue(word)),
                    }
                }
                "ipcfast" => {
                    opts.ipc_fast = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(BootOptError::BadValue(word)),
                    }
                }
                k if PARAM_KEYS.contains(&k) => {
                    if value.parse::<u64>().is_err() {
                        return Err(BootOptError::BadValue(word));
                    }
                }
                _ => return Err(BootOptError::UnknownKey(key)),
            }
        }
        Ok(opts)
    }

    /// The unsigned parameter `key` (one of [`PARAM_KEYS`]), if given.
    pub fn param(&self, key: &str) -> Option<u64> {
        self.text
            .split_ascii_whitespace()
            .filter_map(|w| split_word(w).ok())
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The text the options were parsed from.
    pub fn text(&self) -> &'a str {
        self.text
    }
}

fn split_word(word: &str) -> Result<(&str, &str), BootOptError<'_>> {
    match word.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() && !v.contains('=') => Ok((k, v)),
        _ => Err(BootOptError::Malformed(word)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_is_interactive_default() {
        let o = BootOptions::parse("").unwrap();
        assert_eq!(o.mode, Mode::Interactive);
        assert!(o.framebuffer);
        assert_eq!(o.log_level, LogLevel::Info);
    }

    #[test]
    fn parses_modes_and_flags() {
        let o = BootOptions::parse("  test=pagefault fb=off log=debug ").unwrap();
        assert_eq!(o.mode, Mode::Test("pagefault"));
        assert!(!o.framebuffer);
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.timer, TimerChoice::Auto);
        let o = BootOptions::parse("timer=periodic").unwrap();
        assert_eq!(o.timer, TimerChoice::Periodic);
        assert!(BootOptions::parse("timer=fast").is_err());
        assert_eq!(BootOptions::parse("").unwrap().apic, ApicChoice::Auto);
        assert_eq!(
            BootOptions::parse("apic=xapic").unwrap().apic,
            ApicChoice::XApic
        );
        assert_eq!(
            BootOptions::parse("apic=x2apic").unwrap().apic,
            ApicChoice::X2Apic
        );
        assert!(BootOptions::parse("apic=x3apic").is_err());
        assert_eq!(
            BootOptions::parse("tscref=pit").unwrap().tscref,
            TscRef::Pit
        );
        assert_eq!(BootOptions::parse("").unwrap().tscref, TscRef::Auto);
        assert!(BootOptions::parse("tscref=sundial").is_err());
        assert!(BootOptions::parse("").unwrap().ipc_fast);
        assert!(!BootOptions::parse("ipcfast=off").unwrap().ipc_fast);
        assert!(BootOptions::parse("ipcfast=on").unwrap().ipc_fast);
        assert!(BootOptions::parse("ipcfast=maybe").is_err());
        let o = BootOptions::parse("stress=token seconds=5").unwrap();
        assert_eq!(o.mode, Mode::Stress("token"));
        assert_eq!(o.param("seconds"), Some(5));
        assert_eq!(o.param("rate"), None);
        assert_eq!(
            BootOptions::parse("bench=all").unwrap().mode,
            Mode::Bench("all")
        );
    }

    #[test]
    fn refuses_bad_lines() {
        assert_eq!(
            BootOptions::parse("tset=boot"),
            Err(BootOptError::UnknownKey("tset"))
        );
        assert_eq!(
            BootOptions::parse("test"),
            Err(BootOptError::Malformed("test"))
        );
        assert_eq!(
            BootOptions::parse("test="),
            Err(BootOptError::Malformed("test="))
        );
        assert_eq!(BootOptions::parse("=x"), Err(BootOptError::Malformed("=x")));
        assert_eq!(
            BootOptions::parse("a=b=c"),
            Err(BootOptError::Malformed("a=b=c"))
        );
        assert_eq!(
            BootOptions::parse("fb=maybe"),
            Err(BootOptError::BadValue("fb=maybe"))
        );
        assert_eq!(
            BootOptions::parse("seconds=x"),
            Err(BootOptError::BadValue("seconds=x"))
        );
        assert_eq!(
            BootOptions::parse("test=a bench=b"),
            Err(BootOptError::Conflict("bench=b"))
        );
        assert_eq!(
            BootOptions::parse("fb=on fb=off"),
            Err(BootOptError::Conflict("fb=off"))
        );
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(BootOptions::parse(&long), Err(BootOptError::TooLong));
    }
}
