//! The process manager: the first process of an interactive boot, serving
//! its public channel 0 with the protocol of `wyvern_user::svc` — spawn,
//! wait, kill, name registration and lookup, I/O-port grants by policy.
//!
//! Argument: the system's services to start, in order (`console shell`).
//! When the last of them ends, the process manager ends every child it
//! still has and exits 0 (the kernel then ends the run).
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
//! - **Kill**: the requester of the spawn; and the operator (the shell this
//!   process started) any process but the system's services — which
//!   includes orphans the kernel re-parented here. The services and the
//!   process manager are killed by nobody.
//! - **Names**: a service's name ([`SERVICES`]) may be attached only by the
//!   process started as that service; any other name by anyone, once.
//!   Opening a name gives the caller a connection ([`ipc::connect_give`]);
//!   at most [`MAX_NAME_WAITERS`] opens may wait for names at once.
//! - **I/O ports**: by the program name this process started, from
//!   [`IO_POLICY`].
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

use wyvern_abi::syscall::{Error, Limits, Priority, SpawnOpts, WaitStatus, chan, rights};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{
    PM_IO_GRANT, PM_KILL, PM_NAME_ATTACH, PM_NAME_OPEN, PM_SPAWN, PM_WAIT, encode_status,
};
use wyvern_user::sync::SpinLock;
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

/// Pulse code: the last service ended (sent by our own reaper).
const PULSE_DONE: u32 = 1;

/// Which program gets which I/O ports.
const IO_POLICY: [(&str, u64, u64); 1] = [("console", 0x3f8, 8)];

/// The system's services: their names are theirs alone, nobody kills them
/// through us, and they run with these rights, ceiling and limits (memory
/// as a fraction of ours: numerator, denominator).
const SERVICES: [Service; 2] = [
    Service {
        name: "console",
        rights: 0,
        memory: (1, 16),
        processes: 1,
        threads: 8,
    },
    Service {
        name: "shell",
        rights: rights::OBSERVE,
        memory: (1, 2),
        processes: 64,
        threads: 256,
    },
];

struct Service {
    name: &'static str,
    rights: u64,
    memory: (u64, u64),
    processes: u64,
    threads: u64,
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
    name: String,
    /// Who asked for it (0: we started it as a service).
    owner: u64,
    /// One of [`SERVICES`].
    service: bool,
    status: Option<WaitStatus>,
    waiters: Vec<u64>,
}

struct State {
    children: BTreeMap<u64, Child>,
    /// Name → (server pid, our connection to it).
    names: BTreeMap<String, (u64, u64)>,
    /// Receive ids waiting for a name to appear.
    name_waiters: Vec<(String, u64)>,
    /// The operator: the shell we started.
    operator: u64,
    /// The last service: when it ends, so does the run.
    last: u64,
    /// Ends of processes not (yet) in `children`: orphans the kernel gave
    /// us, and children whose end the reaper saw before `spawn_for`
    /// recorded them. At most [`MAX_ENDED`]; the oldest go first.
    unclaimed: BTreeMap<u64, WaitStatus>,
}

static STATE: SpinLock<State> = SpinLock::new(State {
    children: BTreeMap::new(),
    names: BTreeMap::new(),
    name_waiters: Vec::new(),
    operator: 0,
    last: 0,
    unclaimed: BTreeMap::new(),
});

/// Our own pid and a connection to our own channel (for the reaper's pulse).
static SELF: SpinLock<(u64, u64)> = SpinLock::new((0, 0));

fn word(b: &[u8], i: usize) -> Option<u64> {
    b.get(i * 8..i * 8 + 8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
}

/// Starts service `s`.
fn start_service(s: &Service) -> Result<u64, Error> {
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
    let pid = sys::spawn_with(s.name, "", &opts)?;
    STATE.lock().children.insert(
        pid,
        Child {
            name: String::from(s.name),
            owner: 0,
            service: true,
            status: None,
            waiters: Vec::new(),
        },
    );
    Ok(pid)
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
            name: String::from(name),
            owner,
            service: false,
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
        let (waiters, last) = {
            let mut s = STATE.lock();
            s.names.retain(|_, v| {
                if v.0 == pid {
                    let _ = ipc::disconnect(v.1);
                    false
                } else {
                    true
                }
            });
            let waiters = match s.children.get_mut(&pid) {
                Some(c) => {
                    c.status = Some(st);
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
            (waiters, pid == s.last)
        };
        for r in waiters {
            let _ = ipc::reply(r, 0, &encode_status(&st));
        }
        if last {
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
                    Some(c) => (!c.service && (c.owner == from || from == s.operator), true),
                    // Not ours by spawn: an orphan the kernel gave us, which
                    // the operator may end.
                    None => (from == s.operator && s.operator != 0, false),
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
            let reserved = SERVICES.iter().any(|s| s.name == name);
            {
                let s = STATE.lock();
                if reserved
                    && !s
                        .children
                        .get(&from)
                        .is_some_and(|c| c.service && c.name == name)
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
            let name = STATE
                .lock()
                .children
                .get(&from)
                .filter(|c| c.owner == 0)
                .map(|c| c.name.clone());
            match name.and_then(|n| IO_POLICY.iter().find(|p| p.0 == n)) {
                Some(&(_, first, count)) => sys::io_grant(from, first, count),
                None => Err(Error::Denied),
            }
        }
        _ => Err(Error::Invalid),
    })
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("procman");
    let chid = ipc::channel_create_with(chan::PUBLIC).expect("procman channel");
    let me = ipc::connect(0, chid).expect("procman self-connection");
    *SELF.lock() = (sys::info().pid, me);
    let _ = sys::set_priority(0, Priority::Realtime);
    let mut last = 0;
    for prog in arg.split_whitespace() {
        let Some(s) = SERVICES.iter().find(|s| s.name == prog) else {
            println!("procman: {prog} is not a service I know");
            continue;
        };
        match start_service(s) {
            Ok(pid) => {
                last = pid;
                if prog == "shell" {
                    STATE.lock().operator = pid;
                }
            }
            Err(e) => println!("procman: cannot start {prog}: {e}"),
        }
    }
    if last == 0 {
        println!("procman: nothing to run");
        return 1;
    }
    STATE.lock().last = last;
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
                if p.pid == my_pid && p.code == u64::from(PULSE_DONE) && p.value == last {
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
    // The last service ended: so does everything else.
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
