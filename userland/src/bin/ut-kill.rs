//! A process ends promptly however its threads are occupied: one asleep in
//! the kernel for an hour, one blocked joining it, one spinning in user mode
//! on another CPU — when the main thread faults (`fault`) or calls `EXIT`
//! (`exit`). The parent (init) times the wait.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use wyvern_user::{println, sys, thread};

wyvern_user::entry!(main);

static STARTED: AtomicU64 = AtomicU64::new(0);

fn main(how: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-kill");
    let n = sys::info().ncpus;
    let sleeper = thread::spawn(|| {
        STARTED.fetch_add(1, Ordering::Release);
        let _ = sys::sleep_ns(3_600_000_000_000);
    })
    .expect("sleeper");
    let tid = sleeper.id();
    thread::spawn(move || {
        STARTED.fetch_add(1, Ordering::Release);
        let _ = sys::thread_join(tid);
    })
    .expect("joiner");
    thread::spawn(move || {
        let _ = sys::set_cpu(n - 1);
        STARTED.fetch_add(1, Ordering::Release);
        let mut x = 0u64;
        loop {
            x = core::hint::black_box(x.wrapping_add(1));
        }
    })
    .expect("spinner");
    while STARTED.load(Ordering::Acquire) < 3 {
        let _ = sys::sleep_ns(1_000_000);
    }
    // Let the sleeper and the joiner reach their sleeps.
    let _ = sys::sleep_ns(30_000_000);
    match how {
        "fault" => {
            // SAFETY: deliberately not: the fault is the point.
            unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
            1
        }
        "exit" => sys::exit(7),
        other => {
            println!("ut-kill: unknown mode `{other}`");
            2
        }
    }
}
