//! Sleeps for its argument's seconds (1 when it has none), then exits 0:
//! a program for the shell to wait for (and for Ctrl-C to end).
#![no_std]
#![no_main]

use wyvern_user::sys;

wyvern_user::entry!(main);

fn main(arg: &str) -> i64 {
    let secs: u64 = arg.trim().parse().unwrap_or(1);
    for _ in 0..secs {
        if sys::sleep_ns(1_000_000_000).is_err() {
            return 1;
        }
    }
    0
}
