//! Std-thread stress of the IPI queues: every CPU a thread, interrupts
//! modelled as a flag the CPU polls between its own work.

#![cfg(not(loom))]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;

use ipi::{CpuSet, Ipi, Platform};

const CPUS: usize = 8;

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(usize::MAX) };
}

static IRQ: [AtomicBool; CPUS] = [const { AtomicBool::new(false) }; CPUS];
/// Tests share the statics above: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Threads;

impl Platform for Threads {
    fn cpu() -> usize {
        CPU.with(Cell::get)
    }
    fn send_ipi(cpu: usize) {
        IRQ[cpu].store(true, Ordering::SeqCst);
    }
    fn pause() {
        std::hint::spin_loop();
        thread::yield_now();
    }
}

/// Takes a pending "interrupt" on this CPU.
fn poll(ipi: &Ipi<Threads>) {
    if IRQ[Threads::cpu()].swap(false, Ordering::SeqCst) {
        ipi.process();
    }
}

fn leak(ipi: Ipi<Threads>) -> &'static Ipi<Threads> {
    Box::leak(Box::new(ipi))
}

fn run_cpus(f: impl Fn(usize) + Sync) {
    thread::scope(|s| {
        for c in 0..CPUS {
            let f = &f;
            s.spawn(move || {
                CPU.with(|cpu| cpu.set(c));
                f(c);
            });
        }
    });
}

/// Last sequence number CPU `to` received from `from`.
static LAST: [[AtomicUsize; CPUS]; CPUS] = [const { [const { AtomicUsize::new(0) }; CPUS] }; CPUS];
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

fn record(seq: usize, from: usize) {
    let to = Threads::cpu();
    let last = LAST[from][to].load(Ordering::Relaxed);
    assert_eq!(
        seq,
        last + 1,
        "cpu{to} got message {seq} from cpu{from} after {last}"
    );
    LAST[from][to].store(seq, Ordering::Relaxed);
    RECEIVED.fetch_add(1, Ordering::Relaxed);
}

fn reset() {
    for row in &LAST {
        for c in row {
            c.store(0, Ordering::Relaxed);
        }
    }
    RECEIVED.store(0, Ordering::Relaxed);
    for i in &IRQ {
        i.store(false, Ordering::Relaxed);
    }
}

/// Every CPU sends N messages to every other CPU as fast as it can and serves
/// its own queue only when "interrupted": the FIFOs run full in both directions
/// at once. Each message must arrive exactly once, in order, and nobody may
/// deadlock.
#[test]
fn all_to_all_full_fifos_deliver_exactly_once_in_order() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset();
    const N: usize = 20_000;
    let ipi = leak(Ipi::new(CPUS));
    let expected = CPUS * (CPUS - 1) * N;
    run_cpus(|me| {
        for seq in 1..=N {
            for to in (0..CPUS).filter(|&c| c != me) {
                ipi.send(to, record, seq, me);
            }
            if seq % 64 == 0 {
                poll(ipi);
            }
        }
        while RECEIVED.load(Ordering::Relaxed) < expected {
            poll(ipi);
            Threads::pause();
        }
    });
    assert_eq!(RECEIVED.load(Ordering::Relaxed), expected);
    for (from, row) in LAST.iter().enumerate() {
        for (to, last) in row.iter().enumerate().filter(|&(c, _)| c != from) {
            assert_eq!(last.load(Ordering::Relaxed), N, "{from} -> {to}");
        }
    }
    let total = |f: fn(&ipi::StatsSnapshot) -> u64| {
        (0..CPUS).map(|c| f(&ipi.stats(c).snapshot())).sum::<u64>()
    };
    assert_eq!(total(|s| s.sent), expected as u64);
    assert_eq!(total(|s| s.received), expected as u64);
    assert!(total(|s| s.fifo_full) > 0, "the FIFOs never filled up");
    assert!(total(|s| s.avoided) > 0, "no IPI was ever avoided");
    // Every send signals once; a draining sender re-signals, so at least that many.
    assert!(total(|s| s.ipis) + total(|s| s.avoided) >= expected as u64);
}

static PASSIVE_RAN: AtomicU64 = AtomicU64::new(0);

fn count_passive(_: usize, _: usize) {
    PASSIVE_RAN.fetch_add(1, Ordering::Relaxed);
}

/// A passive message raises no IPI; the target finds it by polling.
#[test]
fn passive_messages_wait_for_a_poll() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset();
    let ipi = leak(Ipi::new(2));
    let sent = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            CPU.with(|c| c.set(0));
            ipi.send_passive(1, count_passive, 0, 0);
            assert!(!IRQ[1].load(Ordering::SeqCst), "passive send raised an IPI");
            sent.wait();
        });
        s.spawn(|| {
            CPU.with(|c| c.set(1));
            sent.wait();
            assert!(ipi.has_pending());
            assert_eq!(PASSIVE_RAN.load(Ordering::Relaxed), 0);
            ipi.process();
            assert_eq!(PASSIVE_RAN.load(Ordering::Relaxed), 1);
            assert!(!ipi.has_pending());
        });
    });
    assert_eq!(ipi.stats(0).snapshot().passive, 1);
    assert_eq!(ipi.stats(0).snapshot().ipis, 0);
}

static SLOW_DONE: AtomicBool = AtomicBool::new(false);

fn slow(_: usize, _: usize) {
    thread::sleep(std::time::Duration::from_millis(20));
    SLOW_DONE.store(true, Ordering::SeqCst);
}

/// `wait_seq` returns only after the message's function has returned.
#[test]
fn wait_seq_waits_for_completion() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset();
    let ipi = leak(Ipi::new(2));
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            CPU.with(|c| c.set(1));
            while !stop.load(Ordering::SeqCst) {
                poll(ipi);
                Threads::pause();
            }
        });
        s.spawn(|| {
            CPU.with(|c| c.set(0));
            let seq = ipi.send(1, slow, 0, 0);
            ipi.wait_seq(1, seq);
            assert!(
                SLOW_DONE.load(Ordering::SeqCst),
                "wait_seq returned before the function"
            );
            stop.store(true, Ordering::SeqCst);
        });
    });
}

static SYNC_RUNS: [AtomicU64; CPUS] = [const { AtomicU64::new(0) }; CPUS];
static IN_SYNC: AtomicUsize = AtomicUsize::new(0);

fn sync_func(_: usize) {
    SYNC_RUNS[Threads::cpu()].fetch_add(1, Ordering::SeqCst);
}

/// Every CPU initiates cpusyncs over all CPUs at the same time as the others:
/// all complete, and each CPU runs every cpusync's function exactly once.
#[test]
fn concurrent_cpusyncs_over_all_cpus_complete() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset();
    const ROUNDS: usize = 300;
    let ipi = leak(Ipi::new(CPUS));
    let all = CpuSet::first(CPUS);
    run_cpus(|_| {
        for _ in 0..ROUNDS {
            ipi.cpusync(&all, sync_func, 0);
            poll(ipi);
        }
        IN_SYNC.fetch_add(1, Ordering::SeqCst);
        // Keep serving the others until every CPU is done initiating.
        while IN_SYNC.load(Ordering::SeqCst) < CPUS {
            poll(ipi);
            Threads::pause();
        }
    });
    for (c, runs) in SYNC_RUNS.iter().enumerate() {
        assert_eq!(
            runs.load(Ordering::SeqCst),
            (CPUS * ROUNDS) as u64,
            "cpu{c}"
        );
    }
    let started: u64 = (0..CPUS).map(|c| ipi.stats(c).snapshot().cpusync).sum();
    assert_eq!(started, (CPUS * ROUNDS) as u64);
}
