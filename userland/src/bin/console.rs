//! The console: COM1's driver in user mode, serving `console` (protocol in
//! `wyvern_user::svc`).
//!
//! It asks the process manager for COM1's ports (0x3F8–0x3FF), attaches
//! IRQ 4 to a pulse on its own channel, and serves:
//!
//! * the IRQ pulse: drains the UART's receive FIFO through the line
//!   discipline — printable bytes are echoed and kept, backspace/DEL erases
//!   one, CR or LF ends the line (echoed as CR LF) — then unmasks the IRQ;
//! * `WRITE`: the bytes go out (LF as CR LF), polled on the transmitter;
//! * `READ`: a finished line, at once or once one is typed (one reader at
//!   a time; a second gets `Busy`);
//! * `INTR`: answered when Ctrl-C is typed (which also drops the line
//!   being typed; one waiter at a time, the newest).
//!
//! Attaching IRQ 4 makes the kernel keep its own output in its log ring; a
//! second thread drains the ring (`KLOG_READ`) into `WRITE`s, so the
//! kernel's lines and every program's `DEBUG_WRITE` still reach COM1.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, Priority};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{CON_INTR, CON_READ, CON_WRITE, LINE_MAX, Procman};
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

const COM1: u16 = 0x3f8;
const IRQ: u64 = 4;
const PULSE_IRQ: u32 = 1;

fn inb(port: u16) -> u8 {
    // SAFETY: the process manager granted this process COM1's ports; an
    // `in` from them only reads the UART's registers.
    unsafe { wyvern_user::port::in8(port) }
}

fn outb(port: u16, v: u8) {
    // SAFETY: as in `inb`; an `out` to them drives the UART.
    unsafe { wyvern_user::port::out8(port, v) }
}

fn put(b: u8) {
    // Wait for the transmitter holding register (LSR bit 5).
    let mut spins = 0u32;
    while inb(COM1 + 5) & 0x20 == 0 {
        spins += 1;
        if spins.is_multiple_of(64) {
            sys::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
    outb(COM1, b);
}

fn write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

struct Tty {
    line: Vec<u8>,
    done: VecDeque<Vec<u8>>,
    reader: Option<u64>,
    /// Waiting for Ctrl-C.
    intr: Option<u64>,
}

impl Tty {
    /// One received byte through the line discipline.
    fn input(&mut self, b: u8) {
        match b {
            b'\r' | b'\n' => {
                write(b"\n");
                let l = core::mem::take(&mut self.line);
                self.done.push_back(l);
            }
            0x03 => {
                self.line.clear();
                write(b"^C\n");
                if let Some(r) = self.intr.take() {
                    let _ = ipc::reply(r, 0, &[]);
                }
            }
            0x08 | 0x7f => {
                if self.line.pop().is_some() {
                    write(b"\x08 \x08");
                }
            }
            b if (b' '..=b'~').contains(&b) && self.line.len() < LINE_MAX => {
                self.line.push(b);
                write(&[b]);
            }
            _ => {}
        }
    }

    /// Hands a finished line to a waiting reader.
    fn deliver(&mut self) {
        if let Some(r) = self.reader
            && let Some(l) = self.done.pop_front()
        {
            self.reader = None;
            let _ = ipc::reply(r, l.len() as u64, &l);
        }
    }
}

fn main(_arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("console");
    // A driver runs above the programs it serves (the process manager gives
    // it the ceiling for this): a program busy at normal priority on every
    // CPU does not stop the console.
    let _ = sys::set_priority(0, Priority::Realtime);
    let pm = Procman::connect().expect("no process manager");
    if let Err(e) = pm.io_grant() {
        println!("console: no I/O ports for COM1: {e}");
        return 1;
    }
    let chid = ipc::channel_create().expect("channel");
    let me = ipc::connect(0, chid).expect("self-connection");
    // Receive-data interrupts on (IER bit 0), as the kernel had them.
    outb(COM1 + 1, 0x01);
    sys::interrupt_attach(IRQ, me, u64::from(PULSE_IRQ)).expect("attach IRQ 4");
    // Bytes that came before the attachment.
    let _ = sys::interrupt_unmask(IRQ);
    pm.name_attach("console", chid).expect("name");
    thread::spawn(move || {
        let _ = sys::set_priority(0, Priority::Realtime);
        let mut buf = [0u8; 512];
        while let Ok(n) = sys::klog_read(&mut buf) {
            let op = CON_WRITE.to_le_bytes();
            if ipc::sendv(me, &[&op, &buf[..n]], &mut []).is_err() {
                return;
            }
        }
    })
    .expect("klog thread");
    let mut tty = Tty {
        line: Vec::new(),
        done: VecDeque::new(),
        reader: None,
        intr: None,
    };
    let mut buf = [0u8; 4096];
    loop {
        let m = match ipc::receive(chid, &mut buf) {
            Ok(m) => m,
            Err(e) => {
                println!("console: receive: {e}");
                return 1;
            }
        };
        match m {
            Received::Pulse(p) if p.code == u64::from(PULSE_IRQ) => {
                while inb(COM1 + 5) & 1 != 0 {
                    let b = inb(COM1);
                    tty.input(b);
                }
                let _ = sys::interrupt_unmask(IRQ);
                tty.deliver();
            }
            Received::Pulse(_) => {}
            Received::Msg(info) => {
                let n = (info.copied as usize).min(buf.len());
                let op = buf
                    .get(..8)
                    .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
                match op {
                    Some(CON_WRITE) if n >= 8 => {
                        write(&buf[8..n]);
                        // The rest of a long write, piece by piece.
                        let mut at = n as u64;
                        let mut more = [0u8; 1024];
                        while at < info.slen {
                            match ipc::read(info.rcvid, at, &mut more) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => {
                                    write(&more[..k as usize]);
                                    at += k;
                                }
                            }
                        }
                        let _ = ipc::reply(info.rcvid, info.slen - 8, &[]);
                    }
                    Some(CON_INTR) => {
                        // The newest waiter wins: an older one may be of a
                        // shell that ended (the kernel does not tell us).
                        if let Some(old) = tty.intr.replace(info.rcvid) {
                            let _ = ipc::error(old, Error::Busy);
                        }
                    }
                    Some(CON_READ) => {
                        if tty.reader.is_some() {
                            let _ = ipc::error(info.rcvid, Error::Busy);
                        } else {
                            tty.reader = Some(info.rcvid);
                            tty.deliver();
                        }
                    }
                    _ => {
                        let _ = ipc::error(info.rcvid, Error::Invalid);
                    }
                }
            }
        }
    }
}
