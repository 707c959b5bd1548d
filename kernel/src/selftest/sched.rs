//! Scheduler tests on the real machine: switches, cross-CPU wakeups,
//! migration, thread churn, wakeup storms, deferred ticks, cpusync, IPI
//! floods. Each runs at whatever CPU count the boot has; the host runs them
//! at 1, 2, 4 and 8.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lwkt::Sema;

use super::{Expect, SelfTest, join_all, ncpus, spawn_on, trim_all_caches};
use crate::arch::{cpu, tsc};
use crate::mm::stack::KernelStack;
use crate::mm::{frame, heap};
use crate::percpu::{self, MAX_CPUS};
use crate::sched::{self, X86};
use crate::{check, println};

pub static TESTS: &[SelfTest] = &[
    SelfTest {
        name: "yield",
        expect: Expect::Return,
        run: yield_pingpong,
    },
    SelfTest {
        name: "wakeup-pairs",
        expect: Expect::Return,
        run: wakeup_pairs,
    },
    SelfTest {
        name: "migrate",
        expect: Expect::Return,
        run: migrate,
    },
    SelfTest {
        name: "thread-churn",
        expect: Expect::Return,
        run: thread_churn,
    },
    SelfTest {
        name: "wakeup-storm",
        expect: Expect::Return,
        run: wakeup_storm,
    },
    SelfTest {
        name: "crit-ticks",
        expect: Expect::Return,
        run: crit_ticks,
    },
    SelfTest {
        name: "cpusync",
        expect: Expect::Return,
        run: cpusync,
    },
    SelfTest {
        name: "ipi-flood",
        expect: Expect::Return,
        run: ipi_flood,
    },
];

