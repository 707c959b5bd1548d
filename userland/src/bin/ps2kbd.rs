//! The PS/2 keyboard: the i8042 controller's first port in user mode,
//! typing into the framebuffer terminal (`screen-input`, protocol in
//! `wyvern_user::svc`).
//!
//! It asks the process manager for ports 0x60 and 0x64, then sets the
//! controller up by polling, every wait bounded by the clock: both ports
//! off, the output buffer flushed, the configuration byte rewritten
//! (translation on, so the keyboard speaks scan code set 1; port 1's clock
//! on; both interrupts off while it talks), port 1 on, the keyboard reset
//! and told to scan (`0xF4`), each command retried on `0xFE` (resend). A
//! machine with no i8042 (reads give 0xFF, or the controller never
//! answers) gets one line and exit code 0: there is nothing to restart for.
//! A keyboard that does not answer is logged and served anyway (many
//! emulated ones scan without being asked).
//!
//! Then IRQ 1 is attached to a pulse on the driver's own channel and the
//! controller's port-1 interrupt turned on. On each pulse the driver reads
//! bytes while the status register says the output buffer is full (at most
//! [`DRAIN_MAX`]), drops those of the mouse port (status bit 5), decodes
//! the rest — prefixes `E0` and `E1`, the fake shifts around PrintScreen,
//! Pause's six bytes — into HID usages with `keymap::ps2_set1`, and
//! `keymap::Keyboard` turns them into bytes. Then it unmasks the IRQ and
//! reads once more: IRQ 1 is edge-triggered, so a byte that came between
//! the drain and the unmask raised its edge while the line was masked and
//! will raise no other — left unread, it would silence the keyboard for
//! good. Unknown scan codes are counted and the first few logged.
//!
//! The bytes of one interrupt go, as one piece, into a bounded outbox
//! ([`OUTBOX_MAX`]; a piece that does not fit is dropped and counted) and a
//! second thread sends the outbox's contents to the terminal in one
//! `CON_INPUT` message. That thread alone waits for the terminal — to
//! appear (`name_open` with wait) and to take each message — so a terminal
//! that is slow, gone or restarting never stalls the interrupt path. A
//! failed send makes it reopen the name and try the message once more (the
//! terminal restarted), then drop it.
//!
//! The CapsLock LED is not driven: that would mean commands to the
//! keyboard while it types, with their acknowledgements in the key stream.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, Priority};
use wyvern_user::ipc::{self, Received};
use wyvern_user::keymap::{self, Keyboard};
use wyvern_user::svc::{CON_INPUT, Procman, SCREEN_INPUT};
use wyvern_user::sync::SpinLock;
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

/// Data port: scan codes and command replies in, keyboard commands out.
const DATA: u16 = 0x60;
/// Reads give the status register, writes are controller commands.
const STATUS: u16 = 0x64;

/// Status bits: output buffer full (a byte to read), input buffer full
/// (the controller has not taken our last byte), the byte is the mouse's.
const OUT_FULL: u8 = 0x01;
const IN_FULL: u8 = 0x02;
const AUX: u8 = 0x20;

/// Configuration byte bits.
const CFG_IRQ1: u8 = 0x01;
const CFG_IRQ12: u8 = 0x02;
const CFG_CLOCK1_OFF: u8 = 0x10;
const CFG_CLOCK2_OFF: u8 = 0x20;
const CFG_TRANSLATE: u8 = 0x40;

/// Controller commands.
const CMD_READ_CONFIG: u8 = 0x20;
const CMD_WRITE_CONFIG: u8 = 0x60;
const CMD_DISABLE_PORT2: u8 = 0xa7;
const CMD_DISABLE_PORT1: u8 = 0xad;
const CMD_ENABLE_PORT1: u8 = 0xae;

/// Keyboard commands and replies.
const KBD_RESET: u8 = 0xff;
const KBD_ENABLE_SCANNING: u8 = 0xf4;
const KBD_ACK: u8 = 0xfa;
const KBD_RESEND: u8 = 0xfe;
const KBD_ECHO: u8 = 0xee;
const KBD_SELF_TEST_OK: u8 = 0xaa;

/// How long the controller may take to take or give one byte.
const CONTROLLER_MS: u64 = 100;
/// How long a keyboard reset may take (its self-test).
const RESET_MS: u64 = 1000;

const IRQ: u64 = 1;
const PULSE_IRQ: u32 = 1;
const PULSE_WAKE: u32 = 2;

/// Bytes read per drain at most (the controller holds one; more means
/// a device gone wrong, and the next interrupt brings the rest).
const DRAIN_MAX: usize = 64;
/// Bytes waiting for the terminal at most.
const OUTBOX_MAX: usize = 1024;
/// Lines of each kind of complaint at most.
const LOG_MAX: u64 = 4;

