//! The host controller as one thread sees it: bring-up ([`Hc::new`],
//! [`Hc::start`]), one step of the event loop ([`Hc::service`]), and
//! synchronous commands.
//!
//! Model: one thread owns the controller. Events are consumed in one place
//! ([`Hc::drain`]) and dispatched by kind: command completions and EP0
//! transfer events are parked for the synchronous waiter that asked for
//! them, keyboard reports go straight to the report queue (and their TRB
//! is requeued), port changes mark the port pending. Work that needs
//! commands (port connects and disconnects, recovering a halted keyboard
//! endpoint) is never done from the dispatcher, only from
//! [`Hc::service`] after the drain, so commands never nest.
//!
//! Every wait on the hardware polls with a deadline: a command that does
//! not complete, or a controller that reports an error or halts, is
//! [`Fatal`] (the driver ends and the process manager restarts it); a
//! device that misbehaves is given up on (`device.rs`).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{Ordering, fence};

use wyvern_abi::syscall::Error;
use wyvern_user::{println, sys};

use crate::device::Device;
use crate::init::{self, Protocol};
use crate::mem::{
    Dma, EV_COMMAND, EV_HOST, EV_PORT, EV_TRANSFER, EVENT_TRBS, EventRing, Mmio, PAGE, Ring, Trb,
};
use crate::port::PortState;
use crate::reports::Reports;

// Operational registers (from CAPLENGTH).
pub const USBCMD: u64 = 0x00;
pub const USBSTS: u64 = 0x04;
const CRCR: u64 = 0x18;
const DCBAAP: u64 = 0x30;
pub const PORTSC: u64 = 0x400;

pub const CMD_RS: u32 = 1 << 0;
pub const CMD_INTE: u32 = 1 << 2;
const CMD_HSEE: u32 = 1 << 3;

pub const STS_HCH: u32 = 1 << 0;
const STS_HSE: u32 = 1 << 2;
const STS_EINT: u32 = 1 << 3;
const STS_PCD: u32 = 1 << 4;
const STS_HCE: u32 = 1 << 12;

// Interrupter 0's registers.
const IMAN: u64 = 0x00;
const ERSTSZ: u64 = 0x08;
const ERSTBA: u64 = 0x10;
const ERDP: u64 = 0x18;
const IMAN_IP: u32 = 1 << 0;
const IMAN_IE: u32 = 1 << 1;
const ERDP_EHB: u64 = 1 << 3;

/// Completion codes.
pub const CC_SUCCESS: u8 = 1;
pub const CC_SLOT_NOT_ENABLED: u8 = 11;
pub const CC_SHORT_PACKET: u8 = 13;

/// Where the one ERST entry sits in the DCBAA's page (the DCBAA takes at
/// most 65 × 8 bytes before it).
const ERST_OFF: u64 = 0x800;

pub const MS: u64 = 1_000_000;
pub const HW_TIMEOUT: u64 = 1000 * MS;
const POLL_STEP: u64 = MS;

/// The controller is unusable; the reason was printed.
#[derive(Debug)]
pub struct Fatal;

/// Prints why the controller is given up; returns [`Fatal`].
pub fn fatal(why: &str) -> Fatal {
    println!("xhci: {why}");
    Fatal
}

/// A Command Completion event.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub trb: u64,
    pub code: u8,
    pub slot: u8,
}

/// A Transfer event.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub trb: u64,
    pub code: u8,
    pub residual: u32,
    pub slot: u8,
    pub dci: u8,
}

pub struct Hc {
    regs: Mmio,
    op: u64,
    ir: u64,
    db: u64,
    pub max_slots: u8,
    pub ports: u8,
    /// Context size: 32 or 64 bytes (HCCPARAMS1.CSZ).
    pub ctx: u64,
    wide: bool,
    irq: bool,
    dcbaa: Dma,
    /// Scratchpad pages and array: the controller's for good.
    _scratch: Vec<Dma>,
    cmd: Ring,
    events: EventRing,
    protocols: Vec<Protocol>,
    /// The keyboards, one per slot.
    pub devices: Vec<Device>,
    /// By port number (entry 0 unused).
    pub port_state: Vec<PortState>,
    /// Ports to look at, a bit each.
    pub pending: [u64; 4],
    cmd_done: Option<Completion>,
    ep0_events: VecDeque<Transfer>,
    pub reports: Reports,
    host_events: u32,
}

