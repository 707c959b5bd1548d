//! The kernel console: COM1 and the UEFI framebuffer, behind `print!`/`println!`.
//!
//! # Locking, and why printing cannot deadlock
//!
//! Output goes through one [`ConsoleLock`] that records the CPU holding it and is
//! held with interrupts disabled on that CPU, so a line is never split by another
//! CPU's line nor by an interrupt handler on the same CPU. Three cases could still
//! deadlock a plain spinlock, and each is handled:
//!
//! * An exception or NMI on the CPU that is printing, whose handler prints: the
//!   lock sees its owner is this very CPU and lets the nested writer through
//!   without waiting. The nested writer writes to the serial port only (which
//!   has no state of ours to corrupt) and leaves the framebuffer to the writer it
//!   interrupted.
//! * A panic on one CPU while another holds the lock and is wedged (or has just
//!   been stopped): in panic mode a writer waits a bounded time, then takes the
//!   lock over.
//! * A printing CPU that faults inside the console code itself: covered by the
//!   first case.
//!
//! The serial port is optional: real machines often have none, and then output
//! goes to the framebuffer alone.
//!
//! # Handing COM1 to a user driver
//!
//! Once a user driver attaches COM1's IRQ ([`hand_over_serial`]), the kernel
//! stops writing to the port: its output goes to the framebuffer and to the
//! log ring, which the driver drains with `KLOG_READ` ([`klog_read`]) and
//! writes out itself. Only an emergency writes COM1 directly still: a panic
//! (panic mode), or an exception handler that interrupted a writer. Writers
//! with interrupts enabled wake the drainer; bytes written with interrupts
//! off wait for the next such writer or the drainer's timeout.

pub mod fb;
pub mod input;
pub mod keys;
pub mod log;
pub mod serial;

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch::cpu;
use crate::percpu;

/// Owner value of a free lock.
const NO_OWNER: u32 = u32::MAX;
/// How many `pause`s a panicking writer waits for another CPU's line to end.
const PANIC_WAIT_SPINS: u32 = 20_000_000;

struct ConsoleState {
    serial: serial::Serial,
    fb: Option<fb::FbConsole>,
    klog: Klog,
}

/// Bytes the log ring holds; older ones are overwritten.
const KLOG_SIZE: usize = 16 * 1024;

/// The log ring: kernel output while a user driver owns COM1.
struct Klog {
    buf: [u8; KLOG_SIZE],
    /// Bytes ever written, and ever read (or overwritten).
    head: u64,
    tail: u64,
}

impl Klog {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            self.buf[(self.head % KLOG_SIZE as u64) as usize] = b;
            self.head += 1;
        }
        self.tail = self.tail.max(self.head.saturating_sub(KLOG_SIZE as u64));
    }

    fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = ((self.head - self.tail) as usize).min(out.len());
        for b in &mut out[..n] {
            *b = self.buf[(self.tail % KLOG_SIZE as u64) as usize];
            self.tail += 1;
        }
        n
    }
}

/// A user driver owns COM1 (module docs).
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// The console's lock. See the module docs.
struct ConsoleLock {
    owner: AtomicU32,
    state: UnsafeCell<ConsoleState>,
}

// SAFETY: `state` is only reached through `ConsoleGuard`, which the lock hands to
// one CPU at a time (nested writers on the owning CPU use only the serial port,
// which is stateless here).
unsafe impl Sync for ConsoleLock {}

static CONSOLE: ConsoleLock = ConsoleLock {
    owner: AtomicU32::new(NO_OWNER),
    state: UnsafeCell::new(ConsoleState {
        serial: serial::Serial::absent(),
        fb: None,
        klog: Klog {
            buf: [0; KLOG_SIZE],
            head: 0,
            tail: 0,
        },
    }),
};

/// Set once a panic has started: writers stop waiting for wedged owners.
static PANIC_MODE: AtomicBool = AtomicBool::new(false);

struct ConsoleGuard {
    /// This CPU already held the lock: we interrupted its own writer.
    nested: bool,
    irq: bool,
}

impl ConsoleLock {
    fn acquire(&self) -> ConsoleGuard {
        let irq = cpu::interrupts_save_disable();
        let me = percpu::cpu_index();
        if self.owner.load(Ordering::Relaxed) == me {
            return ConsoleGuard { nested: true, irq };
        }
        let mut spins = 0u32;
        loop {
            match self.owner.compare_exchange_weak(
                NO_OWNER,
                me,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return ConsoleGuard { nested: false, irq },
                Err(_) => {
                    // Wait with interrupts as the caller had them: a CPU
                    // waiting for another's line keeps taking its ticks and
                    // IPIs. (An interrupt taken here that prints waits too:
                    // this CPU does not own the lock yet.)
                    cpu::interrupts_restore(irq);
                    cpu::pause();
                    cpu::interrupts_disable();
                    spins = spins.saturating_add(1);
                    if PANIC_MODE.load(Ordering::Relaxed) && spins > PANIC_WAIT_SPINS {
                        // The owner is wedged or stopped: take the console over.
                        self.owner.store(me, Ordering::Release);
                        return ConsoleGuard { nested: false, irq };
                    }
                }
            }
        }
    }
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        if !self.nested {
            CONSOLE.owner.store(NO_OWNER, Ordering::Release);
        }
        cpu::interrupts_restore(self.irq);
    }
}

