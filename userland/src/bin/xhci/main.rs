//! The xHCI driver: one USB host controller in user mode, serving HID boot
//! keyboard reports under a name (`usb0`, `usb1`, …; protocol
//! `USB_KBD_REPORT` in `wyvern_user::svc`). Argument: `cfg=0xPHYS
//! name=usbN`, the physical address of the function's ECAM page.
//!
//! Design:
//!
//! * Bring-up (`pci`, `init`, `hc`): the process manager's grant first;
//!   then the config page, BAR0 (sized by probing), memory decode and bus
//!   mastering; halt, reset, DCBAA, scratchpads, a command ring and one
//!   event ring (ERST of one segment), all in zeroed DMA pages.
//! * Interrupts: MSI-X entry 0 if the function has MSI-X, else MSI,
//!   aimed where `MSI_ATTACH` says (a pulse on our own channel, unmasked
//!   after each drain). Without either, or if the kernel refuses, a
//!   thread pulses the channel every 10 ms instead: the controller writes
//!   events to the ring whether or not it signals them.
//! * One thread owns the controller and serves the name: a pulse runs
//!   `Hc::service` (drain the event ring, recover halted keyboard
//!   endpoints, handle port changes); a `USB_KBD_REPORT` waits in
//!   `reports` until a report comes. Commands and control transfers are
//!   synchronous and poll the event ring with deadlines, so nothing nests
//!   and every wait on the hardware is bounded.
//! * Devices (`port`, `device`, `control`, `desc`, `pipe`): every root
//!   port is looked at after the start (devices present then raise no
//!   events) and on each port change. A connected port is reset if not
//!   enabled (USB 2 ports; QEMU enables USB 3 ports itself), given a slot,
//!   addressed, and its descriptors read; a HID boot keyboard (3/1/1) gets
//!   its interrupt-IN endpoint configured, SET_CONFIGURATION,
//!   SET_PROTOCOL(boot), SET_IDLE(0), and eight 8-byte reads kept queued.
//!   Anything else is logged (`xhci: port N: <what> ignored`), its slot
//!   disabled and its memory freed. Unplugging disables the slot too.
//! * Bounds: 64 queued reports (the oldest dropped and counted), 8
//!   waiting readers, one device per slot, one command and one control
//!   transfer in flight. A controller error or a command timeout ends the
//!   driver (bus mastering off first) and the process manager restarts it.
//!
//! Memory shared with the controller is reached only through `mem`'s
//! bounds-checked volatile accessors; DMA memory goes back to the kernel
//! only after the slot using it is disabled.
//!
//! Verified: it builds and passes clippy. Register, context and TRB
//! layouts and QEMU's quirks (CRCR and ERSTBA latched on the high half,
//! no events for devices present at start, PORTSC's write-1-to-clear
//! bits) follow the research note `research/xhci.md`, which cites QEMU's
//! `hw/usb/hcd-xhci.c`; that QEMU bundles a control transfer's Setup to
//! Status TRBs into one TD was checked in that source. Not run yet: the
//! kernel's device calls were being written at the same time.
#![no_std]
#![no_main]

extern crate alloc;

mod control;
mod desc;
mod device;
mod hc;
mod init;
mod mem;
mod pci;
mod pipe;
mod port;
mod reports;

use wyvern_abi::syscall::{Error, Priority};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{Procman, USB_KBD_REPORT};
use wyvern_user::{println, sys, thread};

use crate::hc::{Hc, MS};
use crate::mem::{Mmio, PAGE};
use crate::pci::{CMD_BUS_MASTER, CMD_MEMORY, Config};

wyvern_user::entry!(main);

const PULSE_IRQ: u32 = 1;
const PULSE_TICK: u32 = 2;
const POLL_INTERVAL: u64 = 10 * MS;

/// `cfg=0xPHYS name=NAME`: the config page's address and the name served.
fn parse_args(arg: &str) -> Option<(u64, &str)> {
    let mut cfg = None;
    let mut name = None;
    for w in arg.split_whitespace() {
        if let Some(v) = w.strip_prefix("cfg=") {
            let hex = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"))?;
            cfg = u64::from_str_radix(hex, 16).ok();
        } else if let Some(v) = w.strip_prefix("name=") {
            name = Some(v);
        }
    }
    let cfg = cfg.filter(|c| *c != 0 && c.is_multiple_of(PAGE))?;
    let name = name.filter(|n| !n.is_empty() && n.len() <= 32)?;
    Some((cfg, name))
}

