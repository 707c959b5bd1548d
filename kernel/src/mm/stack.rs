//! Kernel stacks, each above an unmapped guard.
//!
//! The stack region is cut into 128 KiB slots. A slot's low [`GUARD_SIZE`] bytes
//! are never mapped; its top [`STACK_SIZE`] bytes are the stack. A thread that
//! overflows its stack touches the guard, the page fault cannot be delivered on
//! that stack, the CPU raises a double fault on its IST stack, and the handler
//! names the stack through [`guard_page_owner`]. A guard of 64 KiB rather than
//! one page also catches a frame that jumps more than a page past the end.
//!
//! # Reuse and the TLB
//!
//! Freeing a stack unmaps it and returns its frames at once: nothing may touch a
//! dead stack, so stale TLB entries on other CPUs are never used. Its *slot*,
//! though, is not reused until every CPU's TLB is known to be clean, or a CPU
//! could reach the new stack through an old translation. Once a second CPU is
//! online, freed slots wait in `quarantine`; when [`QUARANTINE_FLUSH`] of them
//! have gathered and no free slot is left, one cpusync flushes every CPU's TLB
//! and the batch becomes reusable — one shootdown per 64 stacks, not per
//! stack. With one CPU online the local flush in `unmap` suffices and slots
//! are reused at once.
//!
//! Lock: one [`SpinLock`] around the slot lists (AP stacks are made before the
//! APs have threads).

use alloc::vec::Vec;
use core::fmt;

use bootloader_api::BootInfo;
use x86_64::VirtAddr;
use x86_64::structures::paging::{Page, PageTableFlags as F};

use super::{KSTACK_BASE, PAGE_SIZE, REGION_SIZE, frame, paging};
use crate::sync::{LockClass, SpinLock};

/// Bytes of usable stack in a slot.
pub const STACK_SIZE: u64 = 64 << 10;
/// Bytes of unmapped guard below each stack.
pub const GUARD_SIZE: u64 = 64 << 10;
/// Distance between slots.
const SLOT_SIZE: u64 = STACK_SIZE + GUARD_SIZE;
const MAX_SLOTS: u64 = REGION_SIZE / SLOT_SIZE;
/// Quarantined slots that trigger a TLB flush of every CPU and their reuse.
pub const QUARANTINE_FLUSH: usize = 64;
/// The slot lists grow by this many slots at a time (4 KiB each list).
const LIST_STEP: usize = 1024;

struct Slots {
    /// Slots never used yet start here.
    next_fresh: u32,
    /// Freed slots whose TLB entries are known flushed everywhere.
    free: Vec<u32>,
    /// Freed slots that may still be cached in another CPU's TLB.
    quarantine: Vec<u32>,
    /// Stacks in use.
    live: usize,
    /// A CPU is flushing TLBs to reclaim the quarantine.
    flushing: bool,
    /// The most stacks live at once so far.
    peak: usize,
}

/// Whether a stack allocation may wait for another CPU's quarantine flush:
/// thread context outside critical sections, interrupts enabled.
fn may_wait() -> bool {
    crate::sched::ready()
        && crate::arch::cpu::interrupts_enabled()
        && !lwkt::in_crit::<crate::sched::X86>()
}

static SLOTS_CLASS: LockClass = LockClass::new("stack slots", 10);
static SLOTS: SpinLock<Slots> = SpinLock::ranked(
    &SLOTS_CLASS,
    Slots {
        next_fresh: 0,
        free: Vec::new(),
        quarantine: Vec::new(),
        live: 0,
        flushing: false,
        peak: 0,
    },
);

/// Whether freed slots must be quarantined (more than one CPU may cache them).
static MULTI_CPU: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The boot CPU's stack, made by the bootloader: (lowest usable address, guard page).
static BOOT_STACK_CLASS: LockClass = LockClass::new("boot stack record", 60);
static BOOT_STACK: SpinLock<(u64, u64)> = SpinLock::ranked(&BOOT_STACK_CLASS, (0, 0));