fn inb(port: u16) -> u8 {
    // SAFETY: the process manager granted this process the i8042's ports
    // (0x60, 0x64); an `in` from them only reads the controller.
    unsafe { wyvern_user::port::in8(port) }
}

fn outb(port: u16, v: u8) {
    // SAFETY: as in `inb`; an `out` to them commands the controller or the
    // keyboard behind it.
    unsafe { wyvern_user::port::out8(port, v) }
}

/// Waits until `ready()` or `ms` milliseconds passed; true if ready.
fn wait_for(mut ready: impl FnMut() -> bool, ms: u64) -> bool {
    let deadline = sys::clock_ns().saturating_add(ms * 1_000_000);
    // A controller usually answers within microseconds: spin a little.
    for _ in 0..256 {
        if ready() {
            return true;
        }
        core::hint::spin_loop();
    }
    // Then poll between sleeps: a slow keyboard must not hold a CPU at
    // real-time priority. The count bounds the wait should the clock not
    // run (a sleep is at least 100 µs).
    for _ in 0..ms * 10 {
        if ready() {
            return true;
        }
        if sys::clock_ns() > deadline {
            break;
        }
        let _ = sys::sleep_ns(100_000);
    }
    ready()
}

/// Why the controller could not be set up.
struct NoController(&'static str);

/// A controller command.
fn command(cmd: u8) -> Result<(), NoController> {
    if !wait_for(|| inb(STATUS) & IN_FULL == 0, CONTROLLER_MS) {
        return Err(NoController("the controller takes no command"));
    }
    outb(STATUS, cmd);
    Ok(())
}

/// A byte to the data port (a command's argument, or for the keyboard).
fn write_data(b: u8) -> Result<(), NoController> {
    if !wait_for(|| inb(STATUS) & IN_FULL == 0, CONTROLLER_MS) {
        return Err(NoController("the controller takes no data"));
    }
    outb(DATA, b);
    Ok(())
}

/// The next byte of port 1 within `ms` (the mouse port's are dropped).
fn read_data(ms: u64) -> Option<u8> {
    let mut got = None;
    wait_for(
        || {
            let s = inb(STATUS);
            if s & OUT_FULL == 0 {
                return false;
            }
            let b = inb(DATA);
            if s & AUX != 0 {
                return false;
            }
            got = Some(b);
            true
        },
        ms,
    );
    got
}

/// Sends keyboard command `cmd` until it is acknowledged (three tries);
/// false if it never is.
fn keyboard_command(cmd: u8) -> Result<bool, NoController> {
    for _ in 0..3 {
        write_data(cmd)?;
        // Skip what is not a reply (keys typed meanwhile), a few at most.
        for _ in 0..8 {
            match read_data(CONTROLLER_MS) {
                Some(KBD_ACK) => return Ok(true),
                Some(KBD_RESEND) | None => break,
                Some(_) => {}
            }
        }
    }
    Ok(false)
}

/// Sets the controller and keyboard up with interrupts off; returns the
/// configuration byte written.
fn init() -> Result<u8, NoController> {
    if inb(STATUS) == 0xff {
        return Err(NoController("the status register reads 0xff"));
    }
    command(CMD_DISABLE_PORT1)?;
    command(CMD_DISABLE_PORT2)?;
    // Whatever the firmware left in the output buffer.
    let mut flushed = 0;
    while inb(STATUS) & OUT_FULL != 0 {
        let _ = inb(DATA);
        flushed += 1;
        if flushed == DRAIN_MAX {
            return Err(NoController("the output buffer never empties"));
        }
    }
    command(CMD_READ_CONFIG)?;
    let cfg = read_data(CONTROLLER_MS).ok_or(NoController("no configuration byte"))?;
    let cfg = (cfg & !(CFG_IRQ1 | CFG_IRQ12 | CFG_CLOCK1_OFF)) | CFG_TRANSLATE | CFG_CLOCK2_OFF;
    command(CMD_WRITE_CONFIG)?;
    write_data(cfg)?;
    command(CMD_ENABLE_PORT1)?;
    if keyboard_command(KBD_RESET)? {
        match read_data(RESET_MS) {
            Some(KBD_SELF_TEST_OK) => {}
            Some(b) => println!("ps2kbd: keyboard self-test says {b:#04x}"),
            None => println!("ps2kbd: keyboard self-test: no answer"),
        }
    } else {
        println!("ps2kbd: the keyboard does not acknowledge a reset");
    }
    if !keyboard_command(KBD_ENABLE_SCANNING)? {
        println!("ps2kbd: the keyboard does not acknowledge enable-scanning");
    }
    Ok(cfg)
}

/// Where a multi-byte scan code is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefix {
    None,
    /// After `E0`.
    E0,
    /// After `E1` (Pause: `E1 1D 45`, then `E1 9D C5`) and `got` of its two
    /// bytes, the first being `first`.
    E1 {
        got: u8,
        first: u8,
    },
}

