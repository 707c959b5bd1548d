//! The physical frame allocator: one bit per 4 KiB frame.
//!
//! Built from the bootloader's memory map: frames of `Usable` regions start free,
//! everything else (firmware, ACPI, the bootloader's own page tables and the
//! kernel image, which the map reports as used) is never handed out. Frames below
//! 1 MiB are kept for callers that need them there (the AP start-up trampoline)
//! and are only returned by [`alloc_low`].
//!
//! Freeing a frame that is already free is a panic: a double free here is memory
//! corruption later. [`stats`] reports total and free frames, which the memory
//! tests compare before and after their stress loops.
//!
//! Lock: one [`SpinLock`] — frames are needed before any thread exists (page
//! tables at boot, AP stacks) and by the heap's growth path, which a token
//! cannot serve. It is held for a bitmap scan only.

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use x86_64::PhysAddr;
use x86_64::structures::paging::{PhysFrame, Size4KiB};

use super::{PAGE_SIZE, phys_to_virt};
use crate::sync::{LockClass, SpinLock};

/// Frames below this are only given out by [`alloc_low`].
const LOW_LIMIT_FRAME: usize = (1 << 20) / PAGE_SIZE as usize;

struct Bitmap {
    /// Bit set = frame free.
    words: &'static mut [u64],
    /// Frames covered.
    frames: usize,
    /// Frames ever free (usable memory).
    total: usize,
    /// Frames free now.
    free: usize,
    /// Word to start the next search at.
    hint: usize,
}

static FRAMES_CLASS: LockClass = LockClass::new("frames", 40);
static FRAMES: SpinLock<Option<Bitmap>> = SpinLock::ranked(&FRAMES_CLASS, None);

/// A snapshot of the allocator's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStats {
    /// Usable frames.
    pub total: usize,
    /// Frames free now.
    pub free: usize,
}

impl FrameStats {
    /// Usable memory in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total as u64 * PAGE_SIZE
    }
}

impl Bitmap {
    fn set_free(&mut self, frame: usize, free: bool) {
        let (w, b) = (frame / 64, frame % 64);
        if free {
            self.words[w] |= 1 << b;
        } else {
            self.words[w] &= !(1 << b);
        }
    }

    /// Marks frames `[from, to)` free or used, a word at a time.
    fn set_range(&mut self, from: usize, to: usize, free: bool) {
        let mut f = from;
        while f < to {
            let (w, b) = (f / 64, f % 64);
            let n = (64 - b).min(to - f);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            if free {
                self.words[w] |= mask;
            } else {
                self.words[w] &= !mask;
            }
            f += n;
        }
    }

    /// The first used frame in `[from, from + n)`, if any.
    fn first_used(&self, from: usize, n: usize) -> Option<usize> {
        (from..from + n).find(|&f| !self.is_free(f))
    }

    fn is_free(&self, frame: usize) -> bool {
        self.words[frame / 64] & (1 << (frame % 64)) != 0
    }

    /// First free frame in words `[from, to)`, marked used.
    fn take_in(&mut self, from: usize, to: usize) -> Option<usize> {
        for w in from..to {
            let word = self.words[w];
            if word != 0 {
                let frame = w * 64 + word.trailing_zeros() as usize;
                self.set_free(frame, false);
                self.free -= 1;
                return Some(frame);
            }
        }
        None
    }
}

/// Ranges of the memory map that are memory somebody owns (RAM, the
/// bootloader's and the kernel's pages, firmware code and data, ACPI NVS):
/// never device memory a driver may map (`DEVICE_GRANT`). Merged, sorted;
/// what does not fit is folded into the last entry (refusing more, never
/// less).
struct Owned {
    ranges: [(u64, u64); 128],
    len: usize,
}

static OWNED_CLASS: LockClass = LockClass::new("owned-memory", 41);
static OWNED: SpinLock<Owned> = SpinLock::ranked(
    &OWNED_CLASS,
    Owned {
        ranges: [(0, 0); 128],
        len: 0,
    },
);

