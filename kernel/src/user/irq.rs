//! Interrupts for user drivers (`INTERRUPT_ATTACH`, `INTERRUPT_UNMASK`,
//! `INTERRUPT_DETACH`).
//!
//! A process holding an I/O grant attaches an ISA IRQ to one of its
//! connections with a pulse code. From then on the IRQ's interrupt thread,
//! instead of running the kernel's handler, delivers that pulse (at user
//! real-time priority) and disarms; the driver re-arms when it has served
//! the device (`INTERRUPT_UNMASK`). An interrupt while disarmed is
//! remembered, and delivered at once by the re-arming. A level-triggered
//! line also stays masked until then (the device keeps asserting it); an
//! edge-triggered one (ISA's, such as the keyboard's and COM1's) is never
//! left masked: an edge that came while masked would be lost, and a device
//! that raised it would wait forever to be served. At most one pulse per
//! IRQ is therefore ever queued, and the kernel's pulse always fits the
//! channel.
//! Detaching, or the driver's process ending, gives the IRQ back to the
//! kernel's handler and unmasks it. Attaching COM1's IRQ 4 hands the serial
//! port over: kernel output goes to the log ring ([`crate::console`]) for
//! the driver to drain with `KLOG_READ`.
//!
//! An ISA IRQ nobody routed at boot (the keyboard's IRQ 1, the mouse's 12)
//! is routed when a driver first attaches it, with a kernel handler that
//! does nothing (the line is the driver's device's; with no driver, its
//! interrupts are taken and dropped). IRQs 0 and 2 (timer, cascade), 8
//! (the RTC) and 9 (the ACPI SCI) are not for drivers.
//!
//! # Message-signalled interrupts
//!
//! `MSI_ATTACH` gives a process with a device grant one of [`MSI_SLOTS`]
//! vectors (at most `MAX_MSI` per process; `Limit` past either), routed to
//! the CPU that takes device interrupts, and tells it the message address
//! and data its device must write. Each interrupt wakes the vector's
//! interrupt thread, which delivers one pulse (value: the handle) and
//! disarms; interrupts while disarmed are remembered as one, delivered at
//! the next `INTERRUPT_UNMASK(handle)`. So, as for an IRQ, at most one
//! pulse per vector is ever queued. The vector's source and thread are made
//! on first use and reused after a release: a driver restarted any number
//! of times costs the kernel nothing new.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use lwkt::ipc::Pulse;
use wyvern_abi::syscall::{Error, MAX_MSI, MSI_BASE, MsiTarget};

use super::UserThread;
use super::ipc::UChannel;
use super::process::Process;
use crate::sync::TokenCell;

/// ISA IRQs a driver may attach.
const IRQS: usize = 16;

/// Whether an attached interrupt's next occurrence delivers a pulse: one
/// pulse outstanding at most, an interrupt while disarmed remembered as one
/// (for IRQs and MSI vectors alike). Under the attachment's token.
struct Arming {
    /// The next interrupt delivers a pulse.
    armed: bool,
    /// An interrupt came while disarmed.
    missed: bool,
}

impl Arming {
    const ARMED: Arming = Arming {
        armed: true,
        missed: false,
    };

    /// An interrupt came: whether to deliver its pulse now.
    fn fire(&mut self) -> bool {
        if self.armed {
            self.armed = false;
            true
        } else {
            self.missed = true;
            false
        }
    }

    /// The driver re-arms: whether a pulse is due now (one came meanwhile).
    fn rearm(&mut self) -> bool {
        if self.missed {
            self.missed = false;
            true
        } else {
            self.armed = true;
            false
        }
    }
}

/// A driver's attachment.
struct Attach {
    pid: u64,
    chan: Arc<UChannel>,
    code: u32,
    arming: Arming,
}

static ATTACHED: [TokenCell<Option<Attach>>; IRQS] = [const { TokenCell::new(None) }; IRQS];

/// Delivers IRQ `irq`'s pulse; false if no driver is attached after all
/// (it detached meanwhile: the kernel's handler runs). The IRQ's interrupt
/// thread.
pub fn fire(irq: u8) -> bool {
    let Some(slot) = ATTACHED.get(usize::from(irq)) else {
        return false;
    };
    let send = slot.with(|a| {
        let a = a.as_mut()?;
        Some(a.arming.fire().then(|| (a.chan.clone(), a.code)))
    });
    let Some(send) = send else {
        return false;
    };
    if let Some((chan, code)) = send {
        irq_pulse(&chan, code, irq);
    }
    true
}