/// A kernel stack. Dropping it unmaps it and frees its frames.
pub struct KernelStack {
    slot: u32,
}

fn slot_base(slot: u32) -> u64 {
    KSTACK_BASE + u64::from(slot) * SLOT_SIZE
}

impl KernelStack {
    /// Allocates and maps a stack. `None` when memory or slots run out.
    ///
    /// Thread or boot context; once enough freed slots wait in quarantine it
    /// flushes every CPU's TLB (a cpusync), so not while holding a spinlock.
    pub fn new() -> Option<Self> {
        // Asked before the lock, whose critical section would say no.
        let can_wait = may_wait();
        let slot = loop {
            let mut s = SLOTS.lock();
            if s.free.is_empty()
                && s.quarantine.len() >= QUARANTINE_FLUSH
                && !s.flushing
                && crate::sched::ready()
            {
                // Reuse quarantined slots once no CPU can hold a stale
                // translation of them: flush everywhere, outside the lock.
                // The first `batch` entries were quarantined before the flush
                // began; one flush at a time keeps that true when they move.
                let batch = s.quarantine.len();
                s.flushing = true;
                drop(s);
                crate::sched::flush_tlb_everywhere();
                let mut s = SLOTS.lock();
                let Slots {
                    free, quarantine, ..
                } = &mut *s;
                free.extend(quarantine.drain(..batch));
                s.flushing = false;
                continue;
            }
            let slot = match s.free.pop() {
                Some(slot) => slot,
                // Another CPU is turning the quarantine into free slots:
                // wait for it rather than take a fresh slot. Taking fresh
                // ones in every such window made the slots in use creep far
                // past the most stacks ever live at once (thousands of
                // slots for a few hundred threads, each 16 a page table and
                // every slot 8 bytes of these lists, never given back).
                // Only where the wait cannot hold the flush up: outside
                // critical sections, interrupts on, so this CPU answers the
                // flush's cpusync while it waits.
                None if s.flushing && !s.quarantine.is_empty() && can_wait => {
                    drop(s);
                    crate::arch::cpu::pause();
                    continue;
                }
                None if u64::from(s.next_fresh) < MAX_SLOTS => {
                    s.next_fresh += 1;
                    // Room for every slot there is in both lists, so freeing
                    // never grows them: their size follows the number of
                    // slots, not the order of frees. Grown in steps of
                    // `LIST_STEP` slots, not by doubling: a new high-water
                    // mark costs nothing until it crosses a step, and then a
                    // known 8 bytes a slot.
                    let n = s.next_fresh as usize;
                    if s.free.capacity() < n || s.quarantine.capacity() < n {
                        let want = n.next_multiple_of(LIST_STEP);
                        let (fl, ql) = (s.free.len(), s.quarantine.len());
                        s.free.reserve_exact(want - fl);
                        s.quarantine.reserve_exact(want - ql);
                    }
                    s.next_fresh - 1
                }
                None => return None,
            };
            s.live += 1;
            s.peak = s.peak.max(s.live);
            break slot;
        };
        let stack = KernelStack { slot };
        let bottom = stack.bottom().as_u64();
        let mut va = bottom;
        while va < bottom + STACK_SIZE {
            let Some(frame) = frame::alloc() else {
                // Dropping unmaps the pages mapped so far.
                drop(stack);
                return None;
            };
            let page = Page::containing_address(VirtAddr::new(va));
            paging::map(page, frame, F::WRITABLE | F::NO_EXECUTE)
                .expect("stack slot already mapped");
            va += PAGE_SIZE;
        }
        Some(stack)
    }

    /// Lowest usable address.
    pub fn bottom(&self) -> VirtAddr {
        VirtAddr::new(slot_base(self.slot) + GUARD_SIZE)
    }

