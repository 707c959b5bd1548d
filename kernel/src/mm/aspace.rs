//! User address spaces.
//!
//! An [`AddressSpace`] is a PML4 whose upper 256 entries are the kernel's
//! (shared: every kernel-half PML4 entry exists from boot, see `paging`) and
//! whose lower half maps the process: its program image, its threads' stacks
//! (each above an unmapped guard page) and what it mapped with `MAP`. Every
//! user mapping carries U/S; data is NX; nothing is writable and executable.
//!
//! # Concurrency
//!
//! The regions and page tables are changed under the address space's token
//! ([`TokenCell`]); every change is short and never blocks. Each CPU records
//! itself in [`AddressSpace::cpus`] before it loads the PML4 into CR3 and
//! removes itself when it loads another, so the set is a superset of the CPUs
//! that may hold translations of this space in their TLB.
//!
//! # Accounting
//!
//! A space belongs to an account (`user::account`), which is charged for
//! every frame the space holds: its user pages, and its page tables as the
//! mapper makes them (a table the account cannot pay for is not made, and
//! the mapping fails). A mapping, or a stack page faulted in, that the
//! account cannot pay for is refused — nothing is mapped and the caller gets
//! `NoMemory` — and an unmapping gives its pages' charge back (page tables
//! stay until the space goes, like their charge). Unmapping never needs to
//! charge anything, so it never fails for want of memory. The regions live in a table of at most [`MAX_REGIONS`],
//! reserved when the space is made, so neither mapping nor unmapping
//! allocates from the heap; unmapping frees frames in batches of
//! [`FREE_BATCH`], each after its shootdown, without a list on the heap.
//!
//! # TLB shootdown
//!
//! Unmapping clears the entries, then runs a `cpusync` on the CPUs of that
//! set, each of which invalidates the range (a full CR3 reload for more than
//! [`INVLPG_MAX`] pages), and only then frees the frames: no CPU can reach a
//! freed frame through a stale translation. The kernel does not use PCIDs:
//! every CR3 load flushes the user half, so a CPU that switched to another
//! space holds nothing stale.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering, fence};

use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{MapToError, MapperFlush, TranslateResult};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame,
    Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::{PAGE_SIZE, frame, paging, phys_to_virt};
use crate::percpu;
use crate::sched;
use crate::sync::TokenCell;
use crate::user::account::{Account, Charge, Res};

/// Most regions a space may have (a `MAP` beyond is refused).
pub const MAX_REGIONS: usize = 256;
/// Frames an unmapping frees per shootdown.
pub const FREE_BATCH: usize = 256;

/// Beyond this many pages a shootdown reloads CR3 instead of `invlpg`s.
pub const INVLPG_MAX: u64 = 32;

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The program image (mapped at spawn, never unmapped by the program).
    Image,
    /// A thread's stack.
    Stack,
    /// Memory from `MAP`.
    Anon,
    /// Device memory from `MAP_DEVICE`: frames nobody allocated, marked
    /// [`DEVICE_PAGE`] in their entries, never freed nor charged (only
    /// their page tables are).
    Device,
    /// Memory from `DMA_ALLOC`: physically contiguous, freed like `Anon`.
    Dma,
}

/// Page-table entry bit (one the CPU ignores) marking a device page: its
/// frame is not the space's to free, and the kernel never reaches it
/// through the physical-memory mapping.
pub const DEVICE_PAGE: F = F::BIT_9;

/// Caching of a device mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Registers: strong uncacheable.
    Uncached,
    /// A framebuffer: write-combining where the CPU has a PAT, else
    /// uncacheable.
    WriteCombining,
}

/// Access rights of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    /// Page-table flags of a user page with these rights.
    fn flags(self) -> F {
        let mut f = F::PRESENT | F::USER_ACCESSIBLE;
        if self.write {
            f |= F::WRITABLE;
        }
        if !self.exec {
            f |= F::NO_EXECUTE;
        }
        f
    }
}

/// A mapped range `[start, end)`. A stack's pages below its mapped top are
/// mapped on first touch ([`AddressSpace::fault_in`]).
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub end: u64,
    pub prot: Prot,
    pub kind: Kind,
}

/// Why a mapping failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Out of frames, or the account cannot pay for the pages.
    NoMemory,
    /// The space has [`MAX_REGIONS`] regions.
    Limit,
    /// The range overlaps a mapping or leaves user space.
    Busy,
}

