//! One QEMU boot of a Wyvern image: the command line, and running it with a
//! deadline while keeping the serial transcript.
//!
//! The machine: `q35` (with any machine options a boot adds, such as
//! `hpet=off`), OVMF as `-bios`, no NIC (OVMF would try PXE first), no
//! display window (`-display none`; the VGA card is there and `screendump`
//! reads it), serial on stdio, `isa-debug-exit` at 0xf4, no reboot (a triple
//! fault ends QEMU instead of looping), the RTC pinned to a fixed date and
//! driven by the guest clock so icount runs repeat exactly. The image is
//! attached with `snapshot=on` (writes go to a temporary overlay) so several
//! boots can share it: as a SATA disk, or as a USB stick behind an xHCI
//! controller, the way a user boots it.
//!
//! A boot may change that: no COM1 at all ([`Serial::None`], the guest then
//! speaks only on its screen), a display (a window or VNC, for a person),
//! USB devices behind one `qemu-xhci` controller (a keyboard, a tablet,
//! more sticks), a QMP socket for QEMU's events, and resets that reboot
//! (without `-no-reboot`; an ACPI power-off still ends QEMU, with status 0).
//!
//! # The local APIC the guest CPUs have
//!
//! `-cpu max` on QEMU 9.0 and later offers x2APIC (CPUID.1:ECX bit 21); OVMF
//! hands over in xAPIC mode below 256 CPUs and in x2APIC mode above.
//! [`Apic::XApic`] takes the feature away (`-cpu max,-x2apic`): a CPU without
//! x2APIC, as older machines and QEMU 7.2's TCG are. Every boot's transcript
//! starts with a `harness:` line naming the QEMU version, the CPUs and the
//! APIC the guest was given.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wait_timeout::ChildExt;
use wyvern_abi::bootopt::FW_CFG_NAME;
use wyvern_abi::exit::Verdict;

use crate::env::QemuEnv;

/// The local APIC the guest CPUs offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Apic {
    /// No x2APIC feature: the kernel runs the xAPIC (MMIO) path.
    XApic,
    /// x2APIC offered (QEMU >= 9.0): the kernel runs the x2APIC (MSR) path.
    X2Apic,
}

impl Apic {
    /// Both, xAPIC first.
    pub const BOTH: [Apic; 2] = [Apic::XApic, Apic::X2Apic];

    /// The `-cpu` value.
    pub fn cpu_arg(self) -> &'static str {
        match self {
            Apic::XApic => "max,-x2apic",
            Apic::X2Apic => "max",
        }
    }

    /// The name the kernel's `local APIC:` line uses for the mode.
    pub fn name(self) -> &'static str {
        match self {
            Apic::XApic => "xAPIC",
            Apic::X2Apic => "x2APIC",
        }
    }
}

/// How the image is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// A SATA disk on the q35 AHCI controller.
    Sata,
    /// A USB stick (`usb-storage`) behind a `qemu-xhci` controller.
    UsbStick,
}

/// Where the guest's COM1 goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    /// On QEMU's standard input and output (`-serial stdio`): the
    /// transcript, and what a responder or a person types.
    Stdio,
    /// No COM1 (`-serial none`): the guest's only console is its screen,
    /// and a boot has no serial transcript (QEMU's own messages only).
    None,
}

/// A kernel QEMU loads itself (`-kernel`, `-initrd`, `-append`) instead of
/// OVMF booting the image: how Linux is booted beside Wyvern
/// ([`crate::linux`]).
#[derive(Debug, Clone)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel's command line.
    pub append: String,
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The UEFI disk image.
    pub image: PathBuf,
    /// `-smp`.
    pub smp: u32,
    /// `-m`, in MiB.
    pub memory_mib: u32,
    /// `-icount shift=N` (deterministic, one host thread), or multi-threaded TCG.
    pub icount: Option<u32>,
    /// The boot option line handed to the kernel through `fw_cfg`.
    pub bootopt: String,
    /// Wait for a debugger on :1234 before the first instruction.
    pub gdb: bool,
    /// The guest CPUs' local APIC.
    pub apic: Apic,
    /// Options appended to `-machine q35` (`hpet=off`, `kernel-irqchip=split`).
    pub machine: Vec<String>,
    /// How the image is attached.
    pub disk: Disk,
    /// A human-monitor socket (`-monitor unix:PATH`), or none.
    pub monitor: Option<PathBuf>,
    /// A QMP socket (`-qmp unix:PATH`) for QEMU's events, or none.
    pub qmp: Option<PathBuf>,
    /// Where COM1 goes.
    pub serial: Serial,
    /// `-display`: `none`, or a window (`gtk`, `sdl`) or `vnc=HOST:N`.
    pub display: String,
    /// `-vga` (`std`), or QEMU's default (which on q35 is `std` too).
    pub vga: Option<String>,
    /// `-no-reboot`: a reset (a triple fault, a reboot) ends QEMU. Without
    /// it the machine starts again.
    pub no_reboot: bool,
    /// USB devices on the `qemu-xhci` controller (`usb-kbd`, `usb-tablet`,
    /// `usb-storage,drive=ID`), each given `bus=xhci.0`.
    pub usb: Vec<String>,
    /// Raw disk images attached as USB sticks (`snapshot=on`), after the
    /// boot image's.
    pub usb_disks: Vec<PathBuf>,
    /// More QEMU arguments.
    pub extra: Vec<String>,
    /// Boot this kernel directly instead of the image through OVMF.
    pub direct: Option<DirectKernel>,
}

