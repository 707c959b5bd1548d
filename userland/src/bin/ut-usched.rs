//! The user scheduler from user mode: busy threads all started on CPU 0
//! spread over every CPU within a bounded number of ticks, each then gets
//! its share of CPU time (within 10 % of the mean, by the ticks the kernel
//! charged it), and a thread pinned with `SET_CPU` stays where it was put.
//! What it saw is printed as it goes; any failure exits with 1.
//!
//! Argument: the number of busy threads (default 16), then `global` or
//! `local`: whether every CPU delivers the same ticks (a deterministic
//! emulator: shares are compared across all threads) or not (QEMU's vCPU
//! threads scheduled by a busy host: shares are compared among the threads
//! that shared a CPU, the global spread only reported).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wyvern_abi::syscall::{ANY_CPU, ThreadInfo};
use wyvern_user::{ensure, println, sys, thread};

wyvern_user::entry!(main);

const MAX_BUSY: usize = 64;

static STOP: AtomicBool = AtomicBool::new(false);
static PIN_STOP: AtomicBool = AtomicBool::new(false);
/// Where the pinned thread found itself other than on its CPU (CPU + 1).
static PIN_STRAYED: AtomicU64 = AtomicU64::new(0);
static PIN_CHECKS: AtomicU64 = AtomicU64::new(0);

/// Our threads among every thread the kernel lists, by thread id.
fn ours(pid: u64, tids: &[u64]) -> Vec<ThreadInfo> {
    let mut all = vec![ThreadInfo::default(); 1024];
    let n = sys::threads(&mut all).unwrap_or_else(|e| {
        wyvern_user::fail(format_args!("THREADS: {e}"));
    });
    let mut v: Vec<ThreadInfo> = all[..n]
        .iter()
        .filter(|t| t.pid == pid && tids.contains(&t.tid))
        .copied()
        .collect();
    v.sort_by_key(|t| t.tid);
    // THREADS lists CPU after CPU: a thread that moved meanwhile may show
    // twice (or not at all). Keep one row per thread.
    v.dedup_by_key(|t| t.tid);
    v
}

/// [`ours`] with every one of `tids` in it: THREADS again (a few times at
/// most) when a thread moved past the listing.
fn all_of_ours(pid: u64, tids: &[u64]) -> Vec<ThreadInfo> {
    let mut v = ours(pid, tids);
    for _ in 0..8 {
        if v.len() == tids.len() {
            break;
        }
        v = ours(pid, tids);
    }
    v
}

/// `threads` as the kernel listed them: tid cpu state estimate, per thread.
fn describe(threads: &[ThreadInfo]) -> String {
    let mut s = String::from("tid@cpu/state/est:");
    for t in threads {
        let state = match t.state {
            ThreadInfo::RUNNING => "run",
            ThreadInfo::RUNNABLE => "rdy",
            ThreadInfo::SLEEPING => "slp",
            ThreadInfo::WAITING => "wait",
            _ => "blk",
        };
        let turn = if t.flags & ThreadInfo::USER_TURN != 0 {
            "*"
        } else {
            ""
        };
        s += &format!(" {}@{}/{state}{turn}/{}", t.tid, t.cpu, t.estcpu);
    }
    s
}