struct State {
    /// Regions sorted by start address, capacity [`MAX_REGIONS`] + 1.
    regions: Vec<(u64, Region)>,
    /// User pages mapped now.
    pages: u64,
    /// Page tables of the user half (the root not counted).
    tables: u64,
    /// What the account is charged: a page for the root, each table, each
    /// user page.
    charge: Charge,
}

impl State {
    /// Charges `pages` more user pages, or fails changing nothing.
    fn charge_pages(&mut self, pages: u64) -> Result<(), MapError> {
        self.charge
            .grow(pages * PAGE_SIZE)
            .map_err(|_| MapError::NoMemory)
    }

    /// Gives back the charge of `pages` user pages.
    fn uncharge_pages(&mut self, pages: u64) {
        self.charge.shrink(pages * PAGE_SIZE);
    }

    /// Index of the region containing `va`, if one does.
    fn region_at(&self, va: u64) -> Option<usize> {
        let i = self.regions.partition_point(|(s, _)| *s <= va);
        (i > 0 && self.regions[i - 1].1.end > va).then(|| i - 1)
    }

    /// Whether `[start, end)` overlaps a region.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.regions.partition_point(|(s, _)| *s < end);
        i > 0 && self.regions[i - 1].1.end > start
    }

    /// Records a region (the caller checked that it overlaps none and that
    /// there is room).
    fn insert(&mut self, start: u64, r: Region) {
        let i = self.regions.partition_point(|(s, _)| *s < start);
        debug_assert!(self.regions.len() < self.regions.capacity());
        self.regions.insert(i, (start, r));
    }
}

/// A process's address space.
pub struct AddressSpace {
    pml4: PhysFrame,
    /// CPUs whose CR3 may hold this space (see the module docs). Each CPU
    /// inserts and removes only itself.
    cpus: ipi::AtomicCpuSet,
    state: TokenCell<State>,
}

/// Hands page-table frames to the mapper, each charged to the space's
/// account first (and counted).
struct TableFrames<'a> {
    charge: &'a mut Charge,
    tables: &'a mut u64,
}

// SAFETY: every frame returned comes from the frame allocator, unused and
// zeroed.
unsafe impl FrameAllocator<Size4KiB> for TableFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.charge.grow(PAGE_SIZE).ok()?;
        match frame::alloc_zeroed() {
            Some(f) => {
                *self.tables += 1;
                Some(f)
            }
            None => {
                self.charge.shrink(PAGE_SIZE);
                None
            }
        }
    }
}

/// TLB shootdowns run, on any CPU (for statistics and tests).
pub static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);

fn table(pa: PhysAddr) -> &'static mut PageTable {
    // SAFETY: `pa` is a page-table frame of an address space, reached through
    // the physical-memory mapping; callers hold the space's token (or own the
    // space exclusively), so no other reference to it is in use.
    unsafe { &mut *phys_to_virt(pa).as_mut_ptr::<PageTable>() }
}

impl AddressSpace {
    /// An empty address space with the kernel half mapped, whose pages are
    /// charged to `account`. `None` when out of memory (or the account
    /// cannot pay for the root table).
    pub fn new(account: &Arc<Account>) -> Option<AddressSpace> {
        // The root table.
        let charge = account.charge(Res::Memory, PAGE_SIZE).ok()?;
        let mut regions = Vec::new();
        regions.try_reserve_exact(MAX_REGIONS + 1).ok()?;
        let pml4 = frame::alloc_zeroed()?;
        let kernel = table(paging::kernel_pml4().start_address());
        let user = table(pml4.start_address());
        for i in 256..512 {
            user[i] = kernel[i].clone();
        }
        Some(AddressSpace {
            pml4,
            cpus: ipi::AtomicCpuSet::with_cpus(crate::sched::world().ipi.ncpus()),
            state: TokenCell::new(State {
                regions,
                pages: 0,
                tables: 0,
                charge,
            }),
        })
    }

