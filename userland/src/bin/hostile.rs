//! A hostile (or merely careless) program: each mode does one thing a
//! program must not be able to hurt the system with, and prints what the
//! kernel and the process manager answered, one `hostile:` line per step, so
//! the boot tests (`tests/tests/hostile.rs`) can check the exact errors. It
//! runs as the shell starts programs: through the process manager, with no
//! rights and a normal priority ceiling, charged to the shell's account.
//!
//! | mode | what it does |
//! |---|---|
//! | `spin-all` | a thread per CPU, each tries real-time priority, then spins |
//! | `orphan` | starts `spin-one` and ends, leaving it without a parent |
//! | `spin-one` | spins on the last CPU |
//! | `pulse-procman` | attaches to the process manager and pulses it with its end-of-run code |
//! | `pm-kill PID...` | asks the process manager to kill each pid (the services) |
//! | `spawn-flood N` | spawns `true` N times without waiting |
//! | `pm-spawn N` | spawns `true` through the process manager and waits, N times |
//! | `hog K` | starts K children, half mapping memory until refused, half making channels, connections and threads until refused; then waits |
//! | `map-until` / `objects-until` | those children |
//! | `scatter` | maps until refused, unmaps every other page, then makes kernel objects in children |
//! | `stale-rcvid N` | keeps a receive id of a killed client while another makes N round trips, then replies on it |
//! | `newlines N` | writes N newlines to the console |
//! | `rights` | every call that needs a right it lacks, each with the error it must get |
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use wyvern_abi::syscall::{Error, Priority, SpawnOpts, ThreadInfo, prot, rights};
use wyvern_user::ipc::{self, Received};
use wyvern_user::svc::Procman;
use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("hostile");
    let mut w = arg.split_whitespace();
    let mode = w.next().unwrap_or("");
    let rest: Vec<&str> = w.collect();
    let num = |i: usize, default: u64| {
        rest.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    match mode {
        "spin-all" => spin_all(),
        "orphan" => orphan(),
        "spin-one" => spin_one(),
        "pulse-procman" => pulse_procman(),
        "pm-kill" => pm_kill(&rest),
        "spawn-flood" => spawn_flood(num(0, 300)),
        "pm-spawn" => pm_spawn(num(0, 300)),
        "hog" => hog(num(0, 4)),
        "map-until" => map_until(),
        "objects-until" => objects_until(),
        "scatter" => scatter(),
        "stale-rcvid" => stale_rcvid(num(0, 40_000)),
        "stale-client" => stale_client(num(0, 0), num(1, 0), num(2, 0)),
        "newlines" => newlines(num(0, 16_384)),
        "rights" => rights_check(),
        _ => {
            println!("hostile: unknown mode `{mode}`");
            2
        }
    }
}

fn spin() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// A thread per CPU at the highest priority it can get, spinning.
fn spin_all() -> i64 {
    let n = sys::info().ncpus;
    for c in 1..n {
        let _ = thread::spawn(move || {
            let _ = sys::set_cpu(c);
            let _ = sys::set_priority(0, Priority::Realtime);
            spin()
        });
    }
    let _ = sys::set_cpu(0);
    let r = sys::set_priority(0, Priority::Realtime);
    println!("hostile: real-time priority: {r:?}; spinning on {n} CPUs");
    spin()
}

/// A spinner whose parent ends at once.
fn orphan() -> i64 {
    match sys::spawn("hostile", "spin-one") {
        Ok(pid) => {
            println!("hostile: orphan pid {pid}");
            0
        }
        Err(e) => {
            println!("hostile: spawn: {e}");
            1
        }
    }
}

fn spin_one() -> i64 {
    let n = sys::info().ncpus;
    let _ = sys::set_cpu(n - 1);
    let _ = sys::set_priority(0, Priority::Realtime);
    spin()
}

/// The process manager's end-of-run pulse, from someone else.
fn pulse_procman() -> i64 {
    let pm = sys::info().procman;
    let coid = match ipc::connect(pm, 0) {
        Ok(c) => c,
        Err(e) => {
            println!("hostile: attach to procman: {e}");
            return 1;
        }
    };
    // Code 1 is its "the last service ended"; the values are guesses at
    // the pid it waits for.
    let mut results = Vec::new();
    for v in 1..=8 {
        results.push(ipc::pulse(coid, 1, v));
    }
    println!(
        "hostile: pulses to procman: {}",
        if results.iter().all(Result::is_ok) {
            "all sent"
        } else {
            "some refused"
        }
    );
    0
}