    /// One past the highest usable address: the initial stack pointer.
    pub fn top(&self) -> VirtAddr {
        self.bottom() + STACK_SIZE
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        let bottom = self.bottom().as_u64();
        let mut va = bottom;
        while va < bottom + STACK_SIZE {
            let page = Page::containing_address(VirtAddr::new(va));
            if let Ok(frame) = paging::unmap(page) {
                frame::free(frame);
            }
            va += PAGE_SIZE;
        }
        let mut s = SLOTS.lock();
        s.live -= 1;
        if MULTI_CPU.load(core::sync::atomic::Ordering::Relaxed) {
            s.quarantine.push(self.slot);
        } else {
            s.free.push(self.slot);
        }
    }
}

impl fmt::Debug for KernelStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel stack #{} [{:#x}..{:#x})",
            self.slot,
            self.bottom(),
            self.top()
        )
    }
}

/// Records the boot CPU's stack (made by the bootloader with its own guard page).
pub fn init(boot_info: &BootInfo) {
    let bottom = boot_info.kernel_stack_bottom;
    // The bootloader leaves the first page of its stack mapping unmapped.
    let guard = if super::is_mapped(bottom) {
        bottom - PAGE_SIZE
    } else {
        bottom
    };
    *BOOT_STACK.lock() = (guard + PAGE_SIZE, guard);
}

/// From now on freed slots wait for a global TLB flush before reuse. Called
/// when the second CPU comes online.
pub fn enable_quarantine() {
    MULTI_CPU.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Stacks in use and slots waiting in quarantine.
pub fn stats() -> (usize, usize) {
    let s = SLOTS.lock();
    (s.live, s.quarantine.len())
}

/// Slots ever used (the region's high-water mark, which its page tables
/// and the slot lists follow) and the most stacks live at once. Slots are
/// taken fresh only when none is free and fewer than [`QUARANTINE_FLUSH`]
/// wait in quarantine (or a flush is under way and the caller may not wait
/// for it), so the first stays close to the second plus that batch.
pub fn slots_used() -> (usize, usize) {
    let s = SLOTS.lock();
    (s.next_fresh as usize, s.peak)
}

/// Page-table frames the region's slots have needed so far: one per 2 MiB
/// of slots, made when the high-water mark ([`slots_used`]) first reaches
/// them and kept, as the region's own structure — the measure of what the
/// stacks' mappings cost beyond the stacks, not memory anyone holds.
pub fn table_frames() -> usize {
    let s = SLOTS.lock();
    (u64::from(s.next_fresh) * SLOT_SIZE).div_ceil(2 << 20) as usize
}

/// What a guard address belongs to, for the overflow report.
pub struct GuardOwner {
    slot: Option<u64>,
    bottom: u64,
}

impl fmt::Display for GuardOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.slot {
            Some(slot) => write!(f, "kernel stack #{slot} (bottom {:#x})", self.bottom),
            None => write!(f, "boot stack (bottom {:#x})", self.bottom),
        }
    }
}

/// If `addr` lies in the guard of a kernel stack, says which. Any context: it
/// does not take a lock that a faulting CPU might hold (the boot-stack record is
/// read with `try_lock`).
pub fn guard_page_owner(addr: u64) -> Option<GuardOwner> {
    if (KSTACK_BASE..KSTACK_BASE + REGION_SIZE).contains(&addr) {
        let off = addr - KSTACK_BASE;
        if off % SLOT_SIZE < GUARD_SIZE {
            let slot = off / SLOT_SIZE;
            return Some(GuardOwner {
                slot: Some(slot),
                bottom: KSTACK_BASE + slot * SLOT_SIZE + GUARD_SIZE,
            });
        }
        return None;
    }
    let (bottom, guard) = *BOOT_STACK.try_lock()?;
    (guard..guard + PAGE_SIZE)
        .contains(&addr)
        .then_some(GuardOwner { slot: None, bottom })
}