fn irq_pulse(chan: &UChannel, code: u32, irq: u8) {
    let p = Pulse {
        code,
        value: u64::from(irq),
        pri: lwkt::pri::USER_REAL,
        sender: 0,
    };
    // Reserved: one pulse per IRQ at most is outstanding (module docs).
    let _ = chan.pulse(p, true);
}

/// ISA IRQs a driver may not have.
const RESERVED: [u8; 4] = [0, 2, 8, 9];

/// IRQ `irq`'s attachment slot and source; `route`: route the IRQ now if
/// nobody has (only an attach that passed its permission checks may: a
/// route costs an interrupt thread and reprograms the I/O APIC).
fn slot(
    irq: u64,
    route: bool,
) -> Result<
    (
        &'static TokenCell<Option<Attach>>,
        &'static crate::intr::IntrSource,
    ),
    Error,
> {
    let irq8 = u8::try_from(irq).map_err(|_| Error::Invalid)?;
    if usize::from(irq8) >= IRQS || RESERVED.contains(&irq8) {
        return Err(Error::Invalid);
    }
    let src = if route {
        crate::intr::isa_source_routed(irq8)
    } else {
        crate::intr::isa_source(irq8)
    }
    .ok_or(Error::NotFound)?;
    Ok((ATTACHED.get(irq as usize).ok_or(Error::Invalid)?, src))
}

/// `INTERRUPT_ATTACH`: IRQ `irq` delivers pulse `code` through `coid`.
pub fn attach(u: &UserThread, irq: u64, coid: u64, code: u64) -> Result<u64, Error> {
    if u.process.io_key() == 0 {
        return Err(Error::Denied);
    }
    let code = u32::try_from(code).map_err(|_| Error::Invalid)?;
    let chan = u.process.ipc.conn(coid)?;
    let (slot, src) = slot(irq, true)?;
    let pid = u.process.pid;
    slot.with(|a| {
        if a.is_some() {
            return Err(Error::Busy);
        }
        *a = Some(Attach {
            pid,
            chan,
            code,
            arming: Arming::ARMED,
        });
        Ok(())
    })?;
    src.redirected.store(true, Ordering::Release);
    if src.irq == Some(4) {
        crate::console::hand_over_serial(true, &u.process.klog_pos);
    }
    Ok(irq)
}

/// `INTERRUPT_UNMASK`: the driver served IRQ `irq` (or MSI handle `irq`).
pub fn unmask(u: &UserThread, irq: u64) -> Result<u64, Error> {
    if irq >= MSI_BASE {
        return msi_unmask(u, irq);
    }
    let (slot, src) = slot(irq, false)?;
    let send = slot.with(|a| {
        let a = a
            .as_mut()
            .filter(|a| a.pid == u.process.pid)
            .ok_or(Error::NotFound)?;
        Ok(a.arming.rearm().then(|| (a.chan.clone(), a.code)))
    })?;
    crate::intr::unmask(src);
    if let Some((chan, code)) = send {
        irq_pulse(&chan, code, irq as u8);
    }
    Ok(0)
}

/// Gives IRQ `irq` back to the kernel if process `pid` has it. The slot is
/// looked at first: the source is looked up only for an IRQ the process
/// holds (every process's exit calls this for every IRQ).
fn release(p: &Process, irq: usize) -> bool {
    let pid = p.pid;
    let Some(slot) = ATTACHED.get(irq) else {
        return false;
    };
    if !slot.with(|a| a.as_ref().is_some_and(|a| a.pid == pid)) {
        return false;
    }
    let Ok((slot, src)) = self::slot(irq as u64, false) else {
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
            crate::console::hand_over_serial(false, &p.klog_pos);
        }
        crate::intr::unmask(src);
    }
    mine
}

/// `INTERRUPT_DETACH`.
pub fn detach(u: &UserThread, irq: u64) -> Result<u64, Error> {
    if irq >= MSI_BASE {
        let i = irq - MSI_BASE;
        if i >= MSI_SLOTS as u64 || !msi_release(u.process.pid, i as usize) {
            return Err(Error::NotFound);
        }
        return Ok(0);
    }
    if irq as usize >= IRQS || !release(&u.process, irq as usize) {
        return Err(Error::NotFound);
    }
    Ok(0)
}