/// Scan code set 1 to bytes.
struct Decoder {
    prefix: Prefix,
    kb: Keyboard,
    unknown: u64,
    errors: u64,
}

impl Decoder {
    fn new() -> Self {
        Decoder {
            prefix: Prefix::None,
            kb: Keyboard::new(),
            unknown: 0,
            errors: 0,
        }
    }

    /// One byte of port 1: what it types is appended to `out`.
    fn feed(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            // Key detection error or overrun: whatever was under way is lost.
            0x00 | 0xff => {
                self.prefix = Prefix::None;
                self.errors += 1;
                if self.errors <= LOG_MAX {
                    println!("ps2kbd: keyboard error or overrun ({b:#04x})");
                }
                return;
            }
            // Replies to commands, not keys.
            KBD_ACK | KBD_RESEND | KBD_ECHO => return,
            0xe0 => {
                self.prefix = Prefix::E0;
                return;
            }
            0xe1 => {
                self.prefix = Prefix::E1 { got: 0, first: 0 };
                return;
            }
            _ => {}
        }
        let key = match self.prefix {
            Prefix::E1 { got: 0, .. } => {
                self.prefix = Prefix::E1 { got: 1, first: b };
                return;
            }
            Prefix::E1 { first, .. } => {
                self.prefix = Prefix::None;
                if first & 0x7f == 0x1d && b & 0x7f == 0x45 {
                    // Pause has the usage of Ctrl-Break (`E0 46`).
                    keymap::ps2_set1(true, 0x46 | (b & 0x80))
                } else {
                    self.unknown(0xe1, b);
                    return;
                }
            }
            Prefix::E0 => {
                self.prefix = Prefix::None;
                if matches!(b & 0x7f, 0x2a | 0x36) {
                    // A fake shift around PrintScreen or a navigation key.
                    return;
                }
                let k = keymap::ps2_set1(true, b);
                if k.is_none() {
                    self.unknown(0xe0, b);
                }
                k
            }
            Prefix::None => {
                let k = keymap::ps2_set1(false, b);
                if k.is_none() {
                    self.unknown(0, b);
                }
                k
            }
        };
        if let Some((usage, pressed)) = key {
            self.kb.key(usage, pressed, out);
        }
    }

    fn unknown(&mut self, prefix: u8, b: u8) {
        self.unknown += 1;
        if self.unknown <= LOG_MAX {
            println!(
                "ps2kbd: unknown scan code {prefix:02x} {b:02x} ({} so far; only {LOG_MAX} are told)",
                self.unknown
            );
        }
    }
}

/// Typed bytes on their way to the terminal.
struct Outbox {
    bytes: Vec<u8>,
    dropped: u64,
}

static OUTBOX: SpinLock<Outbox> = SpinLock::new(Outbox {
    bytes: Vec::new(),
    dropped: 0,
});

/// Puts the bytes of one interrupt in the outbox whole, or drops them.
fn post(bytes: &[u8]) -> bool {
    let mut o = OUTBOX.lock();
    if o.bytes.len() + bytes.len() <= OUTBOX_MAX {
        o.bytes.extend_from_slice(bytes);
        return true;
    }
    let first = o.dropped == 0;
    o.dropped += bytes.len() as u64;
    drop(o);
    if first {
        println!("ps2kbd: the terminal takes nothing; dropping keys");
    }
    false
}

/// Reads port 1 while it has bytes (bounded), typing them into `out`.
fn drain(dec: &mut Decoder, out: &mut Vec<u8>) {
    for _ in 0..DRAIN_MAX {
        let s = inb(STATUS);
        if s & OUT_FULL == 0 {
            return;
        }
        let b = inb(DATA);
        if s & AUX == 0 {
            dec.feed(b, out);
        }
    }
}

/// Sends `bytes` to the terminal, (re)opening it as needed; false if they
/// were lost.
fn deliver(pm: &Procman, term: &mut Option<u64>, bytes: &[u8], fails: &mut u64) -> bool {
    let op = CON_INPUT.to_le_bytes();
    for _ in 0..2 {
        let coid = match *term {
            Some(c) => c,
            None => match pm.name_open(SCREEN_INPUT, true) {
                Ok(c) => {
                    *term = Some(c);
                    c
                }
                Err(e) => {
                    *fails += 1;
                    if *fails <= LOG_MAX {
                        println!("ps2kbd: cannot open {SCREEN_INPUT}: {e}");
                    }
                    return false;
                }
            },
        };
        match ipc::sendv(coid, &[&op, bytes], &mut []) {
            Ok(_) => return true,
            Err(_) => {
                // The terminal ended (or refused): open it anew.
                let _ = ipc::disconnect(coid);
                *term = None;
            }
        }
    }
    false
}

