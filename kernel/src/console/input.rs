//! Console input from COM1, interrupt-driven.
//!
//! COM1's IRQ 4 is routed through the I/O APIC to the boot CPU. The handler
//! drains the UART's receive FIFO into a ring that one reader consumes
//! ([`read_byte`]). The ring is single-producer (the handler, interrupts off,
//! one CPU) and single-consumer; its indices are atomics with release/acquire
//! ordering, so the reader may run on any CPU.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::serial::COM1;
use crate::arch::apic;
use crate::arch::ioapic;
use crate::arch::trap::{self, TrapFrame};

const RING: usize = 256;

static BYTES: [AtomicU8; RING] = [const { AtomicU8::new(0) }; RING];
/// Next slot the handler writes. Written by the handler (Release).
static HEAD: AtomicU32 = AtomicU32::new(0);
/// Next slot the reader reads. Written by the reader (Release).
static TAIL: AtomicU32 = AtomicU32::new(0);
/// Receive interrupts taken.
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Bytes dropped because the ring was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

fn on_irq(_frame: &mut TrapFrame) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    let mut lsr = Port::<u8>::new(COM1 + 5);
    let mut rbr = Port::<u8>::new(COM1);
    // SAFETY: COM1's line-status and receive registers; reading them only
    // consumes received bytes, which is this handler's job.
    unsafe {
        while lsr.read() & 1 != 0 {
            let b = rbr.read();
            let head = HEAD.load(Ordering::Relaxed);
            if head.wrapping_sub(TAIL.load(Ordering::Acquire)) as usize >= RING {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            BYTES[head as usize % RING].store(b, Ordering::Relaxed);
            HEAD.store(head.wrapping_add(1), Ordering::Release);
        }
    }
    apic::eoi();
}

/// The next received byte, if any. One reader at a time.
pub fn read_byte() -> Option<u8> {
    let tail = TAIL.load(Ordering::Relaxed);
    if tail == HEAD.load(Ordering::Acquire) {
        return None;
    }
    let b = BYTES[tail as usize % RING].load(Ordering::Relaxed);
    TAIL.store(tail.wrapping_add(1), Ordering::Release);
    Some(b)
}

/// Routes COM1's IRQ to the boot CPU and enables receive interrupts. Boot CPU,
/// once, after the I/O APIC is set up. Does nothing without a serial port.
pub fn init(platform: &crate::acpi::Platform) {
    if !super::has_serial() {
        return;
    }
    let (gsi, vector) = ioapic::route_isa(platform, 4, apic::local_id());
    trap::register(vector, on_irq);
    super::enable_serial_rx();
    ioapic::unmask(gsi);
}
