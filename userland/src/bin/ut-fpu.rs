//! FPU/SSE state survives switches: threads of this process and of a second
//! copy of it share one CPU, each with its own values in all sixteen XMM
//! registers and its own MXCSR, yielding and being preempted in between; a
//! thread that moves between CPUs keeps its values too.
//!
//! The programs are built soft-float, so the registers are reached with
//! hand-encoded `movq` instructions the compiler cannot get in the way of.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use wyvern_user::{ensure, println, process, sys, thread};

wyvern_user::entry!(main);

/// `movq xmmN, rax` and `movq rax, xmmN`: 66 REX.W(+R) 0F 6E|7E /r.
macro_rules! xmm {
    ($($n:literal: $rex:literal $modrm:literal),* $(,)?) => {
        fn set_all(v: &[u64; 16]) {
            $(
                // SAFETY: writes one XMM register, which nothing else uses.
                unsafe {
                    core::arch::asm!(
                        concat!(".byte 0x66, ", $rex, ", 0x0f, 0x6e, ", $modrm),
                        in("rax") v[$n],
                        options(nomem, nostack, preserves_flags),
                    );
                }
            )*
        }
        fn get_all() -> [u64; 16] {
            let mut v = [0u64; 16];
            $(
                // SAFETY: reads one XMM register.
                unsafe {
                    core::arch::asm!(
                        concat!(".byte 0x66, ", $rex, ", 0x0f, 0x7e, ", $modrm),
                        out("rax") v[$n],
                        options(nomem, nostack, preserves_flags),
                    );
                }
            )*
            v
        }
    };
}

xmm! {
    0: "0x48" "0xc0", 1: "0x48" "0xc8", 2: "0x48" "0xd0", 3: "0x48" "0xd8",
    4: "0x48" "0xe0", 5: "0x48" "0xe8", 6: "0x48" "0xf0", 7: "0x48" "0xf8",
    8: "0x4c" "0xc0", 9: "0x4c" "0xc8", 10: "0x4c" "0xd0", 11: "0x4c" "0xd8",
    12: "0x4c" "0xe0", 13: "0x4c" "0xe8", 14: "0x4c" "0xf0", 15: "0x4c" "0xf8",
}

fn set_mxcsr(v: u32) {
    // SAFETY: `ldmxcsr [rax]` (0F AE /2) loads a valid MXCSR from our stack.
    unsafe {
        core::arch::asm!(".byte 0x0f, 0xae, 0x10", in("rax") &v as *const u32, options(nostack, preserves_flags));
    }
}

fn get_mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: `stmxcsr [rax]` (0F AE /3) stores MXCSR into `v`.
    unsafe {
        core::arch::asm!(".byte 0x0f, 0xae, 0x18", in("rax") &mut v as *mut u32, options(nostack, preserves_flags));
    }
    v
}

fn pattern(seed: u64) -> [u64; 16] {
    core::array::from_fn(|i| {
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64 * 0x0101_0101_0101_0101)
    })
}

/// Sets its values, then yields and spins (to be preempted) and checks them,
/// `rounds` times; moves to CPU `cpus[r % len]` each round if `cpus` is given.
fn churn(seed: u64, rounds: u32, cpu: u64, wander: Option<u64>) {
    // MXCSR: all exceptions masked, a rounding mode of its own.
    let mxcsr = 0x1f80 | ((seed as u32 & 3) << 13);
    let want = pattern(seed);
    for r in 0..rounds {
        match wander {
            Some(n) => ensure!(sys::set_cpu(u64::from(r) % n) == Ok(0), "move"),
            None if r == 0 => ensure!(sys::set_cpu(cpu) == Ok(0), "move"),
            None => {}
        }
        set_all(&want);
        set_mxcsr(mxcsr);
        sys::yield_now();
        for i in 0..20_000u64 {
            core::hint::black_box(i);
        }
        let got = get_all();
        ensure!(
            got == want,
            "thread {seed}: XMM registers changed in round {r}: {got:x?}"
        );
        let m = get_mxcsr();
        ensure!(m == mxcsr, "thread {seed}: MXCSR {m:#x}, want {mxcsr:#x}");
    }
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-fpu");
    let info = sys::info();
    let k = info.ncpus - 1;
    let child = (arg != "child").then(|| process::spawn("ut-fpu", "child").expect("spawn"));
    let base = if child.is_some() { 1 } else { 100 };
    let mut ts: Vec<_> = (0..4u64)
        .map(|i| thread::spawn(move || churn(base + i, 100, k, None)).expect("thread"))
        .collect();
    ts.push(thread::spawn(move || churn(base + 50, 50, 0, Some(info.ncpus))).expect("wanderer"));
    churn(base + 99, 100, k, None);
    for t in ts {
        ensure!(t.join() == Ok(0), "a thread failed");
    }
    if let Some(pid) = child {
        let st = process::wait(pid).expect("wait");
        ensure!(
            st.kind == wyvern_user::WaitStatus::EXITED && st.code == 0,
            "the second copy: {}",
            process::describe(&st)
        );
        println!(
            "ut-fpu: XMM and MXCSR kept by 12 threads of 2 processes sharing cpu {k}, 2 moving across CPUs"
        );
    }
    0
}
