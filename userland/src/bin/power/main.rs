//! The power server: resets the machine and turns it off from user mode,
//! serving `power` ([`svc::POWER`]: [`PWR_OFF`], [`PWR_REBOOT`]; the
//! process manager lets only the shell open it).
//!
//! At start it asks the process manager for its grants (the ports of the
//! PM1 control blocks, of an I/O reset register, 0xCF9, the 8042's 0x60 and
//! 0x64, the SMI command port; the DSDT read-only), reads what the kernel
//! found in the FADT (`HWINFO`), and parses the DSDT once with rust-osdev's
//! `aml` interpreter to learn `\_S5`'s sleep types. A DSDT that does not
//! parse costs one line and power-off only: reboot needs no AML.
//!
//! * Power-off (ACPI S5): `\_PTS(5)` if the firmware has one (its failure
//!   does not stop us), ACPI mode on if the firmware left it off (SCI_EN
//!   clear: `acpi_enable` to the SMI command port, waited for up to 3 s),
//!   then each PM1 control register gets its SLP_TYP, and then SLP_TYP with
//!   SLP_EN (bit 13), 16-bit writes that keep the register's other bits, as
//!   ACPICA does.
//! * Reset: the FADT's reset register (I/O or memory; PCI configuration
//!   space is skipped), then 0xCF9 (0x02, then 0x06: a hard reset on Intel
//!   chipsets), then the 8042's pulse of the reset line (0xFE to 0x64), each
//!   given 100 ms to take.
//!
//! Success has no reply: the machine is gone. A request that could not be
//! carried out gets an error (`NotFound`: no `\_S5` or PM1 block;
//! `Denied`: a PM1 block not granted; `Busy`: every register was written
//! and the machine is still here), and any other request `Invalid`.
//!
//! The interpreter reaches the machine only through
//! [`firmware::Firmware`], this process's `aml::Handler`: the ports the
//! process manager's policy grants this program ([`firmware::Io`] keeps
//! that list; any other port would fault), device memory the kernel lets it
//! map, and no PCI configuration space. The `aml` crate panics on operation
//! regions it does not implement (embedded controller, SMBus, …), so
//! `\_PTS` is run only when every region of the namespace is of a kind it
//! handles; otherwise S5 goes ahead without it (regions a method creates as
//! it runs are not seen by that check). Device `_INI` methods are not run:
//! nothing here needs them, and each would be one more way into untested
//! firmware code. Only the DSDT is loaded, not the SSDTs: `\_S5` and
//! `\_PTS` live in the DSDT.
//!
//! The interpreter is `aml` 0.16.4, the last release of rust-osdev's
//! standalone AML crate (its successor lives inside `acpi` 6, a rewrite with
//! a larger handler); it builds `no_std` with `alloc` for this target. Its
//! one bug that well-formed tables meet, a field length checked against the
//! bytes left in the table, is worked around in [`dsdt::parse`].
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use core::sync::atomic::{AtomicU32, Ordering};

use aml::value::Args;
use aml::{AmlContext, AmlName, AmlValue};
use wyvern_abi::syscall::{AcpiInfo, Error, Priority};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{self, PWR_OFF, PWR_REBOOT, Procman};
use wyvern_user::{println, sys};

use dsdt::S5;
use firmware::{Io, mem_write};

wyvern_user::entry!(main);

/// PM1 control: SLP_TYP (bits 10–12), SLP_EN (bit 13), SCI_EN (bit 0).
const SLP_TYP_SHIFT: u32 = 10;
const SLP_TYP_MASK: u32 = 7 << SLP_TYP_SHIFT;
const SLP_EN: u32 = 1 << 13;
const SCI_EN: u32 = 1;
/// The reset control register of Intel chipsets.
const RST_CNT: u16 = 0xcf9;
/// The 8042's data and command/status ports.
const KBC_DATA: u16 = 0x60;
const KBC_CMD: u16 = 0x64;
/// How long a reset or power-off is given to take effect.
const SETTLE_NS: u64 = 100_000_000;
/// Lines logged for refused firmware accesses and failed requests, in all.
const MAX_NOTES: u32 = 32;

static NOTES: AtomicU32 = AtomicU32::new(0);

/// Whether one more line may be logged: up to [`MAX_NOTES`] in the
/// server's life, so that firmware polling a refused register cannot flood
/// the console.
fn may_note() -> bool {
    NOTES
        .try_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_NOTES).then_some(n + 1)
        })
        .is_ok()
}

/// `println!` with the server's name, if [`may_note`].
macro_rules! note {
    ($($a:tt)*) => {
        if $crate::may_note() {
            ::wyvern_user::println!("power: {}", format_args!($($a)*));
        }
    };
}

mod dsdt;
mod firmware;

struct Power {
    info: AcpiInfo,
    io: Io,
    s5: Option<S5>,
}

