//! Bring-up steps (xHCI §4.2), in the order `Hc::new` takes them: read
//! and check the capability registers and the extended capabilities
//! (taking the controller from the BIOS, learning each port's protocol),
//! halt and reset the controller, and give it its scratchpad pages.
//!
//! Register offsets that come from the controller are checked against
//! BAR0's size here once; the accessors check every access again anyway
//! (`mem.rs`), so a lying controller costs a refusal, not memory safety.

use alloc::vec::Vec;

use wyvern_abi::syscall::Error;
use wyvern_user::{println, sys};

use crate::hc::{
    CMD_INTE, CMD_RS, Fatal, HW_TIMEOUT, MS, PORTSC, STS_HCH, USBCMD, USBSTS, fatal, wait_for,
};
use crate::mem::{Dma, Mmio, PAGE};

const HCSPARAMS1: u64 = 0x04;
const HCSPARAMS2: u64 = 0x08;
const HCCPARAMS1: u64 = 0x10;
const DBOFF: u64 = 0x14;
const RTSOFF: u64 = 0x18;
const PAGESIZE: u64 = 0x08;
const CONFIG: u64 = 0x38;
/// Interrupter 0 in the runtime registers.
const IR0: u64 = 0x20;

const CMD_HCRST: u32 = 1 << 1;
const STS_CNR: u32 = 1 << 11;

/// Slots this driver enables (QEMU has 64; a keyboard needs one, and the
/// DCBAA must fit before the ERST in its page).
const MAX_SLOTS: u8 = 64;

/// A USB protocol's root ports (Supported Protocol capability).
pub struct Protocol {
    pub first: u8,
    pub count: u8,
    pub slot_type: u8,
}

/// What the capability registers say, checked.
pub struct Caps {
    /// Operational registers, interrupter 0, doorbells: offsets in BAR0.
    pub op: u64,
    pub ir: u64,
    pub db: u64,
    pub ports: u8,
    pub max_slots: u8,
    /// Context size, 32 or 64 (CSZ).
    pub ctx: u64,
    /// 64-bit addressing (AC64).
    pub wide: bool,
    pub scratchpads: u64,
    pub protocols: Vec<Protocol>,
}

/// Reads the capability registers and walks the extended capabilities.
pub fn caps(regs: &Mmio) -> Result<Caps, Fatal> {
    let cap = regs.r32(0);
    let op = u64::from(cap & 0xff);
    let hcs1 = regs.r32(HCSPARAMS1);
    let hcs2 = regs.r32(HCSPARAMS2);
    let hcc1 = regs.r32(HCCPARAMS1);
    let db = u64::from(regs.r32(DBOFF) & !3);
    let ir = u64::from(regs.r32(RTSOFF) & !0x1f) + IR0;
    let ports = (hcs1 >> 24) as u8;
    let max_slots = (hcs1 as u8).min(MAX_SLOTS);
    let size = regs.size();
    if cap == u32::MAX
        || op < 0x20
        || ports == 0
        || max_slots == 0
        || op + PORTSC + 0x10 * u64::from(ports) > size
        || ir + 0x20 > size
        || db + 4 * (u64::from(max_slots) + 1) > size
    {
        return Err(fatal("registers do not fit BAR0"));
    }
    let mut protocols = Vec::new();
    let mut x = u64::from(hcc1 >> 16) * 4;
    // A looping list ends here.
    for _ in 0..64 {
        if x == 0 || x + 16 > size {
            break;
        }
        let v = regs.r32(x);
        match v & 0xff {
            1 => handoff(regs, x),
            2 => {
                let w2 = regs.r32(x + 8);
                protocols.push(Protocol {
                    first: w2 as u8,
                    count: (w2 >> 8) as u8,
                    slot_type: (regs.r32(x + 12) & 0x1f) as u8,
                });
            }
            _ => {}
        }
        let next = u64::from((v >> 8) & 0xff);
        if next == 0 {
            break;
        }
        x += next * 4;
    }
    Ok(Caps {
        op,
        ir,
        db,
        ports,
        max_slots,
        ctx: if hcc1 & (1 << 2) != 0 { 64 } else { 32 },
        wide: hcc1 & 1 != 0,
        scratchpads: u64::from((((hcs2 >> 21) & 0x1f) << 5) | (hcs2 >> 27)),
        protocols,
    })
}

/// Halts and resets the controller, checks it does 4 KiB pages, and
/// enables `c.max_slots` slots.
pub fn reset(regs: &Mmio, c: &Caps) -> Result<(), Fatal> {
    let op = c.op;
    let cmd = regs.r32(op + USBCMD);
    regs.w32(op + USBCMD, cmd & !(CMD_RS | CMD_INTE));
    if !wait_for(HW_TIMEOUT, || regs.r32(op + USBSTS) & STS_HCH != 0) {
        return Err(fatal("controller does not halt"));
    }
    regs.w32(op + USBCMD, CMD_HCRST);
    // Some controllers want a moment before their registers are read.
    let _ = sys::sleep_ns(MS);
    let done = || regs.r32(op + USBCMD) & CMD_HCRST == 0 && regs.r32(op + USBSTS) & STS_CNR == 0;
    if !wait_for(HW_TIMEOUT, done) {
        return Err(fatal("controller reset does not finish"));
    }
    if regs.r32(op + PAGESIZE) & 1 == 0 {
        return Err(fatal("controller does not do 4 KiB pages"));
    }
    let config = regs.r32(op + CONFIG);
    regs.w32(op + CONFIG, (config & !0xff) | u32::from(c.max_slots));
    Ok(())
}

/// The scratchpad pages the controller asked for, and their array (last),
/// whose address goes into DCBAA entry 0. Empty when it asked for none.
pub fn scratchpads(c: &Caps) -> Result<Vec<Dma>, Error> {
    let count = c.scratchpads;
    let mut v = Vec::new();
    if count == 0 {
        return Ok(v);
    }
    let array = Dma::alloc(count * 8, c.wide)?;
    let mut done = 0;
    while done < count {
        // At most 1 MiB per allocation.
        let n = (count - done).min(256);
        let pages = Dma::alloc(n * PAGE, c.wide)?;
        for i in 0..n {
            array.w64(8 * (done + i), pages.phys() + i * PAGE);
        }
        v.push(pages);
        done += n;
    }
    v.push(array);
    Ok(v)
}

/// Takes the controller from the BIOS (USB Legacy Support capability at
/// `x`): sets OS-owned, waits up to a second for BIOS-owned to clear,
/// and turns the BIOS's SMIs off.
fn handoff(regs: &Mmio, x: u64) {
    const BIOS_OWNED: u32 = 1 << 16;
    const OS_OWNED: u32 = 1 << 24;
    let v = regs.r32(x);
    if v & BIOS_OWNED == 0 {
        return;
    }
    regs.w32(x, v | OS_OWNED);
    if !wait_for(HW_TIMEOUT, || regs.r32(x) & BIOS_OWNED == 0) {
        println!("xhci: the BIOS keeps the controller; taking it");
        regs.w32(x, (regs.r32(x) & !BIOS_OWNED) | OS_OWNED);
    }
    // USBLEGCTLSTS: SMI enables off, SMI status bits (write 1) cleared.
    regs.w32(x + 4, 0xe000_0000);
}
