//! Message passing from user space, one verdict line per case
//! (`IPC <case> ok` / `IPC <case> FAILED: <why>`), then `IPC done: P of T
//! passed`; exits 0 only if all passed.
//!
//! With an argument it plays a part for a parent copy of itself:
//! `echo CPU` serves on CPU `CPU` (every reply is the message with each
//! byte plus one, read in full with `MSG_READ` and written back in pieces
//! with `MSG_WRITE`); `hold` receives and never replies; `prio` replies
//! with the priority it ran at while serving; `client PID CHID` sends one
//! message to that channel and waits for the reply.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use wyvern_abi::syscall::{Error, Limits, PULSE_QUEUE, Priority, WaitStatus};
use wyvern_user::ipc::{self, Received};
use wyvern_user::{println, process, sys, thread};

wyvern_user::entry!(main);

/// Bytes a server receives directly; the rest it reads with `MSG_READ`.
const RECV_BUF: usize = 256;

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-ipc");
    let mut w = arg.split_whitespace();
    let num = |w: Option<&str>| w.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    match w.next() {
        None => tests(),
        Some("echo") => echo(num(w.next())),
        Some("hold") => hold(),
        Some("prio") => prio(),
        Some("client") => {
            let (pid, chid) = (num(w.next()), num(w.next()));
            client(pid, chid)
        }
        Some(other) => {
            println!("ut-ipc: unknown part `{other}`");
            2
        }
    }
}

/// What the echo server answers to `msg`.
fn echoed(msg: &[u8]) -> Vec<u8> {
    msg.iter().map(|b| b.wrapping_add(1)).collect()
}

/// `echo CPU`: serves forever on channel 0, on CPU `CPU`.
fn echo(cpu: u64) -> i64 {
    let _ = sys::set_cpu(cpu);
    let chid = ipc::channel_create().expect("channel");
    let mut head = [0u8; RECV_BUF];
    loop {
        let m = match ipc::receive(chid, &mut head) {
            Ok(Received::Msg(m)) => m,
            Ok(Received::Pulse(_)) => continue,
            Err(e) => {
                println!("ut-ipc echo: receive: {e}");
                return 1;
            }
        };
        let mut all = vec![0u8; m.slen as usize];
        let n = (m.copied as usize).min(all.len());
        all[..n].copy_from_slice(&head[..n]);
        if m.slen as usize > n {
            let got = ipc::read(m.rcvid, n as u64, &mut all[n..]).expect("read");
            assert_eq!(got as usize, all.len() - n, "short MSG_READ");
        }
        let out = echoed(&all);
        // The reply in pieces: all but the first 100 bytes with MSG_WRITE,
        // the first 100 with the reply itself.
        let first = out.len().min(100);
        if out.len() > first {
            // The client checks what arrived.
            let _ = ipc::write(m.rcvid, first as u64, &out[first..]);
        }
        // Status: the sender's length, so the client sees it was all read.
        let _ = ipc::reply(m.rcvid, m.slen, &out[..first]);
    }
}

/// `hold`: receives on channel 0 and never replies.
fn hold() -> i64 {
    let chid = ipc::channel_create().expect("channel");
    let mut buf = [0u8; 16];
    loop {
        let _ = ipc::receive(chid, &mut buf);
    }
}

/// `prio`: at idle priority, replies with the priority it served at.
fn prio() -> i64 {
    let chid = ipc::channel_create().expect("channel");
    sys::set_priority(0, Priority::Idle).expect("set priority");
    let mut buf = [0u8; 16];
    loop {
        if let Ok(Received::Msg(m)) = ipc::receive(chid, &mut buf) {
            let now = sys::info().priority;
            let _ = ipc::reply(m.rcvid, now * 1000 + m.priority, &[]);
        }
    }
}

/// `client PID CHID`: one message, then the reply.
fn client(pid: u64, chid: u64) -> i64 {
    let coid = ipc::connect(pid, chid).expect("connect");
    let mut r = [0u8; 8];
    match ipc::send(coid, b"client", &mut r) {
        Ok(_) => 0,
        Err(e) => e as i64,
    }
}

/// Connects to channel 0 of `pid`, waiting for it to be created.
fn connect(pid: u64) -> Result<u64, String> {
    // Sleep, not yield: the server may run at a lower priority on this CPU.
    for _ in 0..5_000 {
        match ipc::connect(pid, 0) {
            Ok(c) => return Ok(c),
            Err(Error::NotFound) => {
                let _ = sys::sleep_ns(1_000_000);
            }
            Err(e) => return Err(format!("connect to {pid}: {e}")),
        }
    }
    Err(format!("process {pid} never created its channel"))
}

