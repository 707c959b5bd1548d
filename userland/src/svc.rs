//! The system's servers and how to talk to them: the process manager
//! (`procman`) and the console (`console`), each a user process serving a
//! channel. Requests are messages that start with a little-endian `u64`
//! operation code; the reply's status is the answer.
//!
//! | server | op | request after the code | reply |
//! |---|---|---|---|
//! | procman | [`PM_SPAWN`] | name length `u64`, name, argument | status: pid |
//! | procman | [`PM_WAIT`] | pid `u64` | a [`WaitStatus`], once the child ended |
//! | procman | [`PM_KILL`] | pid `u64` | 0 |
//! | procman | [`PM_NAME_ATTACH`] | channel id `u64`, name | 0 |
//! | procman | [`PM_NAME_OPEN`] | wait `u64` (0/1), name | status: a connection id, given to the caller |
//! | procman | [`PM_IO_GRANT`] | — | 0 when the policy grants the caller its devices |
//! | console, screen | [`CON_WRITE`] | bytes | status: bytes written |
//! | console, screen | [`CON_READ`] | — | one line (without its end), status: its length |
//! | console, screen | [`CON_INTR`] | — | status 0 once Ctrl-C is typed |
//! | screen-input | [`CON_INPUT`] | bytes typed | status: bytes taken |
//! | power | [`PWR_OFF`], [`PWR_REBOOT`] | — | no reply when it works |
//! | usb*N* | [`USB_KBD_REPORT`] | — | slot `u64`, an 8-byte boot report |
//!
//! The process manager decides by the sender the kernel names, never by
//! what a request claims (its policy is in `bin/procman.rs`): a process
//! spawned through it is the requester's — charged to the requester's
//! account, waited for and killed by the requester only (and killed by the
//! operators, the shells it started); the system's drivers may be killed
//! by an operator (and are restarted), the shells and the process manager
//! itself by nobody; a name is served by the process that attached it,
//! and the system's names only by their services, some opened only by
//! some services (a terminal's input by keyboard drivers, the power server
//! by shells); `NAME_OPEN` answers with a connection to the server, which
//! the process manager gives the caller (`CONNECT_GIVE`), and with wait
//! blocks until the name appears. Parked requests (waits for a process or
//! a name) are bounded; past the bound a request fails with `Busy`.
//! Devices (ports, device memory, DMA) are granted to the drivers it
//! started, each its own (`PM_IO_GRANT`). The process manager's channel 0
//! is public: every process may attach to it.

use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, WaitStatus};

use crate::{ipc, sys};

pub const PM_SPAWN: u64 = 1;
pub const PM_WAIT: u64 = 2;
pub const PM_KILL: u64 = 3;
pub const PM_NAME_ATTACH: u64 = 4;
pub const PM_NAME_OPEN: u64 = 5;
pub const PM_IO_GRANT: u64 = 6;

pub const CON_WRITE: u64 = 1;
pub const CON_READ: u64 = 2;
/// Waits until Ctrl-C is typed on the console (one waiter; a second gets
/// `Busy`); the reply's status is 0.
pub const CON_INTR: u64 = 3;
/// Bytes typed on a keyboard (to a terminal's input name, which only
/// keyboard drivers may open): as a serial terminal would send them
/// (Enter `\r`, Backspace 0x7F, Ctrl-C 0x03, arrows `ESC [ A`…). Status:
/// bytes taken.
pub const CON_INPUT: u64 = 4;

/// The framebuffer terminal serves the console protocol under this name…
pub const SCREEN: &str = "screen";
/// …and takes keyboard input ([`CON_INPUT`]) under this one.
pub const SCREEN_INPUT: &str = "screen-input";

/// The power server (`power`): only the shell may open it.
pub const POWER: &str = "power";
/// Powers the machine off (ACPI S5); no reply when it works.
pub const PWR_OFF: u64 = 1;
/// Resets the machine; no reply when it works.
pub const PWR_REBOOT: u64 = 2;

/// An xHCI driver serves USB keyboard reports under `usb0`, `usb1`, …
/// (only the USB keyboard driver may open them).
pub const USB_PREFIX: &str = "usb";
/// Waits for the next HID boot-protocol keyboard report of any keyboard on
/// the controller. Reply: slot `u64`, then the 8-byte report; status 8.
pub const USB_KBD_REPORT: u64 = 1;

/// Longest console line.
pub const LINE_MAX: usize = 256;

