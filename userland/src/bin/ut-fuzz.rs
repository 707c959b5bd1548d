//! Random system calls: numbers and arguments drawn from a seeded generator,
//! mixing random words with the values most likely to break a kernel (zero,
//! one, all ones, kernel addresses, non-canonical ones, the top of user
//! space). Every call must come back with a value or a known error; the
//! kernel must survive and leak nothing (the kernel's test checks that after
//! the fuzzers end).
//!
//! Argument: `SEED COUNT CPU`. Calls that would end the fuzzer (exit, thread
//! exit), start code at a random address (thread create) or sleep for a long
//! time are left out or bounded; the fuzzer creates no channel, so no
//! connection can exist and every message call fails without blocking
//! (fuzzers run alone: no other process has a channel either); `TRACE`
//! only prints pages of trace rings, so it is left out too. Without an I/O
//! grant, the driver calls fail with `Denied`. The fuzzer itself uses no heap, so no random
//! unmap can pull memory from under it.
#![no_std]
#![no_main]

use wyvern_abi::syscall::{self as abi, Error, USER_TOP, nr};
use wyvern_user::rng::Rng;
use wyvern_user::{ensure, println, sys};

wyvern_user::entry!(main);

const NASTY: [u64; 14] = [
    0,
    1,
    4096,
    u64::MAX,
    u64::MAX - 4095,
    i64::MAX as u64,
    0x0000_8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    USER_TOP,
    USER_TOP - 1,
    0x0000_1000_0000_0000,
    1 << 40,
    0x7fff_ffff,
];

fn arg(r: &mut Rng) -> u64 {
    match r.below(4) {
        0 => NASTY[r.below(NASTY.len() as u64) as usize],
        1 => r.below(256),
        _ => r.next_u64(),
    }
}

fn main(a: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-fuzz");
    let mut words = a.split(' ').map(|w| w.parse::<u64>().unwrap_or(0));
    let (seed, count, cpu) = (
        words.next().unwrap_or(1),
        words.next().unwrap_or(1000),
        words.next().unwrap_or(0),
    );
    let _ = sys::set_cpu(cpu);
    let mut r = Rng::new(seed);
    let (mut ok, mut errors) = (0u64, [0u64; Error::ALL.len() + 1]);
    for _ in 0..count {
        let n = loop {
            let n = r.below(nr::COUNT + 8);
            if !matches!(
                n,
                nr::EXIT | nr::THREAD_EXIT | nr::THREAD_CREATE | nr::CHANNEL_CREATE | nr::TRACE
            ) {
                break n;
            }
        };
        let mut a = [
            arg(&mut r),
            arg(&mut r),
            arg(&mut r),
            arg(&mut r),
            arg(&mut r),
            arg(&mut r),
        ];
        if n == nr::SLEEP {
            a[0] %= 1_000_000;
        }
        if n == nr::DEBUG_WRITE {
            // Do not flood the console when a pointer happens to be good.
            a[1] %= 64;
        }
        // SAFETY: no argument points at memory of ours (the nasty values and
        // random words are not our addresses; the fuzzer keeps no heap), so
        // whatever the call does, it does to nothing we use.
        let raw = unsafe { sys::raw(n, a) };
        match abi::decode(raw) {
            Ok(_) => ok += 1,
            Err(e) => {
                ensure!(
                    Error::from_result(raw as i64) == Some(e),
                    "call {n} returned {raw:#x}, neither a value nor an error"
                );
                errors[e as usize] += 1;
            }
        }
    }
    println!(
        "ut-fuzz: seed {seed} cpu {cpu}: {count} calls, {ok} succeeded, errors {:?}",
        &errors[1..]
    );
    0
}