    /// The mapper over this space's tables. Under the token (or owned).
    fn mapper(&self) -> OffsetPageTable<'static> {
        // SAFETY: the PML4 is a valid page table and the physical-memory
        // mapping covers all tables; the caller holds the token, so this is the
        // only mapper of this space in use.
        unsafe {
            OffsetPageTable::new(
                table(self.pml4.start_address()),
                phys_to_virt(PhysAddr::new(0)),
            )
        }
    }

    /// Makes this space the one loaded on this CPU (a no-op if it is): the
    /// CPU joins [`AddressSpace::cpus`] before CR3 changes, and leaves the
    /// set of the space it replaces. Requires critical section (the switch).
    pub fn load(&self) {
        let me = percpu::mycpu();
        let cur = me.loaded_space.load(Ordering::Relaxed);
        let this = core::ptr::from_ref(self) as usize;
        if cur == this {
            return;
        }
        self.cpus.insert(me.index() as usize);
        fence(Ordering::SeqCst);
        // SAFETY: the PML4 maps the kernel half exactly like every other PML4,
        // so the kernel keeps running; the user half is this space's.
        unsafe { Cr3::write(self.pml4, Cr3::read().1) };
        me.loaded_space.store(this, Ordering::Relaxed);
        if let Some(prev) = loaded(cur) {
            prev.cpus.remove(me.index() as usize);
        }
    }

    /// Maps `[start, start + len)` (page-aligned) with zeroed frames, as a
    /// region of `kind`. On failure nothing stays mapped.
    ///
    /// Thread context.
    pub fn map_zeroed(&self, start: u64, len: u64, prot: Prot, kind: Kind) -> Result<(), MapError> {
        self.map_with(start, len, prot, kind, |_| frame::alloc_zeroed())
    }

    /// Reserves `[start, start + len)` as a stack: the top `commit` bytes are
    /// mapped now, the rest on first touch (`fault_in`), so a thread pays only
    /// for the stack it uses.
    ///
    /// Thread context.
    pub fn reserve_stack(&self, start: u64, len: u64, commit: u64) -> Result<(), MapError> {
        let rw = Prot {
            write: true,
            exec: false,
        };
        self.map_region(
            start,
            len,
            start + len - commit,
            rw,
            Kind::Stack,
            &mut |_| frame::alloc_zeroed(),
        )
    }

    /// Like [`AddressSpace::map_zeroed`], with the frame of each page from
    /// `frame_of(page_address)` (already filled by the caller; freed here if
    /// the mapping fails).
    pub fn map_with(
        &self,
        start: u64,
        len: u64,
        prot: Prot,
        kind: Kind,
        mut frame_of: impl FnMut(u64) -> Option<PhysFrame>,
    ) -> Result<(), MapError> {
        self.map_region(start, len, start, prot, kind, &mut frame_of)
    }

    /// Records region `[start, start + len)` and maps its pages from
    /// `commit_from` up.
    fn map_region(
        &self,
        start: u64,
        len: u64,
        commit_from: u64,
        prot: Prot,
        kind: Kind,
        frame_of: &mut dyn FnMut(u64) -> Option<PhysFrame>,
    ) -> Result<(), MapError> {
        assert!(start.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE) && len > 0);
        assert!(
            !(prot.write && prot.exec),
            "writable and executable user mapping"
        );
        let end = start.checked_add(len).ok_or(MapError::Busy)?;
        if end > wyvern_abi::syscall::USER_TOP || start < PAGE_SIZE {
            return Err(MapError::Busy);
        }
        self.state.with(|st| {
            if st.overlaps(start, end) {
                return Err(MapError::Busy);
            }
            if st.regions.len() >= MAX_REGIONS {
                return Err(MapError::Limit);
            }
            let first = (commit_from - start) / PAGE_SIZE;
            let pages = len / PAGE_SIZE;
            st.charge_pages(pages - first)?;
            let mut mapper = self.mapper();
            let mut done = first;
            let mut failed = false;
            while done < pages {
                let va = start + done * PAGE_SIZE;
                let Some(f) = frame_of(va) else {
                    failed = true;
                    break;
                };
                // SAFETY: the page is in this space's user half and unmapped
                // (no region overlaps); the frame is the caller's, given to
                // this mapping.
                let r = unsafe { map_user_page(&mut mapper, st, va, f, prot) };
                match r {
                    // Not loaded anywhere with a translation for this page
                    // (it was unmapped): no flush needed.
                    Ok(flush) => flush.ignore(),
                    Err(e) => {
                        frame::free(f);
                        debug_assert!(matches!(e, MapToError::FrameAllocationFailed));
                        failed = true;
                        break;
                    }
                }
                done += 1;
            }
            if failed {
                // Nobody could use the partial mapping yet (the region is not
                // recorded, no thread was told of it): unmap without shootdown
                // beyond this CPU.
                for i in first..done {
                    let page =
                        Page::<Size4KiB>::containing_address(VirtAddr::new(start + i * PAGE_SIZE));
                    if let Ok((f, flush)) = mapper.unmap(page) {
                        flush.flush();
                        frame::free(f);
                    }
                }
                st.uncharge_pages(pages - first);
                return Err(MapError::NoMemory);
            }
            st.pages += pages - first;
            st.insert(start, Region { end, prot, kind });
            Ok(())
        })
    }

    /// Maps physical `[phys, phys + len)` — device memory the caller checked
    /// is not owned memory — at `start` with `prot` and `cache`, as a
    /// [`Kind::Device`] region. Only page tables are charged.
    ///
    /// Thread context.
    pub fn map_phys(
        &self,
        start: u64,
        phys: u64,
        len: u64,
        prot: Prot,
        cache: Cache,
    ) -> Result<(), MapError> {
        assert!(start.is_multiple_of(PAGE_SIZE) && phys.is_multiple_of(PAGE_SIZE));
        assert!(len.is_multiple_of(PAGE_SIZE) && len > 0 && !prot.exec);
        let end = start.checked_add(len).ok_or(MapError::Busy)?;
        if end > wyvern_abi::syscall::USER_TOP || start < PAGE_SIZE {
            return Err(MapError::Busy);
        }
        let mut flags = prot.flags() | DEVICE_PAGE;
        flags |= match cache {
            Cache::WriteCombining if crate::arch::protect::pat_wc() => F::WRITE_THROUGH,
            _ => F::NO_CACHE | F::WRITE_THROUGH,
        };
        self.state.with(|st| {
            if st.overlaps(start, end) {
                return Err(MapError::Busy);
            }
            if st.regions.len() >= MAX_REGIONS {
                return Err(MapError::Limit);
            }
            let mut mapper = self.mapper();
            let mut done = 0;
            while done < len {
                let page = Page::<Size4KiB>::containing_address(VirtAddr::new(start + done));
                let frame = PhysFrame::containing_address(PhysAddr::new(phys + done));
                // SAFETY: the page is in this space's user half and unmapped
                // (no region overlaps); the frame is device memory (the
                // caller checked), which no allocator hands out.
                let r = unsafe {
                    mapper.map_to_with_table_flags(
                        page,
                        frame,
                        flags,
                        F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE,
                        &mut TableFrames {
                            charge: &mut st.charge,
                            tables: &mut st.tables,
                        },
                    )
                };
                match r {
                    Ok(flush) => flush.ignore(),
                    Err(_) => {
                        let mut off = 0;
                        while off < done {
                            let p =
                                Page::<Size4KiB>::containing_address(VirtAddr::new(start + off));
                            if let Ok((_, flush)) = mapper.unmap(p) {
                                flush.flush();
                            }
                            off += PAGE_SIZE;
                        }
                        return Err(MapError::NoMemory);
                    }
                }
                done += PAGE_SIZE;
            }
            st.insert(
                start,
                Region {
                    end,
                    prot,
                    kind: Kind::Device,
                },
            );
            Ok(())
        })
    }

    /// Maps a zeroed page at `va` if it lies in a stack region and is not
    /// mapped yet (a stack growing down into its reservation); returns
    /// whether the access may be retried. A page outside every stack — a
    /// guard gap, a hole — stays a fault.
    ///
    /// Thread context (a page fault of the space's own thread).
    pub fn fault_in(&self, va: u64) -> bool {
        self.state
            .with(|st| self.fault_in_locked(st, va & !(PAGE_SIZE - 1)))
    }

    /// [`AddressSpace::fault_in`] of the page at `page_va`, under the token.
    fn fault_in_locked(&self, st: &mut State, page_va: u64) -> bool {
        let Some(i) = st.region_at(page_va) else {
            return false;
        };
        let r = st.regions[i].1;
        if r.kind != Kind::Stack {
            return false;
        }
        let prot = r.prot;
        let mut mapper = self.mapper();
        if mapper.translate_addr(VirtAddr::new(page_va)).is_some() {
            // Mapped meanwhile by another thread of the space: retry.
            return true;
        }
        if st.charge_pages(1).is_err() {
            return false;
        }
        let Some(f) = frame::alloc_zeroed() else {
            st.uncharge_pages(1);
            return false;
        };
        // SAFETY: the page is in this space's stack region and unmapped
        // (checked above, under the token); the frame is fresh.
        let r = unsafe { map_user_page(&mut mapper, st, page_va, f, prot) };
        match r {
            // Not present before: no CPU caches a translation to flush.
            Ok(flush) => {
                flush.ignore();
                st.pages += 1;
                true
            }
            Err(_) => {
                frame::free(f);
                st.uncharge_pages(1);
                false
            }
        }
    }

    /// The physical address behind user address `va`, if a user access
    /// (a write, if `write`) may touch it; a stack page not mapped yet is
    /// paged in as a fault would. The answer holds while the caller keeps
    /// the space's token ([`AddressSpace::token`]): unmapping takes it
    /// before it frees a frame.
    ///
    /// Thread context; never blocks if the caller holds the token.
    pub fn translate_user(&self, va: u64, write: bool) -> Option<PhysAddr> {
        if va >= wyvern_abi::syscall::USER_TOP {
            return None;
        }
        self.state.with(|st| {
            for _ in 0..2 {
                match self.mapper().translate(VirtAddr::new(va)) {
                    TranslateResult::Mapped {
                        frame,
                        offset,
                        flags,
                    } => {
                        // Device memory is not reached through the
                        // physical-memory mapping (it may not cover it, and
                        // a register read has effects): a fault.
                        let ok = flags.contains(F::USER_ACCESSIBLE)
                            && !flags.contains(DEVICE_PAGE)
                            && (!write || flags.contains(F::WRITABLE));
                        return ok.then(|| frame.start_address() + offset);
                    }
                    _ => {
                        if !self.fault_in_locked(st, va & !(PAGE_SIZE - 1)) {
                            return None;
                        }
                    }
                }
            }
            None
        })
    }

    /// The token that keeps this space's mappings stable (see
    /// [`AddressSpace::translate_user`]).
    pub fn token(&self) -> &'static lwkt::Token {
        self.state.token()
    }

    /// The first free range of `len` bytes in `[lo, hi)`, page-aligned, with
    /// at least one unmapped page below it (a guard).
    pub fn find_free(&self, lo: u64, hi: u64, len: u64) -> Option<u64> {
        self.state.with(|st| {
            let mut at = lo + PAGE_SIZE;
            let from = st.regions.partition_point(|(s, _)| *s < lo);
            for &(s, r) in st.regions[from..].iter().take_while(|(s, _)| *s < hi) {
                if at + len + PAGE_SIZE <= s {
                    return Some(at);
                }
                at = at.max(r.end + PAGE_SIZE);
            }
            (at + len <= hi).then_some(at)
        })
    }

    /// Unmaps every page of `[start, end)` that belongs to a region of one
    /// of `kinds`, splitting regions at the edges; the frames are freed
    /// after every CPU dropped its translations (device pages are only
    /// unmapped). Returns whether the range held nothing but such regions
    /// and gaps (else nothing is unmapped).
    ///
    /// Thread context.
    pub fn unmap(&self, start: u64, end: u64, kinds: &[Kind]) -> bool {
        assert!(start.is_multiple_of(PAGE_SIZE) && end.is_multiple_of(PAGE_SIZE));
        self.state.with(|st| {
            let first = st.regions.partition_point(|(_, r)| r.end <= start);
            let last = st.regions.partition_point(|(s, _)| *s < end);
            let hit = first..last;
            if st.regions[hit.clone()]
                .iter()
                .any(|(_, r)| !kinds.contains(&r.kind))
            {
                return false;
            }
            let device = st.regions[hit.clone()]
                .iter()
                .any(|(_, r)| r.kind == Kind::Device);
            // A range strictly inside one region splits it in two: one more
            // entry (beyond the table's reserve only after many splits).
            let splits = hit.len() == 1 && {
                let (s, r) = st.regions[first];
                s < start && r.end > end
            };
            if splits
                && st.regions.len() == st.regions.capacity()
                && st.regions.try_reserve(1).is_err()
            {
                return false;
            }
            // The regions first (the table is changed under the token, so no
            // fault maps a page of the range meanwhile), then the pages.
            let mut keep: [Option<(u64, Region)>; 2] = [None, None];
            for &(s, r) in &st.regions[hit.clone()] {
                if s < start {
                    keep[0] = Some((s, Region { end: start, ..r }));
                }
                if r.end > end {
                    keep[1] = Some((end, r));
                }
            }
            st.regions.drain(hit);
            for (s, r) in keep.into_iter().flatten() {
                st.insert(s, r);
            }
            let mut mapper = self.mapper();
            let mut batch = [None::<PhysFrame>; FREE_BATCH];
            let mut n = 0;
            let mut freed = 0;
            let mut device_pages = 0u64;
            let mut va = start;
            while va < end {
                let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
                let is_device = device
                    && matches!(
                        mapper.translate(VirtAddr::new(va)),
                        TranslateResult::Mapped { flags, .. } if flags.contains(DEVICE_PAGE)
                    );
                if let Ok((f, flush)) = mapper.unmap(page) {
                    // The shootdown below flushes every CPU, this one too.
                    flush.ignore();
                    if is_device {
                        device_pages += 1;
                    } else {
                        batch[n] = Some(f);
                        n += 1;
                    }
                }
                va += PAGE_SIZE;
                if va == end && n == 0 && device_pages > 0 {
                    self.shootdown(start, end);
                }
                if n == FREE_BATCH || (va == end && n > 0) {
                    self.shootdown(start, end);
                    for f in batch.iter_mut().take(n) {
                        frame::free(f.take().expect("a batched frame"));
                    }
                    freed += n as u64;
                    n = 0;
                }
            }
            st.pages -= freed;
            st.uncharge_pages(freed);
            true
        })
    }

    /// Makes every CPU that may cache translations of this space drop those
    /// of `[start, end)`. Thread context.
    fn shootdown(&self, start: u64, end: u64) {
        fence(Ordering::SeqCst);
        let targets = self.cpus.load_latest();
        if targets.is_empty() {
            return;
        }
        SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
        let range = Shootdown {
            pml4: self.pml4.start_address().as_u64(),
            start,
            end,
        };
        let g = lwkt::crit_enter::<sched::X86>();
        sched::world()
            .ipi
            .cpusync(&targets, flush_range, core::ptr::from_ref(&range) as usize);
        drop(g);
    }

    /// Writes `bytes` at `va` through the kernel's mapping of the frames (for
    /// a space that is not loaded: a new process's initial stack). Every page
    /// of the range must be mapped.
    ///
    /// Thread context.
    pub fn write_bytes(&self, va: u64, mut bytes: &[u8]) {
        self.state.with(|_| {
            let mapper = self.mapper();
            let mut at = va;
            while !bytes.is_empty() {
                let off = at % PAGE_SIZE;
                let n = bytes.len().min((PAGE_SIZE - off) as usize);
                let pa = match mapper.translate(VirtAddr::new(at)) {
                    TranslateResult::Mapped { frame, offset, .. } => frame.start_address() + offset,
                    _ => panic!("write_bytes to unmapped user address {at:#x}"),
                };
                // SAFETY: `pa` is in a frame of this space (mapped, so owned by
                // it); the physical mapping maps it writable; `n` bytes stay in
                // the page.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        phys_to_virt(pa).as_mut_ptr::<u8>(),
                        n,
                    );
                }
                bytes = &bytes[n..];
                at += n as u64;
            }
        });
    }

    /// Unmaps and frees everything in the user half and its page tables.
    /// Thread context; no thread of the space runs (it ended, or never
    /// started) — CPUs that still have it loaded are moved to the kernel's
    /// PML4 first.
    pub fn teardown(&self) {
        let targets = self.cpus.load_latest();
        if !targets.is_empty() {
            let g = lwkt::crit_enter::<sched::X86>();
            sched::world()
                .ipi
                .cpusync(&targets, leave_space, core::ptr::from_ref(self) as usize);
            drop(g);
        }
        self.state.with(|st| {
            let root = table(self.pml4.start_address());
            for e in root.iter_mut().take(256) {
                if e.flags().contains(F::PRESENT) {
                    free_tree(e.addr(), 3);
                    e.set_unused();
                }
            }
            st.regions.clear();
            st.pages = 0;
            st.tables = 0;
            // The root's charge too: the space is over (its process ended),
            // and its frame goes with the space a moment later — with the
            // last reference to the process, which an exiting thread may
            // still hold. The account has it back by the time the parent's
            // `WAIT` returns; the kernel's reserve covers the moment.
            let all = st.charge.amount();
            st.charge.shrink(all);
        });
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // Torn down already (a process's end does it): nothing to take a
        // token for — a drop must not block, it may happen under another
        // token (the process table's).
        let empty = self.cpus.is_empty_latest() && {
            let st = self.state.get_mut();
            st.regions.is_empty() && st.tables == 0
        };
        if !empty {
            self.teardown();
        }
        frame::free(self.pml4);
    }
}

