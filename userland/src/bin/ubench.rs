//! The user-mode side of the kernel's benchmarks: runs `N` operations of one
//! kind, timed with the TSC in user mode, and exits with the TSC delta as its
//! exit code (so the kernel's benchmark gets the figure without a channel).
//!
//! Argument: `OP N CPU` with OP one of `null` (the null system call),
//! `thread` (create a thread that returns at once, and join it), `spawn`
//! (spawn `true` and wait for it); it runs on CPU `CPU`, so repetitions find
//! the same CPU's caches. Message passing, to a server process (a child
//! `ubench serve K BASE`, serving channel `c` on CPU `BASE + c`):
//! `ipc-local N 0` (null message round trips, client and server on CPU 0:
//! the fast path), `ipc-cross N 0` (client on CPU 0, server on CPU 1),
//! `ipc-pulse N 0` (pulses sent on CPU 0 and received there; a full queue
//! makes the sender yield to the server), `ipc-null N K` (a client on each
//! of CPUs 0..K, each sending null messages to the server on its own CPU:
//! the figure is per round trip of all CPUs together).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wyvern_abi::syscall::Error;
use wyvern_user::ipc::{self, Received};
use wyvern_user::{process, sys, thread};

wyvern_user::entry!(main);

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ubench");
    let mut w = arg.split(' ');
    let op = w.next().unwrap_or("");
    let n: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if op == "serve" {
        return serve(n, cpu);
    }
    if op.starts_with("ipc-") {
        return ipc_bench(op, n, cpu);
    }
    if sys::set_cpu(cpu).is_err() {
        return -1;
    }
    let t0 = sys::rdtsc();
    match op {
        "null" => {
            for _ in 0..n {
                let _ = core::hint::black_box(sys::nop());
            }
        }
        "thread" => {
            for _ in 0..n {
                let h = thread::spawn(|| {}).expect("thread");
                let _ = h.join();
            }
        }
        "spawn" => {
            for _ in 0..n {
                let _ = process::run("true", "").expect("spawn true");
            }
        }
        _ => return -1,
    }
    (sys::rdtsc() - t0) as i64
}

/// `serve K BASE`: channels `0..K`, channel `c` received on by a thread on
/// CPU `BASE + c`; replies to every message with status 0 and no bytes.
fn serve(k: u64, base: u64) -> i64 {
    let chids: Vec<u64> = (0..k)
        .map(|_| ipc::channel_create().expect("channel"))
        .collect();
    let threads: Vec<_> = chids
        .into_iter()
        .enumerate()
        .map(|(c, chid)| {
            thread::spawn(move || {
                sys::set_cpu(base + c as u64).expect("server cpu");
                let mut buf = [0u8; 8];
                loop {
                    match ipc::receive(chid, &mut buf) {
                        Ok(Received::Msg(m)) => {
                            let _ = ipc::reply(m.rcvid, 0, &[]);
                        }
                        Ok(Received::Pulse(_)) => {}
                        Err(_) => return,
                    }
                }
            })
            .expect("server thread")
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    0
}

/// Connects to channel `chid` of `pid`, once it exists.
fn connect(pid: u64, chid: u64) -> u64 {
    loop {
        match ipc::connect(pid, chid) {
            Ok(c) => return c,
            Err(Error::NotFound) => {
                let _ = sys::sleep_ns(1_000_000);
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// The message benchmarks (module docs); returns the TSC ticks of the
/// measured operations of every client together.
fn ipc_bench(op: &str, n: u64, arg: u64) -> i64 {
    let (k, base) = match op {
        "ipc-local" | "ipc-pulse" => (1, 0),
        "ipc-cross" => (1, 1),
        "ipc-null" => (arg.max(1), 0),
        _ => return -1,
    };
    let server = process::spawn("ubench", &format!("serve {k} {base}")).expect("spawn server");
    // Every server thread on its CPU and blocked in receive before the clock
    // starts: each client warms up with round trips first.
    static READY: AtomicU64 = AtomicU64::new(0);
    static GO: AtomicBool = AtomicBool::new(false);
    let pulses = op == "ipc-pulse";
    let clients: Vec<_> = (0..k)
        .map(|c| {
            let coid = connect(server, c);
            thread::spawn(move || {
                sys::set_cpu(c).expect("client cpu");
                for _ in 0..16 {
                    ipc::send(coid, &[], &mut []).expect("warm-up send");
                }
                READY.fetch_add(1, Ordering::SeqCst);
                while !GO.load(Ordering::SeqCst) {
                    sys::yield_now();
                }
                if pulses {
                    for i in 0..n {
                        while ipc::pulse(coid, 1, i) == Err(Error::Full) {
                            sys::yield_now();
                        }
                    }
                    // The last pulse is received before this returns.
                    ipc::send(coid, &[], &mut []).expect("send");
                } else {
                    for _ in 0..n {
                        ipc::send(coid, &[], &mut []).expect("send");
                    }
                }
            })
            .expect("client thread")
        })
        .collect();
    while READY.load(Ordering::SeqCst) < k {
        let _ = sys::sleep_ns(1_000_000);
    }
    let t0 = sys::rdtsc();
    GO.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let t = sys::rdtsc() - t0;
    let _ = process::kill(server);
    let _ = process::wait(server);
    t as i64
}