/// Polls `f` every millisecond until it holds or `ns` pass.
pub fn wait_for(ns: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = sys::clock_ns() + ns;
    loop {
        if f() {
            return true;
        }
        if sys::clock_ns() > deadline {
            return false;
        }
        let _ = sys::sleep_ns(POLL_STEP);
    }
}

impl Hc {
    /// Takes the controller from the firmware, halts and resets it, and
    /// builds the DCBAA, scratchpads, command ring and event ring. The
    /// controller is left halted with interrupts off.
    pub fn new(regs: Mmio) -> Result<Hc, Fatal> {
        let c = init::caps(&regs)?;
        init::reset(&regs, &c)?;
        let nomem = |e: Error| {
            println!("xhci: no DMA memory: {e}");
            Fatal
        };
        let dcbaa = Dma::alloc(PAGE, c.wide).map_err(nomem)?;
        let scratch = init::scratchpads(&c).map_err(nomem)?;
        if let Some(array) = scratch.last() {
            dcbaa.w64(0, array.phys());
        }
        let cmd = Ring::new(Dma::alloc(PAGE, c.wide).map_err(nomem)?);
        let events = EventRing::new(Dma::alloc(PAGE, c.wide).map_err(nomem)?);
        dcbaa.w64(ERST_OFF, events.base());
        dcbaa.w32(ERST_OFF + 8, EVENT_TRBS as u32);
        fence(Ordering::SeqCst);

        // Low halves first: QEMU latches CRCR and ERSTBA on the high one.
        regs.w64(c.op + DCBAAP, dcbaa.phys());
        // RCS 1: the ring's producer cycle.
        regs.w64(c.op + CRCR, cmd.base() | 1);
        regs.w32(c.ir + ERSTSZ, 1);
        regs.w64(c.ir + ERDP, events.dequeue() | ERDP_EHB);
        regs.w64(c.ir + ERSTBA, dcbaa.phys() + ERST_OFF);

        Ok(Hc {
            regs,
            op: c.op,
            ir: c.ir,
            db: c.db,
            max_slots: c.max_slots,
            ports: c.ports,
            ctx: c.ctx,
            wide: c.wide,
            irq: false,
            dcbaa,
            _scratch: scratch,
            cmd,
            events,
            protocols: c.protocols,
            devices: Vec::new(),
            port_state: alloc::vec![PortState::Empty; usize::from(c.ports) + 1],
            pending: [0; 4],
            cmd_done: None,
            ep0_events: VecDeque::with_capacity(16),
            reports: Reports::new(),
            host_events: 0,
        })
    }

    /// BAR0's mapping (an MSI-X table may live in it).
    pub fn regs(&self) -> &Mmio {
        &self.regs
    }

    /// Runs the controller; with `irq`, interrupter 0 signals (its MSI or
    /// MSI-X is already programmed).
    pub fn start(&mut self, irq: bool) -> Result<(), Fatal> {
        self.irq = irq;
        let op = self.op;
        self.regs.w32(op + USBSTS, STS_HSE | STS_EINT | STS_PCD);
        let mut cmd = self.regs.r32(op + USBCMD) | CMD_RS | CMD_HSEE;
        if irq {
            self.regs.w32(self.ir + IMAN, IMAN_IE | IMAN_IP);
            cmd |= CMD_INTE;
        }
        self.regs.w32(op + USBCMD, cmd);
        if !wait_for(HW_TIMEOUT, || self.regs.r32(op + USBSTS) & STS_HCH == 0) {
            return Err(fatal("controller does not run"));
        }
        Ok(())
    }

    /// DMA memory the controller can address.
    pub fn dma(&self, len: u64) -> Result<Dma, Error> {
        Dma::alloc(len, self.wide)
    }

    /// Sets DCBAA entry `slot` (the slot's output device context).
    pub fn set_context(&self, slot: u8, phys: u64) {
        self.dcbaa.w64(8 * u64::from(slot), phys);
        fence(Ordering::SeqCst);
    }

    /// Rings doorbell `slot` (0: the command ring) for `target`, after
    /// the TRBs it announces are written.
    pub fn doorbell(&self, slot: u8, target: u8) {
        fence(Ordering::SeqCst);
        self.regs
            .w32(self.db + 4 * u64::from(slot), u32::from(target));
    }

    /// Fatal when the controller reports an error, halted, or vanished.
    pub fn check(&self) -> Result<(), Fatal> {
        let s = self.regs.r32(self.op + USBSTS);
        if s == u32::MAX {
            Err(fatal("controller gone"))
        } else if s & STS_HSE != 0 {
            Err(fatal("host system error"))
        } else if s & STS_HCE != 0 {
            Err(fatal("host controller error"))
        } else if s & STS_HCH != 0 {
            Err(fatal("controller halted"))
        } else {
            Ok(())
        }
    }