/// Frees the table at `pa` (of `level`) and everything below it.
/// Maps the user page at `va` to frame `f` with `prot`, creating the page
/// tables on the way (user-accessible, writable: the leaf decides).
///
/// # Safety
///
/// The caller holds the space's token (or owns the space), the page is
/// unmapped, and `f` is given to this mapping alone.
unsafe fn map_user_page(
    mapper: &mut OffsetPageTable<'static>,
    st: &mut State,
    va: u64,
    f: PhysFrame<Size4KiB>,
    prot: Prot,
) -> Result<MapperFlush<Size4KiB>, MapToError<Size4KiB>> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
    // SAFETY: the caller's contract: an unmapped user page and a frame
    // given to it alone.
    unsafe {
        mapper.map_to_with_table_flags(
            page,
            f,
            prot.flags(),
            F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE,
            &mut TableFrames {
                charge: &mut st.charge,
                tables: &mut st.tables,
            },
        )
    }
}

fn free_tree(pa: PhysAddr, level: u8) {
    for e in table(pa).iter() {
        if !e.flags().contains(F::PRESENT) {
            continue;
        }
        if level == 1 {
            if !e.flags().contains(DEVICE_PAGE) {
                frame::free(PhysFrame::containing_address(e.addr()));
            }
        } else {
            free_tree(e.addr(), level - 1);
        }
    }
    frame::free(PhysFrame::containing_address(pa));
}

