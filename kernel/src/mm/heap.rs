//! The kernel heap: `talc` over a region that grows on demand.
//!
//! At boot the heap gets a sixteenth of usable memory (16 MiB at least, 256 MiB
//! at most), mapped up front so ordinary kernel work never maps pages from inside
//! the allocator. When an allocation does not fit, the out-of-memory handler
//! maps more frames at the end of the region (at least what the allocation needs,
//! in 2 MiB steps) and extends the heap; the region never shrinks.
//!
//! Lock: one [`SpinLock`] — the allocator is used before there are threads and
//! by code that cannot block (IPI handlers creating messages). Allocation inside
//! an NMI or exception handler is not allowed.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use talc::{OomHandler, Span, Talc};
use x86_64::VirtAddr;
use x86_64::structures::paging::{Page, PageTableFlags as F};

use super::{HEAP_BASE, PAGE_SIZE, REGION_SIZE, frame, paging};
use crate::sync::SpinLock;

const MIN_INITIAL: u64 = 16 << 20;
const MAX_INITIAL: u64 = 256 << 20;
const GROW_STEP: u64 = 2 << 20;

/// Grows the heap region when `talc` runs out.
struct Grow {
    /// The span `talc` currently manages (empty before `init`).
    heap: Span,
    /// End of the mapped part of the region.
    mapped_end: u64,
}

impl Grow {
    /// Maps `bytes` (page-rounded) more at the end of the region.
    fn map_more(&mut self, bytes: u64) -> Result<(), ()> {
        let end = self.mapped_end + bytes.next_multiple_of(PAGE_SIZE);
        if end > HEAP_BASE + REGION_SIZE {
            return Err(());
        }
        let mut va = self.mapped_end;
        while va < end {
            let frame = frame::alloc().ok_or(())?;
            let page = Page::containing_address(VirtAddr::new(va));
            paging::map(page, frame, F::WRITABLE | F::NO_EXECUTE).map_err(|_| ())?;
            va += PAGE_SIZE;
            self.mapped_end = va;
        }
        Ok(())
    }
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let need = (layout.size() + layout.align()) as u64 + 4096;
        let step = need.next_multiple_of(GROW_STEP);
        let old = talc.oom_handler.heap;
        talc.oom_handler.map_more(step)?;
        let end = talc.oom_handler.mapped_end as *mut u8;
        let want = Span::new(HEAP_BASE as *mut u8, end);
        // SAFETY: `old` is the span talc manages (we recorded it at claim and after
        // each extend), and `want` only adds freshly mapped, unused memory after it.
        let new = unsafe { talc.extend(old, want) };
        talc.oom_handler.heap = new;
        Ok(())
    }
}

/// The global allocator.
pub struct KernelHeap {
    talc: SpinLock<Talc<Grow>>,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    talc: SpinLock::new(Talc::new(Grow {
        heap: Span::empty(),
        mapped_end: HEAP_BASE,
    })),
};

// SAFETY: every call is serialized by the lock and forwarded to talc, which
// returns memory of the requested layout from the mapped heap region or fails.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: talc's `malloc` has no preconditions beyond a valid layout.
        unsafe { self.talc.lock().malloc(layout) }.map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
        unsafe { self.talc.lock().free(NonNull::new_unchecked(ptr), layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        let mut talc = self.talc.lock();
        if new_size <= layout.size() {
            // SAFETY: as above; shrinking keeps the block valid.
            unsafe { talc.shrink(ptr, layout, new_size) };
            return ptr.as_ptr();
        }
        // SAFETY: as above; `grow` copies and frees the old block if needed.
        unsafe { talc.grow(ptr, layout, new_size) }.map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }
}

/// Maps the initial heap and hands it to talc. Boot CPU, once, after paging.
pub fn init(usable_bytes: u64) {
    let initial = (usable_bytes / 16).clamp(MIN_INITIAL, MAX_INITIAL);
    let mut talc = HEAP.talc.lock();
    talc.oom_handler
        .map_more(initial)
        .expect("cannot map the initial kernel heap");
    let span = Span::new(HEAP_BASE as *mut u8, talc.oom_handler.mapped_end as *mut u8);
    // SAFETY: the span was just mapped and nothing else uses it.
    let heap = unsafe { talc.claim(span) }.expect("talc refused the initial heap");
    talc.oom_handler.heap = heap;
}

/// Heap figures: bytes in use, live allocations, bytes mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed.
    pub allocated: usize,
    /// Allocations not yet freed.
    pub allocations: usize,
    /// Bytes of the region currently mapped.
    pub mapped: u64,
}

/// Current heap figures.
pub fn stats() -> HeapStats {
    let talc = HEAP.talc.lock();
    let c = talc.get_counters();
    HeapStats {
        allocated: c.allocated_bytes,
        allocations: c.allocation_count,
        mapped: talc.oom_handler.mapped_end - HEAP_BASE,
    }
}
