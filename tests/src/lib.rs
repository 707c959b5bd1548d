//! The host side of Wyvern's QEMU boots, shared by `cargo xtask` and the
//! integration tests in `tests/`.
//!
//! * [`env`] finds QEMU and OVMF, installing them on Debian/Ubuntu when it can.
//! * [`qemu`] turns a [`qemu::Boot`] into a QEMU command line and runs it with a
//!   deadline, keeping the serial transcript.
//! * [`symbolize`] turns the kernel's `BT` lines into function, file and line.
//! * [`bench`] reads a benchmark boot's `BENCH` lines: parses, checks and
//!   turns them into figures.
//! * [`harness`] is what a test calls: boot one self-test, check both pass
//!   conditions (exit status and the final `TEST <name> ok` line), and fail with
//!   the transcript's tail when either is missing.

pub mod bench;
pub mod env;
pub mod harness;
pub mod qemu;
pub mod symbolize;