/// Process `p` ended: its IRQs go back to the kernel, its MSI vectors to
/// the pool.
pub fn process_ended(p: &Process) {
    for irq in 0..IRQS {
        release(p, irq);
    }
    for i in 0..MSI_SLOTS {
        msi_release(p.pid, i);
    }
}

/// MSI vectors drivers share.
pub const MSI_SLOTS: usize = crate::intr::MSI_VECTORS;

/// A driver's MSI vector.
struct MsiAttach {
    pid: u64,
    chan: Arc<UChannel>,
    code: u32,
    arming: Arming,
}

static MSI: [TokenCell<Option<MsiAttach>>; MSI_SLOTS] = [const { TokenCell::new(None) }; MSI_SLOTS];

/// The pulse of MSI slot `i`, if one should go now.
fn msi_pulse(a: &MsiAttach, i: usize) -> (Arc<UChannel>, Pulse) {
    (
        a.chan.clone(),
        Pulse {
            code: a.code,
            value: MSI_BASE + i as u64,
            pri: lwkt::pri::USER_REAL,
            sender: 0,
        },
    )
}

/// MSI slot `i` fired. Its interrupt thread.
pub fn fire_msi(i: usize) {
    let Some(slot) = MSI.get(i) else {
        return;
    };
    let send = slot.with(|a| {
        let a = a.as_mut()?;
        a.arming.fire().then(|| msi_pulse(a, i))
    });
    if let Some((chan, p)) = send {
        // Reserved: one pulse per vector at most is outstanding.
        let _ = chan.pulse(p, true);
    }
}

/// `MSI_ATTACH`: a vector whose interrupts are pulse `code` through
/// `coid`; the device's message address and data go to `out`.
pub fn msi_attach(u: &UserThread, coid: u64, code: u64, out: u64) -> Result<u64, Error> {
    if !u.process.devices.any() {
        return Err(Error::Denied);
    }
    let code = u32::try_from(code).map_err(|_| Error::Invalid)?;
    let chan = u.process.ipc.conn(coid)?;
    super::uaccess::probe_write(out, size_of::<MsiTarget>() as u64)?;
    let pid = u.process.pid;
    let held = MSI
        .iter()
        .filter(|s| s.with(|a| a.as_ref().is_some_and(|a| a.pid == pid)))
        .count();
    if held as u64 >= MAX_MSI {
        return Err(Error::Limit);
    }
    let mut chan = Some(chan);
    let mut found = None;
    for (i, s) in MSI.iter().enumerate() {
        let took = s.with(|a| {
            if a.is_some() {
                return false;
            }
            *a = Some(MsiAttach {
                pid,
                chan: chan.take().expect("taken once"),
                code,
                arming: Arming::ARMED,
            });
            true
        });
        if took {
            found = Some(i);
            break;
        }
    }
    let i = found.ok_or(Error::Limit)?;
    let Some((vector, apic_id)) = crate::intr::msi_source(i) else {
        msi_release(pid, i);
        return Err(Error::NotFound);
    };
    // The MSI address format (SDM vol. 3, 11.11.1): 0xFEE in bits 31:20,
    // the destination APIC id in 19:12, physical destination, fixed
    // delivery, edge.
    let t = MsiTarget {
        address: 0xfee0_0000 | u64::from(apic_id) << 12,
        data: u64::from(vector),
    };
    if let Err(e) = super::device::write_struct(out, size_of::<MsiTarget>() as u64, &t) {
        msi_release(pid, i);
        return Err(e);
    }
    Ok(MSI_BASE + i as u64)
}

fn msi_unmask(u: &UserThread, handle: u64) -> Result<u64, Error> {
    let i = (handle - MSI_BASE) as usize;
    let slot = MSI.get(i).ok_or(Error::NotFound)?;
    let send = slot.with(|a| {
        let a = a
            .as_mut()
            .filter(|a| a.pid == u.process.pid)
            .ok_or(Error::NotFound)?;
        Ok(a.arming.rearm().then(|| msi_pulse(a, i)))
    })?;
    if let Some((chan, p)) = send {
        let _ = chan.pulse(p, true);
    }
    Ok(0)
}

/// Frees MSI slot `i` if process `pid` holds it.
fn msi_release(pid: u64, i: usize) -> bool {
    MSI.get(i).is_some_and(|s| {
        s.with(|a| {
            if a.as_ref().is_some_and(|a| a.pid == pid) {
                *a = None;
                true
            } else {
                false
            }
        })
    })
}
