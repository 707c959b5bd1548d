//! The kernel heap: `talc` over a virtual region of its own, mapped page by
//! page from frames wherever they are.
//!
//! The heap lives at [`HEAP_BASE`] (one PML4 entry, 512 GiB of address
//! space) and grows at its end: when an allocation does not fit, the
//! out-of-memory handler maps more pages — at least [`GROW_STEP`], or what the
//! allocation needs — each backed by any free frame, and extends talc's span
//! over them. It never depends on finding contiguous physical memory: a
//! machine whose free memory is scattered single frames grows its heap as
//! well as a fresh one. Pages are never returned (the heap's high-water
//! mark stays mapped; freed blocks are reused).
//!
//! At boot the heap maps a sixty-fourth of usable memory (1 MiB at least,
//! 16 MiB at most) so early boot does not grow it a page at a time.
//!
//! What a user process causes the kernel to allocate is charged to it
//! (`user::account`); the accounts' limits leave the kernel a reserve of
//! frames, so the kernel's own allocations — and a panic's report, which
//! allocates nothing — do not find the heap exhausted by a program.
//!
//! Lock: one [`SpinLock`] — the allocator is used before there are threads and
//! by code that cannot block (IPI handlers). Allocation inside an NMI or
//! exception handler is not allowed.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use talc::{OomHandler, Span, Talc};
use x86_64::VirtAddr;
use x86_64::structures::paging::{Page, PageTableFlags as F};

use super::{HEAP_BASE, PAGE_SIZE, REGION_SIZE, frame, paging};
use crate::sync::{LockClass, SpinLock};

const MIN_INITIAL: u64 = 1 << 20;
const MAX_INITIAL: u64 = 16 << 20;
/// Least the heap grows by at once.
pub const GROW_STEP: u64 = 256 << 10;

/// Grows the heap when `talc` runs out.
struct Grow {
    /// The span talc manages (empty before `init`).
    span: Span,
    /// End of the mapped part of the region.
    end: u64,
    /// Bytes mapped so far.
    claimed: u64,
    /// Page tables made to map them.
    tables: u64,
    /// Times the heap grew.
    spans: u32,
}

impl Grow {
    /// Maps at least `bytes` more (rounded up to whole pages) at the end of
    /// the heap and gives them to talc. Fails, mapping nothing, when the
    /// region or the frames run out.
    fn grow(talc: &mut Talc<Self>, bytes: u64) -> Result<(), ()> {
        let bytes = bytes.next_multiple_of(PAGE_SIZE);
        let start = talc.oom_handler.end;
        if start + bytes > HEAP_BASE + REGION_SIZE {
            return Err(());
        }
        let mut mapped = 0;
        let mut tables = 0;
        while mapped < bytes {
            let Some(f) = frame::alloc() else { break };
            let page = Page::containing_address(VirtAddr::new(start + mapped));
            match paging::map_counted(page, f, F::WRITABLE | F::NO_EXECUTE) {
                Ok(t) => tables += t,
                Err(_) => {
                    frame::free(f);
                    break;
                }
            }
            mapped += PAGE_SIZE;
        }
        // Tables made stay (mapping the region's later pages needs them).
        talc.oom_handler.tables += tables;
        if mapped < bytes {
            // Give back what was mapped: a heap that cannot serve the request
            // keeps no half-grown tail.
            for off in (0..mapped).step_by(PAGE_SIZE as usize) {
                let page = Page::containing_address(VirtAddr::new(start + off));
                if let Ok(f) = paging::unmap(page) {
                    frame::free(f);
                }
            }
            return Err(());
        }
        let end = start + bytes;
        let old = talc.oom_handler.span;
        let new = Span::new(HEAP_BASE as *mut u8, end as *mut u8);
        let span = if old.is_empty() {
            // SAFETY: the pages of `new` were just mapped, writable, for the
            // heap alone; nothing else uses them.
            unsafe { talc.claim(new) }?
        } else {
            // SAFETY: `old` is the span talc manages and `new` extends it
            // over pages just mapped for the heap alone.
            unsafe { talc.extend(old, new) }
        };
        let h = &mut talc.oom_handler;
        h.span = span;
        h.end = end;
        h.claimed += bytes;
        h.spans += 1;
        Ok(())
    }
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let need = (layout.size() + layout.align()) as u64 + PAGE_SIZE;
        Grow::grow(talc, need.max(GROW_STEP))
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
            span: Span::empty(),
            end: HEAP_BASE,
            claimed: 0,
            tables: 0,
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

/// Maps the initial heap. Boot CPU, once, after the frame allocator and the
/// kernel's page tables.
pub fn init(usable_bytes: u64) {
    let initial = (usable_bytes / 64).clamp(MIN_INITIAL, MAX_INITIAL);
    let mut talc = HEAP.talc.lock();
    Grow::grow(&mut talc, initial).expect("cannot map the initial kernel heap");
}

/// Heap figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed.
    pub allocated: usize,
    /// Allocations not yet freed.
    pub allocations: usize,
    /// Bytes mapped for the heap (its high-water mark).
    pub claimed: u64,
    /// Frames of the page tables that map it.
    pub tables: u64,
    /// Times the heap grew (the first mapping included).
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
        tables: talc.oom_handler.tables,
        spans: talc.oom_handler.spans,
    }
}
