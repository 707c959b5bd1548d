//! The structured fuzzer: several of these run at once on every CPU, each
//! doing random operations that *work* — so they reach the kernel's deep
//! paths, not only its argument checks — and some that must not: channels,
//! connections to each other's channels, messages (buffer and register
//! calls) and pulses between them (every process serves its public channel
//! 0 with a thread that receives and answers in random ways), threads that come and go, children spawned, waited for and
//! killed, memory mapped, touched and unmapped, priorities changed, kills
//! of processes that are not its own, connections given, and random raw
//! system calls among them. Every call must come back with a value or a
//! known error; the kernel's test checks that nothing hangs, nothing
//! panics, and the kernel's memory is back at its baseline afterwards.
//!
//! Argument: `SEED OPS CPU PEERS` — `PEERS` is the highest pid to try to
//! reach (the chaos processes of a run have pids below it). Messages go
//! only to channel 0 of a process (which its server thread serves): a send
//! to a channel nobody receives on waits, rightly, for ever.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use wyvern_abi::syscall::{self as abi, Error, MSG_REGS, Priority, chan, nr, prot};
use wyvern_user::ipc::{self, Received, RegMsg};
use wyvern_user::rng::Rng;
use wyvern_user::{ensure, println, sys, thread};

wyvern_user::entry!(main);

/// How the server thread answers a message, at random: an error, a reply
/// after reading past the message or writing part of the reply, a reply
/// after a yield, or a reply of the sender's pid. It receives in one of
/// three ways, at random each time: `MSG_RECEIVE` (answering with the
/// separate calls), `MSG_REPLY_RECEIVE` or `MSG_REPLY_WAIT` (the answer,
/// when it is a plain reply, joined to the next receive) — so the clients'
/// buffer and register calls meet every kind of server, and kills and
/// destroys meet them all.
fn serve(chid: u64, seed: u64) {
    let mut r = Rng::new(seed);
    let mut buf = [0u8; 64];
    // A reply left for the next joined call: receive id and status.
    let mut owed: Option<(u64, u64)> = None;
    loop {
        let way = r.below(3);
        let got = match (way, owed.take()) {
            (0, o) => {
                if let Some((rcvid, status)) = o {
                    let _ = ipc::reply(rcvid, status, &buf[..8]);
                }
                ipc::receive(chid, &mut buf).map(|g| match g {
                    Received::Msg(m) => Some((m.rcvid, m.pid)),
                    Received::Pulse(_) => None,
                })
            }
            (1, o) => {
                let (rcvid, status) = o.unwrap_or((0, 0));
                let reply = buf;
                ipc::reply_receive(rcvid, status, &reply[..8], chid, &mut buf).map(|g| match g {
                    Received::Msg(m) => Some((m.rcvid, m.pid)),
                    Received::Pulse(_) => None,
                })
            }
            (_, o) => {
                let (rcvid, status) = o.unwrap_or((0, 0));
                ipc::reply_wait(rcvid, status, &[status; MSG_REGS], chid).map(|g| match g {
                    RegMsg::Msg { rcvid, pid, .. } => Some((rcvid, pid)),
                    RegMsg::Pulse { .. } => None,
                })
            }
        };
        let (rcvid, pid) = match got {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            // A reply owed to a client that was killed is `Stale`, and the
            // joined calls return it before receiving: receive again.
            Err(Error::Stale) => continue,
            // Destroyed (the process is ending), or interrupted by a kill.
            Err(_) => return,
        };
        let _ = match r.below(6) {
            0 => ipc::error(rcvid, Error::Invalid),
            1 => {
                let mut more = [0u8; 16];
                let _ = ipc::read(rcvid, r.below(80), &mut more);
                ipc::reply(rcvid, 1, &more)
            }
            2 => {
                let _ = ipc::write(rcvid, r.below(16), b"partial");
                ipc::reply(rcvid, 2, &[])
            }
            3 => {
                sys::yield_now();
                ipc::reply(rcvid, 3, &buf[..8])
            }
            _ => {
                owed = Some((rcvid, pid));
                Ok(0)
            }
        };
    }
}

