//! Device access for user drivers: device memory (`DEVICE_GRANT`,
//! `MAP_DEVICE`), memory for DMA (`DMA_ALLOC`) and facts about the machine
//! (`HWINFO`). Interrupts are in [`super::irq`].
//!
//! # Who may do what
//!
//! * `DEVICE_GRANT(pid, phys, len, flags)`: the process manager only — its
//!   policy decides which driver gets which BAR, which configuration page,
//!   the framebuffer, the DSDT. A range that overlaps memory somebody owns
//!   (RAM, the kernel's and the firmware's pages, ACPI NVS: see
//!   `mm::frame::is_device_range`) is refused (`Denied`), so no grant ever
//!   reaches a page the kernel hands out. A process holds at most
//!   [`MAX_DEVICE_GRANTS`] ranges (`Limit`); a grant with
//!   [`devmap::READ_ONLY`] may only be mapped read-only.
//! * `MAP_DEVICE(phys, len, flags)`: the granted process maps whole pages
//!   around the range, uncached or write-combining. It pays for the page
//!   tables (its account's memory), not for the device pages. The kernel
//!   never copies to or from such pages on a process's behalf (IPC through
//!   them is `Fault`): a register read has effects, and the kernel's
//!   physical-memory mapping need not cover device memory.
//! * `DMA_ALLOC(len, &phys)`: a process with [`rights::DMA`] gets zeroed,
//!   physically contiguous, write-back memory (at most [`MAX_DMA`] per
//!   call), charged to its account like any memory, and its physical
//!   address. **Without an IOMMU (Wyvern programs none) a device can be
//!   told to read or write any physical address: granting DMA is full
//!   trust in the driver**, and the process manager's policy gives it only
//!   to the drivers of bus-mastering devices.
//! * `HWINFO`: anybody for the framebuffer's geometry and what ACPI says of
//!   PCI configuration space and power (not secrets); the memory figures
//!   need [`rights::OBSERVE`].
//!
//! # When a driver ends
//!
//! Before its memory is freed, the kernel turns off bus mastering (and
//! memory/I/O decoding) of every PCI function whose configuration page the
//! process was granted, so a controller it programmed stops writing into
//! DMA pages that are about to be reused; a framebuffer it took is given
//! back to the kernel's console.

use core::sync::atomic::{AtomicU64, Ordering};

use wyvern_abi::syscall::{
    AcpiInfo, Error, FbInfo, MAX_DEVICE_GRANTS, MAX_DMA, MemInfo, devmap, fbformat, hwinfo, rights,
};
use x86_64::PhysAddr;
use x86_64::structures::paging::PhysFrame;

use super::UserThread;
use super::process::{self, Process};
use crate::mm::aspace::{Cache, Kind, MapError, Prot};
use crate::mm::{PAGE_SIZE, frame};
use crate::sync::TokenCell;

// `MAP_DEVICE` and `DMA_ALLOC` place mappings in the `MAP` area.
use super::process::{MAP_BASE, MAP_END};

/// One granted range.
#[derive(Clone, Copy, Default)]
struct Grant {
    start: u64,
    end: u64,
    read_only: bool,
}

/// A process's device grants.
pub struct Grants {
    list: TokenCell<([Grant; MAX_DEVICE_GRANTS as usize], usize)>,
}

impl Grants {
    pub const fn new() -> Self {
        Grants {
            list: TokenCell::new((
                [Grant {
                    start: 0,
                    end: 0,
                    read_only: false,
                }; MAX_DEVICE_GRANTS as usize],
                0,
            )),
        }
    }

    /// Whether `[start, end)` lies in one grant (and may be written, if
    /// `write`).
    fn covers(&self, start: u64, end: u64, write: bool) -> bool {
        self.list.with(|(g, n)| {
            g[..*n]
                .iter()
                .any(|g| g.start <= start && end <= g.end && (!write || !g.read_only))
        })
    }

