//! The process manager: the first process of an interactive boot, serving
//! its public channel 0 with the protocol of `wyvern_user::svc` — spawn,
//! wait, kill, name registration and lookup, I/O-port grants by policy.
//!
//! Argument: the system's services to start, in order, from these words:
//!
//! | word | starts |
//! |---|---|
//! | `console` | COM1's driver (`console`) |
//! | `shell` | a shell on COM1 |
//! | `screen` | the framebuffer terminal (`term`) and a shell on it, if the machine has a framebuffer |
//! | `keyboard` | the i8042 keyboard driver (`ps2kbd`; it ends at once, successfully, without an 8042) |
//! | `usb` | an xHCI driver (`xhci`) for every xHCI controller found on PCI, and the USB keyboard driver (`usbkbd`) |
//! | `power` | the power server (`power`: reboot and power-off through ACPI) |
//!
//! When a shell ends successfully (`quit`), the process manager ends every
//! child it still has and exits 0 (the kernel then ends the run).
//!
//! # Restarting drivers
//!
//! A service that ends unsuccessfully (killed, faulted, a non-zero exit)
//! is logged and started again; one that ends successfully said it has
//! nothing to do (no device) and stays ended. A service restarted
//! [`MAX_RESTARTS`] times within [`RESTART_WINDOW_NS`] is given up on
//! (logged): a driver that dies at once on every start does not keep a CPU
//! busy. Clients find the new instance under the same name (`svc::Console`
//! re-opens it).
//!
//! # Policy: who may ask for what
//!
//! Every request is judged by the sender the kernel names (`MsgInfo::pid`),
//! never by what the request says:
//!
//! - **Spawn**: anyone. The child is the requester's: it is charged to the
//!   requester's account (`SpawnOpts::charge_to`), gets no rights and a
//!   normal priority ceiling, and a requester may have at most
//!   [`MAX_SPAWNED`] such processes alive.
//! - **Wait**: only the requester of the spawn, at most [`MAX_WAITERS`] at
//!   once per process; the status is taken by the first wait after the end.
//! - **Kill**: the requester of the spawn; and the operators (the shells
//!   this process started) any process but the system's services — which
//!   includes orphans the kernel re-parented here; and the operators a
//!   driver (a service but a shell), which is then restarted. The shells
//!   and the process manager are killed by nobody.
//! - **Names**: the system's names ([`RESERVED_NAMES`]: `console`,
//!   `screen`, `screen-input`, `power`, `usb*`) may be attached only by the
//!   service they belong to; any other name by anyone, once. Some may be
//!   opened only by certain services ([`OPEN_POLICY`]): a terminal's input
//!   only by keyboard drivers (else any program could type into the
//!   operator's shell), the power server only by shells, a USB
//!   controller's keyboard reports only by the USB keyboard driver. Opening
//!   a name gives the caller a connection ([`ipc::connect_give`]); at most
//!   [`MAX_NAME_WAITERS`] opens may wait for names at once.
//! - **Devices** (`IO_GRANT` request): only services, each what its
//!   program drives: COM1's ports to `console`; ports 0x60/0x64 to
//!   `ps2kbd`; the framebuffer to `term`; the PM1 control ports, the reset
//!   register, 0xCF9, the 8042 and the DSDT (read-only) to `power`; to each
//!   `xhci` its controller's configuration page and memory BARs — and DMA
//!   (`rights::DMA`, given at spawn). **No IOMMU is programmed: a driver
//!   with DMA can reach all memory, so DMA is given to the xHCI driver
//!   alone, as full trust.**
//! - **The end of the run**: only a pulse from this process itself (its
//!   reaper) ends it.
//!
//! # Threads
//!
//! The main thread serves requests and never blocks on anything but
//! `MSG_RECEIVE`. One reaper thread waits for any child (`WAIT` of pid 0)
//! — those this process spawned and those re-parented to it — records each
//! status and answers the waits parked for it: no thread per child, so a
//! million spawns leave nothing behind.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use alloc::format;
use wyvern_abi::syscall::{Error, Limits, Priority, SpawnOpts, WaitStatus, chan, devmap, rights};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{
    PM_IO_GRANT, PM_KILL, PM_NAME_ATTACH, PM_NAME_OPEN, PM_SPAWN, PM_WAIT, encode_status,
};
use wyvern_user::sync::SpinLock;
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

