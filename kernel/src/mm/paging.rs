//! The kernel's page tables.
//!
//! At boot the kernel builds its own PML4 instead of running on the
//! bootloader's: every kernel-half mapping the bootloader made is copied into
//! fresh tables, with two rules applied on the way — nothing outside the kernel
//! image is executable, and nothing in the kernel half is user-accessible — and
//! every empty kernel-half PML4 entry gets an empty PDPT, so user address spaces
//! can share the whole kernel half by copying 256 entries. The lower half (the
//! bootloader's identity mappings) is dropped. [`audit_wx`] then checks that no
//! kernel page is both writable and executable.
//!
//! Changes go through the `x86_64` crate's [`OffsetPageTable`] over the
//! physical-memory mapping.
//!
//! Lock: one [`SpinLock`] around the kernel tables — stacks are mapped for CPUs
//! that have no thread yet (AP bring-up), so a token cannot serve. TLB entries
//! are flushed on the local CPU; callers that unmap memory another CPU may have
//! cached are responsible for the shootdown (see `stack`).

use bootloader_api::BootInfo;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::{frame, phys_to_virt};
use crate::sync::{LockClass, SpinLock};

struct Kernel {
    table: Option<OffsetPageTable<'static>>,
}

static PAGING_CLASS: LockClass = LockClass::new("kernel page tables", 30);
static KERNEL: SpinLock<Kernel> = SpinLock::ranked(&PAGING_CLASS, Kernel { table: None });

/// Physical address of the kernel PML4, written once by `init`. Read without
/// the lock: an AP loads it before it has a per-CPU block, hence before it can
/// enter the critical section a spinlock needs.
static KERNEL_PML4: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

unsafe extern "C" {
    /// Start of the kernel image (the ELF header), provided by the linker.
    static __ehdr_start: u8;
    /// End of the kernel image, provided by the linker.
    static _end: u8;
}

/// The virtual range of the kernel image.
pub fn kernel_image_range() -> (u64, u64) {
    (&raw const __ehdr_start as u64, &raw const _end as u64)
}

fn table_at(pa: PhysAddr) -> &'static mut PageTable {
    // SAFETY: `pa` is a page-table frame (checked by the callers' walk); the
    // physical-memory mapping makes it addressable. Callers hold the kernel
    // page-table lock or own the table exclusively (boot).
    unsafe { &mut *phys_to_virt(pa).as_mut_ptr::<PageTable>() }
}

/// Copies the table at `old` (of `level`, 4 = PML4) covering addresses from
/// `base`, applying the module's rules to every leaf.
fn copy_table(old: PhysAddr, level: u8, base: u64, image: (u64, u64)) -> PhysFrame {
    let new = frame::alloc_zeroed().expect("out of frames copying page tables");
    let span: u64 = 1 << (12 + 9 * (u32::from(level) - 1));
    for (i, e) in table_at(old).iter().enumerate() {
        if !e.flags().contains(F::PRESENT) {
            continue;
        }
        let va = base + i as u64 * span;
        let leaf = level == 1 || e.flags().contains(F::HUGE_PAGE);
        let new_e = &mut table_at(new.start_address())[i];
        if leaf {
            let mut flags = e.flags() - F::USER_ACCESSIBLE;
            if va < image.0 || va >= image.1 {
                flags |= F::NO_EXECUTE;
            }
            new_e.set_addr(e.addr(), flags);
        } else {
            let child = copy_table(e.addr(), level - 1, va, image);
            new_e.set_addr(child.start_address(), F::PRESENT | F::WRITABLE);
        }
    }
    new
}

/// Sign-extends a 48-bit address.
const fn canonical(va: u64) -> u64 {
    (((va << 16) as i64) >> 16) as u64
}

