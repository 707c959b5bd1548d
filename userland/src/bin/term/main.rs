//! The framebuffer terminal: the boot framebuffer as a text screen, serving
//! the console protocol as `screen` and taking keyboard input as
//! `screen-input` (protocols in `wyvern_user::svc`).
//!
//! It asks the process manager for the framebuffer (the grant is made in
//! `io_grant`), maps it write-combining — from then on the kernel no
//! longer draws on it — and draws text as `screen::Screen` describes
//! (the exact layout, which the test harness reads, is in its docs).
//! A machine without a framebuffer gets one line and exit code 0.
//!
//! One thread owns the screen and the line discipline and serves `screen`:
//!
//! * `CON_WRITE`: the bytes are written (long messages piece by piece), then
//!   the screen is brought up to date; status: the bytes written.
//! * `CON_READ`: a finished line, at once or once one is typed (one reader
//!   at a time; a second gets `Busy`, unless the first has gone).
//! * `CON_INTR`: waits for the next Ctrl-C (one waiter: the newest; an
//!   older one gets `Busy`, as on the COM1 console).
//!
//! Two helper threads feed it through its own channel: one drains the
//! kernel log (`KLOG_READ`) into `CON_WRITE`s, so the kernel's lines and
//! every program's `DEBUG_WRITE` appear on the screen; the other serves
//! `screen-input`, a channel of its own (so that a client of `screen`
//! cannot type), and passes each `CON_INPUT` on as a `CON_INPUT` to the
//! main channel, which takes that only from this process.
//!
//! The line discipline, as the COM1 console's: printable bytes are echoed
//! and kept (up to `LINE_MAX`), backspace (0x08) and DEL (0x7F) erase one,
//! `\r` or `\n` ends the line (echoed as a new line; a `\n` right after
//! `\r` is the same end), Ctrl-C (0x03) drops the line being typed, echoes
//! `^C` and a new line, and answers a waiting `CON_INTR`. Escape sequences
//! typed (arrows, Home, …: `ESC [ … final`, `ESC O x`) are dropped, and so
//! is a lone ESC before another key (Alt-x types x); the parser starts
//! afresh with each `CON_INPUT` message, since a keyboard driver sends
//! each key's bytes in one. At most [`PENDING_LINES`] finished lines wait
//! for a reader; more are dropped.
#![no_std]
#![no_main]

extern crate alloc;

mod screen;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use screen::Screen;
use wyvern_abi::syscall::{Error, Priority, devmap};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{
    CON_INPUT, CON_INTR, CON_READ, CON_WRITE, LINE_MAX, Procman, SCREEN, SCREEN_INPUT,
};
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

/// Finished lines waiting for a reader at most.
const PENDING_LINES: usize = 16;
/// Bytes of one `CON_INPUT` taken at most (the rest is ignored).
const INPUT_MAX: usize = 1024;
/// Bytes of a typed escape sequence at most before it is abandoned.
const SEQ_MAX: u8 = 16;

/// Where the parser of typed escape sequences is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seq {
    None,
    /// After ESC.
    Esc,
    /// In `ESC [`, after this many bytes.
    Csi(u8),
    /// After `ESC O`: one more byte.
    Ss3,
}

struct Tty {
    line: Vec<u8>,
    done: VecDeque<Vec<u8>>,
    /// The `CON_READ` and `CON_INTR` waiting.
    reader: Option<u64>,
    intr: Option<u64>,
    esc: Seq,
    /// The last byte was `\r`.
    after_cr: bool,
    dropped_lines: u64,
}

impl Tty {
    fn new() -> Self {
        Tty {
            line: Vec::with_capacity(LINE_MAX),
            done: VecDeque::new(),
            reader: None,
            intr: None,
            esc: Seq::None,
            after_cr: false,
            dropped_lines: 0,
        }
    }

