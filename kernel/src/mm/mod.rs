//! Memory: physical frames, the kernel's page tables, the heap, kernel stacks.
//!
//! # Kernel address space
//!
//! | range (start)            | PML4 | what                                          |
//! |--------------------------|------|-----------------------------------------------|
//! | `0xffff_8000_0000_0000`  | 256+ | bootloader's dynamic mappings: all physical memory at an offset, boot info, framebuffer, the boot CPU's stack |
//! | [`KSTACK_BASE`]          | 320  | kernel stacks, each above an unmapped guard   |
//! | [`HEAP_BASE`]            | 321  | the kernel heap, mapped page by page ([`heap`]) |
//! | [`MMIO_BASE`]            | 322  | device registers, uncached                    |
//! | `0xffff_ffff_8000_0000`  | 511  | the kernel image                              |
//!
//! The lower half belongs to user address spaces. Every kernel-half PML4 entry
//! is created at boot ([`paging::init`]), so an address space that copies the
//! 256 upper entries sees every later kernel mapping too.

pub mod aspace;
pub mod frame;
pub mod heap;
pub mod paging;
pub mod stack;

use core::sync::atomic::{AtomicU64, Ordering};

use bootloader_api::BootInfo;
use x86_64::{PhysAddr, VirtAddr};

/// Start of the kernel-stack region.
pub const KSTACK_BASE: u64 = 0xffff_a000_0000_0000;
/// Start of the kernel heap's region.
pub const HEAP_BASE: u64 = 0xffff_a080_0000_0000;
/// Start of the MMIO region.
pub const MMIO_BASE: u64 = 0xffff_a100_0000_0000;
/// Size of each of the regions above (one PML4 entry).
pub const REGION_SIZE: u64 = 512 << 30;
/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Virtual address of physical address 0 (0 until `early_init`).
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);
/// Virtual address the kernel ELF was loaded at.
static KERNEL_BASE: AtomicU64 = AtomicU64::new(0);

/// Records where physical memory and the kernel image are mapped. Called first
/// thing at boot: the fault reporter needs both.
pub fn early_init(boot_info: &BootInfo) {
    let offset = boot_info
        .physical_memory_offset
        .into_option()
        .expect("the bootloader maps physical memory (BOOTLOADER_CONFIG)");
    PHYS_OFFSET.store(offset, Ordering::Relaxed);
    KERNEL_BASE.store(boot_info.kernel_image_offset, Ordering::Relaxed);
}

/// Brings up frames, page tables, heap and stacks (boot CPU, once).
pub fn init(boot_info: &'static BootInfo) {
    frame::init(&boot_info.memory_regions);
    paging::init(boot_info);
    heap::init(frame::stats().total_bytes());
    stack::init(boot_info);
}

/// The kernel-virtual address of physical address `pa` (through the physical
/// memory mapping).
#[inline]
pub fn phys_to_virt(pa: PhysAddr) -> VirtAddr {
    VirtAddr::new(PHYS_OFFSET.load(Ordering::Relaxed) + pa.as_u64())
}

/// The load address of the kernel image: an address in the kernel minus this is
/// its address in the kernel ELF.
pub fn kernel_image_base() -> u64 {
    KERNEL_BASE.load(Ordering::Relaxed)
}

/// Whether `va` is mapped in the active page tables. Any context (it only
/// reads the tables), so the fault reporter may use it.
pub fn is_mapped(va: u64) -> bool {
    PHYS_OFFSET.load(Ordering::Relaxed) != 0 && paging::translate_current(va).is_some()
}
