//! Loom models of the FIFO and the signal/poll handshake.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p ipi --release --test loom`
//!
//! The models explore every interleaving with at most [`PREEMPTIONS`]
//! preemptions (loom's bounded search; every bug loom's authors report needs
//! two or three), which keeps the run to minutes.
//!
//! CPUs are loom threads; the hardware IPI is a flag the target takes. After
//! the threads finish, a flag still set means an interrupt is on its way and
//! the model delivers it, exactly as the hardware would. The property checked
//! is the one the protocol exists for: every message sent is run exactly once,
//! in order — never stranded in a FIFO with nobody signalled.

#![cfg(loom)]

use std::cell::{Cell, RefCell};

use ipi::{Ipi, Platform};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

/// What the model's "hardware" shares: the IPI lines and the receivers' logs.
struct Shared {
    irq: [AtomicBool; 3],
    got: AtomicUsize,
    /// Per source CPU, what CPU 1 (or, for `from_each`, anyone) received.
    from: [AtomicUsize; 3],
    /// cpusync function runs, per CPU.
    synced: [AtomicUsize; 3],
}

loom::thread_local! {
    static CPU: Cell<usize> = Cell::new(0);
    static SHARED: RefCell<Option<Arc<Shared>>> = RefCell::new(None);
}

fn shared() -> Arc<Shared> {
    SHARED.with(|s| {
        s.borrow()
            .clone()
            .expect("model thread without shared state")
    })
}

struct Model;

impl Platform for Model {
    fn cpu() -> usize {
        CPU.with(Cell::get)
    }
    fn send_ipi(cpu: usize) {
        // The interrupt line is modelled with read-modify-writes on both ends
        // (raise here, take in `take_irq`): with a plain store racing the
        // taker's swap, loom 0.7 let a thread that joined both later read the
        // line's older value, a state the hardware cannot reach.
        shared().irq[cpu].swap(true, Ordering::SeqCst);
    }
    fn pause() {
        thread::yield_now();
    }
}

/// Message `seq` must arrive right after `seq - 1`.
fn record(seq: usize, _: usize) {
    let s = shared();
    let got = s.got.load(Ordering::Relaxed);
    assert_eq!(got + 1, seq, "message {seq} arrived after {got}");
    s.got.store(seq, Ordering::Relaxed);
}

/// Runs `f` as CPU `cpu` of the model.
fn as_cpu<R>(cpu: usize, shared: &Arc<Shared>, f: impl FnOnce() -> R) -> R {
    CPU.with(|c| c.set(cpu));
    SHARED.with(|s| *s.borrow_mut() = Some(shared.clone()));
    f()
}

/// Message `seq` from CPU `src` must arrive right after `seq - 1` from it.
fn record_from(seq: usize, src: usize) {
    let s = shared();
    let got = s.from[src].load(Ordering::Relaxed);
    assert_eq!(
        got + 1,
        seq,
        "message {seq} from cpu {src} arrived after {got}"
    );
    s.from[src].store(seq, Ordering::Relaxed);
}

/// Delivers a pending interrupt to CPU 1.
fn take_irq(ipi: &Ipi<Model>, s: &Arc<Shared>) {
    take_irq_on(1, ipi, s);
}

/// Delivers a pending interrupt to CPU `cpu`; whether there was one.
fn take_irq_on(cpu: usize, ipi: &Ipi<Model>, s: &Arc<Shared>) -> bool {
    if s.irq[cpu].swap(false, Ordering::SeqCst) {
        as_cpu(cpu, s, || ipi.process());
        true
    } else {
        false
    }
}

/// Preemption bound of the search.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_branches(1_000, f);
}

/// `model` for executions longer than loom's default of 1,000 branch points
/// (a sender waiting for room loops until the other CPU has drained).
fn model_branches(branches: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(PREEMPTIONS);
    b.max_branches = branches;
    b.check(f);
}

fn setup() -> (Arc<Ipi<Model>>, Arc<Shared>) {
    setup_cpus(2)
}

fn setup_cpus(n: usize) -> (Arc<Ipi<Model>>, Arc<Shared>) {
    let s = Arc::new(Shared {
        irq: std::array::from_fn(|_| AtomicBool::new(false)),
        got: AtomicUsize::new(0),
        from: std::array::from_fn(|_| AtomicUsize::new(0)),
        synced: std::array::from_fn(|_| AtomicUsize::new(0)),
    });
    (Arc::new(Ipi::new(n)), s)
}

/// CPU 0 sends two messages while CPU 1 takes whatever interrupt it sees.
#[test]
fn fifo_delivers_in_order() {
    model(|| {
        let (ipi, s) = setup();
        let sender = {
            let (ipi, s) = (ipi.clone(), s.clone());
            thread::spawn(move || {
                as_cpu(0, &s, || {
                    ipi.send(1, record, 1, 0);
                    ipi.send(1, record, 2, 0);
                })
            })
        };
        let receiver = {
            let (ipi, s) = (ipi.clone(), s.clone());
            thread::spawn(move || take_irq(&ipi, &s))
        };
        sender.join().unwrap();
        receiver.join().unwrap();
        take_irq(&ipi, &s);
        assert_eq!(s.got.load(Ordering::Relaxed), 2, "a message was stranded");
    });
}

