//! The USB keyboard driver: HID boot keyboard reports from the xHCI
//! drivers become the bytes a serial terminal would send, given to the
//! screen terminal (`screen-input`, `CON_INPUT`).
//!
//! Argument: the controllers' names, separated by spaces (`usb0 usb1`).
//! One thread per name asks `USB_KBD_REPORT` in a loop. A report is
//! compared with the previous one of the same keyboard (the controller's
//! slot) by `keymap::boot_report_diff`, and each change goes through that
//! keyboard's own `keymap::Keyboard`, so Shift on one keyboard does not
//! shift another. A roll-over report (too many keys down) changes nothing
//! and is not kept as the previous one.
//!
//! When the controller's driver goes away (a send fails) the thread
//! forgets its keyboards (slots mean nothing to the restarted driver) and
//! opens the name again, a short sleep between attempts; the process
//! manager restarts drivers. When the terminal goes away the name is
//! opened again once for the bytes at hand, which are dropped if that
//! fails too. Memory stays bounded: at most [`MAX_KEYBOARDS`] keyboards
//! per controller, the oldest forgotten first.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, Priority};
use wyvern_user::keymap::{self, Keyboard};
use wyvern_user::svc::{CON_INPUT, Procman, SCREEN_INPUT, USB_KBD_REPORT};
use wyvern_user::{ipc, println, sys, thread};

wyvern_user::entry!(main);

/// Between attempts to reach a server that went away.
const RETRY_NS: u64 = 100_000_000;
/// Keyboards remembered per controller.
const MAX_KEYBOARDS: usize = 16;
/// Error lines per thread (a driver restarting in a loop must not flood).
const COMPLAINTS: u32 = 8;

/// One keyboard: its last report and its modifier state.
struct Kbd {
    slot: u64,
    prev: [u8; 8],
    keys: Keyboard,
}

/// What one controller's thread keeps.
struct Reader<'a> {
    name: &'a str,
    pm: Procman,
    usb: Option<u64>,
    screen: Option<u64>,
    kbds: Vec<Kbd>,
    complaints: u32,
}

impl Reader<'_> {
    fn complain(&mut self, what: &str, e: Error) {
        if self.complaints < COMPLAINTS {
            self.complaints += 1;
            println!("usbkbd: {}: {what}: {e}", self.name);
        }
    }

    /// The next report: (slot, report). Reconnects until one comes.
    fn next_report(&mut self) -> (u64, [u8; 8]) {
        loop {
            let coid = match self.usb {
                Some(c) => c,
                None => match self.pm.name_open(self.name, true) {
                    Ok(c) => {
                        self.kbds.clear();
                        self.usb = Some(c);
                        c
                    }
                    Err(e) => {
                        self.complain("open", e);
                        let _ = sys::sleep_ns(RETRY_NS);
                        continue;
                    }
                },
            };
            let op = USB_KBD_REPORT.to_le_bytes();
            let mut slot = [0u8; 8];
            let mut report = [0u8; 8];
            match ipc::sendv(coid, &[&op], &mut [&mut slot, &mut report]) {
                Ok(8) => return (u64::from_le_bytes(slot), report),
                Ok(_) => self.complain("request", Error::Invalid),
                Err(e) => self.complain("request", e),
            }
            let _ = ipc::disconnect(coid);
            self.usb = None;
            let _ = sys::sleep_ns(RETRY_NS);
        }
    }

    /// The bytes `report` of keyboard `slot` types, appended to `out`.
    fn decode(&mut self, slot: u64, report: &[u8; 8], out: &mut Vec<u8>) {
        if report[2..].iter().all(|&k| k == 0x01) {
            // ErrorRollOver: says nothing; keep the previous report.
            return;
        }
        let i = match self.kbds.iter().position(|k| k.slot == slot) {
            Some(i) => i,
            None => {
                if self.kbds.len() == MAX_KEYBOARDS {
                    self.kbds.remove(0);
                }
                self.kbds.push(Kbd {
                    slot,
                    prev: [0; 8],
                    keys: Keyboard::new(),
                });
                self.kbds.len() - 1
            }
        };
        let Kbd { prev, keys, .. } = &mut self.kbds[i];
        keymap::boot_report_diff(prev, report, |usage, pressed| keys.key(usage, pressed, out));
        *prev = *report;
    }

    /// Gives `bytes` to the terminal, opening its input name again once
    /// if the terminal went away.
    fn type_bytes(&mut self, bytes: &[u8]) {
        let op = CON_INPUT.to_le_bytes();
        for _ in 0..2 {
            let coid = match self.screen {
                Some(c) => c,
                None => match self.pm.name_open(SCREEN_INPUT, true) {
                    Ok(c) => {
                        self.screen = Some(c);
                        c
                    }
                    Err(e) => {
                        self.complain(SCREEN_INPUT, e);
                        return;
                    }
                },
            };
            match ipc::sendv(coid, &[&op, bytes], &mut []) {
                Ok(_) => return,
                Err(e) => {
                    self.complain(SCREEN_INPUT, e);
                    let _ = ipc::disconnect(coid);
                    self.screen = None;
                }
            }
        }
    }
}

/// One controller's reports, forever.
fn serve(name: &str) {
    let _ = sys::set_priority(0, Priority::Realtime);
    let pm = loop {
        match Procman::connect() {
            Ok(pm) => break pm,
            Err(e) => {
                println!("usbkbd: {name}: no process manager: {e}");
                let _ = sys::sleep_ns(RETRY_NS);
            }
        }
    };
    let mut r = Reader {
        name,
        pm,
        usb: None,
        screen: None,
        kbds: Vec::new(),
        complaints: 0,
    };
    let mut out = Vec::new();
    loop {
        let (slot, report) = r.next_report();
        out.clear();
        r.decode(slot, &report, &mut out);
        if !out.is_empty() {
            r.type_bytes(&out);
        }
    }
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("usbkbd");
    let _ = sys::set_priority(0, Priority::Realtime);
    // Every driver asks first; the policy grants this one nothing, so the
    // answer does not matter.
    if let Ok(pm) = Procman::connect() {
        let _ = pm.io_grant();
    }
    let names: Vec<String> = arg.split_whitespace().map(String::from).collect();
    if names.is_empty() {
        println!("usbkbd: usage: usbkbd usb0 [usb1 ...]");
        return 1;
    }
    let mut threads = Vec::new();
    for name in names {
        match thread::spawn(move || serve(&name)) {
            Ok(t) => threads.push(t),
            Err(e) => println!("usbkbd: no thread: {e}"),
        }
    }
    if threads.is_empty() {
        return 1;
    }
    // The threads never end; the main thread waits with them.
    for t in threads {
        let _ = t.join();
    }
    0
}
