//! The HPET's main counter, used to measure the TSC when CPUID does not give
//! its frequency.

use x86_64::PhysAddr;

use crate::mm;

const GCAP: u64 = 0x00;
const GCONF: u64 = 0x10;
const COUNTER: u64 = 0xf0;

/// A mapped HPET.
pub struct Hpet {
    base: u64,
    /// Mask of the counter's width (32 or 64 bits).
    mask: u64,
}

impl Hpet {
    /// Maps the HPET at `pa` and starts its main counter. Boot CPU.
    pub fn new(pa: u64) -> Self {
        let base = mm::paging::map_mmio(PhysAddr::new(pa), 1024).as_u64();
        // SAFETY: GCAP is a read-only register of the HPET just mapped; bit 13
        // says whether the main counter is 64 bits wide.
        let gcap = unsafe { core::ptr::read_volatile((base + GCAP) as *const u64) };
        let mask = if gcap & (1 << 13) != 0 {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let h = Hpet { base, mask };
        // SAFETY: GCONF bit 0 (ENABLE_CNF) starts the main counter; the other
        // bits are kept.
        unsafe {
            let conf = core::ptr::read_volatile((base + GCONF) as *const u64);
            core::ptr::write_volatile((base + GCONF) as *mut u64, conf | 1);
        }
        h
    }

    /// Counter period in femtoseconds.
    pub fn period_fs(&self) -> u64 {
        // SAFETY: GCAP is a read-only register of the mapped HPET.
        unsafe { core::ptr::read_volatile((self.base + GCAP) as *const u64) >> 32 }
    }

    /// The main counter.
    pub fn counter(&self) -> u64 {
        // SAFETY: the main counter register of the mapped HPET.
        unsafe { core::ptr::read_volatile((self.base + COUNTER) as *const u64) & self.mask }
    }

    /// Ticks from `earlier` to `later`, across one wrap of the counter.
    pub fn elapsed(&self, earlier: u64, later: u64) -> u64 {
        later.wrapping_sub(earlier) & self.mask
    }
}
