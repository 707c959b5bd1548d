//! TLB shootdown: a thread on every CPU reads a page, so every CPU caches its
//! translation; the main thread unmaps it; then every thread probes the page
//! through the kernel (a `SPAWN` whose name is in that page reads it with the
//! thread's own translations): each probe must fault. A CPU the shootdown
//! missed would still find the page and answer "no such program".
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wyvern_abi::syscall::{self as abi, Error, nr, prot};
use wyvern_user::{ensure, println, sys, thread};

wyvern_user::entry!(main);

static PAGE: AtomicU64 = AtomicU64::new(0);
static READY: AtomicU64 = AtomicU64::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static STALE: AtomicU64 = AtomicU64::new(0);
static FAULTED: AtomicU64 = AtomicU64::new(0);

/// Reads the page through the kernel: `Fault` if unmapped here.
fn probe(page: u64) -> Result<u64, Error> {
    // SAFETY: SPAWN only reads the name bytes.
    abi::decode(unsafe { sys::raw(nr::SPAWN, [page, 8, 0, 0, 0, 0]) })
}

fn main(_: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-shootdown");
    let n = sys::info().ncpus;
    const ROUNDS: u64 = 10;
    for round in 0..ROUNDS {
        let page = sys::map(4096, prot::READ | prot::WRITE).expect("map");
        // SAFETY: the page is ours, mapped readable and writable.
        unsafe { (page as *mut u64).write_volatile(0x2e2e_2e2e_2e2e_2e2e) };
        PAGE.store(page, Ordering::Release);
        READY.store(0, Ordering::Release);
        GO.store(false, Ordering::Release);
        let threads: Vec<_> = (0..n)
            .map(|c| {
                thread::spawn(move || {
                    ensure!(sys::set_cpu(c) == Ok(0), "move to cpu {c}");
                    let page = PAGE.load(Ordering::Acquire);
                    // Cache the translation on this CPU.
                    // SAFETY: the page is mapped until everyone is READY.
                    let v = unsafe { (page as *const u64).read_volatile() };
                    ensure!(v == 0x2e2e_2e2e_2e2e_2e2e, "read {v:#x}");
                    ensure!(probe(page) == Err(Error::NotFound), "probe before unmap");
                    READY.fetch_add(1, Ordering::AcqRel);
                    while !GO.load(Ordering::Acquire) {
                        core::hint::spin_loop();
                    }
                    match probe(page) {
                        Err(Error::Fault) => FAULTED.fetch_add(1, Ordering::Relaxed),
                        _ => STALE.fetch_add(1, Ordering::Relaxed),
                    };
                })
                .expect("thread")
            })
            .collect();
        while READY.load(Ordering::Acquire) < n {
            let _ = sys::sleep_ns(1_000_000);
        }
        // SAFETY: nobody touches the page again but through the probe.
        ensure!(unsafe { sys::unmap(page, 4096) } == Ok(0), "unmap");
        GO.store(true, Ordering::Release);
        for t in threads {
            ensure!(t.join() == Ok(0), "thread of round {round}");
        }
    }
    let stale = STALE.load(Ordering::Relaxed);
    ensure!(
        stale == 0,
        "{stale} probes found the page after it was unmapped (shootdown missed a CPU)"
    );
    ensure!(FAULTED.load(Ordering::Relaxed) == ROUNDS * n, "probes lost");
    println!("ut-shootdown: {ROUNDS} rounds on {n} CPUs, every CPU faulted after the unmap");
    0
}