    /// One typed byte through the escape parser and the line discipline.
    fn input(&mut self, b: u8, scr: &mut Screen) {
        match self.esc {
            Seq::None => {}
            Seq::Esc => {
                self.esc = match b {
                    b'[' => Seq::Csi(0),
                    b'O' => Seq::Ss3,
                    _ => Seq::None,
                };
                if self.esc != Seq::None {
                    return;
                }
            }
            Seq::Csi(n) => match b {
                0x40..=0x7e => {
                    self.esc = Seq::None;
                    return;
                }
                0x20..=0x3f if n < SEQ_MAX => {
                    self.esc = Seq::Csi(n + 1);
                    return;
                }
                _ => self.esc = Seq::None,
            },
            Seq::Ss3 => {
                self.esc = Seq::None;
                return;
            }
        }
        let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
        match b {
            b'\n' if after_cr => {}
            b'\r' | b'\n' => {
                scr.write(b"\n");
                let l = core::mem::replace(&mut self.line, Vec::with_capacity(LINE_MAX));
                if self.done.len() < PENDING_LINES {
                    self.done.push_back(l);
                } else {
                    self.dropped_lines += 1;
                    if self.dropped_lines <= 4 {
                        println!("term: nobody reads; a typed line is dropped");
                    }
                }
            }
            0x08 | 0x7f => {
                if self.line.pop().is_some() {
                    scr.erase_back();
                }
            }
            0x03 => {
                self.line.clear();
                scr.write(b"^C\n");
                if let Some(r) = self.intr.take() {
                    let _ = ipc::reply(r, 0, &[]);
                }
            }
            0x1b => self.esc = Seq::Esc,
            b' '..=b'~' if self.line.len() < LINE_MAX => {
                self.line.push(b);
                scr.write(&[b]);
            }
            _ => {}
        }
    }

    /// The end of one keyboard message: no sequence spans two.
    fn end_of_input(&mut self) {
        self.esc = Seq::None;
    }

    /// Hands a finished line to a waiting reader (kept for the next reader
    /// if this one has gone).
    fn deliver(&mut self) {
        if let Some(r) = self.reader
            && let Some(l) = self.done.pop_front()
        {
            self.reader = None;
            if ipc::reply(r, l.len() as u64, &l).is_err() {
                self.done.push_front(l);
            }
        }
    }
}

/// Whether the sender of `rcvid` still waits for its reply.
fn waiting(rcvid: u64) -> bool {
    ipc::read(rcvid, 0, &mut []).is_ok()
}

/// Makes `rcvid` the reader unless a live one is (`Busy` then).
fn park_reader(tty: &mut Tty, rcvid: u64) -> bool {
    if let Some(old) = tty.reader
        && waiting(old)
    {
        let _ = ipc::error(rcvid, Error::Busy);
        return false;
    }
    tty.reader = Some(rcvid);
    true
}

/// The kernel log thread: its bytes as `CON_WRITE`s to the main channel.
fn klog(me: u64) {
    let _ = sys::set_priority(0, Priority::Realtime);
    let mut buf = [0u8; 512];
    while let Ok(n) = sys::klog_read(&mut buf) {
        let op = CON_WRITE.to_le_bytes();
        if ipc::sendv(me, &[&op, &buf[..n]], &mut []).is_err() {
            return;
        }
    }
}

/// The `screen-input` thread: each `CON_INPUT` passed on to the main
/// channel; status: the bytes taken.
fn keyboard_input(in_chid: u64, me: u64) {
    let _ = sys::set_priority(0, Priority::Realtime);
    let mut buf = [0u8; 8 + INPUT_MAX];
    loop {
        let info = match ipc::receive(in_chid, &mut buf) {
            Ok(Received::Msg(info)) => info,
            Ok(Received::Pulse(_)) => continue,
            Err(e) => {
                println!("term: {SCREEN_INPUT}: receive: {e}");
                return;
            }
        };
        let n = (info.copied as usize).min(buf.len());
        if n < 8 || buf[..8] != CON_INPUT.to_le_bytes() {
            let _ = ipc::error(info.rcvid, Error::Invalid);
            continue;
        }
        let op = CON_INPUT.to_le_bytes();
        match ipc::sendv(me, &[&op, &buf[8..n]], &mut []) {
            Ok(k) => {
                let _ = ipc::reply(info.rcvid, k, &[]);
            }
            Err(e) => {
                let _ = ipc::error(info.rcvid, e);
            }
        }
    }
}

