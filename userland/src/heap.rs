//! The heap: `talc` over memory mapped with `MAP`, 256 KiB more (or what the
//! allocation needs) each time it runs out. Mapped memory is never returned
//! before the process ends.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use talc::{OomHandler, Span, Talc};
use wyvern_abi::syscall::prot;

use crate::sync::SpinLock;
use crate::sys;

const STEP: u64 = 256 << 10;

/// Maps more memory when `talc` runs out.
pub struct Grow {
    /// Bytes mapped so far.
    pub mapped: u64,
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let need = (layout.size() + layout.align()) as u64 + 4096;
        let len = need.max(STEP).next_multiple_of(4096);
        let base = sys::map(len, prot::READ | prot::WRITE).map_err(|_| ())?;
        // SAFETY: the kernel just mapped `len` bytes at `base` for us alone,
        // readable and writable; nothing else uses them.
        unsafe { talc.claim(Span::from_base_size(base as *mut u8, len as usize))? };
        talc.oom_handler.mapped += len;
        Ok(())
    }
}

/// The process's allocator.
pub struct Heap(SpinLock<Talc<Grow>>);

#[global_allocator]
static HEAP: Heap = Heap(SpinLock::new(Talc::new(Grow { mapped: 0 })));

// SAFETY: every call is serialized by the lock and forwarded to talc, which
// returns blocks of the requested layout from claimed memory or fails.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: talc's `malloc` needs only a valid layout.
        unsafe { self.0.lock().malloc(layout) }.map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
        unsafe { self.0.lock().free(NonNull::new_unchecked(ptr), layout) }
    }
}

/// Bytes the heap has mapped so far.
pub fn mapped() -> u64 {
    HEAP.0.lock().oom_handler.mapped
}