/// Two threads on each CPU yield to each other 2000 times: they alternate
/// strictly, and every yield is a switch.
fn yield_pingpong() {
    const N: u32 = 2000;
    let n = ncpus();
    let before: Vec<u64> = percpu::online()
        .map(|c| c.lwkt.stats.switches.get())
        .collect();
    let mut refs = Vec::new();
    for c in 0..n {
        let last = Arc::new(AtomicU32::new(u32::MAX));
        let bad = Arc::new(AtomicU32::new(0));
        let arrived = Arc::new(AtomicU32::new(0));
        for id in 0..2u32 {
            let (last, bad, arrived) = (last.clone(), bad.clone(), arrived.clone());
            refs.push(spawn_on(c, "yield", move || {
                // Creation on another CPU is a message: start together.
                arrived.fetch_add(1, Ordering::SeqCst);
                while arrived.load(Ordering::SeqCst) < 2 {
                    lwkt::yield_now::<X86>();
                }
                last.store(u32::MAX, Ordering::SeqCst);
                for _ in 0..N {
                    if last.swap(id, Ordering::Relaxed) == id {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    lwkt::yield_now::<X86>();
                }
                check!(
                    bad.load(Ordering::Relaxed) <= 1,
                    "yield did not alternate on cpu{c}"
                );
            }));
        }
    }
    join_all(refs);
    for (c, b) in percpu::online().zip(before) {
        let d = c.lwkt.stats.switches.get() - b;
        check!(
            d >= u64::from(2 * N),
            "cpu{}: {d} switches for {} yields",
            c.index(),
            2 * N
        );
    }
    println!("yield: 2 x {N} yields on each of {n} CPUs alternated");
}

/// For every pair of CPUs, a thread on each wakes the other 100 times in turn
/// (semaphores, so each wakeup crosses CPUs through the IPI queue).
fn wakeup_pairs() {
    const N: u32 = 100;
    let n = ncpus();
    let mut pairs = 0;
    for a in 0..n {
        for b in (a + 1)..n {
            let s = Arc::new([Sema::new(0), Sema::new(0)]);
            let s2 = s.clone();
            let ping = spawn_on(a, "ping", move || {
                for _ in 0..N {
                    s2[1].post::<X86>();
                    s2[0].wait::<X86>();
                }
            });
            let s3 = s.clone();
            let pong = spawn_on(b, "pong", move || {
                for _ in 0..N {
                    s3[1].wait::<X86>();
                    s3[0].post::<X86>();
                }
            });
            ping.join();
            pong.join();
            check!(
                s[0].count() == 0 && s[1].count() == 0,
                "semaphores out of balance"
            );
            pairs += 1;
        }
    }
    let wakeups: u64 = percpu::online().map(|c| c.lwkt.stats.wakeups.get()).sum();
    println!("wakeup-pairs: {pairs} CPU pairs x {N} round trips, {wakeups} wakeups");
}

/// One thread hops 0, 1, …, n-1, 0, … for five laps; after each hop both the
/// per-CPU block (GS) and the scheduler agree it is on the target.
fn migrate() {
    let n = ncpus();
    let r = spawn_on(0, "migrant", move || {
        for hop in 0..5 * n {
            let to = (hop + 1) % n;
            lwkt::migrate_self::<X86>(to);
            let gs = percpu::cpu_index() as usize;
            let td = lwkt::current::<X86>();
            check!(gs == to, "hop {hop}: wanted cpu{to}, mycpu() says cpu{gs}");
            check!(td.cpu() == to, "hop {hop}: thread owned by cpu{}", td.cpu());
            check!(
                crate::arch::apic::local_id() == percpu::mycpu().apic_id(),
                "hop {hop}: APIC id mismatch"
            );
        }
    });
    r.join();
    println!(
        "migrate: {} hops over {n} CPUs, each landed where asked",
        5 * n
    );
}

/// 10,000 threads created and exited across all CPUs, in waves: afterwards
/// (caches trimmed) frames and heap are back where they were.
fn thread_churn() {
    const TOTAL: usize = 10_000;
    let n = ncpus();
    let wave = 8 * n;
    let ran = Arc::new(AtomicU64::new(0));
    let churn = |count: usize| {
        let mut done = 0;
        while done < count {
            let refs: Vec<_> = (0..wave.min(count - done))
                .map(|i| {
                    let ran = ran.clone();
                    spawn_on(i % n, "churn", move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            done += refs.len();
            join_all(refs);
        }
    };
    // Warm-up: the slab and the pool reach their working size. The stack
    // region is sized for the most stacks this test can hold at once (a wave,
    // full thread caches, a quarantine batch not yet flushed), so it does not
    // grow into a new page table mid-test.
    churn(4 * wave);
    let most = wave + n * lwkt::slab::CACHE_MAX as usize + 2 * 64 + 64;
    drop(
        (0..most)
            .map(|_| KernelStack::new().expect("stack"))
            .collect::<Vec<_>>(),
    );
    super::make_all_ipi_fifos();
    trim_all_caches();
    let frames0 = frame::stats();
    let heap0 = heap::stats();
    ran.store(0, Ordering::Relaxed);
    churn(TOTAL);
    trim_all_caches();
    check!(
        ran.load(Ordering::Relaxed) == TOTAL as u64,
        "{} of {TOTAL} threads ran",
        ran.load(Ordering::Relaxed)
    );
    let frames1 = frame::stats();
    let heap1 = heap::stats();
    check!(
        frames1 == frames0,
        "frames {frames1:?} != baseline {frames0:?}"
    );
    check!(
        heap1.allocated == heap0.allocated && heap1.allocations == heap0.allocations,
        "heap {heap1:?} != baseline {heap0:?}"
    );
    let created: u64 = percpu::online().map(|c| c.lwkt.stats.created.get()).sum();
    println!(
        "thread-churn: {TOTAL} threads on {n} CPUs; frames and heap at baseline; slab capacity {}; {created} created since boot",
        sched::world().slab.capacity()
    );
}

/// Four sleepers per CPU wait for their own round counter; the test advances
/// every counter and wakes its sleeper, 300 rounds: every sleeper wakes every
/// round (no wakeup lost), and the switch's "already running" assertion
/// catches a thread on two CPUs at once.
fn wakeup_storm() {
    const ROUNDS: u32 = 300;
    let n = ncpus();
    let sleepers = 4 * n;
    let counters: Arc<Vec<AtomicU32>> =
        Arc::new((0..sleepers).map(|_| AtomicU32::new(0)).collect());
    let done = Arc::new(AtomicU32::new(0));
    let mut refs = Vec::new();
    for i in 0..sleepers {
        let (c, done) = (counters.clone(), done.clone());
        refs.push(spawn_on(i % n, "sleeper", move || {
            let ident = core::ptr::from_ref(&c[i]) as usize;
            for r in 1..=ROUNDS {
                loop {
                    lwkt::tsleep_interlock::<X86>(ident);
                    if c[i].load(Ordering::SeqCst) >= r {
                        lwkt::tsleep_cancel::<X86>();
                        break;
                    }
                    lwkt::tsleep::<X86>(ident, lwkt::INTERLOCKED, "storm", 0);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for r in 1..=ROUNDS {
        for (i, c) in counters.iter().enumerate() {
            c.store(r, Ordering::SeqCst);
            lwkt::wakeup::<X86>(core::ptr::from_ref(&counters[i]) as usize);
        }
        let want = sleepers as u32 * r;
        let ok = crate::selftest::smp::wait_for(20_000, || done.load(Ordering::SeqCst) >= want);
        check!(
            ok,
            "round {r}: {} of {want} wakeups arrived",
            done.load(Ordering::SeqCst)
        );
    }
    join_all(refs);
    println!("wakeup-storm: {sleepers} sleepers on {n} CPUs x {ROUNDS} rounds, none lost");
}

/// A thread spins in a critical section across at least five timer
/// interrupts: the scheduler sees none of them meanwhile; when the section
/// ends, every one is replayed.
fn crit_ticks() {
    let n = ncpus();
    let refs = (0..n)
        .map(|c| {
            spawn_on(c, "crit", move || {
                let me = percpu::mycpu();
                let g = lwkt::crit_enter::<X86>();
                // Read inside the section: a tick just before it is processed
                // at once and must not count.
                let (hw0, lw0, rep0) = (
                    me.ticks.get(),
                    me.lwkt.ticks(),
                    me.lwkt.stats.ticks_replayed.get(),
                );
                let end = cpu::rdtsc() + tsc::ns_to_ticks(60_000_000);
                while cpu::rdtsc() < end || me.ticks.get() < hw0 + 5 {
                    cpu::pause();
                }
                let (hw1, lw1) = (me.ticks.get(), me.lwkt.ticks());
                check!(
                    cpu::interrupts_enabled(),
                    "critical section disabled interrupts"
                );
                check!(
                    lw1 == lw0,
                    "cpu{c}: scheduler took {} ticks inside a critical section",
                    lw1 - lw0
                );
                drop(g);
                let (hw2, lw2, rep2) = (
                    me.ticks.get(),
                    me.lwkt.ticks(),
                    me.lwkt.stats.ticks_replayed.get(),
                );
                check!(
                    hw1 - hw0 >= 5,
                    "cpu{c}: only {} timer interrupts",
                    hw1 - hw0
                );
                check!(
                    lw2 - lw0 == hw2 - hw0,
                    "cpu{c}: {} timer interrupts but {} scheduler ticks",
                    hw2 - hw0,
                    lw2 - lw0
                );
                check!(
                    rep2 - rep0 >= hw1 - hw0,
                    "cpu{c}: {} ticks replayed of {}",
                    rep2 - rep0,
                    hw1 - hw0
                );
            })
        })
        .collect();
    join_all(refs);
    println!(
        "crit-ticks: on {n} CPUs, ticks inside critical sections were deferred and replayed, none lost"
    );
}

static SYNC_HITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn sync_hit(_: usize) {
    SYNC_HITS[percpu::cpu_index() as usize].fetch_add(1, Ordering::Relaxed);
}

/// A thread on every CPU runs 200 cpusyncs over all CPUs, all at once: each
/// completes, and each CPU ran each one's function once.
fn cpusync() {
    const N: u64 = 200;
    let n = ncpus();
    let refs = (0..n)
        .map(|c| {
            spawn_on(c, "cpusync", move || {
                for _ in 0..N {
                    sched::cpusync_online(sync_hit, 0);
                }
            })
        })
        .collect();
    join_all(refs);
    for (c, hits) in SYNC_HITS.iter().enumerate().take(n) {
        let h = hits.load(Ordering::Relaxed);
        check!(
            h == N * n as u64,
            "cpu{c} ran {h} cpusync functions, expected {}",
            N * n as u64
        );
    }
    println!("cpusync: {n} CPUs x {N} concurrent cpusyncs over all CPUs completed");
}

/// Last sequence number each CPU got from each other CPU.
static FLOOD_LAST: [[AtomicU32; 16]; 16] = [const { [const { AtomicU32::new(0) }; 16] }; 16];
static FLOOD_GOT: AtomicU64 = AtomicU64::new(0);
static FLOOD_BAD: AtomicBool = AtomicBool::new(false);

fn flood_msg(seq: usize, from: usize) {
    let to = percpu::cpu_index() as usize;
    let last = &FLOOD_LAST[from][to];
    if last.load(Ordering::Relaxed) + 1 != seq as u32 {
        FLOOD_BAD.store(true, Ordering::Relaxed);
    }
    last.store(seq as u32, Ordering::Relaxed);
    FLOOD_GOT.fetch_add(1, Ordering::Relaxed);
}

/// Every CPU sends 5000 messages to every other CPU at once, far faster than
/// they are served: the FIFOs fill in every direction, senders drain their
/// own queues, and every message arrives once, in order.
fn ipi_flood() {
    const N: usize = 5000;
    let n = ncpus().min(16);
    let expected = (n * (n - 1) * N) as u64;
    let before: u64 = (0..n)
        .map(|c| sched::world().ipi.stats(c).snapshot().fifo_full)
        .sum();
    let refs = (0..n)
        .map(|me| {
            spawn_on(me, "flood", move || {
                for seq in 1..=N {
                    let g = lwkt::crit_enter::<X86>();
                    for to in (0..n).filter(|&c| c != me) {
                        sched::world().ipi.send(to, flood_msg, seq, me);
                    }
                    drop(g);
                }
            })
        })
        .collect();
    join_all(refs);
    let ok =
        crate::selftest::smp::wait_for(30_000, || FLOOD_GOT.load(Ordering::Relaxed) >= expected);
    check!(
        ok,
        "{} of {expected} messages arrived",
        FLOOD_GOT.load(Ordering::Relaxed)
    );
    check!(
        !FLOOD_BAD.load(Ordering::Relaxed),
        "a message arrived out of order or twice"
    );
    check!(
        FLOOD_GOT.load(Ordering::Relaxed) == expected,
        "more messages than sent"
    );
    let full: u64 = (0..n)
        .map(|c| sched::world().ipi.stats(c).snapshot().fifo_full)
        .sum::<u64>()
        - before;
    if n > 1 {
        check!(full > 0, "the FIFOs never filled up");
    }
    println!(
        "ipi-flood: {expected} messages among {n} CPUs, in order, once each; FIFOs full {full} times"
    );
}
