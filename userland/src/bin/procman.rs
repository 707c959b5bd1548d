//! The process manager: the first process of an interactive boot, serving
//! channel 0 with the protocol of `wyvern_user::svc` — spawn, wait, kill,
//! name registration and lookup, I/O-port grants by policy.
//!
//! Argument: the programs to start, in order (`console shell`). When the
//! last of them ends, the process manager ends every child it still has
//! and exits 0 (the kernel then ends the run).
//!
//! A reaper thread per child waits for it (the process manager is every
//! child's parent) and answers its waiters; the main thread serves
//! requests and never blocks on anything but `MSG_RECEIVE`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, WaitStatus};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::{
    PM_IO_GRANT, PM_KILL, PM_NAME_ATTACH, PM_NAME_OPEN, PM_SPAWN, PM_WAIT, encode_status,
};
use wyvern_user::sync::SpinLock;
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

/// Pulse code: the last boot program ended.
const PULSE_DONE: u32 = 1;

/// Which program gets which I/O ports.
const IO_POLICY: [(&str, u64, u64); 1] = [("console", 0x3f8, 8)];

struct Child {
    name: String,
    status: Option<WaitStatus>,
    waiters: Vec<u64>,
}

struct State {
    children: BTreeMap<u64, Child>,
    names: BTreeMap<String, (u64, u64)>,
    /// Receive ids waiting for a name to appear.
    name_waiters: Vec<(String, u64)>,
}

static STATE: SpinLock<State> = SpinLock::new(State {
    children: BTreeMap::new(),
    names: BTreeMap::new(),
    name_waiters: Vec::new(),
});

/// Starts `name arg` and its reaper; `done` (a connection to our own
/// channel) gets a pulse when it ends.
fn spawn(name: &str, arg: &str, done: Option<u64>) -> Result<u64, Error> {
    let pid = sys::spawn(name, arg)?;
    STATE.lock().children.insert(
        pid,
        Child {
            name: String::from(name),
            status: None,
            waiters: Vec::new(),
        },
    );
    let reaper = thread::spawn(move || {
        let st = sys::wait(pid).unwrap_or(WaitStatus {
            kind: WaitStatus::KILLED,
            ..WaitStatus::default()
        });
        let waiters = {
            let mut s = STATE.lock();
            s.names.retain(|_, v| v.0 != pid);
            match s.children.get_mut(&pid) {
                Some(c) => {
                    c.status = Some(st);
                    core::mem::take(&mut c.waiters)
                }
                None => Vec::new(),
            }
        };
        for r in waiters {
            let _ = ipc::reply(r, 0, &encode_status(&st));
        }
        if let Some(coid) = done {
            let _ = ipc::pulse(coid, PULSE_DONE, pid);
        }
    });
    if reaper.is_err() {
        let _ = sys::kill(pid);
        return Err(Error::NoMemory);
    }
    Ok(pid)
}

fn word(b: &[u8], i: usize) -> Option<u64> {
    b.get(i * 8..i * 8 + 8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
}

/// Serves one request; `Some(status)` replies now, `None` later.
fn serve(m: &ipc::Received, msg: &[u8]) -> Option<Result<u64, Error>> {
    let Received::Msg(info) = m else {
        return Some(Err(Error::Invalid));
    };
    let Some(op) = word(msg, 0) else {
        return Some(Err(Error::Invalid));
    };
    let text = |from: usize| core::str::from_utf8(msg.get(from..).unwrap_or(&[])).ok();
    Some(match op {
        PM_SPAWN => {
            let Some(len) = word(msg, 1) else {
                return Some(Err(Error::Invalid));
            };
            let len = len as usize;
            let (Some(name), Some(arg)) = (
                msg.get(16..16 + len)
                    .and_then(|n| core::str::from_utf8(n).ok()),
                msg.get(16 + len..)
                    .and_then(|a| core::str::from_utf8(a).ok()),
            ) else {
                return Some(Err(Error::Invalid));
            };
            spawn(name, arg, None)
        }
        PM_WAIT => {
            let Some(pid) = word(msg, 1) else {
                return Some(Err(Error::Invalid));
            };
            let mut s = STATE.lock();
            let Some(c) = s.children.get_mut(&pid) else {
                return Some(Err(Error::NotFound));
            };
            match c.status {
                Some(st) => {
                    s.children.remove(&pid);
                    drop(s);
                    let _ = ipc::reply(info.rcvid, 0, &encode_status(&st));
                    return None;
                }
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
            if STATE.lock().children.contains_key(&pid) {
                sys::kill(pid)
            } else {
                Err(Error::NotFound)
            }
        }
        PM_NAME_ATTACH => {
            let (Some(chid), Some(name)) = (word(msg, 1), text(16)) else {
                return Some(Err(Error::Invalid));
            };
            let v = (info.pid, chid);
            let waiting: Vec<u64> = {
                let mut s = STATE.lock();
                if s.names.contains_key(name) {
                    return Some(Err(Error::Busy));
                }
                s.names.insert(String::from(name), v);
                let (now, later) = core::mem::take(&mut s.name_waiters)
                    .into_iter()
                    .partition(|(n, _)| n == name);
                s.name_waiters = later;
                now.into_iter().map(|(_, r)| r).collect()
            };
            for r in waiting {
                let _ = ipc::reply(r, v.0 << 16 | v.1, &[]);
            }
            Ok(0)
        }
        PM_NAME_OPEN => {
            let (Some(wait), Some(name)) = (word(msg, 1), text(16)) else {
                return Some(Err(Error::Invalid));
            };
            let mut s = STATE.lock();
            match s.names.get(name) {
                Some(&(pid, chid)) => Ok(pid << 16 | chid),
                None if wait != 0 => {
                    s.name_waiters.push((String::from(name), info.rcvid));
                    return None;
                }
                None => Err(Error::NotFound),
            }
        }
        PM_IO_GRANT => {
            let name = STATE.lock().children.get(&info.pid).map(|c| c.name.clone());
            match name.and_then(|n| IO_POLICY.iter().find(|p| p.0 == n)) {
                Some(&(_, first, count)) => sys::io_grant(info.pid, first, count),
                None => Err(Error::Denied),
            }
        }
        _ => Err(Error::Invalid),
    })
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("procman");
    let chid = ipc::channel_create().expect("procman channel");
    let me = ipc::connect(0, chid).expect("procman self-connection");
    let boot: Vec<&str> = arg.split_whitespace().collect();
    let mut last = 0;
    for (i, prog) in boot.iter().enumerate() {
        let done = (i + 1 == boot.len()).then_some(me);
        match spawn(prog, "", done) {
            Ok(pid) => last = pid,
            Err(e) => println!("procman: cannot start {prog}: {e}"),
        }
    }
    if last == 0 {
        println!("procman: nothing to run");
        return 1;
    }
    let mut buf = [0u8; 512];
    loop {
        let m = match ipc::receive(chid, &mut buf) {
            Ok(m) => m,
            Err(e) => {
                println!("procman: receive: {e}");
                return 1;
            }
        };
        if let Received::Pulse(p) = m {
            if p.code == u64::from(PULSE_DONE) && p.value == last {
                break;
            }
            continue;
        }
        let Received::Msg(info) = m else { continue };
        let len = (info.copied as usize).min(buf.len());
        let msg = buf[..len].to_vec();
        if let Some(r) = serve(&m, &msg) {
            let _ = match r {
                Ok(v) => ipc::reply(info.rcvid, v, &[]),
                Err(e) => ipc::error(info.rcvid, e),
            };
        }
    }
    // The last boot program ended: so does everything else.
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