/// Pulse code: a shell quit (sent by our own reaper).
const PULSE_DONE: u32 = 1;

/// The system's services: what program each runs with which argument,
/// with which rights, limits (memory as a fraction of ours: numerator,
/// denominator) — and whether it is a shell (an operator).
const SERVICES: [Service; 7] = [
    Service {
        key: "console",
        program: "console",
        arg: "",
        rights: 0,
        memory: (1, 16),
        processes: 1,
        threads: 8,
    },
    Service {
        key: "shell",
        program: "shell",
        arg: "console",
        rights: rights::OBSERVE,
        memory: (1, 2),
        processes: 64,
        threads: 256,
    },
    Service {
        key: "term",
        program: "term",
        arg: "",
        rights: 0,
        memory: (1, 16),
        processes: 1,
        threads: 8,
    },
    Service {
        key: "shell-screen",
        program: "shell",
        arg: "screen",
        rights: rights::OBSERVE,
        memory: (1, 2),
        processes: 64,
        threads: 256,
    },
    Service {
        key: "ps2kbd",
        program: "ps2kbd",
        arg: "",
        rights: 0,
        memory: (1, 64),
        processes: 1,
        threads: 4,
    },
    Service {
        key: "xhci",
        program: "xhci",
        arg: "",
        rights: rights::DMA,
        memory: (1, 16),
        processes: 1,
        threads: 8,
    },
    Service {
        key: "usbkbd",
        program: "usbkbd",
        arg: "",
        rights: 0,
        memory: (1, 64),
        processes: 1,
        threads: 16,
    },
];

/// The power server (started by the `power` word).
const POWER_SERVICE: Service = Service {
    key: "power",
    program: "power",
    arg: "",
    rights: 0,
    memory: (1, 16),
    processes: 1,
    threads: 4,
};

struct Service {
    /// How this process knows it.
    key: &'static str,
    program: &'static str,
    arg: &'static str,
    rights: u64,
    memory: (u64, u64),
    processes: u64,
    threads: u64,
}

fn service(key: &str) -> Option<&'static Service> {
    SERVICES
        .iter()
        .chain(core::iter::once(&POWER_SERVICE))
        .find(|s| s.key == key)
}

/// Names only a service's own process may attach: (name, or prefix ending
/// in `*`; the service key).
const RESERVED_NAMES: [(&str, &str); 5] = [
    ("console", "console"),
    ("screen", "term"),
    ("screen-input", "term"),
    ("power", "power"),
    ("usb*", "xhci"),
];

/// Names only some services may open: (name or prefix; service keys).
const OPEN_POLICY: [(&str, &[&str]); 3] = [
    ("screen-input", &["ps2kbd", "usbkbd"]),
    ("power", &["shell", "shell-screen"]),
    ("usb*", &["usbkbd"]),
];

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Restarts of one service within [`RESTART_WINDOW_NS`] before it is
/// given up on.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW_NS: u64 = 30_000_000_000;

/// What a service may be granted (`IO_GRANT`).
#[derive(Clone, Copy)]
enum Grant {
    /// I/O ports `[first, first + count)`.
    Ports(u64, u64),
    /// Device memory `[phys, phys + len)`, with `devmap` flags.
    Memory(u64, u64, u64),
}