/// Whether a memory-map region is owned memory (see [`Owned`]). UEFI types
/// that are not: 0 reserved, 9 ACPI reclaimable (the tables), 11 and 12
/// memory-mapped I/O.
fn owned_kind(kind: MemoryRegionKind) -> bool {
    match kind {
        MemoryRegionKind::UnknownUefi(t) => !matches!(t, 0 | 9 | 11 | 12),
        MemoryRegionKind::UnknownBios(t) => t != 2 && t != 3,
        _ => true,
    }
}

fn record_owned(regions: &MemoryRegions) {
    let mut o = OWNED.lock();
    let mut list: [(u64, u64); 128] = [(0, 0); 128];
    let mut n = 0;
    for r in regions.iter().filter(|r| owned_kind(r.kind)) {
        let (s, e) = (r.start, r.end);
        // Insert sorted, merging with neighbours.
        let mut i = list[..n].partition_point(|&(a, _)| a < s);
        if i > 0 && list[i - 1].1 >= s {
            i -= 1;
            list[i].1 = list[i].1.max(e);
        } else if n < list.len() {
            list.copy_within(i..n, i + 1);
            list[i] = (s, e);
            n += 1;
        } else {
            let last = &mut list[n - 1];
            last.0 = last.0.min(s);
            last.1 = last.1.max(e);
            continue;
        }
        // Swallow followers the grown entry now reaches.
        while i + 1 < n && list[i + 1].0 <= list[i].1 {
            list[i].1 = list[i].1.max(list[i + 1].1);
            list.copy_within(i + 2..n, i + 1);
            n -= 1;
        }
    }
    o.ranges = list;
    o.len = n;
}

/// Whether `[start, end)` is free of owned memory: device memory or ACPI
/// tables a driver may be granted. Any context but NMI.
pub fn is_device_range(start: u64, end: u64) -> bool {
    let o = OWNED.lock();
    start < end && !o.ranges[..o.len].iter().any(|&(s, e)| s < end && start < e)
}

/// Builds the bitmap from the memory map. Boot CPU, once.
pub fn init(regions: &MemoryRegions) {
    record_owned(regions);
    let usable = || {
        regions
            .iter()
            .filter(|r| r.kind == MemoryRegionKind::Usable)
            .map(|r| {
                let start = r.start.div_ceil(PAGE_SIZE) as usize;
                let end = (r.end / PAGE_SIZE) as usize;
                (start, end.max(start))
            })
    };
    let frames = usable().map(|(_, e)| e).max().expect("no usable memory");
    let words = frames.div_ceil(64);
    let bytes = (words * 8) as u64;
    let bitmap_frames = bytes.div_ceil(PAGE_SIZE) as usize;
    // The bitmap lives in the first usable run above 1 MiB that can hold it.
    let (home, _) = usable()
        .map(|(s, e)| (s.max(LOW_LIMIT_FRAME), e))
        .find(|&(s, e)| e >= s + bitmap_frames)
        .expect("no room for the frame bitmap");
    let va = phys_to_virt(PhysAddr::new(home as u64 * PAGE_SIZE));
    // SAFETY: frames [home, home + bitmap_frames) are unused RAM (marked used
    // below, before any allocation), mapped by the physical-memory mapping.
    let words: &'static mut [u64] =
        unsafe { core::slice::from_raw_parts_mut(va.as_mut_ptr::<u64>(), words) };
    words.fill(0);
    let mut map = Bitmap {
        words,
        frames,
        total: 0,
        free: 0,
        hint: LOW_LIMIT_FRAME / 64,
    };
    for (s, e) in usable() {
        map.set_range(s.max(1), e, true);
    }
    map.set_range(home, home + bitmap_frames, false);
    map.total = map.words.iter().map(|w| w.count_ones() as usize).sum();
    map.free = map.total;
    *FRAMES.lock() = Some(map);
}

fn frame_of(n: usize) -> PhysFrame {
    PhysFrame::containing_address(PhysAddr::new(n as u64 * PAGE_SIZE))
}