/// Sends `msg` as gather list `pieces` (lengths) through `coid`, the reply
/// scattered over `rpieces`; checks the reply and the status.
fn round_trip(coid: u64, msg: &[u8], pieces: &[usize], rpieces: &[usize]) -> Result<(), String> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for &p in pieces {
        let end = (at + p).min(msg.len());
        parts.push(&msg[at..end]);
        at = end;
    }
    if at < msg.len() {
        parts.push(&msg[at..]);
    }
    let mut reply = vec![0u8; msg.len()];
    let mut rparts: Vec<&mut [u8]> = Vec::new();
    let mut rest: &mut [u8] = &mut reply;
    for &p in rpieces {
        let (a, b) = rest.split_at_mut(p.min(rest.len()));
        rparts.push(a);
        rest = b;
    }
    rparts.push(rest);
    let st =
        ipc::sendv(coid, &parts, &mut rparts).map_err(|e| format!("send {} B: {e}", msg.len()))?;
    if st != msg.len() as u64 {
        return Err(format!("status {st} for {} B", msg.len()));
    }
    if reply != echoed(msg) {
        let bad = reply.iter().zip(echoed(msg)).position(|(a, b)| *a != b);
        return Err(format!("{} B: reply differs at {bad:?}", msg.len()));
    }
    Ok(())
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed) as u8)
        .collect()
}

fn spawn(arg: &str) -> Result<u64, String> {
    process::spawn("ut-ipc", arg).map_err(|e| format!("spawn ut-ipc {arg}: {e}"))
}

fn end(pid: u64) -> Result<(), String> {
    process::kill(pid).map_err(|e| format!("kill {pid}: {e}"))?;
    let st = process::wait(pid).map_err(|e| format!("wait {pid}: {e}"))?;
    if st.kind != WaitStatus::TERMINATED {
        return Err(format!("server {pid} {}", process::describe(&st)));
    }
    Ok(())
}

/// Sizes 0 B to 64 KiB, single buffers and scatter/gather, to a server in
/// another process.
fn payloads() -> Result<(), String> {
    let pid = spawn("echo 0")?;
    let coid = connect(pid)?;
    let r = (|| {
        for (i, len) in [
            0usize, 1, 15, 255, 256, 257, 4095, 4096, 4097, 12_345, 65_536,
        ]
        .into_iter()
        .enumerate()
        {
            let msg = pattern(len, i as u64);
            round_trip(coid, &msg, &[], &[])?;
            // Gather from pieces crossing pages, scatter into others.
            round_trip(coid, &msg, &[1, 0, 4000, 3, 9000], &[7, 5000, 0, 2])?;
        }
        // Too many pieces.
        let one = [0u8; 1];
        let parts = [&one[..]; 17];
        match ipc::sendv(coid, &parts, &mut []) {
            Err(Error::Invalid) => Ok(()),
            other => Err(format!("17 pieces: {other:?}")),
        }
    })();
    end(pid)?;
    r
}