/// A [`WaitStatus`] as `PM_WAIT` replies it: its five words, little-endian.
pub fn encode_status(st: &WaitStatus) -> [u8; 40] {
    let mut b = [0u8; 40];
    for (w, v) in b.as_chunks_mut::<8>().0.iter_mut().zip([
        st.kind,
        st.code as u64,
        st.vector,
        st.rip,
        st.addr,
    ]) {
        w.copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// The [`WaitStatus`] of a `PM_WAIT` reply ([`encode_status`]).
pub fn decode_status(b: &[u8; 40]) -> WaitStatus {
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    WaitStatus {
        kind: w(0),
        code: w(1) as i64,
        vector: w(2),
        rip: w(3),
        addr: w(4),
    }
}

/// A request: the code, then `parts`.
fn request(op: u64, parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + parts.iter().map(|p| p.len()).sum::<usize>());
    v.extend_from_slice(&op.to_le_bytes());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// A connection to the process manager.
pub struct Procman(u64);

impl Procman {
    /// Connects to the process manager of this boot.
    pub fn connect() -> Result<Procman, Error> {
        let pm = sys::info().procman;
        if pm == 0 {
            return Err(Error::NotFound);
        }
        ipc::connect(pm, 0).map(Procman)
    }

    /// Starts program `name` with `arg`; returns its pid.
    pub fn spawn(&self, name: &str, arg: &str) -> Result<u64, Error> {
        let len = (name.len() as u64).to_le_bytes();
        let m = request(PM_SPAWN, &[&len, name.as_bytes(), arg.as_bytes()]);
        ipc::send(self.0, &m, &mut [])
    }

    /// Waits for `pid` to end.
    pub fn wait(&self, pid: u64) -> Result<WaitStatus, Error> {
        let m = request(PM_WAIT, &[&pid.to_le_bytes()]);
        let mut r = [0u8; 40];
        ipc::send(self.0, &m, &mut r)?;
        Ok(decode_status(&r))
    }

    /// Ends `pid`.
    pub fn kill(&self, pid: u64) -> Result<u64, Error> {
        ipc::send(self.0, &request(PM_KILL, &[&pid.to_le_bytes()]), &mut [])
    }

    /// Serves `name` on channel `chid` of this process.
    pub fn name_attach(&self, name: &str, chid: u64) -> Result<u64, Error> {
        let m = request(PM_NAME_ATTACH, &[&chid.to_le_bytes(), name.as_bytes()]);
        ipc::send(self.0, &m, &mut [])
    }

    /// Connects to the server of `name` (waiting for it to appear if
    /// `wait`); returns the connection id.
    pub fn name_open(&self, name: &str, wait: bool) -> Result<u64, Error> {
        let m = request(
            PM_NAME_OPEN,
            &[&u64::from(wait).to_le_bytes(), name.as_bytes()],
        );
        // The reply's status is a connection the process manager gave us.
        ipc::send(self.0, &m, &mut [])
    }

    /// Asks for the I/O ports the policy gives this program.
    pub fn io_grant(&self) -> Result<u64, Error> {
        ipc::send(self.0, &request(PM_IO_GRANT, &[]), &mut [])
    }
}

/// A connection to a console server (`console`, `screen`), re-opened when
/// the server was restarted (a call that finds its server gone waits for
/// the new one and is tried once more).
pub struct Console {
    pm: u64,
    name: &'static str,
    coid: core::cell::Cell<u64>,
}

impl Console {
    /// Connects to COM1's console server (waiting for it).
    pub fn open(pm: &Procman) -> Result<Console, Error> {
        Self::open_named(pm, "console")
    }

    /// Connects to console server `name` (waiting for it).
    pub fn open_named(pm: &Procman, name: &'static str) -> Result<Console, Error> {
        let coid = pm.name_open(name, true)?;
        Ok(Console {
            pm: pm.0,
            name,
            coid: core::cell::Cell::new(coid),
        })
    }

    /// The server's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `f` on the connection; once more on a new one if the server is gone.
    fn call(&self, f: impl Fn(u64) -> Result<u64, Error>) -> Result<u64, Error> {
        match f(self.coid.get()) {
            Err(Error::Gone | Error::NotFound) => {
                self.reopen()?;
                f(self.coid.get())
            }
            r => r,
        }
    }

    /// Writes `bytes`.
    pub fn write(&self, bytes: &[u8]) -> Result<u64, Error> {
        let op = CON_WRITE.to_le_bytes();
        self.call(|c| ipc::sendv(c, &[&op, bytes], &mut []))
    }

    /// Reads one line into `buf`; returns its length. Not retried: a
    /// server that went away is `Gone`, and the caller, which may want to
    /// prompt again on the new one, calls [`Console::reopen`].
    pub fn read_line(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let op = CON_READ.to_le_bytes();
        ipc::send(self.coid.get(), &op, buf).map(|n| n as usize)
    }

    /// Connects to the server of the name again (waiting for it).
    pub fn reopen(&self) -> Result<(), Error> {
        let _ = ipc::disconnect(self.coid.get());
        let coid = Procman(self.pm).name_open(self.name, true)?;
        self.coid.set(coid);
        Ok(())
    }

    /// Waits until Ctrl-C is typed.
    pub fn wait_intr(&self) -> Result<u64, Error> {
        let op = CON_INTR.to_le_bytes();
        self.call(|c| ipc::send(c, &op, &mut []))
    }
}
