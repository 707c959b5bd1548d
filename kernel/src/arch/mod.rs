//! The machine, chosen in one place.
//!
//! Everything that executes a special instruction, touches an I/O port or an MSR,
//! or knows an x86 table format lives under `arch/x86_64/`; the rest of the kernel
//! calls it through this re-export. The module names mirror the portable modules
//! they serve (seL4's `kernel/thread.c` ↔ `arch/x86/64/kernel/thread.c`).

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