/// Aims interrupter 0's interrupt at a pulse `PULSE_IRQ` on `me`: MSI-X if
/// the function has it, else MSI. Returns the handle to unmask, and the
/// mapping of the BAR holding the MSI-X table when that is not BAR0 (to
/// keep for the process's life). `None`: poll.
fn interrupts(cfg: &Config, hc: &Hc, me: u64) -> Option<(u64, Option<Mmio>)> {
    let msix = cfg.msix();
    if msix.is_none() && !cfg.has_msi() {
        println!("xhci: no MSI-X or MSI; polling");
        return None;
    }
    let (handle, target) = match sys::msi_attach(me, u64::from(PULSE_IRQ)) {
        Ok(v) => v,
        Err(e) => {
            println!("xhci: no message-signalled interrupt ({e}); polling");
            return None;
        }
    };
    if let Some(m) = msix {
        let other = match m.bir {
            0 => None,
            bir => cfg
                .memory_bar(bir)
                .and_then(|b| Mmio::map(b.phys, b.size).ok()),
        };
        let table = if m.bir == 0 {
            Some(hc.regs())
        } else {
            other.as_ref()
        };
        if table.is_some_and(|t| cfg.enable_msix(&m, t, target)) {
            return Some((handle, other));
        }
    }
    if cfg.enable_msi(target) {
        return Some((handle, None));
    }
    println!("xhci: cannot program MSI-X or MSI; polling");
    let _ = sys::interrupt_detach(handle);
    None
}

/// Serves the name and the controller until the controller fails.
fn serve(hc: &mut Hc, chid: u64, irq: Option<u64>) -> i64 {
    let mut buf = [0u8; 64];
    loop {
        let m = match ipc::receive(chid, &mut buf) {
            Ok(m) => m,
            Err(e) => {
                println!("xhci: receive: {e}");
                return 1;
            }
        };
        let r = match m {
            Received::Pulse(p) if p.code == u64::from(PULSE_IRQ) => {
                let r = hc.service();
                if let Some(h) = irq {
                    let _ = sys::interrupt_unmask(h);
                }
                r
            }
            Received::Pulse(p) if p.code == u64::from(PULSE_TICK) => hc.service(),
            Received::Pulse(_) => Ok(()),
            Received::Msg(info) => {
                let op = buf.first_chunk::<8>().map(|w| u64::from_le_bytes(*w));
                if info.slen == 8 && info.rlen >= 16 && op == Some(USB_KBD_REPORT) {
                    hc.reports.wait(info.rcvid);
                } else {
                    let _ = ipc::error(info.rcvid, Error::Invalid);
                }
                Ok(())
            }
        };
        if r.is_err() {
            return 1;
        }
        hc.reports.deliver();
    }
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("xhci");
    let _ = sys::set_priority(0, Priority::Realtime);
    let pm = match Procman::connect() {
        Ok(pm) => pm,
        Err(e) => {
            println!("xhci: no process manager: {e}");
            return 1;
        }
    };
    // The grant (config page, BARs, DMA right) is made inside this call.
    if let Err(e) = pm.io_grant() {
        println!("xhci: no device grant: {e}");
        return 1;
    }
    let Some((cfg_phys, name)) = parse_args(arg) else {
        println!("xhci: usage: cfg=0xPHYS name=usbN (got {arg:?})");
        return 1;
    };
    let cfg = match Config::map(cfg_phys) {
        Ok(c) => c,
        Err(e) => {
            println!("xhci: cannot map config space {cfg_phys:#x}: {e}");
            return 1;
        }
    };
    if cfg.class() != (0x0c, 0x03, 0x30) {
        println!("xhci: {cfg_phys:#x} is not an xHCI function");
        return 1;
    }
    let Some(bar) = cfg.memory_bar(0) else {
        println!("xhci: BAR0 is not a memory BAR");
        return 1;
    };
    let regs = match Mmio::map(bar.phys, bar.size) {
        Ok(r) => r,
        Err(e) => {
            println!("xhci: cannot map BAR0 {:#x}+{:#x}: {e}", bar.phys, bar.size);
            return 1;
        }
    };
    let cmd = cfg.command();
    cfg.set_command(cmd | CMD_MEMORY | CMD_BUS_MASTER);
    let code = run(&cfg, regs, &pm, name);
    // Whatever the controller was told, it must not write into memory that
    // goes back to the kernel when this process ends.
    cfg.set_command(cfg.command() & !CMD_BUS_MASTER);
    code
}

/// Everything after the PCI function is enabled; returns the exit code.
fn run(cfg: &Config, regs: Mmio, pm: &Procman, name: &str) -> i64 {
    let Ok(mut hc) = Hc::new(regs) else {
        return 1;
    };
    let (chid, me) = match ipc::channel_create().and_then(|c| Ok((c, ipc::connect(0, c)?))) {
        Ok(v) => v,
        Err(e) => {
            println!("xhci: channel: {e}");
            return 1;
        }
    };
    let irq = interrupts(cfg, &hc, me);
    if irq.is_none() {
        let tick = thread::spawn(move || {
            let _ = sys::set_priority(0, Priority::Realtime);
            loop {
                let _ = sys::sleep_ns(POLL_INTERVAL);
                // `Full` only means the last ticks are not served yet.
                if let Err(Error::Gone) = ipc::pulse(me, PULSE_TICK, 0) {
                    return;
                }
            }
        });
        if let Err(e) = tick {
            println!("xhci: poll thread: {e}");
            return 1;
        }
    }
    if hc.start(irq.is_some()).is_err() || hc.scan_ports().is_err() {
        return 1;
    }
    if let Err(e) = pm.name_attach(name, chid) {
        println!("xhci: cannot serve {name}: {e}");
        return 1;
    }
    serve(&mut hc, chid, irq.as_ref().map(|(h, _)| *h))
}
