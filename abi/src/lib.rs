//! What the Wyvern kernel and the host tools must agree on, defined once.
//!
//! * [`exit`]: the codes a boot writes to QEMU's `isa-debug-exit` port and the
//!   process status the host sees for them.
//! * [`bootopt`]: the boot options (what a boot does: interactive, a named self-test, a
//!   benchmark) and their one-line text form, which the host passes through QEMU's
//!   `fw_cfg` and the kernel parses.
//! * [`result`]: the machine-readable lines a boot prints on serial.
//! * [`mod@bench`]: the benchmarks of `bench=` mode and the counters they report.
//! * [`syscall`]: the system call numbers, errors and structures.
//!
//! The crate is `no_std`, allocation-free and has no `unsafe`, so the kernel links it
//! as is and the host tests it with `cargo test -p wyvern-abi`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod bootopt;
pub mod exit;
pub mod result;
pub mod syscall;
