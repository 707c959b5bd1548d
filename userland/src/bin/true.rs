//! Does nothing and exits 0: what the spawn/exit cycles run.
#![no_std]
#![no_main]

wyvern_user::entry!(main);

fn main(_: &str) -> i64 {
    0
}