impl Power {
    /// Turns the machine off; returns only when that failed, with the error
    /// to reply.
    fn off(&mut self) -> Error {
        let pm1a = u16::try_from(self.info.pm1a_cnt).unwrap_or(0);
        let pm1b = u16::try_from(self.info.pm1b_cnt).unwrap_or(0);
        let Some(s5) = self.s5.as_mut() else {
            return Error::NotFound;
        };
        if pm1a == 0 {
            note!("power-off: the FADT names no PM1a control block");
            return Error::NotFound;
        }
        if s5.pts {
            let run = |ctx: &mut AmlContext| {
                let five = Args::from_list(vec![AmlValue::Integer(5)])?;
                ctx.invoke_method(&AmlName::from_str("\\_PTS")?, five)
            };
            if let Err(e) = run(&mut s5.ctx) {
                note!("\\_PTS(5) failed: {e:?}; going on");
            }
        }
        let typ = s5.typ;
        self.enable_acpi(pm1a);
        let regs = [(pm1a, typ.0), (pm1b, typ.1)];
        let regs = regs.iter().filter(|r| r.0 != 0);
        // SLP_TYP first, then SLP_TYP with SLP_EN: the order ACPICA uses.
        for en in [0, SLP_EN] {
            for &(port, typ) in regs.clone() {
                let Some(v) = self.io.read(port, 2) else {
                    note!("power-off: PM1 control {port:#x} not granted");
                    return Error::Denied;
                };
                let v = (v & !(SLP_TYP_MASK | SLP_EN)) | (typ << SLP_TYP_SHIFT) | en;
                self.io.write(port, 2, v);
            }
        }
        let _ = sys::sleep_ns(10 * SETTLE_NS);
        note!("power-off: S5 did not take");
        Error::Busy
    }

    /// Puts the firmware in ACPI mode if it is not (SCI_EN clear), waiting
    /// for it up to 3 s; S5 is tried either way.
    fn enable_acpi(&self, pm1a: u16) {
        let on = || self.io.read(pm1a, 2).is_some_and(|v| v & SCI_EN != 0);
        let Ok(smi) = u16::try_from(self.info.smi_cmd) else {
            return;
        };
        if on() || smi == 0 || self.info.acpi_enable == 0 {
            return;
        }
        self.io.write(smi, 1, self.info.acpi_enable as u32);
        for _ in 0..300 {
            if on() {
                return;
            }
            let _ = sys::sleep_ns(10_000_000);
        }
        note!("power-off: ACPI mode did not come on; trying S5 anyway");
    }

    /// Resets the machine; returns only when no way worked.
    fn reboot(&self) -> Error {
        let i = &self.info;
        match i.reset_space {
            0 => {
                let a = i.reset_addr as usize;
                if !mem_write(a, 1, i.reset_value) {
                    note!("reboot: reset register {a:#x} not mapped");
                }
            }
            1 => {
                if !u16::try_from(i.reset_addr)
                    .is_ok_and(|p| self.io.write(p, 1, i.reset_value as u32))
                {
                    note!("reboot: reset port {:#x} not granted", i.reset_addr);
                }
            }
            2 => note!("reboot: the reset register is in PCI configuration space; skipped"),
            _ => {}
        }
        let _ = sys::sleep_ns(SETTLE_NS);
        // 0x02 arms a system reset, 0x06 starts it (hard reset).
        self.io.write(RST_CNT, 1, 0x02);
        let _ = sys::sleep_ns(50_000);
        self.io.write(RST_CNT, 1, 0x06);
        let _ = sys::sleep_ns(SETTLE_NS);
        // The 8042 takes a command once its input buffer (status bit 1) is
        // empty; an absent one reads 0xFF, so the wait is bounded.
        for _ in 0..100 {
            if self.io.read(KBC_CMD, 1).is_none_or(|s| s & 2 == 0) {
                break;
            }
            let _ = sys::sleep_ns(1_000_000);
        }
        self.io.write(KBC_CMD, 1, 0xfe);
        let _ = sys::sleep_ns(SETTLE_NS);
        note!("reboot: no reset took");
        Error::Busy
    }
}

fn main(_arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("power");
    let _ = sys::set_priority(0, Priority::Realtime);
    let pm = match Procman::connect() {
        Ok(pm) => pm,
        Err(e) => {
            println!("power: no process manager: {e}");
            return 1;
        }
    };
    if let Err(e) = pm.io_grant() {
        println!("power: no grants: {e}");
        return 1;
    }
    let info = sys::acpi_info().unwrap_or_else(|e| {
        println!("power: no ACPI information ({e}): reset by 0xCF9 and the 8042 only");
        AcpiInfo {
            reset_space: u64::MAX,
            ..AcpiInfo::default()
        }
    });
    let io = Io::granted(&info);
    let s5 = dsdt::parse(&info, io)
        .inspect_err(|why| println!("power: {why}; power-off unavailable, reboot served"))
        .ok();
    let mut power = Power { info, io, s5 };
    let chid = match ipc::channel_create() {
        Ok(c) => c,
        Err(e) => {
            println!("power: channel: {e}");
            return 1;
        }
    };
    if let Err(e) = pm.name_attach(svc::POWER, chid) {
        println!("power: name {}: {e}", svc::POWER);
        return 1;
    }
    let mut buf = [0u8; 64];
    loop {
        let info = match ipc::receive(chid, &mut buf) {
            Ok(Received::Msg(info)) => info,
            Ok(Received::Pulse(_)) => continue,
            Err(e) => {
                println!("power: receive: {e}");
                return 1;
            }
        };
        let op =
            (info.copied >= 8).then(|| u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8])));
        let e = match op {
            Some(PWR_OFF) => power.off(),
            Some(PWR_REBOOT) => power.reboot(),
            _ => Error::Invalid,
        };
        let _ = ipc::error(info.rcvid, e);
    }
}