/// Processes a requester may have alive through us at once.
const MAX_SPAWNED: usize = 32;
/// Waits parked for one process at once.
const MAX_WAITERS: usize = 4;
/// Opens parked waiting for names at once.
const MAX_NAME_WAITERS: usize = 32;
/// Processes whose status nobody took, kept for a later wait; the oldest go
/// first beyond this.
const MAX_ENDED: usize = 256;

struct Child {
    /// Who asked for it (0: we started it as a service).
    owner: u64,
    /// The key of the service it is, if it is one.
    service: Option<&'static str>,
    /// The service's argument (restarts use it again).
    arg: String,
    /// What `IO_GRANT` gives it.
    grants: Vec<Grant>,
    status: Option<WaitStatus>,
    waiters: Vec<u64>,
}

struct State {
    children: BTreeMap<u64, Child>,
    /// Name → (server pid, our connection to it).
    names: BTreeMap<String, (u64, u64)>,
    /// Receive ids waiting for a name to appear.
    name_waiters: Vec<(String, u64)>,
    /// The operators: the shells we started.
    operators: Vec<u64>,
    /// Recent restarts: (service key and argument, time).
    restarts: Vec<(String, u64)>,
    /// Ends of processes not (yet) in `children`: orphans the kernel gave
    /// us, and children whose end the reaper saw before `spawn_for`
    /// recorded them. At most [`MAX_ENDED`]; the oldest go first.
    unclaimed: BTreeMap<u64, WaitStatus>,
}

static STATE: SpinLock<State> = SpinLock::new(State {
    children: BTreeMap::new(),
    names: BTreeMap::new(),
    name_waiters: Vec::new(),
    operators: Vec::new(),
    restarts: Vec::new(),
    unclaimed: BTreeMap::new(),
});

/// Our own pid and a connection to our own channel (for the reaper's pulse).
static SELF: SpinLock<(u64, u64)> = SpinLock::new((0, 0));

