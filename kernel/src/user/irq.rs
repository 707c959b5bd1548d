//! Interrupts for user drivers (`INTERRUPT_ATTACH`, `INTERRUPT_UNMASK`,
//! `INTERRUPT_DETACH`).
//!
//! A process holding an I/O grant attaches an ISA IRQ to one of its
//! connections with a pulse code. From then on the IRQ's interrupt thread,
//! instead of running the kernel's handler, delivers that pulse (at user
//! real-time priority) and leaves the line masked — the device keeps
//! asserting it until the driver has served it, so the driver unmasks it
//! when it has (`INTERRUPT_UNMASK`). At most one pulse per IRQ is
//! therefore ever queued, and the kernel's pulse always fits the channel.
//! Detaching, or the driver's process ending, gives the IRQ back to the
//! kernel's handler and unmasks it. Attaching COM1's IRQ 4 hands the serial
//! port over: kernel output goes to the log ring ([`crate::console`]) for
//! the driver to drain with `KLOG_READ`.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use lwkt::ipc::Pulse;
use wyvern_abi::syscall::Error;

use super::UserThread;
use super::ipc::UChannel;
use crate::sync::TokenCell;

/// ISA IRQs a driver may attach.
const IRQS: usize = 16;

/// A driver's attachment.
struct Attach {
    pid: u64,
    chan: Arc<UChannel>,
    code: u32,
}

static ATTACHED: [TokenCell<Option<Attach>>; IRQS] = [const { TokenCell::new(None) }; IRQS];

/// Delivers IRQ `irq`'s pulse; false if no driver is attached after all
/// (it detached meanwhile: the kernel's handler runs). The IRQ's interrupt
/// thread.
pub fn fire(irq: u8) -> bool {
    let Some(slot) = ATTACHED.get(usize::from(irq)) else {
        return false;
    };
    let Some((chan, code)) = slot.with(|a| a.as_ref().map(|a| (a.chan.clone(), a.code))) else {
        return false;
    };
    let p = Pulse {
        code,
        value: u64::from(irq),
        pri: lwkt::pri::USER_REAL,
        sender: 0,
    };
    // Reserved: one pulse per IRQ at most is outstanding (module docs).
    let _ = chan.pulse(p, true);
    true
}

fn slot(
    irq: u64,
) -> Result<
    (
        &'static TokenCell<Option<Attach>>,
        &'static crate::intr::IntrSource,
    ),
    Error,
> {
    let irq8 = u8::try_from(irq).map_err(|_| Error::Invalid)?;
    let src = crate::intr::isa_source(irq8).ok_or(Error::NotFound)?;
    Ok((ATTACHED.get(irq as usize).ok_or(Error::Invalid)?, src))
}

/// `INTERRUPT_ATTACH`: IRQ `irq` delivers pulse `code` through `coid`.
pub fn attach(u: &UserThread, irq: u64, coid: u64, code: u64) -> Result<u64, Error> {
    if u.process.io_key() == 0 {
        return Err(Error::Denied);
    }
    let code = u32::try_from(code).map_err(|_| Error::Invalid)?;
    let chan = u.process.ipc.conn(coid)?;
    let (slot, src) = slot(irq)?;
    let pid = u.process.pid;
    slot.with(|a| {
        if a.is_some() {
            return Err(Error::Busy);
        }
        *a = Some(Attach { pid, chan, code });
        Ok(())
    })?;
    src.redirected.store(true, Ordering::Release);
    if src.irq == Some(4) {
        crate::console::hand_over_serial(true);
    }
    Ok(irq)
}

/// `INTERRUPT_UNMASK`: the driver served IRQ `irq`.
pub fn unmask(u: &UserThread, irq: u64) -> Result<u64, Error> {
    let (slot, src) = slot(irq)?;
    if !slot.with(|a| a.as_ref().is_some_and(|a| a.pid == u.process.pid)) {
        return Err(Error::NotFound);
    }
    crate::intr::unmask(src);
    Ok(0)
}

/// Gives IRQ `irq` back to the kernel if process `pid` has it. The slot is
/// looked at first: the source is looked up only for an IRQ the process
/// holds (every process's exit calls this for every IRQ).
fn release(pid: u64, irq: usize) -> bool {
    let Some(slot) = ATTACHED.get(irq) else {
        return false;
    };
    if !slot.with(|a| a.as_ref().is_some_and(|a| a.pid == pid)) {
        return false;
    }
    let Ok((slot, src)) = self::slot(irq as u64) else {
        return false;
    };
    let mine = slot.with(|a| {
        if a.as_ref().is_some_and(|a| a.pid == pid) {
            *a = None;
            true
        } else {
            false
        }
    });
    if mine {
        src.redirected.store(false, Ordering::Release);
        if src.irq == Some(4) {
            crate::console::hand_over_serial(false);
        }
        crate::intr::unmask(src);
    }
    mine
}

/// `INTERRUPT_DETACH`.
pub fn detach(u: &UserThread, irq: u64) -> Result<u64, Error> {
    if irq as usize >= IRQS || !release(u.process.pid, irq as usize) {
        return Err(Error::NotFound);
    }
    Ok(0)
}

/// Process `pid` ended: its IRQs go back to the kernel.
pub fn process_ended(pid: u64) {
    for irq in 0..IRQS {
        release(pid, irq);
    }
}
