//! Console input from COM1, served by its interrupt thread.
//!
//! COM1's IRQ 4 is routed through the I/O APIC to the boot CPU and handled like
//! every device interrupt (`intr`): the hard stub masks the line, the
//! interrupt thread drains the UART's receive FIFO into a ring, posts a
//! semaphore per byte and unmasks. The ring has one producer (that thread) and
//! one consumer; its indices are atomics with release/acquire ordering, so the
//! reader may run on any CPU.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use lwkt::Sema;
use x86_64::instructions::port::Port;

use super::serial::COM1;
use crate::arch::ioapic;
use crate::sched::X86;

const RING: usize = 256;

static BYTES: [AtomicU8; RING] = [const { AtomicU8::new(0) }; RING];
/// Next slot the interrupt thread writes (Release).
static HEAD: AtomicU32 = AtomicU32::new(0);
/// Next slot the reader reads (Release).
static TAIL: AtomicU32 = AtomicU32::new(0);
/// Bytes available to the reader.
static AVAILABLE: Sema = Sema::new(0);
/// Receive interrupts handled.
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Bytes dropped because the ring was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The interrupt thread's handler: drain the receive FIFO.
fn drain() {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    let mut lsr = Port::<u8>::new(COM1 + 5);
    let mut rbr = Port::<u8>::new(COM1);
    // SAFETY: COM1's line-status and receive registers; reading them only
    // consumes received bytes, which is this handler's job.
    while unsafe { lsr.read() } & 1 != 0 {
        // SAFETY: as above.
        let b = unsafe { rbr.read() };
        let head = HEAD.load(Ordering::Relaxed);
        if head.wrapping_sub(TAIL.load(Ordering::Acquire)) as usize >= RING {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        BYTES[head as usize % RING].store(b, Ordering::Relaxed);
        HEAD.store(head.wrapping_add(1), Ordering::Release);
        AVAILABLE.post::<X86>();
    }
}

/// The next received byte, if any. One reader at a time; never blocks.
pub fn read_byte() -> Option<u8> {
    if !AVAILABLE.try_wait() {
        return None;
    }
    let tail = TAIL.load(Ordering::Relaxed);
    debug_assert_ne!(tail, HEAD.load(Ordering::Acquire));
    let b = BYTES[tail as usize % RING].load(Ordering::Relaxed);
    TAIL.store(tail.wrapping_add(1), Ordering::Release);
    Some(b)
}

/// The next received byte, waiting up to `ticks` scheduler ticks (0 =
/// forever). Thread context; one reader at a time; may block.
pub fn wait_byte(ticks: u64) -> Option<u8> {
    if !AVAILABLE.wait_timeout::<X86>(ticks) {
        return None;
    }
    AVAILABLE.post::<X86>();
    read_byte()
}

/// Routes COM1's IRQ to the CPU that takes device interrupts (the boot CPU
/// on every machine seen; `ioapic::device_cpu`) with an interrupt thread
/// there and enables receive interrupts. Thread context, once, after the
/// scheduler is up. Does nothing without a serial port.
pub fn init(platform: &crate::acpi::Platform) {
    if !super::has_serial() {
        return;
    }
    let Some((gsi, vector, cpu)) = ioapic::route_isa(platform, 4) else {
        crate::println!("com1: no CPU the I/O APIC can address; no serial input");
        return;
    };
    crate::intr::attach_gsi("com1", Some(4), gsi, vector, cpu as usize, drain);
    super::enable_serial_rx();
}