fn word(b: &[u8], i: usize) -> Option<u64> {
    b.get(i * 8..i * 8 + 8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
}

/// Starts service `s` with `arg` (its own when empty) and `grants`.
fn start_service(s: &'static Service, arg: &str, grants: Vec<Grant>) -> Result<u64, Error> {
    let mine = sys::account()?;
    let opts = SpawnOpts {
        limits: Limits {
            memory: mine.limits.memory / s.memory.1 * s.memory.0,
            processes: s.processes,
            threads: s.threads,
            channels: 64,
            connections: 256,
        },
        rights: s.rights,
        ceiling: Priority::Realtime as u64,
        charge_to: 0,
    };
    let arg = if arg.is_empty() { s.arg } else { arg };
    let pid = sys::spawn_with(s.program, arg, &opts)?;
    let mut st = STATE.lock();
    if s.program == "shell" {
        st.operators.push(pid);
    }
    let status = st.unclaimed.remove(&pid);
    st.children.insert(
        pid,
        Child {
            owner: 0,
            service: Some(s.key),
            arg: String::from(arg),
            grants,
            status,
            waiters: Vec::new(),
        },
    );
    Ok(pid)
}

/// Service `c` (pid `pid`) ended with `st`: start it again unless it
/// ended successfully or keeps dying. Returns whether the run should end
/// (a shell quit).
fn service_ended(
    pid: u64,
    key: &'static str,
    arg: String,
    grants: Vec<Grant>,
    st: &WaitStatus,
) -> bool {
    let Some(s) = service(key) else {
        return false;
    };
    if st.kind == WaitStatus::EXITED && st.code == 0 {
        if s.program == "shell" {
            return true;
        }
        println!("procman: {key} (pid {pid}) ended: nothing to do");
        return false;
    }
    let now = sys::clock_ns();
    let id = format!("{key} {arg}");
    let recent = {
        let mut g = STATE.lock();
        g.restarts
            .retain(|(_, t)| now.saturating_sub(*t) < RESTART_WINDOW_NS);
        let n = g.restarts.iter().filter(|(k, _)| *k == id).count();
        if n < MAX_RESTARTS {
            g.restarts.push((id.clone(), now));
        }
        n
    };
    let how = wyvern_user::process::describe(st);
    if recent >= MAX_RESTARTS {
        println!("procman: {key} (pid {pid}) {how}; restarted {recent} times in 30 s, giving up");
        return false;
    }
    match start_service(s, &arg, grants) {
        Ok(new) => println!("procman: {key} (pid {pid}) {how}; restarted as pid {new}"),
        Err(e) => println!("procman: {key} (pid {pid}) {how}; cannot restart: {e}"),
    }
    false
}

/// Starts `name arg` for `owner`, charged to `owner`'s account.
fn spawn_for(owner: u64, name: &str, arg: &str) -> Result<u64, Error> {
    {
        let s = STATE.lock();
        let alive = s
            .children
            .values()
            .filter(|c| c.owner == owner && c.status.is_none())
            .count();
        if alive >= MAX_SPAWNED {
            return Err(Error::Limit);
        }
    }
    let opts = SpawnOpts {
        limits: Limits::default(),
        rights: 0,
        ceiling: Priority::Normal as u64,
        charge_to: owner,
    };
    let pid = sys::spawn_with(name, arg, &opts)?;
    let mut s = STATE.lock();
    // The child may have ended already (the reaper saw it first).
    let status = s.unclaimed.remove(&pid);
    s.children.insert(
        pid,
        Child {
            owner,
            service: None,
            arg: String::new(),
            grants: Vec::new(),
            status,
            waiters: Vec::new(),
        },
    );
    Ok(pid)
}

/// The reaper: every child's end, recorded and answered.
fn reaper() {
    // As the main thread: it shares `STATE` with it, and a holder below the
    // waiter's priority would never run on the waiter's CPU.
    let _ = sys::set_priority(0, Priority::Realtime);
    loop {
        let (pid, st) = match sys::wait_any() {
            Ok(r) => r,
            Err(Error::NotFound) => {
                // No child at the moment: look again soon.
                let _ = sys::sleep_ns(50_000_000);
                continue;
            }
            Err(e) => {
                println!("procman: wait: {e}");
                let _ = sys::sleep_ns(50_000_000);
                continue;
            }
        };
        let (waiters, ended_service) = {
            let mut s = STATE.lock();
            s.operators.retain(|&p| p != pid);
            s.names.retain(|_, v| {
                if v.0 == pid {
                    let _ = ipc::disconnect(v.1);
                    false
                } else {
                    true
                }
            });
            let mut ended_service = None;
            let waiters = match s.children.get_mut(&pid) {
                Some(c) => {
                    c.status = Some(st);
                    if let Some(key) = c.service {
                        ended_service = Some((
                            key,
                            core::mem::take(&mut c.arg),
                            core::mem::take(&mut c.grants),
                        ));
                    }
                    let w = core::mem::take(&mut c.waiters);
                    if !w.is_empty() {
                        // The first parked wait takes the status.
                        s.children.remove(&pid);
                    }
                    w
                }
                None => {
                    // An orphan, or a child `spawn_for` has not recorded yet.
                    s.unclaimed.insert(pid, st);
                    while s.unclaimed.len() > MAX_ENDED {
                        s.unclaimed.pop_first();
                    }
                    Vec::new()
                }
            };
            // Bound what nobody asked for: the oldest ended go first.
            while s.children.values().filter(|c| c.status.is_some()).count() > MAX_ENDED {
                let oldest = s
                    .children
                    .iter()
                    .find(|(_, c)| c.status.is_some())
                    .map(|(p, _)| *p);
                match oldest {
                    Some(p) => s.children.remove(&p),
                    None => break,
                };
            }
            (waiters, ended_service)
        };
        for r in waiters {
            let _ = ipc::reply(r, 0, &encode_status(&st));
        }
        let quit = match ended_service {
            Some((key, arg, grants)) => service_ended(pid, key, arg, grants, &st),
            None => false,
        };
        if quit {
            let me = SELF.lock().1;
            let _ = ipc::pulse(me, PULSE_DONE, pid);
        }
    }
}

/// Serves one request from `info.pid`; `Some(status)` replies now, `None`
/// later (or already).
fn serve(info: &wyvern_abi::syscall::MsgInfo, msg: &[u8]) -> Option<Result<u64, Error>> {
    let from = info.pid;
    let Some(op) = word(msg, 0) else {
        return Some(Err(Error::Invalid));
    };
    let text = |at: usize| core::str::from_utf8(msg.get(at..).unwrap_or(&[])).ok();
    Some(match op {
        PM_SPAWN => {
            let Some(len) = word(msg, 1) else {
                return Some(Err(Error::Invalid));
            };
            let len = len.min(msg.len() as u64) as usize;
            let (Some(name), Some(arg)) = (
                msg.get(16..16 + len)
                    .and_then(|n| core::str::from_utf8(n).ok()),
                msg.get(16 + len..)
                    .and_then(|a| core::str::from_utf8(a).ok()),
            ) else {
                return Some(Err(Error::Invalid));
            };
            spawn_for(from, name, arg)
        }
        PM_WAIT => {
            let Some(pid) = word(msg, 1) else {
                return Some(Err(Error::Invalid));
            };
            let mut s = STATE.lock();
            let Some(c) = s.children.get_mut(&pid).filter(|c| c.owner == from) else {
                // Not the requester's: as if it did not exist.
                return Some(Err(Error::NotFound));
            };
            match c.status {
                Some(st) => {
                    s.children.remove(&pid);
                    drop(s);
                    let _ = ipc::reply(info.rcvid, 0, &encode_status(&st));
                    return None;
                }
                None if c.waiters.len() >= MAX_WAITERS => Err(Error::Busy),
                None => {
                    c.waiters.push(info.rcvid);
                    return None;
                }
            }
        }
        PM_KILL => {
            let Some(pid) = word(msg, 1) else {
                return Some(Err(Error::Invalid));
            };
            let (allowed, known) = {
                let s = STATE.lock();
                match s.children.get(&pid) {
                    Some(c) if c.status.is_some() => (false, false),
                    Some(c) => (
                        match c.service {
                            None => c.owner == from || s.operators.contains(&from),
                            // A driver, which the operator may restart
                            // this way; never a shell.
                            Some(k) => s.operators.contains(&from) && !k.starts_with("shell"),
                        },
                        true,
                    ),
                    // Not ours by spawn: an orphan the kernel gave us, which
                    // an operator may end.
                    None => (s.operators.contains(&from), false),
                }
            };
            match (allowed, known) {
                (true, _) => sys::kill(pid),
                (false, true) => Err(Error::Denied),
                (false, false) => Err(Error::NotFound),
            }
        }
        PM_NAME_ATTACH => {
            let (Some(chid), Some(name)) = (word(msg, 1), text(16)) else {
                return Some(Err(Error::Invalid));
            };
            if name.is_empty() || name.len() > 64 {
                return Some(Err(Error::Invalid));
            }
            let owner = RESERVED_NAMES
                .iter()
                .find(|(n, _)| name_matches(n, name))
                .map(|(_, k)| *k);
            {
                let s = STATE.lock();
                if let Some(key) = owner
                    && !s
                        .children
                        .get(&from)
                        .is_some_and(|c| c.status.is_none() && c.service == Some(key))
                {
                    return Some(Err(Error::Denied));
                }
                if s.names.contains_key(name) {
                    return Some(Err(Error::Busy));
                }
            }
            // A connection of ours to the server, to give to its clients.
            let coid = match ipc::connect(from, chid) {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            let waiting: Vec<u64> = {
                let mut s = STATE.lock();
                if s.names.contains_key(name) {
                    drop(s);
                    let _ = ipc::disconnect(coid);
                    return Some(Err(Error::Busy));
                }
                s.names.insert(String::from(name), (from, coid));
                let (now, later) = core::mem::take(&mut s.name_waiters)
                    .into_iter()
                    .partition(|(n, _)| n == name);
                s.name_waiters = later;
                now.into_iter().map(|(_, r)| r).collect()
            };
            for r in waiting {
                match ipc::connect_give(coid, r) {
                    Ok(c) => {
                        let _ = ipc::reply(r, c, &[]);
                    }
                    Err(e) => {
                        let _ = ipc::error(r, e);
                    }
                }
            }
            Ok(0)
        }
        PM_NAME_OPEN => {
            let (Some(wait), Some(name)) = (word(msg, 1), text(16)) else {
                return Some(Err(Error::Invalid));
            };
            let mut s = STATE.lock();
            if let Some((_, keys)) = OPEN_POLICY.iter().find(|(n, _)| name_matches(n, name)) {
                let key = s.children.get(&from).and_then(|c| c.service);
                if !key.is_some_and(|k| keys.contains(&k)) {
                    return Some(Err(Error::Denied));
                }
            }
            match s.names.get(name) {
                Some(&(_, coid)) => {
                    drop(s);
                    ipc::connect_give(coid, info.rcvid)
                }
                None if wait != 0 => {
                    if s.name_waiters.len() >= MAX_NAME_WAITERS || name.len() > 64 {
                        return Some(Err(Error::Busy));
                    }
                    s.name_waiters.push((String::from(name), info.rcvid));
                    return None;
                }
                None => Err(Error::NotFound),
            }
        }
        PM_IO_GRANT => {
            let grants = STATE
                .lock()
                .children
                .get(&from)
                .filter(|c| c.service.is_some() && c.status.is_none())
                .map(|c| c.grants.clone());
            match grants {
                Some(g) if !g.is_empty() => apply_grants(from, &g),
                _ => Err(Error::Denied),
            }
        }
        _ => Err(Error::Invalid),
    })
}

/// Grants `g` to `pid`.
fn apply_grants(pid: u64, g: &[Grant]) -> Result<u64, Error> {
    for g in g {
        match *g {
            Grant::Ports(first, count) => sys::io_grant(pid, first, count)?,
            Grant::Memory(phys, len, flags) => sys::device_grant(pid, phys, len, flags)?,
        };
    }
    Ok(0)
}

/// What the power server needs: the PM1 control ports, the reset register,
/// 0xCF9, the 8042, the SMI command port, the DSDT read-only.
fn power_grants() -> Vec<Grant> {
    let mut g = Vec::new();
    let Ok(a) = sys::acpi_info() else {
        return g;
    };
    for port in [a.pm1a_cnt, a.pm1b_cnt] {
        if port != 0 {
            g.push(Grant::Ports(port, 2));
        }
    }
    match a.reset_space {
        1 if a.reset_addr != 0 => g.push(Grant::Ports(a.reset_addr, 1)),
        0 if a.reset_addr != 0 => g.push(Grant::Memory(a.reset_addr, 1, 0)),
        _ => {}
    }
    if a.smi_cmd != 0 {
        g.push(Grant::Ports(a.smi_cmd, 1));
    }
    g.push(Grant::Ports(0xcf9, 1));
    g.push(Grant::Ports(0x60, 1));
    g.push(Grant::Ports(0x64, 1));
    if a.dsdt_phys != 0 && a.dsdt_len != 0 {
        g.push(Grant::Memory(a.dsdt_phys, a.dsdt_len, devmap::READ_ONLY));
    }
    g
}

/// An xHCI controller PCI enumeration found.
struct Xhci {
    /// Physical address of its configuration page.
    cfg: u64,
    /// Its memory BARs: (address, size).
    bars: Vec<(u64, u64)>,
}

/// The xHCI controllers of PCI segment 0 (ECAM from ACPI's MCFG): every
/// bus the MCFG covers that a bridge leads to, starting at its first bus.
/// Each function's memory BARs are sized here (decoding off meanwhile), so
/// the driver is granted exactly them.
fn find_xhci() -> Vec<Xhci> {
    let mut found = Vec::new();
    let Ok(a) = sys::acpi_info() else {
        return found;
    };
    if a.ecam_base == 0 {
        println!("procman: no PCI Express configuration space (MCFG); no USB");
        return found;
    }
    let me = sys::info().pid;
    let buses = a.ecam_bus_end.saturating_sub(a.ecam_bus_start) + 1;
    if sys::device_grant(me, a.ecam_base, buses << 20, 0).is_err() {
        println!("procman: PCI configuration space refused; no USB");
        return found;
    }
    let mut todo = alloc::collections::VecDeque::from([a.ecam_bus_start]);
    let mut seen = Vec::new();
    while let Some(bus) = todo.pop_front() {
        if seen.contains(&bus) || bus < a.ecam_bus_start || bus > a.ecam_bus_end {
            continue;
        }
        seen.push(bus);
        let phys = a.ecam_base + ((bus - a.ecam_bus_start) << 20);
        let Ok(va) = sys::map_device(phys, 1 << 20, 0) else {
            continue;
        };
        for dev in 0..32u64 {
            for func in 0..8u64 {
                let off = (dev << 15) | (func << 12);
                let cfg = Config(va + off);
                let id = cfg.read(0);
                if id & 0xffff == 0xffff {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                let class = cfg.read(8) >> 8;
                let header = (cfg.read(0xc) >> 16) & 0x7f;
                if header == 1 {
                    // A bridge: its secondary bus.
                    todo.push_back(u64::from((cfg.read(0x18) >> 8) & 0xff));
                } else if class == 0x0c_03_30 {
                    found.push(Xhci {
                        cfg: phys + off,
                        bars: cfg.memory_bars(),
                    });
                }
                // Function 0 says whether there are others.
                if func == 0 && (cfg.read(0xc) >> 16) & 0x80 == 0 {
                    break;
                }
            }
        }
        // SAFETY: nothing refers to the bus's mapping any more.
        let _ = unsafe { sys::unmap(va & !0xfff, 1 << 20) };
    }
    found
}

/// A PCI function's configuration space, mapped.
struct Config(u64);

impl Config {
    fn read(&self, off: u64) -> u32 {
        // SAFETY: `self.0` maps the function's 4 KiB configuration page
        // (uncached); `off` is an aligned register in it.
        unsafe { core::ptr::read_volatile((self.0 + off) as *const u32) }
    }

    fn write(&self, off: u64, v: u32) {
        // SAFETY: as in `read`; a write to a BAR or the command register
        // of a function no driver runs yet.
        unsafe { core::ptr::write_volatile((self.0 + off) as *mut u32, v) }
    }

    /// Sizes the memory BARs (decoding off while a BAR reads as its size
    /// mask, restored after).
    fn memory_bars(&self) -> Vec<(u64, u64)> {
        let mut bars = Vec::new();
        let cmd = self.read(4);
        self.write(4, cmd & !0b11);
        let mut i = 0;
        while i < 6 {
            let off = 0x10 + i * 4;
            let lo = self.read(off);
            if lo & 1 != 0 {
                // An I/O BAR: not for this driver.
                i += 1;
                continue;
            }
            let wide = (lo >> 1) & 3 == 2;
            self.write(off, u32::MAX);
            let mask_lo = self.read(off) & !0xf;
            self.write(off, lo);
            let (base, mask) = if wide && i < 5 {
                let hi = self.read(off + 4);
                self.write(off + 4, u32::MAX);
                let mask_hi = self.read(off + 4);
                self.write(off + 4, hi);
                (
                    (u64::from(hi) << 32) | u64::from(lo & !0xf),
                    (u64::from(mask_hi) << 32) | u64::from(mask_lo),
                )
            } else {
                (
                    u64::from(lo & !0xf),
                    0xffff_ffff_0000_0000 | u64::from(mask_lo),
                )
            };
            let size = (!mask).wrapping_add(1);
            if base != 0 && mask_lo != 0 && size != 0 {
                bars.push((base, size));
            }
            i += if wide { 2 } else { 1 };
        }
        self.write(4, cmd);
        bars
    }
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("procman");
    let chid = ipc::channel_create_with(chan::PUBLIC).expect("procman channel");
    let me = ipc::connect(0, chid).expect("procman self-connection");
    *SELF.lock() = (sys::info().pid, me);
    let _ = sys::set_priority(0, Priority::Realtime);
    let mut shells = 0;
    let start = |key: &str, arg: &str, grants: Vec<Grant>| {
        let s = service(key).expect("a service of the table");
        match start_service(s, arg, grants) {
            Ok(_) => true,
            Err(e) => {
                println!("procman: cannot start {key}: {e}");
                false
            }
        }
    };
    for word in arg.split_whitespace() {
        match word {
            "console" => {
                start("console", "", alloc::vec![Grant::Ports(0x3f8, 8)]);
            }
            "shell" => shells += usize::from(start("shell", "", Vec::new())),
            "screen" => match sys::fb_info() {
                Ok(fb) => {
                    start("term", "", alloc::vec![Grant::Memory(fb.phys, fb.size, 0)]);
                    shells += usize::from(start("shell-screen", "", Vec::new()));
                }
                Err(_) => println!("procman: no framebuffer; no screen console"),
            },
            "keyboard" => {
                start(
                    "ps2kbd",
                    "",
                    alloc::vec![Grant::Ports(0x60, 1), Grant::Ports(0x64, 1)],
                );
            }
            "usb" => {
                let controllers = find_xhci();
                let mut names = String::new();
                for (n, x) in controllers.iter().enumerate() {
                    let mut g = alloc::vec![Grant::Memory(x.cfg, 4096, 0)];
                    g.extend(x.bars.iter().map(|&(b, len)| Grant::Memory(b, len, 0)));
                    let a = format!("cfg={:#x} name=usb{n}", x.cfg);
                    if start("xhci", &a, g) {
                        names += &format!("usb{n} ");
                    }
                }
                if !names.is_empty() {
                    start("usbkbd", names.trim_end(), Vec::new());
                }
            }
            "power" => {
                start("power", "", power_grants());
            }
            other => println!("procman: {other} is not a service I know"),
        }
    }
    if shells == 0 {
        println!("procman: no shell to run");
        return 1;
    }
    if thread::spawn(reaper).is_err() {
        println!("procman: cannot start the reaper");
        return 1;
    }
    let my_pid = sys::info().pid;
    let mut buf = [0u8; 512];
    loop {
        let m = match ipc::receive(chid, &mut buf) {
            Ok(m) => m,
            Err(e) => {
                println!("procman: receive: {e}");
                return 1;
            }
        };
        let info = match m {
            Received::Pulse(p) => {
                // Only our own reaper ends the run.
                if p.pid == my_pid && p.code == u64::from(PULSE_DONE) {
                    break;
                }
                continue;
            }
            Received::Msg(info) => info,
        };
        let len = (info.copied as usize).min(buf.len());
        if let Some(r) = serve(&info, &buf[..len]) {
            let _ = match r {
                Ok(v) => ipc::reply(info.rcvid, v, &[]),
                Err(e) => ipc::error(info.rcvid, e),
            };
        }
    }
    // A shell quit: so does everything else.
    let pids: Vec<u64> = STATE
        .lock()
        .children
        .iter()
        .filter(|(_, c)| c.status.is_none())
        .map(|(p, _)| *p)
        .collect();
    for pid in pids {
        let _ = sys::kill(pid);
    }
    0
}
