//! Every system call, its results and its errors: the null call, clock and
//! sleep, bad pointers of every kind, unknown numbers, mapping, threads,
//! priorities, moving between CPUs, statistics, spawning and waiting.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wyvern_abi::syscall::{self as abi, CpuStats, Error, MAX_MAP, Priority, USER_TOP, nr, prot};
use wyvern_user::{ensure, println, sys, thread};

wyvern_user::entry!(main);

/// Addresses no call may use: null, near null, kernel half, kernel image,
/// non-canonical, the top of user space, and a hole in it.
const BAD: [u64; 8] = [
    0,
    8,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0x0000_8000_0000_0000,
    0xdead_0000_0000_0000,
    USER_TOP - 8,
    0x0000_5000_0000_0000,
];

fn raw(n: u64, a: [u64; 6]) -> Result<u64, Error> {
    // SAFETY: every call made through here gets only pointers the kernel
    // must refuse, or none.
    abi::decode(unsafe { sys::raw(n, a) })
}

fn main(_: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-basic");
    ensure!(sys::nop() == Ok(0), "the null call failed");

    let info = sys::info();
    ensure!(
        info.ncpus >= 1
            && info.pid >= 1
            && info.tid == 1
            && info.hz == 100
            && info.cpu < info.ncpus,
        "info {info:?}"
    );

    // Clock and sleep.
    let t0 = sys::clock_ns();
    ensure!(sys::sleep_ns(20_000_000) == Ok(0), "sleep failed");
    let t1 = sys::clock_ns();
    ensure!(t1 >= t0 + 20_000_000, "slept {} ns of 20 ms", t1 - t0);
    ensure!(sys::sleep_ns(0) == Ok(0), "sleep 0 failed");
    sys::yield_now();

    // Unknown numbers.
    for n in [nr::COUNT, 1000, u64::MAX] {
        ensure!(
            raw(n, [0; 6]) == Err(Error::NoSys),
            "syscall {n} not refused"
        );
    }

    // Every bad pointer, in every call that takes one.
    let child = sys::spawn("true", "")
        .unwrap_or_else(|e| wyvern_user::fail(format_args!("spawn true: {e}")));
    for &p in &BAD {
        ensure!(
            raw(nr::DEBUG_WRITE, [p, 16, 0, 0, 0, 0]) == Err(Error::Fault),
            "DEBUG_WRITE from {p:#x}"
        );
        ensure!(
            raw(nr::SPAWN, [p, 4, 0, 0, 0, 0]) == Err(Error::Fault),
            "SPAWN name at {p:#x}"
        );
        let name = "true";
        ensure!(
            raw(nr::SPAWN, [name.as_ptr() as u64, 4, p, 4, 0, 0]) == Err(Error::Fault),
            "SPAWN argument at {p:#x}"
        );
        ensure!(
            raw(nr::INFO, [p, 0, 0, 0, 0, 0]) == Err(Error::Fault),
            "INFO to {p:#x}"
        );
        ensure!(
            raw(nr::STATS, [p, 8, 0, 0, 0, 0]) == Err(Error::Fault),
            "STATS to {p:#x}"
        );
        ensure!(
            raw(nr::WAIT, [child, p, 0, 0, 0, 0]) == Err(Error::Fault),
            "WAIT status to {p:#x}"
        );
    }
    // A range that wraps around, and read-only memory as an output buffer.
    ensure!(
        raw(nr::INFO, [u64::MAX - 4, 0, 0, 0, 0, 0]) == Err(Error::Fault),
        "INFO to a wrapping range"
    );
    let text = main as *const () as u64;
    ensure!(
        raw(nr::INFO, [text, 0, 0, 0, 0, 0]) == Err(Error::Fault),
        "INFO into code"
    );
    ensure!(
        raw(nr::DEBUG_WRITE, [text, u64::MAX, 0, 0, 0, 0]) == Err(Error::Invalid),
        "DEBUG_WRITE of an endless length"
    );
    // The child is still waitable after the failed waits.
    let st = sys::wait(child).unwrap_or_else(|e| wyvern_user::fail(format_args!("wait true: {e}")));
    ensure!(
        st.kind == abi::WaitStatus::EXITED && st.code == 0,
        "true ended {st:?}"
    );
    ensure!(sys::wait(child) == Err(Error::NotFound), "waited twice");
    ensure!(
        sys::spawn("no-such-program", "") == Err(Error::NotFound),
        "spawned nothing"
    );
    ensure!(
        sys::wait(1) == Err(Error::NotFound),
        "waited for a non-child"
    );

    // Mapping.
    let a = sys::map(8192, prot::READ | prot::WRITE)
        .unwrap_or_else(|e| wyvern_user::fail(format_args!("map: {e}")));
    // SAFETY: 8 KiB readable and writable at `a`, ours.
    unsafe {
        let p = a as *mut u64;
        ensure!(p.read_volatile() == 0, "mapped memory not zeroed");
        p.write_volatile(0x1234);
        p.add(1023).write_volatile(0x5678);
        ensure!(p.read_volatile() == 0x1234, "mapped memory lost a write");
        ensure!(sys::unmap(a, 8192) == Ok(0), "unmap failed");
    }
    ensure!(
        sys::map(0, prot::READ) == Err(Error::Invalid),
        "map of 0 bytes"
    );
    ensure!(
        sys::map(MAX_MAP + 1, prot::READ) == Err(Error::Invalid),
        "map too large"
    );
    ensure!(
        sys::map(4096, prot::WRITE | prot::EXEC) == Err(Error::Invalid),
        "writable and executable map"
    );
    ensure!(
        sys::map(4096, 1 << 9) == Err(Error::Invalid),
        "unknown protection bits"
    );
    // SAFETY: the calls below must fail without unmapping anything.
    unsafe {
        ensure!(
            sys::unmap(a + 1, 4096) == Err(Error::Invalid),
            "unaligned unmap"
        );
        ensure!(
            sys::unmap(text & !0xfff, 4096) == Err(Error::Invalid),
            "unmap of code"
        );
    }
    // The account's memory limit ends in NoMemory, not in a crash, and
    // unmapping gives the pages' charge back (the page tables made for them
    // stay, charged, until the process ends: one per 512 pages).
    let mut maps = Vec::with_capacity(256);
    let before = sys::account().expect("account").used.memory;
    let chunk = 16 << 20;
    let mut out = false;
    for _ in 0..256 {
        match sys::map(chunk, prot::READ | prot::WRITE) {
            Ok(p) => maps.push(p),
            Err(Error::NoMemory) => {
                out = true;
                break;
            }
            Err(e) => wyvern_user::fail(format_args!("big map: {e}")),
        }
    }
    ensure!(out, "mapped {} x 16 MiB without running out", maps.len());
    let maps_len = maps.len();
    for p in maps {
        // SAFETY: mapped above, unused.
        let r = unsafe { sys::unmap(p, chunk) };
        ensure!(r == Ok(0), "unmap of a big map");
    }
    let after = sys::account().expect("account").used.memory;
    let mapped = maps_len as u64 * chunk;
    ensure!(
        after >= before && after - before <= mapped / 512 + 4 * 4096,
        "account charged {after} bytes after unmapping {mapped}, {before} before"
    );

    // Threads: exit codes, join errors.
    let handles: Vec<_> = (0..8u64)
        .map(|i| thread::spawn(move || sys::thread_exit(100 + i as i64)).expect("thread"))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let tid = h.id();
        ensure!(h.join() == Ok(100 + i as i64), "thread {i}'s exit code");
        ensure!(
            sys::thread_join(tid) == Err(Error::NotFound),
            "joined twice"
        );
    }
    ensure!(sys::thread_join(1) == Err(Error::Busy), "joined itself");
    // An ended child's and thread's charges are back by the time `WAIT` or
    // the join returns: a parent may spawn again within its limits at once.
    // (The first round is a warm-up: this process's heap and page tables
    // reach the size the rounds need.)
    let used = || sys::account().expect("account").used;
    let mut before = None;
    for i in 0..=50 {
        let pid = sys::spawn("true", "").expect("spawn true");
        ensure!(sys::wait(pid).is_ok(), "wait for child {i}");
        let t = thread::spawn(|| {}).expect("thread");
        ensure!(t.join() == Ok(0), "join thread {i}");
        let after = used();
        let before = *before.get_or_insert(after);
        ensure!(
            after == before,
            "child {i} waited for, thread joined: account {after:?}, {before:?} after the first"
        );
    }
    ensure!(
        sys::thread_join(9999) == Err(Error::NotFound),
        "joined nothing"
    );
    // The live-thread limit.
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let mut sleepers = Vec::new();
    let limited = loop {
        match thread::spawn(|| {
            while !RELEASE.load(Ordering::Acquire) {
                let _ = sys::sleep_ns(1_000_000);
            }
        }) {
            Ok(h) => sleepers.push(h),
            Err(Error::Limit) => break true,
            Err(e) => wyvern_user::fail(format_args!("thread {}: {e}", sleepers.len())),
        }
        if sleepers.len() > 100 {
            break false;
        }
    };
    ensure!(limited, "no thread limit after {} threads", sleepers.len());
    RELEASE.store(true, Ordering::Release);
    for h in sleepers {
        ensure!(h.join() == Ok(0), "a sleeper's exit");
    }

    // Priorities.
    ensure!(
        sys::set_priority(0, Priority::Realtime) == Ok(0),
        "realtime"
    );
    ensure!(sys::set_priority(0, Priority::Normal) == Ok(0), "normal");
    ensure!(
        raw(nr::SET_PRIORITY, [0, 7, 0, 0, 0, 0]) == Err(Error::Invalid),
        "priority 7"
    );
    ensure!(
        sys::set_priority(999, Priority::Idle) == Err(Error::NotFound),
        "priority of nothing"
    );

    // Moving between CPUs.
    for c in 0..info.ncpus {
        ensure!(sys::set_cpu(c) == Ok(0), "move to cpu {c}");
        ensure!(sys::info().cpu == c, "not on cpu {c} after moving there");
    }
    ensure!(
        sys::set_cpu(info.ncpus) == Err(Error::Invalid),
        "moved to a CPU that is not there"
    );

    // Statistics.
    let mut st = [CpuStats::default(); 64];
    let n = sys::stats(&mut st).unwrap_or(0);
    ensure!(n as u64 == info.ncpus.min(64), "stats of {n} CPUs");
    ensure!(
        st[..n].iter().map(|c| c.syscalls).sum::<u64>() > 0,
        "no syscalls counted"
    );
    ensure!(
        st[..n].iter().map(|c| c.switches).sum::<u64>() > 0,
        "no switches counted"
    );

    // A counter shared by threads on every CPU.
    static SUM: AtomicU64 = AtomicU64::new(0);
    let workers: Vec<_> = (0..info.ncpus)
        .map(|c| {
            thread::spawn(move || {
                let _ = sys::set_cpu(c);
                for _ in 0..1000 {
                    SUM.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("worker")
        })
        .collect();
    for w in workers {
        ensure!(w.join() == Ok(0), "worker");
    }
    ensure!(
        SUM.load(Ordering::Relaxed) == 1000 * info.ncpus,
        "lost increments"
    );
    println!(
        "ut-basic: every call and error checked on {} CPUs",
        info.ncpus
    );
    0
}
