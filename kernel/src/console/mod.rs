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
//! Every line also goes into the log ring, which user consoles read with
//! `KLOG_READ` ([`klog_read`]), each from its own place. Once a user driver
//! attaches COM1's IRQ ([`hand_over_serial`]), the kernel stops writing to
//! the port: the driver writes the ring out itself. Once a user terminal
//! maps the framebuffer ([`hand_over_framebuffer`]), the kernel stops
//! drawing there (the terminal shows the ring instead). Only an emergency writes COM1 directly still: a panic
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

/// The log ring: every line the kernel prints, for the user consoles
/// (`KLOG_READ`). Readers keep their own place (a process's `klog_pos`), so
/// the COM1 driver and the screen's terminal each get every line; a reader
/// that fell more than the ring behind skips what was overwritten.
struct Klog {
    buf: [u8; KLOG_SIZE],
    /// Bytes ever written.
    head: u64,
}

impl Klog {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            self.buf[(self.head % KLOG_SIZE as u64) as usize] = b;
            self.head += 1;
        }
    }

    /// Copies bytes from `*pos` on into `out`, advancing `*pos`.
    fn read(&self, pos: &mut u64, out: &mut [u8]) -> usize {
        *pos = (*pos).max(self.head.saturating_sub(KLOG_SIZE as u64));
        let n = ((self.head - *pos) as usize).min(out.len());
        for b in &mut out[..n] {
            *b = self.buf[(*pos % KLOG_SIZE as u64) as usize];
            *pos += 1;
        }
        n
    }
}

/// A user driver has the framebuffer (module docs).
static FB_HANDED_OVER: AtomicBool = AtomicBool::new(false);
/// Somebody reads the log ring: writers wake readers.
static KLOG_READERS: AtomicBool = AtomicBool::new(false);

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
        let panic = PANIC_MODE.load(Ordering::Relaxed);
        if !HANDED_OVER.load(Ordering::Relaxed) || self.guard.nested || panic {
            state.serial.write_str(s);
        }
        if !self.guard.nested {
            state.klog.push(s.as_bytes());
        }
        if !self.guard.nested
            && (panic || !FB_HANDED_OVER.load(Ordering::Relaxed))
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
    // Not in panic mode: the report must not schedule anything (nor fill
    // the trace ring it is about to print with its own wakeups).
    let wake = KLOG_READERS.load(Ordering::Relaxed)
        && !guard.nested
        && guard.irq
        && !PANIC_MODE.load(Ordering::Relaxed);
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
/// Returns the log ring's end: where the driver starts reading (what came
/// before went out on COM1 already). Taking it back writes out what the
/// driver, which had read up to `*pos`, did not.
pub fn hand_over_serial(user: bool, pos: &core::sync::atomic::AtomicU64) {
    let guard = CONSOLE.acquire();
    // SAFETY: we hold the console lock, taken above.
    let st = unsafe { &mut *CONSOLE.state.get() };
    if user {
        pos.store(st.klog.head, Ordering::Relaxed);
        HANDED_OVER.store(true, Ordering::Release);
    } else {
        HANDED_OVER.store(false, Ordering::Release);
        let mut at = pos.load(Ordering::Relaxed);
        let mut buf = [0u8; 256];
        loop {
            let n = st.klog.read(&mut at, &mut buf);
            if n == 0 {
                break;
            }
            // Chunks may cut a character in two: bytes, not `str`s.
            st.serial.write_bytes(&buf[..n]);
        }
        pos.store(at, Ordering::Relaxed);
    }
    drop(guard);
}

/// Gives the framebuffer to a user driver (`true`: the kernel stops
/// drawing, but for a panic) or takes it back.
pub fn hand_over_framebuffer(user: bool) {
    FB_HANDED_OVER.store(user, Ordering::Release);
}

/// Takes up to `out.len()` bytes of the log ring from `pos` on (the
/// reader's place, advanced), waiting if `wait` (interruptibly, re-checking
/// at least every second) while there are none; returns how many.
/// Thread context; blocks if `wait`.
pub fn klog_read(
    pos: &core::sync::atomic::AtomicU64,
    out: &mut [u8],
    wait: bool,
) -> Result<usize, lwkt::Wake> {
    KLOG_READERS.store(true, Ordering::Relaxed);
    loop {
        let ident = klog_ident();
        lwkt::tsleep_interlock::<crate::sched::X86>(ident);
        let guard = CONSOLE.acquire();
        // SAFETY: we hold the console lock, taken above.
        let st = unsafe { &mut *CONSOLE.state.get() };
        let mut at = pos.load(Ordering::Relaxed);
        let n = st.klog.read(&mut at, out);
        pos.store(at, Ordering::Relaxed);
        drop(guard);
        if n > 0 || !wait {
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
