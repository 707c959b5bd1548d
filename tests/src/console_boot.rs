//! What interactive boot to start: the builder of a [`Machine`].
//!
//! [`ConsoleBoot`] says what machine to boot — CPUs, memory, local APIC,
//! COM1 or none, the VGA card, USB devices, whether a reset reboots — and
//! how fast to type; [`ConsoleBoot::start`] starts QEMU. The guest gets no
//! `test=` option: it boots interactively, as on real hardware, with the
//! boot options the test adds (none by default).

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{artifacts, qemu_env, unique_temp};
use crate::machine::{Keys, Machine};
use crate::qemu::{Apic, Boot, Serial};

/// An interactive boot, configured with the builder methods and started
/// with [`ConsoleBoot::start`].
pub struct ConsoleBoot {
    name: String,
    smp: u32,
    memory_mib: u32,
    apic: Apic,
    opts: Vec<String>,
    serial: Serial,
    vga: Option<String>,
    usb: Vec<String>,
    usb_disks: Vec<PathBuf>,
    reboot: bool,
    machine: Vec<String>,
    extra: Vec<String>,
    key_hold_ms: u32,
    key_delay: Duration,
}

impl ConsoleBoot {
    /// An interactive boot on `smp` CPUs; `name` names it in messages and
    /// saved transcripts.
    pub fn new(name: &str, smp: u32) -> Self {
        ConsoleBoot {
            name: name.into(),
            smp,
            memory_mib: 256,
            apic: Apic::XApic,
            opts: Vec::new(),
            serial: Serial::Stdio,
            vga: None,
            usb: Vec::new(),
            usb_disks: Vec::new(),
            reboot: false,
            machine: Vec::new(),
            extra: Vec::new(),
            key_hold_ms: 20,
            key_delay: Duration::from_millis(50),
        }
    }

    /// Adds a `-machine q35,…` option (`i8042=off`: no PS/2 controller).
    pub fn machine_opt(mut self, opt: &str) -> Self {
        self.machine.push(opt.into());
        self
    }

    /// Gives the guest CPUs this local APIC (xAPIC unless set).
    pub fn apic(mut self, apic: Apic) -> Self {
        self.apic = apic;
        self
    }

