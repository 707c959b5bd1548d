//! The user-mode side of the kernel's benchmarks: runs `N` operations of one
//! kind, timed with the TSC in user mode, and exits with the TSC delta as its
//! exit code (so the kernel's benchmark gets the figure without a channel).
//!
//! Argument: `OP N CPU` with OP one of `null` (the null system call),
//! `thread` (create a thread that returns at once, and join it), `spawn`
//! (spawn `true` and wait for it); it runs on CPU `CPU`, so repetitions find
//! the same CPU's caches.
#![no_std]
#![no_main]

use wyvern_user::{process, sys, thread};

wyvern_user::entry!(main);

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ubench");
    let mut w = arg.split(' ');
    let op = w.next().unwrap_or("");
    let n: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if sys::set_cpu(cpu).is_err() {
        return -1;
    }
    let t0 = sys::rdtsc();
    match op {
        "null" => {
            for _ in 0..n {
                let _ = core::hint::black_box(sys::nop());
            }
        }
        "thread" => {
            for _ in 0..n {
                let h = thread::spawn(|| {}).expect("thread");
                let _ = h.join();
            }
        }
        "spawn" => {
            for _ in 0..n {
                let _ = process::run("true", "").expect("spawn true");
            }
        }
        _ => return -1,
    }
    (sys::rdtsc() - t0) as i64
}