/// Builds the kernel's own tables and switches to them. Boot CPU, once, before
/// anything maps memory.
pub fn init(_boot_info: &BootInfo) {
    // NX must be on before any entry carries NO_EXECUTE, and the kernel must not
    // write read-only pages.
    // SAFETY: setting EFER.NXE only enables the NX bit's meaning; CR0.WP makes
    // ring 0 honour read-only pages. Neither changes any current mapping.
    unsafe {
        Efer::update(|f| *f |= EferFlags::NO_EXECUTE_ENABLE);
        Cr0::update(|f| *f |= Cr0Flags::WRITE_PROTECT);
    }
    let image = kernel_image_range();
    let (old, _) = Cr3::read();
    let old_pml4 = table_at(old.start_address());
    let pml4 = frame::alloc_zeroed().expect("out of frames for the PML4");
    for i in 256..512 {
        let e = &old_pml4[i];
        let new_e_addr = if e.flags().contains(F::PRESENT) {
            copy_table(e.addr(), 3, canonical((i as u64) << 39), image)
        } else {
            frame::alloc_zeroed().expect("out of frames for kernel PDPTs")
        };
        table_at(pml4.start_address())[i]
            .set_addr(new_e_addr.start_address(), F::PRESENT | F::WRITABLE);
    }
    // The new PML4 maps every upper-half page the kernel uses exactly as the old
    // one did (only NX and U/S tightened outside the code); the dropped lower
    // half holds nothing the kernel touches after this point.
    // SAFETY: same kernel-half mappings as the active tables (see above).
    unsafe { Cr3::write(pml4, Cr3::read().1) };
    let table = table_at(pml4.start_address());
    // SAFETY: the physical-memory offset maps all physical memory, and `table` is
    // the active PML4, reached only through this lock from now on.
    let mapper = unsafe { OffsetPageTable::new(table, phys_to_virt(PhysAddr::new(0))) };
    KERNEL.lock().table = Some(mapper);
    KERNEL_PML4.store(
        pml4.start_address().as_u64(),
        core::sync::atomic::Ordering::Release,
    );
    if let Err(va) = audit_wx() {
        panic!("kernel page {va:#x} is writable and executable");
    }
}

/// The kernel PML4 frame (loaded by APs, copied by user address spaces). Any
/// context, even before the caller has a per-CPU block.
pub fn kernel_pml4() -> PhysFrame {
    let pa = KERNEL_PML4.load(core::sync::atomic::Ordering::Acquire);
    assert!(pa != 0, "paging not initialized");
    PhysFrame::containing_address(PhysAddr::new(pa))
}

/// Maps `page` to `frame` with `flags` (PRESENT is added). Fails if the page is
/// already mapped or a table cannot be allocated.
pub fn map(page: Page, frame: PhysFrame, flags: F) -> Result<(), MapToError<Size4KiB>> {
    map_counted(page, frame, flags).map(|_| ())
}

/// Counts the tables it hands out.
struct CountedFrames(u64);

// SAFETY: every frame comes from the frame allocator, unused and zeroed.
unsafe impl FrameAllocator<Size4KiB> for CountedFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let f = frame::alloc_zeroed()?;
        self.0 += 1;
        Some(f)
    }
}

/// [`map`], returning how many page tables it made (their frames stay as
/// long as the kernel's tables: the heap counts them as its own).
pub fn map_counted(page: Page, frame: PhysFrame, flags: F) -> Result<u64, MapToError<Size4KiB>> {
    let mut tables = CountedFrames(0);
    let mut k = KERNEL.lock();
    let table = k.table.as_mut().expect("paging not initialized");
    // SAFETY: `frame` is owned by the caller, which maps it here for its own use;
    // the page is in the kernel half and was unmapped (map_to checks), so no
    // existing reference is affected.
    unsafe {
        table
            .map_to_with_table_flags(
                page,
                frame,
                flags | F::PRESENT,
                F::PRESENT | F::WRITABLE,
                &mut tables,
            )?
            .flush();
    }
    Ok(tables.0)
}

