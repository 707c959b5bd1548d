//! Wyvern's user runtime: what a program of the ramdisk links against.
//!
//! * [`sys`]: the system calls of `wyvern_abi::syscall`, raw and wrapped.
//! * [`print!`] / [`println!`]: formatted output through `DEBUG_WRITE`, one
//!   call per line so lines of different threads do not mix.
//! * A heap ([`heap`]): `talc` over memory from `MAP`, growing on demand.
//! * [`thread`]: threads of the process, with closures and join handles.
//! * [`process`]: children started from the ramdisk, and waiting for them.
//! * [`ipc`]: channels, connections, messages and pulses.
//! * [`port`]: I/O port access for drivers.
//! * [`svc`]: the process manager's and the console's protocols and clients.
//! * [`keymap`]: scan codes and USB boot reports to the bytes a terminal
//!   would send (US layout).
//! * [`entry!`]: the program's entry point. `main` gets the argument string
//!   its parent passed and returns the exit code; a panic prints its message
//!   and exits with code 101.
//!
//! Programs are static position-independent ELF executables for
//! `x86_64-unknown-none`, built by `cargo xtask` and packed into the ramdisk.
//! The target is soft-float: the runtime never touches FPU or SSE registers
//! (a program may, with inline assembly; the kernel keeps their state per
//! thread).
#![no_std]
#![feature(allocator_api)]

extern crate alloc;

pub mod heap;
pub mod io;
pub mod ipc;
pub mod keymap;
pub mod port;
pub mod process;
pub mod rng;
pub mod svc;
pub mod sync;
pub mod sys;
pub mod thread;

pub use wyvern_abi::syscall::{Error, WaitStatus};

/// Declares `main(arg: &str) -> i64` as the program's entry point.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The program's first instruction: the kernel jumps here with the
        /// argument string in `rdi`/`rsi` and a stack aligned as after a call.
        ///
        /// # Safety
        ///
        /// Only the kernel calls it, with the argument block it built.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn _start(arg: *const u8, len: usize) -> ! {
            // SAFETY: the kernel calls `_start` with its argument block.
            unsafe { $crate::rt_start(arg, len, $main) }
        }
    };
}

/// Fails the program unless `cond` holds: prints `<name>: FAILED: <why>` and
/// exits with code 1 (for test programs).
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            $crate::fail(format_args!($($why)+));
        }
    };
}

/// Prints why the program failed and exits with code 1.
pub fn fail(why: core::fmt::Arguments) -> ! {
    let name = NAME.get().copied().unwrap_or("user");
    println!("{name}: FAILED: {why}");
    process::exit(1)
}

/// Runs `main` with the argument the kernel passed, then exits with its code.
///
/// # Safety
///
/// `arg` and `len` are what the kernel passed to `_start`: `len` bytes at
/// `arg` on the initial stack (or null).
#[doc(hidden)]
pub unsafe fn rt_start(arg: *const u8, len: usize, main: fn(&str) -> i64) -> ! {
    let bytes: &[u8] = if arg.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract: the kernel copied `len` bytes of
        // argument to `arg` on the initial stack, which lives as long as the
        // process's first thread.
        unsafe { core::slice::from_raw_parts(arg, len) }
    };
    let arg = core::str::from_utf8(bytes).unwrap_or("");
    let code = main(arg);
    process::exit(code)
}

/// The name this program goes by in panic messages (set by `main` if it
/// wants; the default is `user`).
pub static NAME: sync::Once<&'static str> = sync::Once::new();

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let name = NAME.get().copied().unwrap_or("user");
    match info.location() {
        Some(l) => println!(
            "{name}: panic at {}:{}: {}",
            l.file(),
            l.line(),
            info.message()
        ),
        None => println!("{name}: panic: {}", info.message()),
    }
    process::exit(101)
}