/// A free frame above 1 MiB, or `None` when memory is exhausted. Any context
/// but NMI.
pub fn alloc() -> Option<PhysFrame> {
    let mut guard = FRAMES.lock();
    let map = guard.as_mut().expect("frame allocator not initialized");
    let low = LOW_LIMIT_FRAME / 64;
    let nwords = map.words.len();
    let hint = map.hint.max(low);
    let n = map
        .take_in(hint, nwords)
        .or_else(|| map.take_in(low, hint))?;
    map.hint = n / 64;
    Some(frame_of(n))
}

/// Like [`alloc()`], with the frame filled with zeros.
pub fn alloc_zeroed() -> Option<PhysFrame> {
    let frame = alloc()?;
    let va = phys_to_virt(frame.start_address());
    // SAFETY: the frame was just allocated, so nothing else references it; it is
    // page-aligned and mapped writable through the physical-memory mapping.
    unsafe { crate::arch::cpu::clear_page(va.as_mut_ptr::<u8>()) };
    Some(frame)
}

/// `count` physically contiguous free frames above 1 MiB, the first aligned to
/// `align` frames (a power of two), or `None`. Any context but NMI. Scans the
/// bitmap; meant for the heap's large spans, not for hot paths.
pub fn alloc_contiguous(count: usize, align: usize) -> Option<PhysFrame> {
    assert!(count > 0 && align.is_power_of_two());
    let mut guard = FRAMES.lock();
    let map = guard.as_mut().expect("frame allocator not initialized");
    let mut f = LOW_LIMIT_FRAME.next_multiple_of(align);
    while f + count <= map.frames {
        if map.words[f / 64] == 0 && f.is_multiple_of(64) {
            f += 64usize.max(align);
            continue;
        }
        match map.first_used(f, count) {
            None => {
                map.set_range(f, f + count, false);
                map.free -= count;
                return Some(frame_of(f));
            }
            Some(used) => f = (used + 1).next_multiple_of(align),
        }
    }
    None
}

/// Returns `count` contiguous frames starting at `first` (from
/// [`alloc_contiguous`]). Panics on frames that are already free.
pub fn free_contiguous(first: PhysFrame, count: usize) {
    let n = (first.start_address().as_u64() / PAGE_SIZE) as usize;
    let mut guard = FRAMES.lock();
    let map = guard.as_mut().expect("frame allocator not initialized");
    assert!(
        n + count <= map.frames,
        "freeing frames outside usable memory"
    );
    assert!(
        (n..n + count).all(|f| !map.is_free(f)),
        "double free in frames {:#x}+{count}",
        first.start_address().as_u64()
    );
    map.set_range(n, n + count, true);
    map.free += count;
}

/// A free frame below 1 MiB (for real-mode code). Any context but NMI.
pub fn alloc_low() -> Option<PhysFrame<Size4KiB>> {
    let mut guard = FRAMES.lock();
    let map = guard.as_mut().expect("frame allocator not initialized");
    map.take_in(0, LOW_LIMIT_FRAME / 64).map(frame_of)
}

/// Returns `frame` to the allocator. Panics on a frame that is already free or
/// outside usable memory. Any context but NMI.
pub fn free(frame: PhysFrame) {
    let n = (frame.start_address().as_u64() / PAGE_SIZE) as usize;
    let mut guard = FRAMES.lock();
    let map = guard.as_mut().expect("frame allocator not initialized");
    assert!(
        n != 0 && n < map.frames,
        "freeing frame {:#x} outside usable memory",
        frame.start_address().as_u64()
    );
    assert!(
        !map.is_free(n),
        "double free of frame {:#x}",
        frame.start_address().as_u64()
    );
    map.set_free(n, true);
    map.free += 1;
}

/// Total and free frames now.
pub fn stats() -> FrameStats {
    let guard = FRAMES.lock();
    let map = guard.as_ref().expect("frame allocator not initialized");
    FrameStats {
        total: map.total,
        free: map.free,
    }
}