/// A range to invalidate, on the initiator's stack during the cpusync.
struct Shootdown {
    pml4: u64,
    start: u64,
    end: u64,
}

/// On each target of a shootdown, in IPI-dispatch context.
fn flush_range(arg: usize) {
    // SAFETY: `shootdown` passes a `Shootdown` on its stack and does not return
    // before every target ran this.
    let r = unsafe { &*(arg as *const Shootdown) };
    let (cr3, _) = Cr3::read();
    if cr3.start_address().as_u64() != r.pml4 {
        return;
    }
    if (r.end - r.start) / PAGE_SIZE > INVLPG_MAX {
        crate::arch::cpu::flush_tlb_local();
    } else {
        for va in (r.start..r.end).step_by(PAGE_SIZE as usize) {
            x86_64::instructions::tlb::flush(VirtAddr::new(va));
        }
    }
}

/// The space at address `addr` loaded on this CPU (0: none).
fn loaded(addr: usize) -> Option<&'static AddressSpace> {
    // SAFETY: a CPU's `loaded_space` names a live space: `teardown` moves
    // every CPU off a space (`unload`, in a cpusync) before it is freed, and
    // both run in this CPU's critical section.
    (addr != 0).then(|| unsafe { &*(addr as *const AddressSpace) })
}

/// Loads the kernel's own PML4 on this CPU if `space` (0: whichever) is the
/// space loaded here, and leaves that space's CPU set. Requires critical
/// section, or interrupts disabled (the idle thread about to halt).
pub fn unload(space: usize) {
    let me = percpu::mycpu();
    let cur = me.loaded_space.load(Ordering::Relaxed);
    if cur == 0 || (space != 0 && cur != space) {
        return;
    }
    // SAFETY: the kernel PML4 maps the kernel half like every space does.
    unsafe { Cr3::write(paging::kernel_pml4(), Cr3::read().1) };
    me.loaded_space.store(0, Ordering::Relaxed);
    if let Some(prev) = loaded(cur) {
        prev.cpus.remove(me.index() as usize);
    }
}

/// On each CPU that may still hold a space about to be torn down.
fn leave_space(space: usize) {
    unload(space);
}