/// The sending thread: on each wake pulse, empties the outbox into
/// `CON_INPUT` messages.
fn sender(chid: u64) {
    let _ = sys::set_priority(0, Priority::Realtime);
    let pm = match Procman::connect() {
        Ok(pm) => pm,
        Err(e) => {
            println!("ps2kbd: sender: no process manager: {e}");
            return;
        }
    };
    let mut term = None;
    let mut batch = Vec::new();
    let mut fails = 0;
    let mut lost = 0u64;
    let mut buf = [0u8; 64];
    loop {
        match ipc::receive(chid, &mut buf) {
            Ok(Received::Pulse(_)) => {}
            Ok(Received::Msg(info)) => {
                let _ = ipc::error(info.rcvid, Error::Invalid);
                continue;
            }
            Err(e) => {
                println!("ps2kbd: sender: receive: {e}");
                return;
            }
        }
        loop {
            core::mem::swap(&mut OUTBOX.lock().bytes, &mut batch);
            if batch.is_empty() {
                break;
            }
            if !deliver(&pm, &mut term, &batch, &mut fails) {
                let dropped = {
                    let mut o = OUTBOX.lock();
                    o.dropped += batch.len() as u64;
                    o.dropped
                };
                lost += 1;
                if lost <= LOG_MAX {
                    println!(
                        "ps2kbd: the terminal lost {} bytes ({dropped} so far)",
                        batch.len()
                    );
                }
            }
            batch.clear();
        }
    }
}

fn main(_arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ps2kbd");
    let pm = match Procman::connect() {
        Ok(pm) => pm,
        Err(e) => {
            println!("ps2kbd: no process manager: {e}");
            return 1;
        }
    };
    if let Err(e) = pm.io_grant() {
        println!("ps2kbd: no I/O ports for the i8042: {e}");
        return 1;
    }
    let _ = sys::set_priority(0, Priority::Realtime);
    let cfg = match init() {
        Ok(cfg) => cfg,
        Err(NoController(why)) => {
            println!("ps2kbd: no PS/2 controller ({why}); nothing to do");
            return 0;
        }
    };
    let (Ok(chid), Ok(wake_chid)) = (ipc::channel_create(), ipc::channel_create()) else {
        println!("ps2kbd: no channels");
        return 1;
    };
    let (Ok(me), Ok(wake)) = (ipc::connect(0, chid), ipc::connect(0, wake_chid)) else {
        println!("ps2kbd: no self-connections");
        return 1;
    };
    if let Err(e) = thread::spawn(move || sender(wake_chid)) {
        println!("ps2kbd: no sender thread: {e}");
        return 1;
    }
    if let Err(e) = sys::interrupt_attach(IRQ, me, u64::from(PULSE_IRQ)) {
        println!("ps2kbd: cannot attach IRQ 1: {e}");
        return 1;
    }
    if command(CMD_WRITE_CONFIG)
        .and_then(|()| write_data(cfg | CFG_IRQ1))
        .is_err()
    {
        println!("ps2kbd: the controller stopped answering");
        return 1;
    }
    let mut dec = Decoder::new();
    let mut out = Vec::with_capacity(DRAIN_MAX * 8);
    // Keys typed before the interrupt was ours: read them now, or their
    // edge is gone and the line stays quiet (module docs).
    drain(&mut dec, &mut out);
    let _ = sys::interrupt_unmask(IRQ);
    drain(&mut dec, &mut out);
    let mut buf = [0u8; 64];
    loop {
        if !out.is_empty() {
            if post(&out) {
                // `Full`: wakes are queued already, and each empties the
                // whole outbox.
                let _ = ipc::pulse(wake, PULSE_WAKE, 0);
            }
            out.clear();
        }
        match ipc::receive(chid, &mut buf) {
            Ok(Received::Pulse(p)) if p.code == u64::from(PULSE_IRQ) => {
                drain(&mut dec, &mut out);
                let _ = sys::interrupt_unmask(IRQ);
                // A byte that came between the drain and the unmask (its
                // edge lost to the mask).
                drain(&mut dec, &mut out);
            }
            Ok(Received::Pulse(_)) => {}
            Ok(Received::Msg(info)) => {
                let _ = ipc::error(info.rcvid, Error::Invalid);
            }
            Err(e) => {
                println!("ps2kbd: receive: {e}");
                return 1;
            }
        }
    }
}