    /// Whether it holds any grant.
    pub fn any(&self) -> bool {
        self.list.with(|(_, n)| *n > 0)
    }

    fn each(&self, mut f: impl FnMut(u64, u64)) {
        self.list.with(|(g, n)| {
            for g in &g[..*n] {
                f(g.start, g.end);
            }
        });
    }
}

impl Default for Grants {
    fn default() -> Self {
        Self::new()
    }
}

/// The boot framebuffer, as `HWINFO` reports it (recorded at boot).
static FB: crate::sync::Once<FbInfo> = crate::sync::Once::new();
/// The process that mapped the framebuffer writable (0: the kernel draws).
static FB_OWNER: AtomicU64 = AtomicU64::new(0);

/// Records the boot framebuffer (physical address, geometry). Boot CPU,
/// thread context, once.
pub fn set_framebuffer(info: FbInfo) {
    FB.call_once(|| info);
}

/// The whole pages of `len` bytes at `phys`: `Invalid` when the last one's
/// end is past the top of the address range (an error, never an overflow).
fn pages(phys: u64, len: u64) -> Result<(u64, u64), Error> {
    let end = phys
        .checked_add(len)
        .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
        .ok_or(Error::Invalid)?;
    Ok((phys & !(PAGE_SIZE - 1), end))
}

/// `DEVICE_GRANT`.
pub fn grant(u: &UserThread, pid: u64, phys: u64, len: u64, flags: u64) -> Result<u64, Error> {
    if !u.process.privileged() {
        return Err(Error::Denied);
    }
    if flags & !devmap::READ_ONLY != 0 || len == 0 {
        return Err(Error::Invalid);
    }
    let (start, end) = pages(phys, len)?;
    if end > 1 << 52 {
        return Err(Error::Invalid);
    }
    if !frame::is_device_range(start, end) {
        return Err(Error::Denied);
    }
    let p = process::find(pid).ok_or(Error::NotFound)?;
    p.devices.list.with(|(g, n)| {
        if *n == g.len() {
            return Err(Error::Limit);
        }
        g[*n] = Grant {
            start,
            end,
            read_only: flags & devmap::READ_ONLY != 0,
        };
        *n += 1;
        Ok(0)
    })
}

fn map_error(e: MapError) -> Error {
    match e {
        MapError::NoMemory => Error::NoMemory,
        MapError::Limit => Error::Limit,
        MapError::Busy => Error::NoMemory,
    }
}

/// `MAP_DEVICE`.
pub fn map(u: &UserThread, phys: u64, len: u64, flags: u64) -> Result<u64, Error> {
    if flags & !(devmap::READ_ONLY | devmap::WRITE_COMBINE) != 0 || len == 0 {
        return Err(Error::Invalid);
    }
    let (start, end) = pages(phys, len)?;
    let write = flags & devmap::READ_ONLY == 0;
    if !u.process.devices.covers(start, end, write) {
        return Err(Error::Denied);
    }
    let size = end - start;
    let cache = if flags & devmap::WRITE_COMBINE != 0 {
        Cache::WriteCombining
    } else {
        Cache::Uncached
    };
    let prot = Prot { write, exec: false };
    let space = &u.process.space;
    for _ in 0..4 {
        let at = space
            .find_free(MAP_BASE, MAP_END, size)
            .ok_or(Error::NoMemory)?;
        match space.map_phys(at, start, size, prot, cache) {
            Ok(()) => {
                if write {
                    take_framebuffer(&u.process, start, end);
                }
                return Ok(at + (phys - start));
            }
            Err(MapError::Busy) => continue,
            Err(e) => return Err(map_error(e)),
        }
    }
    Err(Error::NoMemory)
}

/// A writable mapping of the framebuffer: the kernel's console stops
/// drawing there (its output goes on to COM1 and the log ring).
fn take_framebuffer(p: &Process, start: u64, end: u64) {
    let Some(&fb) = FB.get() else {
        return;
    };
    if start < fb.phys + fb.size && fb.phys < end {
        FB_OWNER.store(p.pid, Ordering::Release);
        crate::console::hand_over_framebuffer(true);
    }
}

