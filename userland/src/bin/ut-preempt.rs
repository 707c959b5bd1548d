//! The tick preempts a user busy loop (another thread on that CPU makes
//! progress), and a thread blocked in a system call does not hold its CPU.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wyvern_user::{ensure, println, sys, thread};

wyvern_user::entry!(main);

static SPINNING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static PROGRESS: AtomicU64 = AtomicU64::new(0);
static SLEPT: AtomicBool = AtomicBool::new(false);
static RAN: AtomicU64 = AtomicU64::new(0);

fn main(_: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-preempt");
    let k = sys::info().ncpus - 1;
    // 1. A busy loop that never enters the kernel on CPU k...
    let spinner = thread::spawn(move || {
        ensure!(sys::set_cpu(k) == Ok(0), "move");
        SPINNING.store(true, Ordering::Release);
        let mut x = 0u64;
        while !STOP.load(Ordering::Acquire) {
            x = core::hint::black_box(x.wrapping_add(1));
        }
    })
    .expect("spinner");
    while !SPINNING.load(Ordering::Acquire) {
        let _ = sys::sleep_ns(1_000_000);
    }
    // ...and another thread there, which only runs if the tick preempts it.
    let worker = thread::spawn(move || {
        ensure!(sys::set_cpu(k) == Ok(0), "move");
        for _ in 0..20 {
            PROGRESS.fetch_add(1, Ordering::Relaxed);
            sys::yield_now();
        }
    })
    .expect("worker");
    let t0 = sys::clock_ns();
    while PROGRESS.load(Ordering::Relaxed) < 20 {
        ensure!(
            sys::clock_ns() - t0 < 10_000_000_000,
            "a user busy loop held cpu {k} for 10 s ({} of 20 steps)",
            PROGRESS.load(Ordering::Relaxed)
        );
        let _ = sys::sleep_ns(10_000_000);
    }
    STOP.store(true, Ordering::Release);
    ensure!(worker.join() == Ok(0), "worker");
    ensure!(spinner.join() == Ok(0), "spinner");

    // 2. A thread asleep in the kernel leaves its CPU to others.
    let sleeper = thread::spawn(move || {
        ensure!(sys::set_cpu(k) == Ok(0), "move");
        let _ = sys::sleep_ns(200_000_000);
        SLEPT.store(true, Ordering::Release);
    })
    .expect("sleeper");
    let runner = thread::spawn(move || {
        ensure!(sys::set_cpu(k) == Ok(0), "move");
        while !SLEPT.load(Ordering::Acquire) {
            RAN.fetch_add(1, Ordering::Relaxed);
            sys::yield_now();
        }
    })
    .expect("runner");
    ensure!(sleeper.join() == Ok(0), "sleeper");
    ensure!(runner.join() == Ok(0), "runner");
    let ran = RAN.load(Ordering::Relaxed);
    ensure!(ran > 10, "only {ran} steps while a thread slept on cpu {k}");
    println!("ut-preempt: busy loop preempted on cpu {k}; {ran} steps beside a sleeping thread");
    0
}
