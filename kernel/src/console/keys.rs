//! Console keys, read while the kernel runs: the instruments on demand.
//!
//! | key | does |
//! |---|---|
//! | `s` | print every CPU's counters |
//! | `t` | print every CPU's trace ring |
//! | `i` | print interrupt sources and per-vector counts |
//! | `h` | list the keys |
//! | `q` | end the run (exits QEMU; halts on real hardware) |

use crate::arch::qemu::{self, ExitCode};
use crate::println;

fn help() {
    println!("keys: s = counters, t = trace rings, i = interrupts, h = help, q = quit");
}

fn interrupts() {
    for src in crate::intr::sources() {
        println!(
            "intr: {:<8} vector {:#04x} handled {}",
            src.name,
            src.vector,
            src.handled.load(core::sync::atomic::Ordering::Relaxed)
        );
    }
    for c in crate::percpu::online() {
        let v: alloc::vec::Vec<_> = crate::stats::vectors(c).collect();
        println!("intr: cpu{} vectors {:x?}", c.index(), v);
    }
}

/// Reads keys and answers them until `q`, then returns. Thread context;
/// blocks.
pub fn serve() {
    println!("console: ready (h for help)");
    loop {
        match crate::console::input::wait_byte(0) {
            Some(b's') => crate::stats::dump(),
            Some(b't') => crate::trace::dump_all(),
            Some(b'i') => interrupts(),
            Some(b'h') => help(),
            Some(b'q') => {
                println!("console: quit");
                return;
            }
            _ => {}
        }
    }
}

/// The interactive console: keys until `q`, then the end of the run.
pub fn run() -> ! {
    serve();
    qemu::exit(ExitCode::Success)
}