/// Maps the framebuffer and clears it; `Err(code)` to exit with.
fn open_screen(pm: &Procman) -> Result<Screen, i64> {
    let grant = pm.io_grant();
    let info = match sys::fb_info() {
        Ok(i) if i.phys != 0 && i.size != 0 => i,
        _ => {
            println!("term: no framebuffer; nothing to do");
            return Err(0);
        }
    };
    if let Err(e) = grant {
        println!("term: the framebuffer is not granted: {e}");
        return Err(1);
    }
    let va = match sys::map_device(info.phys, info.size, devmap::WRITE_COMBINE) {
        Ok(va) => va,
        Err(e) => {
            println!("term: cannot map the framebuffer: {e}");
            return Err(1);
        }
    };
    let Ok(len) = usize::try_from(info.size) else {
        return Err(1);
    };
    // Nothing unmaps the mapping, and nothing else of this process touches it.
    // SAFETY: `map_device` mapped `info.size` bytes at `va` (non-null) for
    // good; this is the only reference to them.
    let fb: &'static mut [u8] = unsafe { core::slice::from_raw_parts_mut(va as *mut u8, len) };
    match Screen::new(fb, &info) {
        Ok(s) => {
            println!(
                "term: framebuffer {}x{}, {} columns, {} rows",
                info.width, info.height, s.cols, s.rows
            );
            Ok(s)
        }
        Err(why) => {
            println!("term: unusable framebuffer: {why}");
            Err(0)
        }
    }
}

fn main(_arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("term");
    let pm = match Procman::connect() {
        Ok(pm) => pm,
        Err(e) => {
            println!("term: no process manager: {e}");
            return 1;
        }
    };
    let mut scr = match open_screen(&pm) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _ = sys::set_priority(0, Priority::Realtime);
    let (Ok(chid), Ok(in_chid)) = (ipc::channel_create(), ipc::channel_create()) else {
        println!("term: no channels");
        return 1;
    };
    let Ok(me) = ipc::connect(0, chid) else {
        println!("term: no self-connection");
        return 1;
    };
    let my_pid = sys::info().pid;
    // What the kernel said before we came, drawn before anybody else can
    // write: the boot log first, then the shell's prompt under it.
    let mut backlog = [0u8; 1024];
    while let Ok(n) = sys::klog_read_now(&mut backlog) {
        if n == 0 {
            break;
        }
        scr.write(&backlog[..n]);
    }
    scr.flush();
    if let Err(e) = thread::spawn(move || klog(me)) {
        println!("term: no kernel log thread: {e}");
        return 1;
    }
    if let Err(e) = thread::spawn(move || keyboard_input(in_chid, me)) {
        println!("term: no input thread: {e}");
        return 1;
    }
    for (name, c) in [(SCREEN, chid), (SCREEN_INPUT, in_chid)] {
        if let Err(e) = pm.name_attach(name, c) {
            println!("term: cannot serve {name}: {e}");
            return 1;
        }
    }
    let mut tty = Tty::new();
    let mut buf = [0u8; 4096];
    let mut more = [0u8; 1024];
    loop {
        let info = match ipc::receive(chid, &mut buf) {
            Ok(Received::Msg(info)) => info,
            Ok(Received::Pulse(_)) => continue,
            Err(e) => {
                println!("term: receive: {e}");
                return 1;
            }
        };
        let n = (info.copied as usize).min(buf.len());
        let op = buf
            .get(..8)
            .filter(|_| n >= 8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        match op {
            Some(CON_WRITE) => {
                scr.write(&buf[8..n]);
                // The rest of a long write, piece by piece.
                let mut at = n as u64;
                while at < info.slen {
                    match ipc::read(info.rcvid, at, &mut more) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            scr.write(&more[..k as usize]);
                            at += k;
                        }
                    }
                }
                scr.flush();
                let _ = ipc::reply(info.rcvid, at - 8, &[]);
            }
            Some(CON_INPUT) if info.pid == my_pid => {
                for &b in &buf[8..n] {
                    tty.input(b, &mut scr);
                }
                tty.end_of_input();
                scr.flush();
                tty.deliver();
                let _ = ipc::reply(info.rcvid, (n - 8) as u64, &[]);
            }
            Some(CON_READ) => {
                if park_reader(&mut tty, info.rcvid) {
                    tty.deliver();
                }
            }
            Some(CON_INTR) => {
                // The newest waiter wins, as on the COM1 console: an older
                // one may be of a shell that ended.
                if let Some(old) = tty.intr.replace(info.rcvid) {
                    let _ = ipc::error(old, Error::Busy);
                }
            }
            Some(CON_INPUT) => {
                let _ = ipc::error(info.rcvid, Error::Denied);
            }
            _ => {
                let _ = ipc::error(info.rcvid, Error::Invalid);
            }
        }
    }
}