/// A thread per CPU and more, each sending to every CPU's server in turn.
fn many_clients() -> Result<(), String> {
    let n = sys::info().ncpus;
    let pids: Vec<u64> = (0..n)
        .map(|c| spawn(&format!("echo {c}")))
        .collect::<Result<_, _>>()?;
    let coids: Vec<u64> = pids.iter().map(|&p| connect(p)).collect::<Result<_, _>>()?;
    static FAILED: AtomicU64 = AtomicU64::new(0);
    static SENT: AtomicU64 = AtomicU64::new(0);
    FAILED.store(0, Ordering::SeqCst);
    SENT.store(0, Ordering::SeqCst);
    let threads: Vec<_> = (0..2 * n)
        .map(|t| {
            let coids = coids.clone();
            thread::spawn(move || {
                let _ = sys::set_cpu(t % n);
                for i in 0..40u64 {
                    let coid = coids[((t + i) % n) as usize];
                    let msg = pattern((i as usize * 97) % 3000, t * 1000 + i);
                    if let Err(why) = round_trip(coid, &msg, &[11], &[13]) {
                        println!("ut-ipc: thread {t}: {why}");
                        FAILED.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    SENT.fetch_add(1, Ordering::SeqCst);
                }
            })
            .expect("thread")
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    for p in pids {
        end(p)?;
    }
    let (failed, sent) = (FAILED.load(Ordering::SeqCst), SENT.load(Ordering::SeqCst));
    if failed != 0 || sent != 80 * n {
        return Err(format!(
            "{failed} threads failed, {sent} of {} round trips",
            80 * n
        ));
    }
    Ok(())
}

/// Pulses come in the order sent; the one past the queue's bound is refused
/// with `Full` and not queued; a message of higher priority goes first.
fn pulses() -> Result<(), String> {
    let chid = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
    let coid = ipc::connect(0, chid).map_err(|e| format!("connect: {e}"))?;
    for i in 0..PULSE_QUEUE {
        ipc::pulse(coid, i as u32, i * 7).map_err(|e| format!("pulse {i}: {e}"))?;
    }
    if ipc::pulse(coid, 999, 0) != Err(Error::Full) {
        return Err("the pulse past the bound was not refused".into());
    }
    let mut buf = [0u8; 8];
    for i in 0..PULSE_QUEUE {
        match ipc::receive(chid, &mut buf) {
            Ok(Received::Pulse(p)) if p.code == i && p.value == i * 7 => {}
            other => return Err(format!("pulse {i}: got {other:?}")),
        }
    }
    // Room again.
    ipc::pulse(coid, 5, 5).map_err(|e| format!("pulse after draining: {e}"))?;
    match ipc::receive(chid, &mut buf) {
        Ok(Received::Pulse(p)) if p.code == 5 => {}
        other => return Err(format!("pulse after draining: got {other:?}")),
    }
    ipc::channel_destroy(chid).map_err(|e| format!("destroy: {e}"))?;
    ipc::disconnect(coid).map_err(|e| format!("disconnect: {e}"))?;
    Ok(())
}

/// Senders blocked on a server that is killed — queued or received — fail
/// with `Gone`.
fn server_killed() -> Result<(), String> {
    let pid = spawn("hold")?;
    let coid = connect(pid)?;
    static GONE: AtomicU64 = AtomicU64::new(0);
    GONE.store(0, Ordering::SeqCst);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut r = [0u8; 4];
                if ipc::send(coid, b"are you there", &mut r) == Err(Error::Gone) {
                    GONE.fetch_add(1, Ordering::SeqCst);
                }
            })
            .expect("thread")
        })
        .collect();
    // Let them block (one received, the rest queued) — or not yet: either
    // way each must end with `Gone`.
    let _ = sys::sleep_ns(50_000_000);
    end(pid)?;
    for t in threads {
        let _ = t.join();
    }
    let gone = GONE.load(Ordering::SeqCst);
    if gone != 4 {
        return Err(format!("{gone} of 4 senders got Gone"));
    }
    // And a send after the server ended fails at once.
    let mut r = [0u8; 4];
    match ipc::send(coid, b"x", &mut r) {
        Err(Error::Gone) => Ok(()),
        other => Err(format!("send to a dead server: {other:?}")),
    }
}

/// A client killed while its message is being served: the reply says so.
fn client_killed() -> Result<(), String> {
    // Public: the client is our child, and a child may attach only to
    // channels opened to it.
    let chid = ipc::channel_create_with(wyvern_abi::syscall::chan::PUBLIC)
        .map_err(|e| format!("channel: {e}"))?;
    let me = sys::info().pid;
    let pid = spawn(&format!("client {me} {chid}"))?;
    let mut buf = [0u8; 16];
    let m = match ipc::receive(chid, &mut buf) {
        Ok(Received::Msg(m)) => m,
        other => return Err(format!("receive: {other:?}")),
    };
    if m.pid != pid || &buf[..6] != b"client" {
        return Err(format!("message from {} not {pid}", m.pid));
    }
    end(pid)?;
    let r = ipc::reply(m.rcvid, 0, b"too late");
    ipc::channel_destroy(chid).map_err(|e| format!("destroy: {e}"))?;
    match r {
        Err(Error::Stale) => Ok(()),
        other => Err(format!("reply to a killed client: {other:?}")),
    }
}