/// CPU 1 is already signalled and processing (`npoll` = 1) when CPU 0 sends
/// again: the second send may avoid its IPI only if CPU 1 is bound to see the
/// message before it stops polling.
#[test]
fn avoided_ipi_never_strands_a_message() {
    model(|| {
        let (ipi, s) = setup();
        // First message: signals CPU 1 (npoll becomes 1, its IRQ pending).
        as_cpu(0, &s, || ipi.send(1, record, 1, 0));
        let receiver = {
            let (ipi, s) = (ipi.clone(), s.clone());
            thread::spawn(move || take_irq(&ipi, &s))
        };
        let sender = {
            let (ipi, s) = (ipi.clone(), s.clone());
            thread::spawn(move || as_cpu(0, &s, || ipi.send(1, record, 2, 0)))
        };
        sender.join().unwrap();
        receiver.join().unwrap();
        take_irq(&ipi, &s);
        assert_eq!(s.got.load(Ordering::Relaxed), 2, "a message was stranded");
    });
}

/// A third CPU signals too: CPUs 0 and 2 send to CPU 1 at once while CPU 1
/// takes what it sees. Whichever sender finds CPU 1 signalled already avoids
/// its IPI; neither message is stranded, each runs once.
#[test]
fn two_senders_to_one_cpu_strand_nothing() {
    model(|| {
        let (ipi, s) = setup_cpus(3);
        let senders: Vec<_> = [0usize, 2]
            .into_iter()
            .map(|c| {
                let (ipi, s) = (ipi.clone(), s.clone());
                thread::spawn(move || as_cpu(c, &s, || ipi.send(1, record_from, 1, c)))
            })
            .collect();
        let receiver = {
            let (ipi, s) = (ipi.clone(), s.clone());
            thread::spawn(move || take_irq(&ipi, &s))
        };
        for t in senders {
            t.join().unwrap();
        }
        receiver.join().unwrap();
        take_irq(&ipi, &s);
        for c in [0, 2] {
            assert_eq!(
                s.from[c].load(Ordering::Relaxed),
                1,
                "cpu {c}'s message was stranded"
            );
        }
    });
}

/// Two CPUs whose FIFOs to each other are above the high-water mark both
/// send once more: a sender drains its own incoming FIFO while it waits for
/// room, so both get room (no deadlock), every message runs once and in
/// order, and the ring indices wrap.
#[test]
fn full_rings_both_ways_drain_each_other() {
    let full = ipi::HIGH_WATER as usize + 1;
    model_branches(20_000, move || {
        let (ipi, s) = setup();
        // A message once around the ring first, so the indices wrap below.
        for c in 0..2 {
            as_cpu(c, &s, || {
                for seq in 1..=ipi::FIFO_SIZE - full {
                    ipi.send(1 - c, record_from, seq, c);
                }
            });
            as_cpu(1 - c, &s, || ipi.process());
        }
        for c in 0..2 {
            as_cpu(c, &s, || {
                for seq in ipi::FIFO_SIZE - full + 1..=ipi::FIFO_SIZE {
                    ipi.send(1 - c, record_from, seq, c);
                }
            });
        }
        let last = ipi::FIFO_SIZE + 1;
        let ts: Vec<_> = (0..2)
            .map(|c| {
                let (ipi, s) = (ipi.clone(), s.clone());
                thread::spawn(move || {
                    as_cpu(c, &s, || {
                        ipi.send(1 - c, record_from, last, c);
                        // Then serve our queues once, as the IPI that the
                        // other's wait raised would: the other may be
                        // waiting for room only we can make.
                        ipi.process();
                    });
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        for c in 0..2 {
            take_irq_on(c, &ipi, &s);
            as_cpu(c, &s, || ipi.process());
        }
        for c in 0..2 {
            assert_eq!(s.from[c].load(Ordering::Relaxed), last, "from cpu {c}");
        }
        // The first to send found its FIFO full (the other may find room:
        // the first one's drain emptied its FIFO).
        let full: u64 = (0..2).map(|c| ipi.stats(c).snapshot().fifo_full).sum();
        assert!(full > 0, "no CPU found its FIFO full");
    });
}

fn count_sync(_: usize) {
    let s = shared();
    s.synced[Model::cpu()].fetch_add(1, Ordering::Relaxed);
}

/// A cpusync from CPU 0 to CPUs 0 and 1, CPU 1 taking interrupts as they
/// come: the function runs once on each, and the initiator returns only
/// after CPU 1 has run it.
#[test]
fn cpusync_runs_once_on_every_target() {
    model(|| {
        let (_, s) = setup();
        // `cpusync` wants the queues `'static`, as the kernel's are.
        let ipi: &'static Ipi<Model> = Box::leak(Box::new(Ipi::new(2)));
        let target = {
            let s = s.clone();
            thread::spawn(move || {
                while s.synced[1].load(Ordering::Relaxed) == 0 {
                    if !take_irq_on(1, ipi, &s) {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut both = ipi::CpuSet::new();
        both.insert(0);
        both.insert(1);
        as_cpu(0, &s, || ipi.cpusync(&both, count_sync, 0));
        assert_eq!(
            s.synced[1].load(Ordering::Relaxed),
            1,
            "returned before cpu 1 ran it"
        );
        target.join().unwrap();
        take_irq_on(1, ipi, &s);
        assert_eq!(s.synced[0].load(Ordering::Relaxed), 1);
        assert_eq!(s.synced[1].load(Ordering::Relaxed), 1);
    });
}
