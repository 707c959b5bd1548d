//! The atomics of a token's count word, from `loom` when the crate is
//! model-checked (`RUSTFLAGS="--cfg loom" cargo test -p lwkt --release
//! token::loom`), from `core` otherwise. Only the token protocol is modelled;
//! the rest of the crate uses `core` atomics directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU64};
