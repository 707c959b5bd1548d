//! Console output: [`print!`](crate::print) and [`println!`](crate::println).
//!
//! A call formats into a buffer on the stack and hands it to the kernel in one
//! `DEBUG_WRITE` (in pieces of 512 bytes when longer), so a line printed by one
//! thread is not cut by another's.

use core::fmt::{self, Write};

use crate::sys;

/// Formats into a stack buffer, writing it out when full and when dropped.
pub struct Console {
    buf: [u8; 512],
    len: usize,
}

impl Console {
    /// An empty buffer.
    pub const fn new() -> Self {
        Console {
            buf: [0; 512],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            let _ = sys::debug_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

#[doc(hidden)]
pub fn print_fmt(args: fmt::Arguments, newline: bool) {
    let mut c = Console::new();
    let _ = c.write_fmt(args);
    if newline {
        let _ = c.write_str("\n");
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::io::print_fmt(format_args!($($arg)*), false) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::io::print_fmt(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::io::print_fmt(format_args!($($arg)*), true) };
}