impl Boot {
    /// A boot of `image` with the defaults: 8 CPUs, 256 MiB, no icount.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Boot {
            image: image.into(),
            smp: 8,
            memory_mib: 256,
            icount: None,
            bootopt: String::new(),
            gdb: false,
            apic: Apic::X2Apic,
            machine: Vec::new(),
            disk: Disk::Sata,
            monitor: None,
            qmp: None,
            serial: Serial::Stdio,
            display: "none".into(),
            vga: None,
            no_reboot: true,
            usb: Vec::new(),
            usb_disks: Vec::new(),
            extra: Vec::new(),
            direct: None,
        }
    }

    /// Whether the machine gets the `qemu-xhci` controller.
    fn has_xhci(&self) -> bool {
        self.disk == Disk::UsbStick || !self.usb.is_empty() || !self.usb_disks.is_empty()
    }

    /// The `harness:` line that heads the boot's transcript.
    pub fn describe(&self, env: &QemuEnv) -> String {
        let mut machine = String::from("q35");
        for m in &self.machine {
            machine.push(',');
            machine.push_str(m);
        }
        let mut more = String::new();
        if let Some(s) = self.icount {
            more += &format!(", -icount shift={s}");
        }
        if self.disk == Disk::UsbStick {
            more += ", image on a USB stick (qemu-xhci + usb-storage)";
        }
        if self.serial == Serial::None {
            more += ", no COM1 (-serial none)";
        }
        if let Some(v) = &self.vga {
            more += &format!(", -vga {v}");
        }
        if self.display != "none" {
            more += &format!(", -display {}", self.display);
        }
        let usb: Vec<&str> = self
            .usb
            .iter()
            .map(|d| d.split(',').next().unwrap_or(d))
            .chain(self.usb_disks.iter().map(|_| "usb-storage"))
            .collect();
        if !usb.is_empty() {
            more += &format!(", USB: {}", usb.join(" "));
        }
        if !self.no_reboot {
            more += ", resets reboot";
        }
        if let Some(d) = &self.direct {
            more += &format!(", -kernel {}", d.kernel.display());
        }
        format!(
            "harness: QEMU {}, -machine {machine}, -smp {}, -m {}M, guest APIC {} (-cpu {}){more}",
            env.version_string(),
            self.smp,
            self.memory_mib,
            self.apic.name(),
            self.apic.cpu_arg(),
        )
    }

    /// The QEMU command.
    pub fn command(&self, env: &QemuEnv) -> Command {
        let mut cmd = Command::new(&env.qemu);
        let mut machine = String::from("q35");
        for m in &self.machine {
            machine.push(',');
            machine.push_str(m);
        }
        cmd.arg("-machine")
            .arg(machine)
            .arg("-cpu")
            .arg(self.apic.cpu_arg())
            .args(["-seed", "1"])
            .arg("-smp")
            .arg(self.smp.to_string())
            .arg("-m")
            .arg(format!("{}M", self.memory_mib))
            .arg("-display")
            .arg(&self.display)
            .args(["-nic", "none", "-monitor"])
            .arg(match &self.monitor {
                Some(p) => format!("unix:{},server,nowait", p.display()),
                None => "none".into(),
            })
            .arg("-serial")
            .arg(match self.serial {
                Serial::Stdio => "stdio",
                Serial::None => "none",
            });
        if let Some(p) = &self.qmp {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server,nowait", p.display()));
        }
        if let Some(v) = &self.vga {
            cmd.arg("-vga").arg(v);
        }
        if self.no_reboot {
            cmd.arg("-no-reboot");
        }
        cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .args(["-rtc", "base=2024-01-01T00:00:00,clock=vm"]);
        match (&self.direct, self.disk) {
            (Some(d), _) => {
                cmd.arg("-kernel")
                    .arg(&d.kernel)
                    .arg("-initrd")
                    .arg(&d.initrd)
                    .arg("-append")
                    .arg(&d.append);
            }
            (None, Disk::Sata) => {
                cmd.arg("-bios").arg(&env.ovmf);
                cmd.arg("-drive").arg(format!(
                    "format=raw,snapshot=on,file={}",
                    self.image.display()
                ));
            }
            (None, Disk::UsbStick) => {
                cmd.arg("-bios").arg(&env.ovmf);
                cmd.arg("-drive")
                    .arg(format!(
                        "if=none,id=stick,format=raw,snapshot=on,file={}",
                        self.image.display()
                    ))
                    .args(["-device", "qemu-xhci,id=xhci"])
                    .args(["-device", "usb-storage,bus=xhci.0,drive=stick"]);
            }
        }
        if self.has_xhci() && self.disk != Disk::UsbStick {
            cmd.args(["-device", "qemu-xhci,id=xhci"]);
        }
        for (i, disk) in self.usb_disks.iter().enumerate() {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=usbdisk{i},format=raw,snapshot=on,file={}",
                    disk.display()
                ))
                .arg("-device")
                .arg(format!("usb-storage,bus=xhci.0,drive=usbdisk{i}"));
        }
        for dev in &self.usb {
            cmd.arg("-device").arg(format!("{dev},bus=xhci.0"));
        }
        if let Some(shift) = self.icount {
            // `sleep=off`: when every vCPU halts, jump the virtual clock to the
            // next timer instead of waiting for the host clock, so runs repeat.
            cmd.arg("-icount")
                .arg(format!("shift={shift},align=off,sleep=off"));
        } else {
            cmd.args(["-accel", "tcg,thread=multi"]);
        }
        if !self.bootopt.is_empty() {
            // QEMU's option syntax: a comma inside a value is written twice.
            cmd.arg("-fw_cfg").arg(format!(
                "name={FW_CFG_NAME},string={}",
                self.bootopt.replace(',', ",,")
            ));
        }
        if self.gdb {
            cmd.args(["-s", "-S"]);
        }
        cmd.args(&self.extra);
        cmd
    }
}