    /// Sets the guest memory.
    pub fn memory(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Adds a `key=value` boot option (none by default: the guest boots as
    /// on real hardware, framebuffer on).
    pub fn opt(mut self, opt: &str) -> Self {
        self.opts.push(opt.into());
        self
    }

    /// No COM1 (`-serial none`): no serial transcript (see the module
    /// docs).
    pub fn no_serial(mut self) -> Self {
        self.serial = Serial::None;
        self
    }

    /// `-vga std` said outright (it is q35's default card).
    pub fn vga_std(mut self) -> Self {
        self.vga = Some("std".into());
        self
    }

    /// A USB keyboard (`usb-kbd` on a `qemu-xhci`): typed keys go to it,
    /// not to the PS/2 keyboard.
    pub fn usb_keyboard(self) -> Self {
        self.usb_device("usb-kbd")
    }

    /// Another device on the xHCI controller (`usb-tablet`, `usb-mouse`).
    pub fn usb_device(mut self, dev: &str) -> Self {
        self.usb.push(dev.into());
        self
    }

    /// A raw disk image as a USB stick (`snapshot=on`: never written).
    pub fn usb_storage(mut self, image: impl Into<PathBuf>) -> Self {
        self.usb_disks.push(image.into());
        self
    }

    /// A reset reboots the machine instead of ending QEMU (no
    /// `-no-reboot`).
    pub fn allow_reboot(mut self) -> Self {
        self.reboot = true;
        self
    }

    /// Adds QEMU arguments.
    pub fn qemu_args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// How long `sendkey` holds each key (20 ms unless set).
    pub fn key_hold(mut self, ms: u32) -> Self {
        self.key_hold_ms = ms;
        self
    }

    /// The pause after each key (50 ms unless set).
    pub fn key_delay(mut self, d: Duration) -> Self {
        self.key_delay = d;
        self
    }

    /// The QEMU boot of `image` this describes, without its sockets.
    pub fn boot(&self, image: impl Into<PathBuf>) -> Boot {
        let mut boot = Boot::new(image);
        boot.smp = self.smp;
        boot.memory_mib = self.memory_mib;
        boot.apic = self.apic;
        boot.bootopt = self.opts.join(" ");
        boot.serial = self.serial;
        boot.vga = self.vga.clone();
        boot.usb = self.usb.clone();
        boot.usb_disks = self.usb_disks.clone();
        boot.no_reboot = !self.reboot;
        boot.machine = self.machine.clone();
        boot.extra = self.extra.clone();
        boot
    }

    /// Starts QEMU. Panics when it cannot start, or (x2APIC asked of a
    /// QEMU without it) must not.
    pub fn start(self) -> Machine {
        let art = artifacts();
        let env = qemu_env();
        if self.apic == Apic::X2Apic
            && let Some(why) = env.x2apic_unsupported()
        {
            panic!("cannot boot `{}` with x2APIC: {why}", self.name);
        }
        let mut boot = self.boot(&art.image);
        boot.monitor = Some(unique_temp("monitor", "sock"));
        boot.qmp = Some(unique_temp("qmp", "sock"));
        let stem = format!("{}-smp{}-{}", self.name, self.smp, self.apic.name());
        let keys = Keys {
            hold_ms: self.key_hold_ms,
            delay: self.key_delay,
        };
        Machine::spawn(boot, &env, self.name, stem, art.kernel, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::QemuEnv;
    use crate::qemu::Disk;

    /// The command line, space-joined.
    fn line(boot: &Boot) -> String {
        let env = QemuEnv {
            qemu: "qemu-system-x86_64".into(),
            ovmf: "/ovmf.fd".into(),
            version: Some((10, 0, 2)),
        };
        let args: Vec<String> = boot
            .command(&env)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn self_test_boots_keep_their_machine() {
        let l = line(&Boot::new("/img"));
        for want in [
            "-serial stdio",
            "-no-reboot",
            "-display none",
            "isa-debug-exit",
        ] {
            assert!(l.contains(want), "{want} missing: {l}");
        }
        for never in ["qemu-xhci", "-vga", "-qmp"] {
            assert!(!l.contains(never), "{never} present: {l}");
        }
    }

    #[test]
    fn a_console_boot_without_com1_with_usb_devices() {
        let mut b = ConsoleBoot::new("c", 1)
            .no_serial()
            .vga_std()
            .usb_keyboard()
            .usb_device("usb-tablet")
            .usb_storage("/tmp/stick.img")
            .allow_reboot()
            .boot("/img");
        b.qmp = Some("/tmp/q.sock".into());
        let l = line(&b);
        for want in [
            "-serial none",
            "-display none",
            "-vga std",
            "-qmp unix:/tmp/q.sock,server,nowait",
            "-device qemu-xhci,id=xhci",
            "-device usb-kbd,bus=xhci.0",
            "-device usb-tablet,bus=xhci.0",
            "-drive if=none,id=usbdisk0,format=raw,snapshot=on,file=/tmp/stick.img",
            "-device usb-storage,bus=xhci.0,drive=usbdisk0",
        ] {
            assert!(l.contains(want), "{want} missing: {l}");
        }
        assert!(!l.contains("-no-reboot"), "{l}");
        assert!(!l.contains("-fw_cfg"), "no options, no fw_cfg entry: {l}");
        assert_eq!(l.matches("qemu-xhci").count(), 1, "{l}");
    }

    #[test]
    fn usb_devices_share_the_boot_sticks_controller() {
        let mut b = ConsoleBoot::new("c", 2).usb_keyboard().boot("/img");
        b.disk = Disk::UsbStick;
        let l = line(&b);
        assert_eq!(l.matches("qemu-xhci").count(), 1, "{l}");
        assert!(l.contains("-device usb-kbd,bus=xhci.0"), "{l}");
        assert!(l.contains("-no-reboot"), "{l}");
    }
}