/// Unmaps `page` and returns its frame; the local TLB entry is flushed.
pub fn unmap(page: Page) -> Result<PhysFrame, UnmapError> {
    let mut k = KERNEL.lock();
    let table = k.table.as_mut().expect("paging not initialized");
    let (frame, flush) = table.unmap(page)?;
    flush.flush();
    Ok(frame)
}

/// Translates `va` through the active tables (whatever CR3 holds), reading
/// them only. Any context.
pub fn translate_current(va: u64) -> Option<PhysAddr> {
    let (root, _) = Cr3::read();
    let mut table = root.start_address();
    for level in (1..=4u32).rev() {
        let index = ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
        let entry_va = phys_to_virt(table) + (index * 8) as u64;
        // SAFETY: `table` is a page-table frame of the active hierarchy (the root
        // from CR3, then addresses from present non-leaf entries); the
        // physical-memory mapping covers it. A volatile read of one entry.
        let raw = unsafe { entry_va.as_ptr::<u64>().read_volatile() };
        if raw & 1 == 0 {
            return None;
        }
        let addr = raw & 0x000f_ffff_ffff_f000;
        let huge = raw & (1 << 7) != 0;
        if level == 1 || (huge && level <= 3) {
            let size = 1u64 << (12 + 9 * (level - 1));
            return Some(PhysAddr::new((addr & !(size - 1)) + (va & (size - 1))));
        }
        table = PhysAddr::new(addr);
    }
    None
}

/// Walks the kernel half of the active tables; returns the first page that is
/// writable and executable.
pub fn audit_wx() -> Result<(), u64> {
    fn walk(table: PhysAddr, level: u8, base: u64) -> Result<(), u64> {
        let span: u64 = 1 << (12 + 9 * (u32::from(level) - 1));
        for (i, e) in table_at(table).iter().enumerate() {
            let f = e.flags();
            if !f.contains(F::PRESENT) {
                continue;
            }
            let va = canonical(base + i as u64 * span);
            if level == 1 || f.contains(F::HUGE_PAGE) {
                if f.contains(F::WRITABLE) && !f.contains(F::NO_EXECUTE) {
                    return Err(va);
                }
            } else {
                walk(e.addr(), level - 1, va)?;
            }
        }
        Ok(())
    }
    let (root, _) = Cr3::read();
    for i in 256..512u64 {
        let e = &table_at(root.start_address())[i as usize];
        if e.flags().contains(F::PRESENT) {
            walk(e.addr(), 3, canonical(i << 39))?;
        }
    }
    Ok(())
}

/// Next free address of the MMIO region.
static MMIO_NEXT: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(super::MMIO_BASE);

/// Maps `len` bytes of device registers at physical `pa`, uncached and not
/// executable, in the MMIO region; returns the virtual address of `pa`.
/// Mappings are permanent (devices are found once, at boot).
pub fn map_mmio(pa: PhysAddr, len: u64) -> VirtAddr {
    let first = PhysFrame::<Size4KiB>::containing_address(pa);
    let last = PhysFrame::<Size4KiB>::containing_address(pa + (len.max(1) - 1));
    let pages = last.start_address().as_u64() / super::PAGE_SIZE
        - first.start_address().as_u64() / super::PAGE_SIZE
        + 1;
    let va = MMIO_NEXT.fetch_add(
        pages * super::PAGE_SIZE,
        core::sync::atomic::Ordering::Relaxed,
    );
    assert!(
        va + pages * super::PAGE_SIZE <= super::MMIO_BASE + super::REGION_SIZE,
        "MMIO region exhausted"
    );
    let flags = F::WRITABLE | F::NO_CACHE | F::WRITE_THROUGH | F::NO_EXECUTE;
    for (i, f) in PhysFrame::range_inclusive(first, last).enumerate() {
        let page = Page::containing_address(VirtAddr::new(va + i as u64 * super::PAGE_SIZE));
        map(page, f, flags).expect("fresh MMIO address already mapped");
    }
    VirtAddr::new(va + (pa.as_u64() - first.start_address().as_u64()))
}