fn main(a: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-chaos");
    let mut w = a.split(' ').map(|x| x.parse::<u64>().unwrap_or(0));
    let (seed, ops, cpu, peers) = (
        w.next().unwrap_or(1),
        w.next().unwrap_or(1000),
        w.next().unwrap_or(0),
        w.next().unwrap_or(16),
    );
    let _ = sys::set_cpu(cpu);
    let mut r = Rng::new(seed);
    let home = ipc::channel_create_with(chan::PUBLIC).expect("channel 0");
    let server_seed = r.next_u64();
    let server = thread::spawn(move || serve(home, server_seed)).expect("server thread");

    let mut maps: Vec<(u64, u64)> = Vec::with_capacity(64);
    let mut chans: Vec<u64> = Vec::with_capacity(64);
    let mut conns: Vec<u64> = Vec::with_capacity(256);
    let mut kids: Vec<u64> = Vec::with_capacity(64);
    let mut threads = Vec::with_capacity(16);
    let mut counts = [0u64; 16];
    for _ in 0..ops {
        let op = r.below(16) as usize;
        counts[op] += 1;
        match op {
            // Memory.
            0 if maps.len() < maps.capacity() => {
                let len = (1 + r.below(32)) * 4096;
                if let Ok(p) = sys::map(len, prot::READ | prot::WRITE) {
                    // SAFETY: just mapped, `len` bytes, writable.
                    unsafe { (p as *mut u64).write_volatile(seed) };
                    maps.push((p, len));
                }
            }
            1 if !maps.is_empty() => {
                let (p, len) = maps.swap_remove(r.below(maps.len() as u64) as usize);
                // A page of it, or all of it.
                let (at, n) = if r.below(2) == 0 {
                    (p + r.below(len / 4096) * 4096, 4096)
                } else {
                    (p, len)
                };
                // SAFETY: our own mapping, no longer used (forgotten above).
                let _ = unsafe { sys::unmap(at, n) };
                if n != len {
                    // The rest stays mapped until the process ends.
                }
            }
            // Channels and connections.
            2 if chans.len() < chans.capacity() => {
                if let Ok(c) = ipc::channel_create() {
                    chans.push(c);
                }
            }
            3 if !chans.is_empty() => {
                let c = chans.swap_remove(r.below(chans.len() as u64) as usize);
                ensure!(ipc::channel_destroy(c).is_ok(), "destroy of an own channel");
            }
            4 if conns.len() < conns.capacity() => {
                // Kept only for channel 0, which a server thread serves: a
                // send on a channel nobody receives on would wait for ever.
                let pid = 1 + r.below(peers);
                let chid = r.below(3);
                match ipc::connect(pid, chid) {
                    Ok(c) if chid == 0 => conns.push(c),
                    Ok(c) => {
                        let _ = ipc::disconnect(c);
                    }
                    Err(e) => ensure!(
                        matches!(
                            e,
                            Error::Denied | Error::NotFound | Error::Limit | Error::NoMemory
                        ),
                        "connect to {pid}: {e:?}"
                    ),
                }
            }
            5 if !conns.is_empty() => {
                let c = conns.swap_remove(r.below(conns.len() as u64) as usize);
                let _ = ipc::disconnect(c);
            }
            // Messages and pulses.
            6 | 7 if !conns.is_empty() => {
                let c = conns[r.below(conns.len() as u64) as usize];
                let mut reply = [0u8; 32];
                // The buffer call or the register call, at random.
                let sent = if r.below(2) == 0 {
                    ipc::send(c, &[0u8; 48][..r.below(48) as usize], &mut reply)
                } else {
                    ipc::call_regs(c, &[r.next_u64(); MSG_REGS]).map(|(s, _)| s)
                };
                match sent {
                    Ok(_) => {}
                    Err(e) => ensure!(
                        matches!(
                            e,
                            Error::Gone
                                | Error::Invalid
                                | Error::NotFound
                                | Error::Killed
                                | Error::NoMemory
                                | Error::Full
                        ),
                        "send: {e:?}"
                    ),
                }
            }
            8 if !conns.is_empty() => {
                let c = conns[r.below(conns.len() as u64) as usize];
                let _ = ipc::pulse(c, r.below(100) as u32, r.next_u64());
            }
            // Children.
            9 if kids.len() < kids.capacity() => {
                if let Ok(pid) = sys::spawn("true", "") {
                    kids.push(pid);
                }
            }
            10 if !kids.is_empty() => {
                let pid = kids.swap_remove(r.below(kids.len() as u64) as usize);
                if r.below(2) == 0 {
                    let _ = sys::kill(pid);
                }
                ensure!(sys::wait(pid).is_ok(), "wait for own child {pid}");
            }
            // Threads.
            11 if threads.len() < threads.capacity() => {
                let s = r.next_u64();
                if let Ok(t) = thread::spawn(move || {
                    let mut r = Rng::new(s);
                    for _ in 0..r.below(8) {
                        sys::yield_now();
                    }
                }) {
                    threads.push(t);
                }
            }
            12 if !threads.is_empty() => {
                let t = threads.swap_remove(0);
                let _ = t.join();
            }
            // Priorities, kills of others, connections given.
            13 => {
                let p = match r.below(3) {
                    0 => Priority::Idle,
                    1 => Priority::Normal,
                    _ => Priority::Realtime,
                };
                let _ = sys::set_priority(0, p);
            }
            14 => {
                let pid = 1 + r.below(peers);
                if !kids.contains(&pid) {
                    let _ = sys::kill(pid);
                }
            }
            // A raw call with random arguments (not one that ends or
            // blocks us, maps at random, or floods the console).
            _ => {
                let n = r.below(nr::COUNT + 4);
                if !matches!(
                    n,
                    nr::EXIT
                        | nr::THREAD_EXIT
                        | nr::THREAD_CREATE
                        | nr::THREAD_JOIN
                        | nr::WAIT
                        | nr::SLEEP
                        | nr::UNMAP
                        | nr::MSG_SEND
                        | nr::MSG_RECEIVE
                        | nr::KLOG_READ
                        | nr::TRACE
                        | nr::DEBUG_WRITE
                        | nr::KILL
                        | nr::CHANNEL_DESTROY
                        | nr::CONNECT_DETACH
                        | nr::SET_CPU
                ) {
                    let a = [r.next_u64(), r.below(256), r.next_u64(), r.below(8), 0, 0];
                    // The excluded calls are those that could touch our
                    // memory (unmap, detach) or that would block or end us.
                    // SAFETY: no argument is an address of ours (random
                    // words and small numbers): nothing of ours is touched.
                    let raw = unsafe { sys::raw(n, a) };
                    if let Err(e) = abi::decode(raw) {
                        ensure!(
                            Error::from_result(raw as i64) == Some(e),
                            "call {n} returned {raw:#x}"
                        );
                    }
                }
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    for pid in kids {
        let _ = sys::kill(pid);
        let _ = sys::wait(pid);
    }
    let _ = sys::set_priority(0, Priority::Normal);
    // Ending the server: destroying its channel releases its receive.
    let _ = ipc::channel_destroy(home);
    let _ = server.join();
    println!(
        "ut-chaos: seed {seed} cpu {cpu}: {ops} operations {:?}",
        counts
    );
    0
}
