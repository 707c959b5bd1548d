//! FPU, SSE and AVX state of user threads.
//!
//! The kernel is soft-float (the `x86_64-unknown-none` target never touches
//! an FPU or vector register), so these registers only ever hold the state of
//! a user thread. Each user thread has a save area; the switch saves it
//! **eagerly** when a user thread is switched out, and restores it when a user
//! thread is switched in — unless the CPU's registers still hold that very
//! thread's state, because only kernel threads ran since (the common case of
//! an interrupt thread preempting a user thread and giving the CPU back).
//!
//! Why eager rather than lazy (`CR0.TS` and a #NM trap on first use): lazy
//! switching leaves one thread's registers in the CPU while another runs,
//! which leaks them speculatively (CVE-2018-3665, "LazyFP"), and a thread
//! that migrates while its state is still in some CPU's registers would need
//! an IPI to fetch it. A save with `XSAVEOPT` skips components the thread did
//! not modify, so eager costs little.
//!
//! The format is XSAVE's (x87, SSE and AVX when the CPU has it; AVX-512 too)
//! or, without XSAVE, FXSAVE's 512 bytes.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};

use super::cpu::cpuid;

/// XSAVE present (else FXSAVE).
static XSAVE: AtomicBool = AtomicBool::new(false);
/// XSAVEOPT present.
static XSAVEOPT: AtomicBool = AtomicBool::new(false);
/// Bytes of a save area.
static AREA_SIZE: AtomicUsize = AtomicUsize::new(512);

/// The user state components Wyvern enables, if present: x87, SSE, AVX and
/// AVX-512 (MPX is left off).
fn wanted(supported: u64) -> XCr0Flags {
    let want = XCr0Flags::X87
        | XCr0Flags::SSE
        | XCr0Flags::AVX
        | XCr0Flags::OPMASK
        | XCr0Flags::ZMM_HI256
        | XCr0Flags::HI16_ZMM;
    let mut f = XCr0Flags::from_bits_truncate(supported) & want;
    // AVX-512 comes as three components or not at all.
    let avx512 = XCr0Flags::OPMASK | XCr0Flags::ZMM_HI256 | XCr0Flags::HI16_ZMM;
    if !f.contains(avx512) {
        f.remove(avx512);
    }
    f
}

/// Turns on the FPU and SSE (and XSAVE) on this CPU. Every CPU, once, before
/// it runs a user thread.
pub fn init_local() {
    let xsave = cpuid(1, 0).ecx & (1 << 26) != 0;
    // SAFETY: clearing EM and setting MP makes FPU instructions execute
    // (instead of trapping) and WAIT honour TS; the kernel never uses them.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
    }
    // SAFETY: OSFXSR/OSXMMEXCPT enable SSE and its exceptions for user code;
    // OSXSAVE (when present) enables XSAVE and XCR0. No kernel code changes.
    unsafe {
        Cr4::update(|f| {
            f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
            if xsave {
                f.insert(Cr4Flags::OSXSAVE);
            }
        });
    }
    if xsave {
        let supported = {
            let r = cpuid(0xd, 0);
            u64::from(r.eax) | (u64::from(r.edx) << 32)
        };
        // SAFETY: every bit written is supported (CPUID 0xD) and x87 is set, as
        // XSETBV requires; OSXSAVE is on.
        unsafe { XCr0::write(wanted(supported)) };
        // Size of the area for the components now enabled.
        let size = cpuid(0xd, 0).ebx as usize;
        XSAVE.store(true, Ordering::Relaxed);
        XSAVEOPT.store(cpuid(0xd, 1).eax & 1 != 0, Ordering::Relaxed);
        AREA_SIZE.store(size.max(576), Ordering::Relaxed);
    }
}

/// Which state components this CPU saves (for the boot banner).
pub fn describe() -> &'static str {
    if !XSAVE.load(Ordering::Relaxed) {
        "FXSAVE (x87, SSE)"
    } else if XCr0::read().contains(XCr0Flags::ZMM_HI256) {
        "XSAVE (x87, SSE, AVX, AVX-512)"
    } else if XCr0::read().contains(XCr0Flags::AVX) {
        "XSAVE (x87, SSE, AVX)"
    } else {
        "XSAVE (x87, SSE)"
    }
}

/// A user thread's saved FPU/SSE/AVX state.
pub struct FpuState {
    area: *mut u8,
    layout: Layout,
}

// SAFETY: the area is owned by one thread's state and only touched by the CPU
// that switches that thread (in its critical section).
unsafe impl Send for FpuState {}
// SAFETY: as above: no shared mutation.
unsafe impl Sync for FpuState {}

impl FpuState {
    /// The initial state: x87 control word 0x37F (all exceptions masked,
    /// double extended precision), MXCSR 0x1F80, every register zero. `None`
    /// when the heap is exhausted.
    pub fn new() -> Option<FpuState> {
        let layout = Layout::from_size_align(AREA_SIZE.load(Ordering::Relaxed), 64).ok()?;
        // SAFETY: the layout has a non-zero size.
        let area = unsafe { alloc_zeroed(layout) };
        if area.is_null() {
            return None;
        }
        // The XSAVE header (bytes 512..576) stays zero: XSTATE_BV = 0 loads
        // every component in its initial state, MXCSR from the legacy region.
        // SAFETY: the area is at least 512 bytes, ours, and 64-aligned: FCW is
        // the u16 at 0, MXCSR the u32 at 24 (legacy region layout).
        unsafe {
            area.cast::<u16>().write(0x37f);
            area.add(24).cast::<u32>().write(0x1f80);
        }
        Some(FpuState { area, layout })
    }

    /// Saves this CPU's FPU state here.
    ///
    /// # Safety
    ///
    /// The CPU's FPU registers hold this thread's state (it was restored or
    /// first loaded on this CPU and no other user thread ran since).
    #[inline(always)]
    pub unsafe fn save(&self) {
        let p = self.area;
        if XSAVEOPT.load(Ordering::Relaxed) {
            // SAFETY: `p` is a 64-aligned area of the size XSAVE needs for the
            // enabled components (CPUID 0xD); EDX:EAX = all components.
            unsafe {
                core::arch::asm!("xsaveopt64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            }
        } else if XSAVE.load(Ordering::Relaxed) {
            // SAFETY: as above.
            unsafe {
                core::arch::asm!("xsave64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            }
        } else {
            // SAFETY: `p` is a 16-aligned area of at least 512 bytes.
            unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) p, options(nostack)) };
        }
    }

    /// Loads the state saved here into this CPU's FPU registers.
    ///
    /// # Safety
    ///
    /// The thread this state belongs to is about to run on this CPU.
    #[inline(always)]
    pub unsafe fn restore(&self) {
        let p = self.area;
        if XSAVE.load(Ordering::Relaxed) {
            // SAFETY: the area holds a valid XSAVE image (from `new` or a save);
            // EDX:EAX = all components.
            unsafe {
                core::arch::asm!("xrstor64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            }
        } else {
            // SAFETY: the area holds a valid FXSAVE image.
            unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) p, options(nostack)) };
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.area, self.layout) };
    }
}
