//! The CPU's protections of the kernel against user mode, turned on by each
//! CPU when present: SMEP (the kernel never executes a user page), SMAP (the
//! kernel touches user pages only inside the copy routines, between `stac` and
//! `clac`), UMIP (user mode cannot read the descriptor-table registers). NX and
//! CR0.WP are on from `mm::paging`.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr4, Cr4Flags};

use super::cpu::cpuid;

static SMEP: AtomicBool = AtomicBool::new(false);
static SMAP: AtomicBool = AtomicBool::new(false);
static UMIP: AtomicBool = AtomicBool::new(false);

/// Turns on every protection the CPU has. Every CPU, once, before it runs a
/// user thread. All CPUs of a machine are alike; the boot CPU's answer is the
/// one [`smap`] reports.
pub fn init_local() {
    let leaf7 = cpuid(7, 0);
    let smep = leaf7.ebx & (1 << 7) != 0;
    let smap = leaf7.ebx & (1 << 20) != 0;
    let umip = leaf7.ecx & (1 << 2) != 0;
    // SAFETY: each bit only forbids what the kernel never does: execute user
    // pages (SMEP), touch them outside `stac`/`clac` (SMAP: the copy routines
    // are the only place), let user mode run SGDT & co (UMIP).
    unsafe {
        Cr4::update(|f| {
            f.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, smep);
            f.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, smap);
            f.set(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION, umip);
        });
    }
    SMEP.store(smep, Ordering::Relaxed);
    SMAP.store(smap, Ordering::Relaxed);
    UMIP.store(umip, Ordering::Relaxed);
    init_pat();
}

/// The page attribute table: entry 1 (PWT alone) becomes write-combining,
/// for framebuffers mapped into a driver (Linux's layout); the other seven
/// keep their power-on types (0 WB, 2 UC-, 3 UC, 4 WB, 5 WT, 6 UC-, 7 UC).
/// Every CPU must agree, so every CPU writes it before it runs a user
/// thread.
fn init_pat() {
    // CPUID.1:EDX.PAT[bit 16].
    if cpuid(1, 0).edx & (1 << 16) == 0 {
        return;
    }
    const IA32_PAT: u32 = 0x277;
    const POWER_ON: u64 = 0x0007_0406_0007_0406;
    let value = (POWER_ON & !(0xff << 8)) | (0x01 << 8);
    // The kernel maps MMIO with PCD and PWT (entry 3); user device mappings,
    // made after every CPU ran this, are entry 1's only users.
    // SAFETY: only entry 1 changes, from WT to WC, while no mapping uses it;
    // the other entries keep their values.
    unsafe { x86_64::registers::model_specific::Msr::new(IA32_PAT).write(value) };
    PAT.store(true, Ordering::Relaxed);
}

static PAT: AtomicBool = AtomicBool::new(false);

/// Whether a page with PWT alone (PAT entry 1) is write-combining.
pub fn pat_wc() -> bool {
    PAT.load(Ordering::Relaxed)
}

/// Whether SMAP is on (the copy routines then bracket user accesses with
/// `stac`/`clac`).
#[inline]
pub fn smap() -> bool {
    SMAP.load(Ordering::Relaxed)
}

/// Clears RFLAGS.AC: a trap from user mode may arrive with AC set by the
/// user, which would suspend SMAP in the kernel. Trap entry from user mode.
#[inline]
pub fn clac() {
    if smap() {
        // SAFETY: `clac` only clears RFLAGS.AC (SMAP is present).
        unsafe { core::arch::asm!("clac", options(nomem, nostack)) };
    }
}

/// The protections on, for the boot banner.
pub fn describe() -> alloc::string::String {
    let mut s = alloc::string::String::from("NX, WP");
    for (on, name) in [
        (SMEP.load(Ordering::Relaxed), "SMEP"),
        (SMAP.load(Ordering::Relaxed), "SMAP"),
        (UMIP.load(Ordering::Relaxed), "UMIP"),
    ] {
        if on {
            s.push_str(", ");
            s.push_str(name);
        }
    }
    s
}