/// How a captured boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// QEMU exited with this status.
    Exited(Verdict),
    /// QEMU was killed by a signal.
    Signalled,
    /// The deadline passed and the host killed QEMU.
    Deadline(Duration),
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    /// Serial output and QEMU's stderr, with terminal escapes removed.
    pub transcript: String,
    /// Wall time from spawn to end.
    pub elapsed: Duration,
}

impl Outcome {
    /// The transcript's lines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.transcript.lines()
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Removes CSI/OSC escape sequences and carriage returns (OVMF paints the
/// serial console as a terminal).
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Something that watches the serial lines of a running boot and may type on
/// the serial port in answer (for tests that drive the console).
pub trait Responder: Send {
    /// Called with each complete line; returns bytes to send to the guest.
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>>;
}

/// Copies `src` line by line into `transcript` (escapes removed), giving
/// each line to `responder`, whose answer goes to `stdin`.
pub fn pump<R: Read + Send + 'static>(
    src: R,
    transcript: Arc<Mutex<String>>,
    mut responder: Option<(Box<dyn Responder>, ChildStdin)>,
    echo: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut buf = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let line = strip_escapes(&String::from_utf8_lossy(&buf));
            buf.clear();
            if echo {
                eprint!("{line}");
            }
            transcript.lock().expect("transcript lock").push_str(&line);
            if let Some((r, stdin)) = responder.as_mut()
                && let Some(bytes) = r.on_line(line.trim_end())
            {
                let _ = stdin.write_all(&bytes);
                let _ = stdin.flush();
            }
        }
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots, capturing serial output, and kills QEMU at `deadline`. `echo` copies
/// the serial output to stderr as it comes.
pub fn run_captured(
    boot: &Boot,
    env: &QemuEnv,
    deadline: Duration,
    responder: Option<Box<dyn Responder>>,
    echo: bool,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut child = boot
        .command(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", env.qemu.display()))?;
    let transcript = Arc::new(Mutex::new(format!("{}\n", boot.describe(env))));
    if echo {
        eprintln!("{}", boot.describe(env));
    }
    let stdin = child.stdin.take().context("QEMU stdin")?;
    let out = pump(
        child.stdout.take().context("QEMU stdout")?,
        transcript.clone(),
        responder.map(|r| (r, stdin)),
        echo,
    );
    let err = pump(
        child.stderr.take().context("QEMU stderr")?,
        transcript.clone(),
        None,
        echo,
    );
    let end = match child.wait_timeout(deadline).context("waiting for QEMU")? {
        Some(status) => match status.code() {
            Some(code) => End::Exited(Verdict::from_status(code)),
            None => End::Signalled,
        },
        None => {
            // Past the deadline: ask every CPU where it is (an NMI, which the
            // kernel answers with its place and trace ring), then end it.
            if let Some(path) = &boot.monitor
                && let Ok(mut m) = std::os::unix::net::UnixStream::connect(path)
            {
                let _ = m.write_all(b"nmi\n");
                thread::sleep(Duration::from_secs(3));
            }
            kill(&mut child);
            End::Deadline(deadline)
        }
    };
    if let Some(path) = &boot.monitor {
        let _ = std::fs::remove_file(path);
    }
    let _ = out.join();
    let _ = err.join();
    let transcript = Arc::try_unwrap(transcript)
        .map(|m| m.into_inner().expect("transcript lock"))
        .unwrap_or_else(|a| a.lock().expect("transcript lock").clone());
    Ok(Outcome {
        end,
        transcript,
        elapsed: start.elapsed(),
    })
}