/// How many of `threads` each CPU runs.
fn spread(threads: &[ThreadInfo], ncpus: usize) -> Vec<usize> {
    let mut per = vec![0; ncpus];
    for t in threads {
        per[t.cpu as usize] += 1;
    }
    per
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-usched");
    let mut words = arg.split_whitespace();
    let busy = words
        .next()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or(16)
        .clamp(1, MAX_BUSY);
    let global = words.next() != Some("local");
    let info = sys::info();
    let n = info.ncpus as usize;
    let ns_per_tick = 1_000_000_000 / info.hz;
    // Everything starts on CPU 0: this thread is pinned there and its
    // threads start where they are created.
    ensure!(sys::set_cpu(0) == Ok(0), "SET_CPU 0");
    let c0 = sys::clock_ns();
    let handles: Vec<thread::JoinHandle> = (0..busy)
        .map(|_| {
            thread::spawn(|| {
                let mut x = 0u64;
                while !STOP.load(Ordering::Relaxed) {
                    x = core::hint::black_box(x.wrapping_add(1));
                }
            })
            .expect("spawn a busy thread")
        })
        .collect();
    let tids: Vec<u64> = handles.iter().map(|h| h.id()).collect();
    // Counted from the last one's start (making them takes this thread
    // a while, and it shares CPU 0 with them meanwhile).
    let t0 = sys::clock_ns();
    println!(
        "ut-usched: {busy} busy threads started on cpu 0 in {} ticks",
        (t0 - c0) / ns_per_tick
    );

    // 1. The spread: every CPU runs busy/n of them (one more for the first
    //    busy % n), as soon as the balancer has done its work.
    let (lo, hi) = (busy / n, busy.div_ceil(n));
    // The bound: 300 ticks; 1000 under icount (`global`), where every look
    // below (THREADS visits the CPUs one after the other, each visit
    // waiting for that vCPU's turn on QEMU's single host thread) keeps this
    // thread awake on CPU 0 for ticks — a seventeenth user thread the
    // balancer rightly moves the others around.
    let limit_ticks = if global { 1000 } else { 300 };
    let spread_now = || {
        let threads = ours(info.pid, &tids);
        (threads.len() == busy).then(|| spread(&threads, n))
    };
    let balanced = |per: &[usize]| per.iter().all(|&c| c >= lo && c <= hi);
    // Looked at every 20 ticks (50 under icount): this thread is a user thread on CPU 0 too,
    // and looking (THREADS visits every CPU) is not cheap; awake much of
    // the time, it would be one more thread to place.
    let look: u64 = if global { 50 } else { 20 };
    let mut seen = 0;
    let spread_ticks = loop {
        let per = spread_now();
        let ticks = (sys::clock_ns() - t0) / ns_per_tick;
        // Balanced, and still so at the next look (not a moment of a move).
        if per.as_deref().is_some_and(balanced) {
            seen += 1;
            if seen > 1 {
                let at = ticks.saturating_sub(look);
                println!(
                    "ut-usched: {busy} busy threads started on cpu 0 spread over {n} CPUs in {at} ticks: {:?}",
                    per.unwrap_or_default()
                );
                break at;
            }
        } else {
            seen = 0;
        }
        ensure!(
            ticks < limit_ticks,
            "{busy} busy threads not spread over {n} CPUs after {ticks} ticks: {per:?}; {}",
            describe(&ours(info.pid, &[&tids[..], &[info.tid]].concat()))
        );
        let _ = sys::sleep_ns(look * ns_per_tick);
    };

    // 2. Fairness: over a window long enough for each to expect 150
    //    ticks, each gets its share within 10 % of the mean.
    let window = (150 * busy as u64).div_ceil(n as u64);
    let before = all_of_ours(info.pid, &tids);
    let _ = sys::sleep_ns(window * ns_per_tick);
    let after = all_of_ours(info.pid, &tids);
    ensure!(
        before.len() == busy && after.len() == busy,
        "threads missing from THREADS"
    );
    let got: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.ticks - b.ticks)
        .collect();
    let total: u64 = got.iter().sum();
    let mean = total / busy as u64;
    let (min, max) = (
        *got.iter().min().unwrap_or(&0),
        *got.iter().max().unwrap_or(&0),
    );
    let per_now = spread(&after, n);
    println!(
        "ut-usched: over {window} ticks each thread got {min}..{max} ticks (mean {mean}; {total} of {} CPU ticks); now {per_now:?}",
        window * n as u64
    );
    ensure!(mean > 0, "the busy threads were charged no ticks");
    // Threads that stayed on one CPU through the window. This thread woke
    // on CPU 0 for the looks (long ones when the host is busy), so the
    // balancer may have moved a thread out from beside it.
    let stayed: Vec<bool> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| b.cpu == a.cpu)
        .collect();
    let moved = stayed.iter().filter(|s| !**s).count();
    ensure!(
        global || moved <= 2,
        "{moved} threads moved in a balanced system: {} -> {}",
        describe(&before),
        describe(&after)
    );
    for (i, (t, &g)) in after.iter().zip(&got).enumerate() {
        // Its reference: every thread's mean, or the mean of the threads
        // that shared its CPU through the window.
        let reference = if global {
            mean
        } else {
            if !stayed[i] {
                continue;
            }
            let mates: Vec<u64> = (0..busy)
                .filter(|&j| stayed[j] && after[j].cpu == t.cpu)
                .map(|j| got[j])
                .collect();
            mates.iter().sum::<u64>() / mates.len() as u64
        };
        ensure!(
            g.abs_diff(reference) * 10 <= reference,
            "thread {} on cpu {} got {g} ticks, not within 10 % of {reference} ({}): {got:?}",
            t.tid,
            t.cpu,
            if global { "the mean" } else { "its CPU's mean" }
        );
    }
    let busy_share = total * 100 / (window * n as u64).max(1);
    ensure!(
        busy_share >= 80 || busy < n,
        "the busy threads had only {busy_share} % of the CPUs"
    );

    // 3. Pinned: a thread put on the last CPU stays there, however loaded
    //    that CPU is and whatever the balancer does around it.
    let k = (n - 1) as u64;
    let pinned = thread::spawn(move || {
        ensure!(sys::set_cpu(k) == Ok(0), "SET_CPU {k}");
        while !PIN_STOP.load(Ordering::Relaxed) {
            let c = sys::info().cpu;
            if c != k {
                PIN_STRAYED.store(c + 1, Ordering::Relaxed);
            }
            PIN_CHECKS.fetch_add(1, Ordering::Relaxed);
        }
    })
    .expect("spawn the pinned thread");
    let pin_tid = [pinned.id()];
    let mut listed = String::new();
    // A hundred ticks on the loaded CPU; THREADS (which visits every CPU)
    // looks at it a few times meanwhile.
    for i in 0..100 {
        let _ = sys::sleep_ns(ns_per_tick);
        if i % 25 == 24
            && PIN_CHECKS.load(Ordering::Relaxed) > 0
            && let Some(t) = ours(info.pid, &pin_tid).first()
        {
            ensure!(
                t.cpu == k && t.flags & ThreadInfo::PINNED != 0,
                "the pinned thread is listed on cpu {} (flags {:#x}), not pinned on {k}",
                t.cpu,
                t.flags
            );
            listed = format!("cpu {} flags {:#x}", t.cpu, t.flags);
        }
    }
    PIN_STOP.store(true, Ordering::Relaxed);
    ensure!(pinned.join() == Ok(0), "the pinned thread");
    let strayed = PIN_STRAYED.load(Ordering::Relaxed);
    ensure!(
        strayed == 0,
        "the pinned thread ran on cpu {} (pinned on {k})",
        strayed - 1
    );
    let checks = PIN_CHECKS.load(Ordering::Relaxed);
    ensure!(checks > 0, "the pinned thread never ran");
    println!(
        "ut-usched: a thread pinned on cpu {k} stayed there ({checks} checks; THREADS: {listed})"
    );

    STOP.store(true, Ordering::Relaxed);
    for h in handles {
        ensure!(h.join() == Ok(0), "a busy thread");
    }
    ensure!(sys::set_cpu(ANY_CPU) == Ok(0), "SET_CPU ANY_CPU unpins");
    println!("ut-usched: ok (spread in {spread_ticks} ticks)");
    0
}