/// `DMA_ALLOC`.
pub fn dma_alloc(u: &UserThread, len: u64, phys_out: u64) -> Result<u64, Error> {
    if u.process.rights() & rights::DMA == 0 {
        return Err(Error::Denied);
    }
    if len == 0 || len > MAX_DMA {
        return Err(Error::Invalid);
    }
    // The output must be writable before memory is taken.
    super::uaccess::probe_write(phys_out, 8)?;
    let size = len.next_multiple_of(PAGE_SIZE);
    let count = (size / PAGE_SIZE) as usize;
    let first = frame::alloc_contiguous(count, 1).ok_or(Error::NoMemory)?;
    let base = first.start_address().as_u64();
    for i in 0..count as u64 {
        let va = crate::mm::phys_to_virt(PhysAddr::new(base + i * PAGE_SIZE));
        // SAFETY: the frame was just allocated (nothing else refers to it)
        // and is mapped writable through the physical-memory mapping.
        unsafe { crate::arch::cpu::clear_page(va.as_mut_ptr::<u8>()) };
    }
    let space = &u.process.space;
    let prot = Prot {
        write: true,
        exec: false,
    };
    let mut given = 0u64;
    let mut result = Err(Error::NoMemory);
    for _ in 0..4 {
        let Some(at) = space.find_free(MAP_BASE, MAP_END, size) else {
            break;
        };
        // `map_with` frees the frames it was given when it fails; it takes
        // them in order, so `given` says which are still ours.
        given = 0;
        let r = space.map_with(at, size, prot, Kind::Dma, |va| {
            given += 1;
            Some(PhysFrame::containing_address(PhysAddr::new(
                base + (va - at),
            )))
        });
        match r {
            Ok(()) => {
                result = Ok(at);
                break;
            }
            Err(MapError::Busy) => {
                given = 0;
                continue;
            }
            Err(e) => {
                result = Err(map_error(e));
                break;
            }
        }
    }
    match result {
        Ok(at) => {
            if super::uaccess::write_bytes(phys_out, &base.to_le_bytes()).is_err() {
                // Unmapped by another thread meanwhile: the memory stays
                // mapped, the caller learns nothing.
                return Err(Error::Fault);
            }
            Ok(at)
        }
        Err(e) => {
            for i in given as usize..count {
                frame::free(PhysFrame::containing_address(PhysAddr::new(
                    base + i as u64 * PAGE_SIZE,
                )));
            }
            Err(e)
        }
    }
}

/// `HWINFO`.
pub fn hwinfo(u: &UserThread, kind: u64, ptr: u64, len: u64) -> Result<u64, Error> {
    match kind {
        hwinfo::FRAMEBUFFER => {
            let fb = *FB.get().ok_or(Error::NotFound)?;
            write_struct(ptr, len, &fb)
        }
        hwinfo::ACPI => {
            let info: AcpiInfo = crate::acpi::platform().info;
            write_struct(ptr, len, &info)
        }
        hwinfo::MEMORY => {
            if u.process.rights() & rights::OBSERVE == 0 {
                return Err(Error::Denied);
            }
            let (f, h) = (frame::stats(), crate::mm::heap::stats());
            let (live, _) = crate::mm::stack::stats();
            let (slots, peak) = crate::mm::stack::slots_used();
            let (fifos, fifo_bytes) = crate::sched::world().ipi.fifo_memory();
            let m = MemInfo {
                total_frames: f.total as u64,
                free_frames: f.free as u64,
                heap_bytes: h.allocated as u64,
                heap_allocations: h.allocations as u64,
                kernel_stacks: live as u64,
                kernel_stack_peak: peak as u64,
                kernel_stack_slots: slots as u64,
                ipi_fifos: fifos,
                ipi_fifo_bytes: fifo_bytes as u64,
            };
            write_struct(ptr, len, &m)
        }
        _ => Err(Error::Invalid),
    }
}

