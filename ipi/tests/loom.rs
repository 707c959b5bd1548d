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

/// What the model's "hardware" shares: the IPI lines and the receiver's log.
struct Shared {
    irq: [AtomicBool; 2],
    got: AtomicUsize,
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

/// Delivers a pending interrupt to CPU 1.
fn take_irq(ipi: &Ipi<Model>, s: &Arc<Shared>) {
    if s.irq[1].swap(false, Ordering::SeqCst) {
        as_cpu(1, s, || ipi.process());
    }
}

/// Preemption bound of the search.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(PREEMPTIONS);
    b.check(f);
}

fn setup() -> (Arc<Ipi<Model>>, Arc<Shared>) {
    let s = Arc::new(Shared {
        irq: [AtomicBool::new(false), AtomicBool::new(false)],
        got: AtomicUsize::new(0),
    });
    (Arc::new(Ipi::new(2)), s)
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
