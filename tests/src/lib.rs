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

/// The kernel's portable hardware logic, tested here on the host: the
/// local APIC mode choice and its transitions (including the locked
/// x2APIC state no emulator shows).
#[cfg(test)]
#[allow(dead_code)] // what only the kernel uses
#[path = "../../kernel/src/arch/x86_64/apic_mode.rs"]
mod kernel_apic_mode;

/// Defines a boot test once for each local APIC the guest may have: `fn
/// name(apic) { … }` becomes the tests `name::xapic` and `name::x2apic`, the
/// body run with [`qemu::Apic::XApic`] and [`qemu::Apic::X2Apic`]. `cargo
/// xtask test` skips the `x2apic` half, and says so, where QEMU cannot
/// show x2APIC.
#[macro_export]
macro_rules! apic_tests {
    ($( $(#[$attr:meta])* fn $name:ident($apic:ident) $body:block )*) => {
        $(
            $(#[$attr])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($apic: $crate::qemu::Apic) $body

                #[test]
                fn xapic() {
                    body($crate::qemu::Apic::XApic)
                }

                #[test]
                fn x2apic() {
                    body($crate::qemu::Apic::X2Apic)
                }
            }
        )*
    };
}
