//! Nested drains: a sender waiting for room runs its own queues, whose
//! messages send to full FIFOs and wait again, one level deeper each time.
//! Bounded (DragonFly panics when IPI sends nest 20 deep), not a stack
//! overflow or a hang. One OS thread plays every CPU in turn.

#![cfg(not(loom))]

use std::cell::Cell;

use std::sync::atomic::{AtomicUsize, Ordering};

use ipi::{HIGH_WATER, Ipi, MAX_DRAIN_NESTING, Platform};

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
    static PAUSES: Cell<u64> = const { Cell::new(0) };
}

struct OneThread;

impl Platform for OneThread {
    fn cpu() -> usize {
        CPU.with(Cell::get)
    }
    fn send_ipi(_: usize) {}
    fn pause() {
        // Nobody else runs: a sender that pauses this long waits for ever.
        let n = PAUSES.with(|p| {
            p.set(p.get() + 1);
            p.get()
        });
        assert!(n < 100_000, "no progress: a sender waits for ever");
    }
}

static IPI: std::sync::OnceLock<Ipi<OneThread>> = std::sync::OnceLock::new();

fn ipi() -> &'static Ipi<OneThread> {
    IPI.get_or_init(|| Ipi::new(3))
}

fn nothing(_: usize, _: usize) {}

static RELAYS: AtomicUsize = AtomicUsize::new(0);

/// On CPU 0: another CPU 2 message arrives meanwhile (up to 40), then a send
/// to CPU 1, whose FIFO is full and who never drains it.
fn relay(_: usize, _: usize) {
    if RELAYS.fetch_add(1, Ordering::Relaxed) < 40 {
        as_cpu(2, || {
            ipi().send(0, relay, 0, 0);
        });
        CPU.with(|cpu| cpu.set(0));
    }
    ipi().send(1, nothing, 0, 0);
}

fn as_cpu(c: usize, f: impl FnOnce()) {
    CPU.with(|cpu| cpu.set(c));
    f();
}

#[test]
#[should_panic(expected = "drains its own queues 21 deep")]
fn nested_drains_are_bounded() {
    assert_eq!(MAX_DRAIN_NESTING, 20);
    // CPU 0 → 1 filled just past the high-water mark (CPU 1 never runs).
    as_cpu(0, || {
        for _ in 0..=HIGH_WATER {
            ipi().send(1, nothing, 0, 0);
        }
    });
    // CPU 2 queues a relay for CPU 0.
    as_cpu(2, || {
        ipi().send(0, relay, 0, 0);
    });
    // CPU 0 sends once more: it drains, runs the relay, which drains (and
    // runs the next relay), ...
    as_cpu(0, || {
        ipi().send(1, nothing, 0, 0);
    });
}