struct Writer<'a> {
    guard: &'a ConsoleGuard,
}

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: we hold the console (see `ConsoleLock`); a nested writer touches
        // only the serial port, whose state is the port number.
        let state = unsafe { &mut *CONSOLE.state.get() };
        if !HANDED_OVER.load(Ordering::Relaxed)
            || self.guard.nested
            || PANIC_MODE.load(Ordering::Relaxed)
        {
            state.serial.write_str(s);
        } else {
            state.klog.push(s.as_bytes());
        }
        if !self.guard.nested
            && let Some(fb) = state.fb.as_mut()
        {
            fb.write_str(s);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let guard = CONSOLE.acquire();
    let _ = Writer { guard: &guard }.write_fmt(args);
    let wake = HANDED_OVER.load(Ordering::Relaxed) && !guard.nested && guard.irq;
    drop(guard);
    if wake {
        lwkt::wakeup::<crate::sched::X86>(klog_ident());
    }
}

/// What a `KLOG_READ` waits on.
fn klog_ident() -> usize {
    core::ptr::from_ref(&HANDED_OVER) as usize
}

/// Whether a user driver owns COM1.
pub fn serial_handed_over() -> bool {
    HANDED_OVER.load(Ordering::Acquire)
}

/// Gives COM1 to a user driver (`true`) or takes it back (module docs).
pub fn hand_over_serial(user: bool) {
    HANDED_OVER.store(user, Ordering::Release);
    if !user {
        // Whatever the driver did not drain goes out now.
        let guard = CONSOLE.acquire();
        // SAFETY: we hold the console lock, taken above.
        let st = unsafe { &mut *CONSOLE.state.get() };
        let mut buf = [0u8; 256];
        loop {
            let n = st.klog.pop(&mut buf);
            if n == 0 {
                break;
            }
            // Chunks may cut a character in two: bytes, not `str`s.
            st.serial.write_bytes(&buf[..n]);
        }
        drop(guard);
    }
}

/// Takes up to `out.len()` bytes of the log ring, waiting (interruptibly,
/// re-checking at least every second) while it is empty; returns how many.
/// Thread context; blocks.
pub fn klog_read(out: &mut [u8]) -> Result<usize, lwkt::Wake> {
    loop {
        let ident = klog_ident();
        lwkt::tsleep_interlock::<crate::sched::X86>(ident);
        let guard = CONSOLE.acquire();
        // SAFETY: we hold the console lock, taken above.
        let st = unsafe { &mut *CONSOLE.state.get() };
        let n = st.klog.pop(out);
        drop(guard);
        if n > 0 {
            return Ok(n);
        }
        let hz = crate::arch::timer::HZ;
        match lwkt::tsleep::<crate::sched::X86>(
            ident,
            lwkt::INTERRUPTIBLE | lwkt::INTERLOCKED,
            "klog",
            hz,
        ) {
            lwkt::Wake::Interrupted => return Err(lwkt::Wake::Interrupted),
            _ => continue,
        }
    }
}

/// Prints to the console (serial and framebuffer). Any context.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::_print(format_args!($($arg)*)));
}

/// Prints a line to the console (serial and framebuffer). Any context.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}

/// Sets up COM1. First thing at boot, so everything after can print.
pub fn init_serial() {
    let guard = CONSOLE.acquire();
    // SAFETY: we hold the console lock, taken above.
    unsafe { (*CONSOLE.state.get()).serial = serial::Serial::probe_com1() };
    drop(guard);
}

/// Adds the framebuffer as a second output (boot CPU, once, before the APs run).
pub fn attach_framebuffer(fb: fb::FbConsole) {
    let guard = CONSOLE.acquire();
    // SAFETY: we hold the console lock, taken above.
    unsafe { (*CONSOLE.state.get()).fb = Some(fb) };
    drop(guard);
}

/// Whether COM1 answered at boot.
pub fn has_serial() -> bool {
    let guard = CONSOLE.acquire();
    // SAFETY: we hold the console lock, taken above.
    let present = unsafe { (*CONSOLE.state.get()).serial.present() };
    drop(guard);
    present
}

/// Enables COM1's receive interrupt (see [`input`]).
pub fn enable_serial_rx() {
    let guard = CONSOLE.acquire();
    // SAFETY: we hold the console lock, taken above.
    serial::enable_rx_interrupt(unsafe { &mut (*CONSOLE.state.get()).serial });
    drop(guard);
}

/// From now on, writers do not wait forever for a wedged owner. Called by the
/// panic path before it prints.
pub fn enter_panic_mode() {
    PANIC_MODE.store(true, Ordering::Relaxed);
}