/// Copies `v` to user address `ptr` (a buffer of `len` bytes); returns the
/// bytes written. `T` must be a `repr(C)` struct of `u64`s (an ABI answer:
/// `FbInfo`, `AcpiInfo`, `MemInfo`, `MsiTarget`), so that every byte is
/// initialized.
pub(super) fn write_struct<T: Copy>(ptr: u64, len: u64, v: &T) -> Result<u64, Error> {
    let n = size_of::<T>();
    if (len as usize) < n {
        return Err(Error::Invalid);
    }
    // SAFETY: `T` is a `repr(C)` struct of `u64`s (the function's contract):
    // every byte is initialized.
    let bytes = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(v).cast::<u8>(), n) };
    super::uaccess::write_bytes(ptr, bytes)?;
    Ok(n as u64)
}

/// The format code of a bootloader pixel format.
pub fn fb_format(f: bootloader_api::info::PixelFormat) -> Option<u64> {
    use bootloader_api::info::PixelFormat;
    match f {
        PixelFormat::Rgb => Some(fbformat::RGB),
        PixelFormat::Bgr => Some(fbformat::BGR),
        PixelFormat::U8 => Some(fbformat::GREY),
        _ => None,
    }
}

/// Process `p` is ending (its memory not yet freed): PCI functions whose
/// configuration page it held stop mastering the bus and decoding; the
/// framebuffer goes back to the kernel's console.
pub fn process_ended(p: &Process) {
    if FB_OWNER
        .compare_exchange(p.pid, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        crate::console::hand_over_framebuffer(false);
    }
    if !p.devices.any() {
        return;
    }
    let info = crate::acpi::platform().info;
    if info.ecam_base == 0 {
        return;
    }
    let buses = info.ecam_bus_end.saturating_sub(info.ecam_bus_start) + 1;
    let (lo, hi) = (info.ecam_base, info.ecam_base + (buses << 20));
    p.devices.each(|start, end| {
        let mut page = start.max(lo);
        while page < end.min(hi) {
            quiesce_function(lo, info.ecam_bus_start, page);
            page += PAGE_SIZE;
        }
    });
}

/// Clears the command register's bus-master, memory and I/O enables of the
/// PCI function whose ECAM page is `page` (bus `first_bus` at `ecam`), if a
/// function is there. Through configuration mechanism 1 (ports 0xCF8 and
/// 0xCFC, which every PC has for segment 0 and which no driver is granted):
/// it needs no mapping, so a driver restarted a thousand times costs the
/// kernel nothing here.
fn quiesce_function(ecam: u64, first_bus: u64, page: u64) {
    let off = page - ecam;
    let bus = first_bus + (off >> 20);
    if bus > 255 {
        return;
    }
    let addr = 0x8000_0000u32 | (bus as u32) << 16 | (((off >> 12) & 0xff) as u32) << 8;
    let _g = PCI_CF8.lock();
    // Register 0 is the vendor/device id, register 4 the command (low 16
    // bits) and status (high 16 bits, write-one-to-clear: written back as
    // zeros).
    // SAFETY: configuration mechanism 1: the address port selects a
    // register, the data port reads or writes it; the lock keeps the pair.
    unsafe {
        use x86_64::instructions::port::Port;
        let mut a = Port::<u32>::new(0xcf8);
        let mut d = Port::<u32>::new(0xcfc);
        a.write(addr);
        if d.read() & 0xffff == 0xffff {
            return;
        }
        a.write(addr | 4);
        let cmd = d.read() & 0xffff;
        a.write(addr | 4);
        d.write(cmd & !0b111);
    }
}

static PCI_CF8_CLASS: crate::sync::LockClass = crate::sync::LockClass::new("pci cf8", 45);
/// Configuration mechanism 1's address/data pair.
static PCI_CF8: crate::sync::SpinLock<()> = crate::sync::SpinLock::ranked(&PCI_CF8_CLASS, ());
