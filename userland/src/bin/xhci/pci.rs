//! The controller's PCI function, through its 4 KiB ECAM configuration
//! page: identity, memory BARs (address and size), the command register,
//! and message-signalled interrupts (MSI-X, or MSI).
//!
//! The process manager grants the page and the function's memory BARs but
//! enables nothing; the driver sizes a BAR itself (all-ones probe with
//! memory decode off, then the old value back) and then turns on memory
//! decode and bus mastering.

use wyvern_abi::syscall::{Error, MsiTarget};

use crate::mem::{Mmio, PAGE};

const COMMAND: u64 = 0x04;
const STATUS: u64 = 0x06;
const CLASS: u64 = 0x08;
const BAR0: u64 = 0x10;
const CAP_PTR: u64 = 0x34;

pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
const CMD_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u16 = 1 << 4;

const CAP_MSI: u8 = 0x05;
const CAP_MSIX: u8 = 0x11;

const MSI_ENABLE: u16 = 1 << 0;
const MSI_64BIT: u16 = 1 << 7;
const MSI_MASKABLE: u16 = 1 << 8;
const MSIX_MASK_ALL: u16 = 1 << 14;
const MSIX_ENABLE: u16 = 1 << 15;

/// A memory BAR: where it is and how large.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    pub phys: u64,
    pub size: u64,
}

/// The MSI-X capability: its place, table size, and where the table is.
#[derive(Clone, Copy, Debug)]
pub struct Msix {
    cap: u64,
    entries: u64,
    /// The BAR register index holding the table, and the table's offset.
    pub bir: u8,
    pub table: u64,
}

/// The function's configuration page.
pub struct Config(Mmio);

impl Config {
    pub fn map(phys: u64) -> Result<Config, Error> {
        Mmio::map(phys, PAGE).map(Config)
    }

    /// Class, subclass, programming interface.
    pub fn class(&self) -> (u8, u8, u8) {
        let v = self.0.r32(CLASS);
        ((v >> 24) as u8, (v >> 16) as u8, (v >> 8) as u8)
    }

    pub fn command(&self) -> u16 {
        self.0.r16(COMMAND)
    }

    pub fn set_command(&self, v: u16) {
        self.0.w16(COMMAND, v)
    }

    /// Memory BAR `index` (0..=5), sized; `None` for an I/O or empty BAR.
    pub fn memory_bar(&self, index: u8) -> Option<Bar> {
        if index > 5 {
            return None;
        }
        let off = BAR0 + 4 * u64::from(index);
        let lo = self.0.r32(off);
        if lo & 1 != 0 {
            return None;
        }
        let wide = (lo >> 1) & 3 == 2;
        if wide && index == 5 {
            return None;
        }
        let hi = if wide { self.0.r32(off + 4) } else { 0 };
        // Probe with decode off, so the all-ones address never decodes.
        let cmd = self.command();
        self.set_command(cmd & !CMD_MEMORY);
        self.0.w32(off, u32::MAX);
        let mask_lo = self.0.r32(off);
        self.0.w32(off, lo);
        let mask_hi = if wide {
            self.0.w32(off + 4, u32::MAX);
            let m = self.0.r32(off + 4);
            self.0.w32(off + 4, hi);
            m
        } else {
            u32::MAX
        };
        self.set_command(cmd);
        let mask = (u64::from(mask_hi) << 32) | u64::from(mask_lo & !0xf);
        let size = (!mask).wrapping_add(1);
        let phys = (u64::from(hi) << 32) | u64::from(lo & !0xf);
        // An unimplemented BAR reads back zero in every address bit.
        let implemented = mask_lo & !0xf != 0 || (wide && mask_hi != 0);
        let sane = size.is_power_of_two() && phys != 0 && phys.checked_add(size).is_some();
        (implemented && sane).then_some(Bar { phys, size })
    }

    /// The offset of capability `id`, walking at most 48 entries (a
    /// looping list ends there).
    fn find(&self, id: u8) -> Option<u64> {
        if self.0.r16(STATUS) & STATUS_CAP_LIST == 0 {
            return None;
        }
        let mut at = u64::from(self.0.r8(CAP_PTR) & 0xfc);
        for _ in 0..48 {
            if at < 0x40 {
                return None;
            }
            if self.0.r8(at) == id {
                return Some(at);
            }
            at = u64::from(self.0.r8(at + 1) & 0xfc);
        }
        None
    }

    pub fn msix(&self) -> Option<Msix> {
        let cap = self.find(CAP_MSIX)?;
        let ctrl = self.0.r16(cap + 2);
        let t = self.0.r32(cap + 4);
        Some(Msix {
            cap,
            entries: u64::from(ctrl & 0x7ff) + 1,
            bir: (t & 7) as u8,
            table: u64::from(t & !7),
        })
    }

    pub fn has_msi(&self) -> bool {
        self.find(CAP_MSI).is_some()
    }

    /// Points MSI-X entry 0 (interrupter 0's vector) at `t`, masks the
    /// others, and enables MSI-X (legacy INTx off). `table` maps the BAR
    /// the capability names. False when the table does not fit in it.
    pub fn enable_msix(&self, m: &Msix, table: &Mmio, t: MsiTarget) -> bool {
        let Ok(data) = u32::try_from(t.data) else {
            return false;
        };
        if m.table + 16 * m.entries > table.size() {
            return false;
        }
        let ctrl = self.0.r16(m.cap + 2);
        // Function-masked while the table changes.
        self.0.w16(m.cap + 2, ctrl | MSIX_ENABLE | MSIX_MASK_ALL);
        for i in 1..m.entries {
            table.w32(m.table + 16 * i + 12, 1);
        }
        let e = m.table;
        table.w32(e, t.address as u32);
        table.w32(e + 4, (t.address >> 32) as u32);
        table.w32(e + 8, data);
        table.w32(e + 12, 0);
        self.set_command(self.command() | CMD_INTX_DISABLE);
        self.0.w16(m.cap + 2, (ctrl | MSIX_ENABLE) & !MSIX_MASK_ALL);
        true
    }

    /// Programs the MSI capability with `t` (one vector) and enables it.
    /// False when there is none or `t` does not fit it.
    pub fn enable_msi(&self, t: MsiTarget) -> bool {
        let Some(cap) = self.find(CAP_MSI) else {
            return false;
        };
        let ctrl = self.0.r16(cap + 2);
        let wide = ctrl & MSI_64BIT != 0;
        let Ok(data) = u16::try_from(t.data) else {
            return false;
        };
        if !wide && t.address >> 32 != 0 {
            return false;
        }
        self.0.w32(cap + 4, t.address as u32);
        let (data_at, mask_at) = if wide {
            self.0.w32(cap + 8, (t.address >> 32) as u32);
            (cap + 12, cap + 16)
        } else {
            (cap + 8, cap + 12)
        };
        self.0.w16(data_at, data);
        if ctrl & MSI_MASKABLE != 0 {
            self.0.w32(mask_at, 0);
        }
        self.set_command(self.command() | CMD_INTX_DISABLE);
        // Multiple Message Enable 0: one vector.
        self.0.w16(cap + 2, (ctrl & !(7 << 4)) | MSI_ENABLE);
        true
    }
}