/// Asks the process manager to kill each pid.
fn pm_kill(pids: &[&str]) -> i64 {
    let pm = Procman::connect().expect("procman");
    for p in pids {
        let Ok(pid) = p.parse::<u64>() else { continue };
        println!("hostile: PM_KILL {pid}: {:?}", pm.kill(pid));
        println!("hostile: KILL {pid}: {:?}", sys::kill(pid));
    }
    0
}

/// Spawns without waiting until refused.
fn spawn_flood(n: u64) -> i64 {
    let mut ok = 0;
    let mut first_err = None;
    for _ in 0..n {
        match sys::spawn("true", "") {
            Ok(_) => ok += 1,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    println!("hostile: spawn-flood: {ok} spawned, then {first_err:?}");
    0
}

/// Spawn and wait through the process manager, `n` times.
fn pm_spawn(n: u64) -> i64 {
    let pm = Procman::connect().expect("procman");
    for i in 0..n {
        let r = pm.spawn("true", "").and_then(|pid| pm.wait(pid));
        if let Err(e) = r {
            println!("hostile: pm-spawn failed at {i}: {e}");
            return 1;
        }
    }
    println!("hostile: pm-spawn: {n} spawned and waited");
    0
}

/// `k` children eating memory and kernel objects; reports, then waits.
fn hog(k: u64) -> i64 {
    let mut kids = Vec::new();
    for i in 0..k {
        let mode = if i % 2 == 0 {
            "map-until"
        } else {
            "objects-until"
        };
        match sys::spawn("hostile", mode) {
            Ok(p) => kids.push(p),
            Err(e) => println!("hostile: hog child {i}: {e}"),
        }
    }
    println!("hostile: hog started {} children", kids.len());
    for p in kids {
        let _ = sys::wait(p);
    }
    0
}

/// Maps 1 MiB at a time until refused, then holds it.
fn map_until() -> i64 {
    let mut mib = 0u64;
    let err = loop {
        match sys::map(1 << 20, prot::READ | prot::WRITE) {
            Ok(p) => {
                // Touch it: the pages are real.
                // SAFETY: just mapped, 1 MiB, writable.
                unsafe { (p as *mut u8).write_volatile(1) };
                mib += 1;
            }
            Err(e) => break e,
        }
    };
    println!("hostile: map-until: {mib} MiB, then {err:?}");
    loop {
        let _ = sys::sleep_ns(1_000_000_000);
    }
}

/// Channels, connections and threads until each is refused, then holds.
fn objects_until() -> i64 {
    // Room first: the siblings may leave no memory for the list to grow.
    let mut chans = Vec::with_capacity(wyvern_abi::syscall::MAX_CHANNELS as usize);
    let chan_err = loop {
        match ipc::channel_create() {
            Ok(c) => chans.push(c),
            Err(e) => break e,
        }
    };
    let mut conns = 0u64;
    let conn_err = loop {
        match ipc::connect(0, chans.first().copied().unwrap_or(0)) {
            Ok(_) => conns += 1,
            Err(e) => break e,
        }
    };
    let mut threads = 0u64;
    let thread_err = loop {
        match thread::spawn(|| {
            loop {
                let _ = sys::sleep_ns(1_000_000_000);
            }
        }) {
            Ok(_) => threads += 1,
            Err(e) => break e,
        }
    };
    println!(
        "hostile: objects-until: {} channels then {chan_err:?}, {conns} connections then {conn_err:?}, {threads} threads then {thread_err:?}",
        chans.len()
    );
    loop {
        let _ = sys::sleep_ns(1_000_000_000);
    }
}

/// Free memory scattered page by page, then kernel objects on top of it.
fn scatter() -> i64 {
    let mut maps = Vec::with_capacity(4096);
    while let Ok(p) = sys::map(1 << 20, prot::READ | prot::WRITE) {
        if maps.len() == maps.capacity() {
            break;
        }
        maps.push(p);
    }
    let mut freed = 0u64;
    for &m in &maps {
        for page in (0..256u64).step_by(2) {
            // SAFETY: pages of our own mapping, unused.
            if unsafe { sys::unmap(m + page * 4096, 4096) }.is_ok() {
                freed += 1;
            }
        }
    }
    println!(
        "hostile: scatter: {} MiB mapped, {freed} single pages given back",
        maps.len()
    );
    let mut kids = Vec::new();
    for _ in 0..4 {
        if let Ok(p) = sys::spawn("hostile", "objects-until") {
            kids.push(p);
        }
    }
    for p in kids {
        let _ = sys::wait(p);
    }
    0
}

/// A server keeps the receive id of a client it then kills; another client
/// makes `n` round trips; the old id must still be stale, and no reply may
/// reach the wrong client.
fn stale_rcvid(n: u64) -> i64 {
    let chid = ipc::channel_create_with(wyvern_abi::syscall::chan::PUBLIC).expect("channel");
    let me = sys::info().pid;
    let victim = sys::spawn("hostile", &format!("stale-client {me} {chid} 1")).expect("client");
    let mut buf = [0u8; 16];
    let old = match ipc::receive(chid, &mut buf) {
        Ok(Received::Msg(m)) => m.rcvid,
        other => {
            println!("hostile: stale-rcvid: first receive {other:?}");
            return 1;
        }
    };
    let _ = sys::kill(victim);
    let _ = sys::wait(victim);
    let other = sys::spawn("hostile", &format!("stale-client {me} {chid} {n}")).expect("client");
    let mut served = 0u64;
    let mut reused = false;
    while served < n {
        match ipc::receive(chid, &mut buf) {
            Ok(Received::Msg(m)) => {
                reused |= m.rcvid == old;
                let _ = ipc::reply(m.rcvid, served, &[]);
                served += 1;
            }
            Ok(Received::Pulse(_)) => {}
            Err(e) => {
                println!("hostile: stale-rcvid: receive {e}");
                return 1;
            }
        }
    }
    let late = ipc::reply(old, 0xdead, b"wrong client");
    let st = sys::wait(other);
    println!(
        "hostile: stale-rcvid: {served} round trips, old rcvid reused: {reused}, reply on it: {late:?}, client ended {}",
        st.map(|s| s.code).unwrap_or(-1)
    );
    0
}

/// A client of `stale_rcvid`: `n` round trips, checking every reply's
/// status is its own count (exit code 0), else exits 3.
fn stale_client(pid: u64, chid: u64, n: u64) -> i64 {
    let coid = ipc::connect(pid, chid).expect("connect");
    for i in 0..n {
        match ipc::send(coid, b"x", &mut []) {
            Ok(v) if v == i || n == 1 => {}
            Ok(v) => {
                println!("hostile: client got reply {v} for round trip {i}");
                return 3;
            }
            Err(e) => {
                println!("hostile: client send {i}: {e}");
                return 4;
            }
        }
    }
    if n == 1 {
        spin()
    }
    0
}

/// `n` newlines to the console, a chunk at a time.
fn newlines(n: u64) -> i64 {
    let chunk = [b'\n'; 256];
    let mut left = n;
    let mut written = 0;
    while left > 0 {
        let k = left.min(256) as usize;
        written += sys::debug_write(&chunk[..k]).unwrap_or(0);
        left -= k as u64;
    }
    println!("hostile: newlines: {n} asked, {written} written");
    0
}

/// Every right this process lacks, and what asking for it gets.
fn rights_check() -> i64 {
    let mut failures = String::new();
    let mut check = |what: &str, got: Result<u64, Error>, want: Error| {
        if got != Err(want) {
            failures.push_str(&format!("{what}: {got:?} (want {want:?}); "));
        }
    };
    let me = sys::info();
    let acct = sys::account().expect("account");
    let pm = me.procman;
    // Observing the system.
    let mut st = [wyvern_abi::syscall::CpuStats::default(); 4];
    check(
        "STATS",
        sys::stats(&mut st).map(|n| n as u64),
        Error::Denied,
    );
    let mut th = [ThreadInfo::default(); 4];
    check(
        "THREADS",
        sys::threads(&mut th).map(|n| n as u64),
        Error::Denied,
    );
    check("TRACE", sys::trace(), Error::Denied);
    // Priority above the ceiling.
    check(
        "real-time priority",
        sys::set_priority(0, Priority::Realtime),
        Error::Denied,
    );
    // Killing what is not ours.
    check("KILL procman", sys::kill(pm), Error::NotFound);
    check("KILL pid 2", sys::kill(2), Error::NotFound);
    // The process manager's calls.
    check("IO_GRANT", sys::io_grant(me.pid, 0x3f8, 8), Error::Denied);
    // Devices: nothing granted, so nothing to map, no DMA, no interrupt.
    check(
        "DEVICE_GRANT",
        sys::device_grant(me.pid, 0xfee0_0000, 4096, 0),
        Error::Denied,
    );
    if let Ok(fb) = sys::fb_info() {
        check(
            "MAP_DEVICE of the framebuffer",
            sys::map_device(fb.phys, 4096, 0),
            Error::Denied,
        );
    }
    check(
        "MAP_DEVICE of RAM",
        sys::map_device(0x10_0000, 4096, 0),
        Error::Denied,
    );
    // A range whose last page ends past 2^64 (the fuzzer found it once
    // overflowing in the kernel).
    check(
        "MAP_DEVICE at the top of the range",
        sys::map_device(u64::MAX - 4096, 4096, 0),
        Error::Invalid,
    );
    check(
        "DMA_ALLOC",
        sys::dma_alloc(4096).map(|(v, _)| v),
        Error::Denied,
    );
    if let Ok(c) = ipc::channel_create() {
        if let Ok(coid) = ipc::connect(0, c) {
            check(
                "MSI_ATTACH",
                sys::msi_attach(coid, 1).map(|(h, _)| h),
                Error::Denied,
            );
            check(
                "INTERRUPT_ATTACH 1",
                sys::interrupt_attach(1, coid, 1),
                Error::Denied,
            );
        }
        let _ = ipc::channel_destroy(c);
    }
    check(
        "SET_RIGHTS",
        sys::set_rights(me.pid, rights::ALL, Priority::Realtime),
        Error::Denied,
    );
    // Charging another's account.
    let opts = SpawnOpts {
        charge_to: pm,
        ceiling: u64::MAX,
        ..SpawnOpts::default()
    };
    check(
        "SPAWN charged to procman",
        sys::spawn_with("true", "", &opts),
        Error::Denied,
    );
    // A private channel of another process (procman's channel 1 does not
    // exist; the console's and the shell's channel 0 are private).
    for pid in (2..=3).filter(|&p| p != me.pid) {
        check(
            &format!("CONNECT_ATTACH {pid}/0"),
            ipc::connect(pid, 0),
            Error::Denied,
        );
    }
    check(
        "CONNECT_ATTACH procman/1",
        ipc::connect(pm, 1),
        Error::Denied,
    );
    // The process manager's policy.
    let p = Procman::connect().expect("procman");
    check(
        "NAME_ATTACH console",
        p.name_attach("console", 0),
        Error::Denied,
    );
    check(
        "PM_WAIT of another's process",
        p.wait(2).map(|_| 0),
        Error::NotFound,
    );
    check("PM_IO_GRANT", p.io_grant(), Error::Denied);
    // The system's names: served only by their services, some opened only
    // by some services (typing into the operator's shell, powering off).
    for name in ["screen", "screen-input", "power", "usb0"] {
        check(
            &format!("NAME_ATTACH {name}"),
            p.name_attach(name, 0),
            Error::Denied,
        );
    }
    for name in ["screen-input", "power", "usb0"] {
        check(
            &format!("NAME_OPEN {name}"),
            p.name_open(name, false),
            Error::Denied,
        );
    }
    // What a child may get: never more than we have.
    let opts = SpawnOpts {
        rights: rights::ALL,
        ceiling: Priority::Realtime as u64,
        ..SpawnOpts::default()
    };
    match sys::spawn_with("true", "", &opts) {
        Ok(pid) => {
            let _ = sys::wait(pid);
        }
        Err(e) => failures.push_str(&format!("spawn with more rights: {e}; ")),
    }
    println!(
        "hostile: rights: {} (rights {:#x}, ceiling {}, memory limit {} KiB)",
        if failures.is_empty() {
            "every request refused as it must be"
        } else {
            &failures
        },
        acct.rights,
        acct.ceiling,
        acct.limits.memory >> 10
    );
    i64::from(!failures.is_empty())
}
