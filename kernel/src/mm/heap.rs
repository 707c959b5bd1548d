//! The kernel heap: `talc` over physically contiguous spans reached through
//! the physical-memory mapping.
//!
//! The heap needs no page tables of its own: each span is a run of contiguous
//! frames, addressed through the direct mapping of physical memory (which the
//! bootloader made with large pages, writable and — after `paging::init` — not
//! executable). At boot the heap gets one span of a sixteenth of usable memory
//! (16 MiB at least, 256 MiB at most); when an allocation does not fit, the
//! out-of-memory handler claims another span of at least 2 MiB (or what the
//! allocation needs). Spans are never returned.
//!
//! Lock: one [`SpinLock`] — the allocator is used before there are threads and
//! by code that cannot block (IPI handlers). Allocation inside an NMI or
//! exception handler is not allowed.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use talc::{OomHandler, Span, Talc};

use super::{PAGE_SIZE, frame, phys_to_virt};
use crate::sync::{LockClass, SpinLock};

const MIN_INITIAL: u64 = 16 << 20;
const MAX_INITIAL: u64 = 256 << 20;
const GROW_STEP: u64 = 2 << 20;

/// Claims more memory when `talc` runs out.
struct Grow {
    /// Bytes claimed so far.
    claimed: u64,
    /// Spans claimed so far.
    spans: u32,
}

impl Grow {
    /// Takes `bytes` (rounded up to 2 MiB) of contiguous frames and gives them
    /// to talc.
    fn claim(talc: &mut Talc<Self>, bytes: u64) -> Result<(), ()> {
        let bytes = bytes.next_multiple_of(GROW_STEP);
        let frames = (bytes / PAGE_SIZE) as usize;
        let first = frame::alloc_contiguous(frames, (GROW_STEP / PAGE_SIZE) as usize).ok_or(())?;
        let start = phys_to_virt(first.start_address()).as_mut_ptr::<u8>();
        // SAFETY: the frames were just taken from the allocator, so nothing else
        // uses them; the physical mapping maps them writable for their whole
        // length.
        unsafe { talc.claim(Span::from_base_size(start, bytes as usize)) }?;
        talc.oom_handler.claimed += bytes;
        talc.oom_handler.spans += 1;
        Ok(())
    }
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let need = (layout.size() + layout.align()) as u64 + PAGE_SIZE;
        Grow::claim(talc, need.max(GROW_STEP))
    }
}

/// The global allocator.
pub struct KernelHeap {
    talc: SpinLock<Talc<Grow>>,
}

static HEAP_CLASS: LockClass = LockClass::new("heap", 20);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    talc: SpinLock::ranked(
        &HEAP_CLASS,
        Talc::new(Grow {
            claimed: 0,
            spans: 0,
        }),
    ),
};

// SAFETY: every call is serialized by the lock and forwarded to talc, which
// returns memory of the requested layout from claimed spans or fails.
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

/// Claims the initial span. Boot CPU, once, after the frame allocator.
pub fn init(usable_bytes: u64) {
    let initial = (usable_bytes / 16).clamp(MIN_INITIAL, MAX_INITIAL);
    let mut talc = HEAP.talc.lock();
    Grow::claim(&mut talc, initial).expect("cannot claim the initial kernel heap");
}

/// Heap figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed.
    pub allocated: usize,
    /// Allocations not yet freed.
    pub allocations: usize,
    /// Bytes claimed from the frame allocator.
    pub claimed: u64,
    /// Spans claimed.
    pub spans: u32,
}

/// Current heap figures.
pub fn stats() -> HeapStats {
    let talc = HEAP.talc.lock();
    let c = talc.get_counters();
    HeapStats {
        allocated: c.allocated_bytes,
        allocations: c.allocation_count,
        claimed: talc.oom_handler.claimed,
        spans: talc.oom_handler.spans,
    }
}
