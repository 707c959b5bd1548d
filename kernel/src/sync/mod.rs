//! The kernel's few locks.
//!
//! Wyvern shares data between threads with serializing tokens (`lwkt`). The
//! locks here are for what a token cannot protect: code that runs with no
//! current thread to own a token, or inside a hard interrupt stub, or that the
//! scheduler itself depends on. Every [`SpinLock`] in the kernel is listed in
//! the docs of the module that declares it, with the reason.

mod spin;
mod token_cell;

pub use self::spin::{HeldLocks, LockClass, SpinLock};
pub use self::token_cell::TokenCell;
pub use ::spin::Once;