    /// One step of the event loop: consume events, then do the work they
    /// asked for.
    pub fn service(&mut self) -> Result<(), Fatal> {
        self.check()?;
        self.drain();
        self.recover_pipes()?;
        while let Some(port) = self.take_pending() {
            self.port_changed(port)?;
        }
        Ok(())
    }

    /// Consumes the events written so far (a ring's worth at most), then
    /// tells the controller how far we got.
    pub fn drain(&mut self) {
        for _ in 0..EVENT_TRBS {
            let Some(ev) = self.events.pop() else {
                break;
            };
            self.dispatch(ev);
        }
        // EHB is write-1-to-clear: the controller may signal again.
        self.regs
            .w64(self.ir + ERDP, self.events.dequeue() | ERDP_EHB);
        self.regs.w32(self.op + USBSTS, STS_EINT);
        if self.irq {
            self.regs.w32(self.ir + IMAN, IMAN_IE | IMAN_IP);
        }
    }

    fn dispatch(&mut self, ev: Trb) {
        let code = (ev.status >> 24) as u8;
        let slot = (ev.control >> 24) as u8;
        match (ev.control >> 10) & 0x3f {
            EV_TRANSFER => {
                let t = Transfer {
                    trb: ev.param,
                    code,
                    residual: ev.status & 0xff_ffff,
                    slot,
                    dci: ((ev.control >> 16) & 0x1f) as u8,
                };
                if t.dci == 1 {
                    if self.ep0_events.len() == self.ep0_events.capacity() {
                        self.ep0_events.pop_front();
                    }
                    self.ep0_events.push_back(t);
                } else {
                    self.pipe_event(t);
                }
            }
            EV_COMMAND => {
                self.cmd_done = Some(Completion {
                    trb: ev.param & !0xf,
                    code,
                    slot,
                })
            }
            EV_PORT => self.mark_pending((ev.param >> 24) as u8),
            EV_HOST => {
                self.host_events += 1;
                if self.host_events <= 8 {
                    println!("xhci: host controller event, code {code}");
                }
            }
            _ => {}
        }
    }

    /// Issues a command and waits for its completion (any code).
    pub fn command(&mut self, param: u64, control: u32) -> Result<Completion, Fatal> {
        self.cmd_done = None;
        let at = self.cmd.push(Trb {
            param,
            status: 0,
            control,
        });
        fence(Ordering::SeqCst);
        self.doorbell(0, 0);
        let deadline = sys::clock_ns() + HW_TIMEOUT;
        loop {
            self.drain();
            if let Some(c) = self.cmd_done.take()
                && c.trb == at
            {
                return Ok(c);
            }
            self.check()?;
            if sys::clock_ns() > deadline {
                println!("xhci: command {} timed out", (control >> 10) & 0x3f);
                return Err(Fatal);
            }
            let _ = sys::sleep_ns(POLL_STEP);
        }
    }

    /// The next EP0 transfer event of `slot`; `None` once `deadline`
    /// (`clock_ns`) passed.
    pub fn await_ep0(&mut self, slot: u8, deadline: u64) -> Result<Option<Transfer>, Fatal> {
        loop {
            self.drain();
            if let Some(i) = self.ep0_events.iter().position(|t| t.slot == slot) {
                return Ok(self.ep0_events.remove(i));
            }
            self.check()?;
            if sys::clock_ns() > deadline {
                return Ok(None);
            }
            let _ = sys::sleep_ns(POLL_STEP);
        }
    }

    /// The slot type of `port`'s protocol, for Enable Slot (0 when no
    /// Supported Protocol capability covers the port).
    pub fn slot_type(&self, port: u8) -> u8 {
        self.protocols
            .iter()
            .find(|p| port >= p.first && u16::from(port) < u16::from(p.first) + u16::from(p.count))
            .map_or(0, |p| p.slot_type)
    }

    /// PORTSC of root port `port` (1-based).
    pub fn portsc(&self, port: u8) -> u32 {
        self.regs
            .r32(self.op + PORTSC + 0x10 * (u64::from(port) - 1))
    }

    /// Writes PORTSC of `port` (see `port.rs` for what a write may hold).
    pub fn set_portsc(&self, port: u8, v: u32) {
        self.regs
            .w32(self.op + PORTSC + 0x10 * (u64::from(port) - 1), v)
    }
}