/// Destroying a channel releases its queued senders and its waiting
/// receivers.
fn destroyed() -> Result<(), String> {
    let chid = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
    let coid = ipc::connect(0, chid).map_err(|e| format!("connect: {e}"))?;
    let other = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
    static GONE: AtomicU64 = AtomicU64::new(0);
    GONE.store(0, Ordering::SeqCst);
    let mut threads: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut r = [0u8; 4];
                if ipc::send(coid, b"hello", &mut r) == Err(Error::Gone) {
                    GONE.fetch_add(1, Ordering::SeqCst);
                }
            })
            .expect("thread")
        })
        .collect();
    threads.push(
        thread::spawn(move || {
            let mut b = [0u8; 4];
            if ipc::receive(other, &mut b) == Err(Error::Gone) {
                GONE.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("thread"),
    );
    let _ = sys::sleep_ns(30_000_000);
    ipc::channel_destroy(chid).map_err(|e| format!("destroy: {e}"))?;
    ipc::channel_destroy(other).map_err(|e| format!("destroy: {e}"))?;
    for t in threads {
        let _ = t.join();
    }
    let gone = GONE.load(Ordering::SeqCst);
    ipc::disconnect(coid).map_err(|e| format!("disconnect: {e}"))?;
    if gone != 4 {
        return Err(format!("{gone} of 4 parties released with Gone"));
    }
    if ipc::receive(chid, &mut [0u8; 4]) != Err(Error::NotFound) {
        return Err("a destroyed channel still receives".into());
    }
    Ok(())
}

/// An idle-priority server serves each client at the client's priority.
fn inheritance() -> Result<(), String> {
    let pid = spawn("prio")?;
    let coid = connect(pid)?;
    let r = (|| {
        for (p, want) in [
            (Priority::Realtime, 8u64),
            (Priority::Normal, 6),
            (Priority::Idle, 4),
            (Priority::Realtime, 8),
        ] {
            sys::set_priority(0, p).map_err(|e| format!("set priority: {e}"))?;
            let st = ipc::send(coid, b"?", &mut []).map_err(|e| format!("send: {e}"))?;
            let (ran, told) = (st / 1000, st % 1000);
            if ran != want || told != want {
                return Err(format!(
                    "client at {want}: server ran at {ran}, was told {told}"
                ));
            }
        }
        Ok(())
    })();
    let _ = sys::set_priority(0, Priority::Normal);
    end(pid)?;
    r
}

/// A bad buffer fails its own message only.
fn bad_buffers() -> Result<(), String> {
    let pid = spawn("echo 0")?;
    let coid = connect(pid)?;
    let r = (|| {
        // SAFETY: nothing is mapped at these addresses; the kernel only
        // tries to read or write them.
        let bad: &[u8] = unsafe { core::slice::from_raw_parts(0x1000 as *const u8, 64) };
        // SAFETY: as above.
        let bad_mut: &mut [u8] = unsafe { core::slice::from_raw_parts_mut(0x1000 as *mut u8, 64) };
        let mut r = [0u8; 8];
        if ipc::send(coid, bad, &mut r) != Err(Error::Fault) {
            return Err("an unreadable message did not fail with Fault".into());
        }
        if ipc::send(coid, b"fine", bad_mut) != Err(Error::Fault) {
            return Err("an unwritable reply buffer did not fail with Fault".into());
        }
        // A kernel address as a buffer.
        // SAFETY: as above: the kernel refuses it.
        let kernel: &[u8] =
            unsafe { core::slice::from_raw_parts(0xffff_8000_0000_0000 as *const u8, 8) };
        if ipc::send(coid, kernel, &mut r) != Err(Error::Fault) {
            return Err("a kernel address did not fail with Fault".into());
        }
        // The server is fine.
        round_trip(coid, &pattern(5000, 9), &[], &[])
    })();
    end(pid)?;
    r
}

/// `MSG_REPLY_RECEIVE`: with receive id 0 a plain receive; a reply that
/// fails receives nothing; too many pieces are refused; in a conversation
/// it replies to one message and receives the next in one call, and the
/// replied one is over (`Stale`).
fn reply_receive() -> Result<(), String> {
    let chid = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
    let coid = ipc::connect(0, chid).map_err(|e| format!("connect: {e}"))?;
    let r = (|| {
        let mut buf = [0u8; 16];
        ipc::pulse(coid, 7, 70).map_err(|e| format!("pulse: {e}"))?;
        match ipc::reply_receive(0, 0, &[], chid, &mut buf) {
            Ok(Received::Pulse(p)) if p.code == 7 && p.value == 70 => {}
            other => return Err(format!("receive id 0: got {other:?}, not the pulse")),
        }
        // A conversation that never was (slot 1 of a channel that has
        // received no message, serial 2^40): the reply fails with
        // NotFound and the pulse queued behind stays for the next receive.
        ipc::pulse(coid, 8, 80).map_err(|e| format!("pulse: {e}"))?;
        let bogus = ((1u64 << 40) << 10 | 1) << 6 | chid;
        match ipc::reply_receive(bogus, 0, b"x", chid, &mut buf) {
            Err(Error::NotFound) => {}
            other => return Err(format!("a reply to no conversation: got {other:?}")),
        }
        match ipc::receive(chid, &mut buf) {
            Ok(Received::Pulse(p)) if p.code == 8 => {}
            other => return Err(format!("the pulse after a failed reply: got {other:?}")),
        }
        // Not the caller's: a channel it does not have, a conversation on
        // one; refused, and the pulse below is still there afterwards.
        ipc::pulse(coid, 9, 90).map_err(|e| format!("pulse: {e}"))?;
        let theirs = wyvern_abi::syscall::MAX_CHANNELS - 1;
        match ipc::reply_receive(0, 0, &[], theirs, &mut buf) {
            Err(Error::NotFound) => {}
            other => return Err(format!("a channel not ours: got {other:?}")),
        }
        match ipc::reply_receive((1 << 16) | theirs, 0, &[], chid, &mut buf) {
            Err(Error::NotFound) => {}
            other => return Err(format!("a conversation not ours: got {other:?}")),
        }
        match ipc::receive(chid, &mut buf) {
            Ok(Received::Pulse(p)) if p.code == 9 => {}
            other => return Err(format!("the pulse after refusals: got {other:?}")),
        }
        for counts in [17, 17 << 32, u64::MAX] {
            let mut info = wyvern_abi::syscall::MsgInfo::default();
            // SAFETY: the kernel refuses the counts before it reads the
            // (null) list; `info` is ours.
            let r = wyvern_abi::syscall::decode(unsafe {
                sys::raw(
                    wyvern_abi::syscall::nr::MSG_REPLY_RECEIVE,
                    [0, 0, 0, counts, chid, &raw mut info as u64],
                )
            });
            if r != Err(Error::Invalid) {
                return Err(format!("counts {counts:#x}: {r:?}, not Invalid"));
            }
        }
        // A client thread sends twice; the server replies to the first and
        // receives the second in one call.
        static GOT: AtomicU64 = AtomicU64::new(0);
        GOT.store(0, Ordering::SeqCst);
        let client = thread::spawn(move || {
            let mut r = [0u8; 8];
            for (msg, status, want) in [(b"one", 1, b"ONE"), (b"two", 2, b"TWO")] {
                match ipc::send(coid, msg, &mut r) {
                    Ok(s) if s == status && &r[..3] == want => {
                        GOT.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        println!("ut-ipc: reply-receive client: {other:?}, {:?}", &r[..3]);
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("thread: {e}"))?;
        let first = match ipc::receive(chid, &mut buf) {
            Ok(Received::Msg(m)) if &buf[..3] == b"one" => m,
            other => return Err(format!("the first message: {other:?}")),
        };
        let second = match ipc::reply_receive(first.rcvid, 1, b"ONE", chid, &mut buf) {
            Ok(Received::Msg(m)) if &buf[..3] == b"two" => m,
            other => return Err(format!("reply and the second message: {other:?}")),
        };
        if ipc::reply(first.rcvid, 0, &[]) != Err(Error::Stale) {
            return Err("the first conversation was not over after its reply".into());
        }
        ipc::reply(second.rcvid, 2, b"TWO").map_err(|e| format!("reply: {e}"))?;
        let _ = client.join();
        match GOT.load(Ordering::SeqCst) {
            2 => Ok(()),
            n => Err(format!("the client got {n} of 2 replies right")),
        }
    })();
    let _ = ipc::channel_destroy(chid);
    let _ = ipc::disconnect(coid);
    r
}

/// Register conversations the `registers` case's client has: `ROUNDS`
/// register calls, then a buffer send, then two more register calls.
const ROUNDS: u64 = 20;

/// Message words from bytes (little-endian, zero past the end).
fn words_of(b: &[u8]) -> ipc::Regs {
    let mut w = [0u64; wyvern_abi::syscall::MSG_REGS];
    for (i, c) in b.chunks(8).take(w.len()).enumerate() {
        let mut x = [0u8; 8];
        x[..c.len()].copy_from_slice(c);
        w[i] = u64::from_le_bytes(x);
    }
    w
}

/// What the `registers` case's client sends in register round `i`.
fn round_msg(i: u64) -> ipc::Regs {
    [i, i * 2, i << 32, !i, u64::MAX - i]
}

/// The `registers` case's client: `ROUNDS` register calls answered with
/// every word plus one and status `i + 1`; a 100-byte buffer send whose
/// 64-byte reply buffer gets the 40 bytes of a register reply; a register
/// call answered by a 16-byte buffer reply; a register call answered by
/// `MSG_WRITE` alone. Counts what came back right in `ok`.
fn registers_client(coid: u64, ok: &AtomicU64) {
    for i in 0..ROUNDS {
        let m = round_msg(i);
        match ipc::call_regs(coid, &m) {
            Ok((s, w)) if s == i + 1 && w == m.map(|x| x.wrapping_add(1)) => {}
            other => {
                println!("ut-ipc: registers: round {i}: {other:?}");
                return;
            }
        }
        ok.fetch_add(1, Ordering::SeqCst);
    }
    let msg = pattern(100, 3);
    let mut reply = [0xeeu8; 64];
    let mut want = [0xeeu8; 64];
    for (i, w) in round_msg(7).iter().enumerate() {
        want[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    match ipc::send(coid, &msg, &mut reply) {
        Ok(9) if reply == want => {
            ok.fetch_add(1, Ordering::SeqCst);
        }
        other => println!("ut-ipc: registers: buffer send: {other:?}, {reply:x?}"),
    }
    let ones = u64::from_le_bytes([0x11; 8]);
    match ipc::call_regs(coid, &round_msg(100)) {
        Ok((7, w)) if w == [ones, ones, 0, 0, 0] => {
            ok.fetch_add(1, Ordering::SeqCst);
        }
        other => println!("ut-ipc: registers: buffer reply: {other:?}"),
    }
    match ipc::call_regs(coid, &round_msg(200)) {
        Ok((8, w)) if w == [0, 0, 0, 0, u64::from_le_bytes([0xab; 8])] => {
            ok.fetch_add(1, Ordering::SeqCst);
        }
        other => println!("ut-ipc: registers: MSG_WRITE reply: {other:?}"),
    }
}

/// Messages in registers (`MSG_CALL`, `MSG_REPLY_WAIT`): refusals of what
/// is not the caller's, with a pulse queued that survives them and is then
/// received in registers; a register conversation both ways; each kind of
/// party against the other kind (a buffer message received in registers
/// and read on with `MSG_READ`, a register reply into a reply buffer, a
/// buffer reply and `MSG_WRITE` into the registers, a register message
/// received into a buffer); a bad status, a conversation that is over, a
/// destroyed channel.
fn registers() -> Result<(), String> {
    use ipc::RegMsg;
    let me = sys::info().pid;
    let chid = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
    let coid = ipc::connect(0, chid).map_err(|e| format!("connect: {e}"))?;
    let zero = [0u64; wyvern_abi::syscall::MSG_REGS];
    static OK: AtomicU64 = AtomicU64::new(0);
    OK.store(0, Ordering::SeqCst);
    let r = (|| {
        let none = wyvern_abi::syscall::MAX_CONNECTIONS - 1;
        if ipc::call_regs(none, &zero) != Err(Error::NotFound) {
            return Err("MSG_CALL on no connection was not NotFound".into());
        }
        ipc::pulse(coid, 11, 110).map_err(|e| format!("pulse: {e}"))?;
        let theirs = wyvern_abi::syscall::MAX_CHANNELS - 1;
        let bogus = ((1u64 << 40) << 10 | 1) << 6 | chid;
        for (what, rcvid, on) in [
            ("a channel not ours", 0, theirs),
            ("a conversation not ours", (1 << 16) | theirs, chid),
            ("no conversation", bogus, chid),
        ] {
            match ipc::reply_wait(rcvid, 0, &zero, on) {
                Err(Error::NotFound) => {}
                other => return Err(format!("MSG_REPLY_WAIT on {what}: {other:?}")),
            }
        }
        match ipc::reply_wait(0, 0, &zero, chid) {
            Ok(RegMsg::Pulse {
                code: 11,
                value: 110,
                pid,
                ..
            }) if pid == me => {}
            other => return Err(format!("the pulse in registers: {other:?}")),
        }
        let client = thread::spawn(move || registers_client(coid, &OK))
            .map_err(|e| format!("thread: {e}"))?;
        let mut got = ipc::reply_wait(0, 0, &zero, chid);
        for i in 0..ROUNDS {
            let (rcvid, words) = match got {
                Ok(RegMsg::Msg {
                    rcvid,
                    words,
                    slen: 40,
                    rlen: 40,
                    pid,
                    tid,
                    priority,
                }) if pid == me && tid != 0 && priority != 0 => (rcvid, words),
                other => return Err(format!("register round {i}: {other:?}")),
            };
            if words != round_msg(i) {
                return Err(format!("register round {i}: words {words:x?}"));
            }
            if i == 1 && ipc::reply_wait(rcvid, 1 << 63, &zero, chid) != Err(Error::Invalid) {
                return Err("a status of 2^63 was not refused".into());
            }
            got = ipc::reply_wait(rcvid, i + 1, &words.map(|x| x.wrapping_add(1)), chid);
        }
        // The buffer send, received in registers and read on.
        let msg = pattern(100, 3);
        let rcvid = match got {
            Ok(RegMsg::Msg {
                rcvid,
                words,
                slen: 100,
                rlen: 64,
                ..
            }) if words == words_of(&msg) => rcvid,
            other => return Err(format!("a buffer message in registers: {other:?}")),
        };
        let mut rest = [0u8; 80];
        match ipc::read(rcvid, 40, &mut rest) {
            Ok(60) if rest[..60] == msg[40..] => {}
            other => return Err(format!("MSG_READ past the registers: {other:?}")),
        }
        // A register reply into its reply buffer; the next call in registers.
        let rcvid = match ipc::reply_wait(rcvid, 9, &round_msg(7), chid) {
            Ok(RegMsg::Msg { rcvid, words, .. }) if words == round_msg(100) => rcvid,
            other => return Err(format!("the call after the buffer send: {other:?}")),
        };
        // A buffer reply into the registers; the next call into a buffer.
        let mut buf = [0u8; 64];
        let m = match ipc::reply_receive(rcvid, 7, &[0x11; 16], chid, &mut buf) {
            Ok(Received::Msg(m)) if m.slen == 40 && m.rlen == 40 && m.copied == 40 => m,
            other => return Err(format!("a register message into a buffer: {other:?}")),
        };
        if words_of(&buf[..40]) != round_msg(200) {
            return Err(format!(
                "a register message into a buffer: {:x?}",
                &buf[..40]
            ));
        }
        let mut part = [0u8; 64];
        match ipc::read(m.rcvid, 16, &mut part) {
            Ok(24) if part[..24] == buf[16..40] => {}
            other => return Err(format!("MSG_READ of registers: {other:?}")),
        }
        match ipc::write(m.rcvid, 32, &[0xab; 16]) {
            Ok(8) => {}
            other => return Err(format!("MSG_WRITE into registers: {other:?}")),
        }
        ipc::reply(m.rcvid, 8, &[]).map_err(|e| format!("reply: {e}"))?;
        if ipc::reply_wait(m.rcvid, 0, &zero, chid) != Err(Error::Stale) {
            return Err("a conversation replied twice was not Stale".into());
        }
        let _ = client.join();
        match OK.load(Ordering::SeqCst) {
            n if n == ROUNDS + 3 => {}
            n => {
                return Err(format!(
                    "the client got {n} of {} replies right",
                    ROUNDS + 3
                ));
            }
        }
        ipc::channel_destroy(chid).map_err(|e| format!("destroy: {e}"))?;
        match ipc::call_regs(coid, &zero) {
            Err(Error::Gone) => Ok(()),
            other => Err(format!("MSG_CALL to a destroyed channel: {other:?}")),
        }
    })();
    let _ = ipc::channel_destroy(chid);
    let _ = ipc::disconnect(coid);
    r
}

/// A thread's remembered look-ups (the kernel keeps each thread's last
/// connection and channel): a detached connection and a destroyed channel
/// are gone at once for the thread that used them last, a new channel and
/// connection under the same ids are the new ones, and what the thread
/// remembers holds no charge — the account is back where it was.
fn remembered_lookups() -> Result<(), String> {
    let zero = [0u64; wyvern_abi::syscall::MSG_REGS];
    let before = own_use()?;
    let mut ids = Vec::new();
    for code in [1u32, 2] {
        let chid = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
        let coid = ipc::connect(0, chid).map_err(|e| format!("connect: {e}"))?;
        ids.push((chid, coid));
        ipc::pulse(coid, code, 0).map_err(|e| format!("pulse {code}: {e}"))?;
        match ipc::reply_wait(0, 0, &zero, chid) {
            Ok(ipc::RegMsg::Pulse { code: c, .. }) if c == u64::from(code) => {}
            other => return Err(format!("pulse {code} on channel {chid}: {other:?}")),
        }
        ipc::disconnect(coid).map_err(|e| format!("disconnect: {e}"))?;
        match ipc::pulse(coid, code, 0) {
            Err(Error::NotFound) => {}
            other => return Err(format!("a pulse through a detached connection: {other:?}")),
        }
        ipc::channel_destroy(chid).map_err(|e| format!("destroy: {e}"))?;
        match ipc::reply_wait(0, 0, &zero, chid) {
            Err(Error::NotFound) => {}
            other => return Err(format!("a receive on a destroyed channel: {other:?}")),
        }
    }
    // The second pair took the first's ids (lowest free), so the look-ups
    // above met the same ids naming different objects.
    if ids[0] != ids[1] {
        return Err(format!("ids not reused: {ids:?}"));
    }
    let after = own_use()?;
    if after.channels != before.channels
        || after.connections != before.connections
        || after.memory != before.memory
    {
        return Err(format!("charges left: before {before:?}, after {after:?}"));
    }
    Ok(())
}

/// What the account uses now, which must be this process and its one
/// thread alone: the children of the earlier cases were waited for and
/// their threads joined, and the kernel gives an ended process's and
/// thread's charges back before `WAIT` or the join returns.
fn own_use() -> Result<Limits, String> {
    let used = sys::account().map_err(|e| format!("account: {e}"))?.used;
    if used.processes != 1 || used.threads != 1 {
        return Err(format!(
            "an ended child or thread is still charged after its WAIT or join: {used:?}"
        ));
    }
    Ok(used)
}

/// A test case: `Err` says why it failed.
type Case = fn() -> Result<(), String>;

/// The driver calls refuse a process without an I/O grant, and the process
/// manager's call refuses everyone else.
fn driver_calls_denied() -> Result<(), String> {
    let me = sys::info().pid;
    let chid = ipc::channel_create().map_err(|e| format!("channel: {e}"))?;
    let coid = ipc::connect(0, chid).map_err(|e| format!("connect: {e}"))?;
    let mut buf = [0u8; 16];
    let got = [
        ("IO_GRANT", sys::io_grant(me, 0x3f8, 8), Error::Denied),
        (
            "INTERRUPT_ATTACH",
            sys::interrupt_attach(4, coid, 1),
            Error::Denied,
        ),
        (
            "KLOG_READ",
            sys::klog_read(&mut buf).map(|n| n as u64),
            Error::Denied,
        ),
        (
            "INTERRUPT_UNMASK",
            sys::interrupt_unmask(4),
            Error::NotFound,
        ),
        (
            "INTERRUPT_DETACH",
            sys::interrupt_detach(4),
            Error::NotFound,
        ),
    ];
    let _ = ipc::channel_destroy(chid);
    let _ = ipc::disconnect(coid);
    for (call, r, want) in got {
        if r != Err(want) {
            return Err(format!("{call}: {r:?}, not {want:?}"));
        }
    }
    Ok(())
}

fn tests() -> i64 {
    let cases: [(&str, Case); 12] = [
        ("payloads", payloads),
        ("many-clients", many_clients),
        ("pulses", pulses),
        ("server-killed", server_killed),
        ("client-killed", client_killed),
        ("channel-destroyed", destroyed),
        ("priority-inheritance", inheritance),
        ("bad-buffers", bad_buffers),
        ("reply-receive", reply_receive),
        ("registers", registers),
        ("remembered-lookups", remembered_lookups),
        ("driver-calls-denied", driver_calls_denied),
    ];
    let mut passed = 0;
    for (name, f) in cases {
        match f() {
            Ok(()) => {
                println!("IPC {name} ok");
                passed += 1;
            }
            Err(why) => println!("IPC {name} FAILED: {why}"),
        }
    }
    println!("IPC done: {passed} of {} passed", cases.len());
    if passed == cases.len() { 0 } else { 1 }
}
