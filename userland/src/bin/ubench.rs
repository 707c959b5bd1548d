//! The user-mode side of the kernel's benchmarks: runs `N` operations of one
//! kind, timed with the TSC in user mode, and exits with the TSC delta as its
//! exit code (so the kernel's benchmark gets the figure without a channel).
//!
//! Argument: `OP N CPU` with OP one of `null` (the null system call),
//! `thread` (create a thread that returns at once, and join it), `spawn`
//! (spawn `true` and wait for it); it runs on CPU `CPU`, so repetitions find
//! the same CPU's caches. Message passing, to a server process (a child
//! `ubench serve K BASE PARENT GATE MODE`, serving channel `c` on CPU
//! `BASE + c`, each server thread one `MSG_REPLY_WAIT` a message — in
//! registers — or, MODE `buf`, one `MSG_REPLY_RECEIVE` with buffers):
//! `ipc-local N 0` (null message round trips in registers, `MSG_CALL`,
//! client and server on CPU 0: the fast path), `ipc-local-buf N 0` (the
//! same with the buffer calls, `MSG_SEND` of empty lists), `ipc-cross N 0`
//! (client on CPU 0, server on CPU 1),
//! `ipc-pulse N 0` (pulses sent on CPU 0 and received there; a full queue
//! makes the sender yield to the server), `ipc-null N K` (a client on each
//! of CPUs 0..K, each sending null messages to the server on its own CPU:
//! the figure is per round trip of all CPUs together).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, MSG_REGS};
use wyvern_user::ipc::{self, Received, RegMsg};
use wyvern_user::{process, sys, thread};

wyvern_user::entry!(main);

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ubench");
    let mut w = arg.split(' ');
    let op = w.next().unwrap_or("");
    let n: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if op == "serve" {
        let parent = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let gate = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let regs = w.next() != Some("buf");
        return serve(n, cpu, parent, gate, regs);
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
                ubench_op();
                let _ = core::hint::black_box(sys::nop());
            }
        }
        "thread" => {
            for _ in 0..n {
                ubench_op();
                let h = thread::spawn(|| {}).expect("thread");
                let _ = h.join();
            }
        }
        "spawn" => {
            for _ in 0..n {
                ubench_op();
                let _ = process::run("true", "").expect("spawn true");
            }
        }
        _ => return -1,
    }
    (sys::rdtsc() - t0) as i64
}

/// The profiler's marker: called once at the start of every measured
/// operation, so that `cargo xtask bench --profile` can break on it, skip a
/// warm-up, and single-step exactly one operation, from one call to the
/// next. A symbol of its own, not mangled; naked, so it is one `ret` with
/// no frame, and opaque to the compiler, so the call stays: it adds the
/// `call` and the `ret` to each operation, two instructions.
#[unsafe(no_mangle)]
#[unsafe(naked)]
extern "C" fn ubench_op() {
    // Sound: a bare `ret` touches nothing but the return address the call
    // pushed.
    core::arch::naked_asm!("ret")
}

/// `serve K BASE PARENT GATE MODE`: channels `0..K`, channel `c` received
/// on by a thread on CPU `BASE + c`, replying to every message with status
/// 0 and no bytes (`regs`: the message registers, zero); once they exist,
/// one message to channel `GATE` of `PARENT` says so. (Nothing here sleeps
/// or spins: benchmarks run with the tick stopped.)
fn serve(k: u64, base: u64, parent: u64, gate: u64, regs: bool) -> i64 {
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
                // One call a message: the reply to the last and the
                // receive of the next (MSG_REPLY_WAIT or
                // MSG_REPLY_RECEIVE).
                let mut rcvid = 0;
                loop {
                    let got = if regs {
                        ipc::reply_wait(rcvid, 0, &[0; MSG_REGS], chid).map(|m| match m {
                            RegMsg::Msg { rcvid, .. } => rcvid,
                            RegMsg::Pulse { .. } => 0,
                        })
                    } else {
                        ipc::reply_receive(rcvid, 0, &[], chid, &mut buf).map(|m| match m {
                            Received::Msg(m) => m.rcvid,
                            Received::Pulse(_) => 0,
                        })
                    };
                    match got {
                        Ok(r) => rcvid = r,
                        // The reply failed (its client gone) or the
                        // receive did: receive alone; that failing too
                        // (the channel destroyed) ends the server.
                        Err(_) if rcvid != 0 => rcvid = 0,
                        Err(_) => return,
                    }
                }
            })
            .expect("server thread")
        })
        .collect();
    let coid = ipc::connect(parent, gate).expect("connect to the gate");
    ipc::send(coid, b"up", &mut []).expect("gate");
    for t in threads {
        let _ = t.join();
    }
    0
}

/// Receives one message on `gate` and returns its receive id.
fn arrival(gate: u64) -> u64 {
    let mut b = [0u8; 4];
    match ipc::receive(gate, &mut b) {
        Ok(Received::Msg(m)) => m.rcvid,
        other => panic!("gate: {other:?}"),
    }
}

/// The message benchmarks (module docs); returns the TSC ticks of the
/// measured operations of every client together.
fn ipc_bench(op: &str, n: u64, arg: u64) -> i64 {
    let (k, base) = match op {
        "ipc-local" | "ipc-local-buf" | "ipc-pulse" => (1, 0),
        "ipc-cross" => (1, 1),
        "ipc-null" => (arg.max(1), 0),
        _ => return -1,
    };
    // Every party waits at a gate: a channel of ours, released by replies.
    // Public: the server, our child, attaches to it.
    let gate = ipc::channel_create_with(wyvern_abi::syscall::chan::PUBLIC).expect("gate");
    let me = sys::info().pid;
    let regs = op != "ipc-local-buf";
    let mode = if regs { "regs" } else { "buf" };
    let server = process::spawn("ubench", &format!("serve {k} {base} {me} {gate} {mode}"))
        .expect("spawn server");
    let up = arrival(gate);
    ipc::reply(up, 0, &[]).expect("release the server");
    let pulses = op == "ipc-pulse";
    let clients: Vec<_> = (0..k)
        .map(|c| {
            let coid = ipc::connect(server, c).expect("connect");
            let gc = ipc::connect(0, gate).expect("connect to the gate");
            thread::spawn(move || {
                sys::set_cpu(c).expect("client cpu");
                // Warm up: the server thread runs on its CPU and waits in
                // receive when the clock starts.
                for _ in 0..16 {
                    ipc::send(coid, &[], &mut []).expect("warm-up send");
                }
                ipc::send(gc, b"ready", &mut []).expect("gate");
                if pulses {
                    for i in 0..n {
                        ubench_op();
                        while ipc::pulse(coid, 1, i) == Err(Error::Full) {
                            sys::yield_now();
                        }
                    }
                    // The last pulse is received before this returns.
                    ipc::send(coid, &[], &mut []).expect("send");
                } else if regs {
                    for _ in 0..n {
                        ubench_op();
                        ipc::call_regs(coid, &[0; MSG_REGS]).expect("call");
                    }
                } else {
                    for _ in 0..n {
                        ubench_op();
                        ipc::send(coid, &[], &mut []).expect("send");
                    }
                }
            })
            .expect("client thread")
        })
        .collect();
    let waiting: Vec<u64> = (0..k).map(|_| arrival(gate)).collect();
    let t0 = sys::rdtsc();
    for r in waiting {
        ipc::reply(r, 0, &[]).expect("release a client");
    }
    for c in clients {
        let _ = c.join();
    }
    let t = sys::rdtsc() - t0;
    let _ = process::kill(server);
    let _ = process::wait(server);
    t as i64
}
