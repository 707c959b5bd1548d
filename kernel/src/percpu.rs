//! Per-CPU data, reached through the GS base.
//!
//! Each CPU's GS base points at its [`PerCpu`], whose first word points at
//! itself, so [`mycpu`] is a single `mov rax, gs:[0]`. The boot CPU's block is
//! static and installed before anything else runs; each AP installs its own as
//! the first thing it does.
//!
//! Field discipline: a *local* field is touched only by its own CPU (plain
//! `Cell`s would do; they are atomics with `Relaxed` order only so that an
//! interrupt on the same CPU may read them); a *shared* field is read or
//! written by other CPUs and says its ordering.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::gdt::CpuTables;

/// One CPU's private data.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this block: `gs:[0]`. Written once before the GS base is set.
    self_ptr: *const PerCpu,
    /// Index of this CPU, 0 for the boot CPU, dense. Written once.
    index: u32,
    /// Local APIC id. Written once.
    apic_id: AtomicU32,
    /// GDT and TSS of this CPU. Local.
    pub tables: CpuTables,
}

// SAFETY: `self_ptr` is written once before the block is published and never
// again; every other field is atomic or documented as local to its CPU.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    /// A block for CPU `index`; `install` completes it.
    pub const fn new(index: u32) -> Self {
        PerCpu {
            self_ptr: core::ptr::null(),
            index,
            apic_id: AtomicU32::new(0),
            tables: CpuTables::new(),
        }
    }

    /// This CPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// This CPU's local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }
}

/// The block of the boot CPU.
static mut BSP: PerCpu = PerCpu::new(0);

/// Makes `block` this CPU's per-CPU block.
///
/// # Safety
///
/// 1. Called once per CPU, by that CPU, before anything reads `mycpu()`.
/// 2. `block` is not referenced anywhere else yet and lives as long as the CPU.
unsafe fn install(block: *mut PerCpu, apic_id: u32) {
    // SAFETY: condition 2: nothing else references `block` yet.
    unsafe {
        (*block).self_ptr = block;
        (*block).apic_id.store(apic_id, Ordering::Relaxed);
    }
    // Condition 1: this CPU reads its block through GS only after this point, and
    // the block is 'static (condition 2).
    x86_64::registers::model_specific::GsBase::write(x86_64::VirtAddr::from_ptr(block));
}

/// Installs the boot CPU's static block. First thing `kmain` does.
pub fn init_bsp() {
    // SAFETY: called once, first thing on the boot CPU (condition 1); `BSP` is
    // only reached through `mycpu()` afterwards (condition 2).
    unsafe { install(&raw mut BSP, 0) };
}

/// This CPU's block.
#[inline(always)]
pub fn mycpu() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: the GS base of every CPU points at its installed, 'static `PerCpu`,
    // whose first word is its own address; reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags));
        &*p
    }
}

/// This CPU's index (0 for the boot CPU).
#[inline(always)]
pub fn cpu_index() -> u32 {
    mycpu().index
}
