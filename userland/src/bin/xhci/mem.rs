//! Memory the driver shares with the controller: register windows
//! ([`Mmio`]), DMA buffers ([`Dma`]), and the TRB rings built in them
//! ([`Ring`], where the driver produces, and [`EventRing`], where it
//! consumes).
//!
//! Every access is a bounds-checked volatile read or write of an aligned
//! integer: an offset outside the window (which only a lying register or
//! event could produce) reads as all-ones, as a vanished device does, and
//! writes nothing. So no value the controller hands us can make the
//! driver touch memory it does not own.
//!
//! Ordering: DMA memory is write-back and coherent; the CPU keeps volatile
//! accesses in program order (x86 is TSO) and the `fence`s below keep the
//! compiler from moving them across the write that hands a TRB over (its
//! cycle bit) or across a doorbell.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{Ordering, fence};

use wyvern_abi::syscall::Error;
use wyvern_user::sys;

pub const PAGE: u64 = 4096;

/// TRB types (xHCI 1.2 table 6-91).
pub const TRB_NORMAL: u32 = 1;
pub const TRB_SETUP: u32 = 2;
pub const TRB_DATA: u32 = 3;
pub const TRB_STATUS: u32 = 4;
pub const TRB_LINK: u32 = 6;
pub const TRB_ENABLE_SLOT: u32 = 9;
pub const TRB_DISABLE_SLOT: u32 = 10;
pub const TRB_ADDRESS_DEVICE: u32 = 11;
pub const TRB_CONFIGURE_EP: u32 = 12;
pub const TRB_EVALUATE_CTX: u32 = 13;
pub const TRB_RESET_EP: u32 = 14;
pub const TRB_SET_TR_DEQUEUE: u32 = 16;
pub const EV_TRANSFER: u32 = 32;
pub const EV_COMMAND: u32 = 33;
pub const EV_PORT: u32 = 34;
pub const EV_HOST: u32 = 37;

/// TRB control bits.
pub const LINK_TC: u32 = 1 << 1;
pub const ISP: u32 = 1 << 2;
pub const IOC: u32 = 1 << 5;
pub const IDT: u32 = 1 << 6;
pub const DIR_IN: u32 = 1 << 16;

/// The type field of a TRB's control word.
pub const fn trb_type(t: u32) -> u32 {
    t << 10
}

/// Integers a window can hold.
pub trait Word: Copy {
    const ONES: Self;
}
impl Word for u8 {
    const ONES: Self = u8::MAX;
}
impl Word for u16 {
    const ONES: Self = u16::MAX;
}
impl Word for u32 {
    const ONES: Self = u32::MAX;
}
impl Word for u64 {
    const ONES: Self = u64::MAX;
}

/// `len` bytes mapped at `va` for as long as the owner lives.
struct Window {
    va: u64,
    len: u64,
}

impl Window {
    fn fits<T: Word>(&self, off: u64) -> bool {
        let n = size_of::<T>() as u64;
        off.is_multiple_of(n) && off.checked_add(n).is_some_and(|end| end <= self.len)
    }

    fn read<T: Word>(&self, off: u64) -> T {
        if !self.fits::<T>(off) {
            return T::ONES;
        }
        // SAFETY: `off .. off + size_of::<T>()` lies inside the window, which
        // stays mapped while its owner lives (`Mmio` forever, `Dma` until its
        // consuming `free`), and is aligned for `T`, an integer type.
        unsafe { read_volatile((self.va + off) as *const T) }
    }

    fn write<T: Word>(&self, off: u64, v: T) {
        if !self.fits::<T>(off) {
            return;
        }
        // SAFETY: as in `read`; the window is writable (device registers or
        // our own DMA memory) and no Rust reference points into it.
        unsafe { write_volatile((self.va + off) as *mut T, v) }
    }
}

/// A window of device registers or configuration space, mapped uncached
/// and never unmapped (the process ends with it).
pub struct Mmio(Window);

impl Mmio {
    /// Maps `len` bytes of granted device memory at `phys`.
    pub fn map(phys: u64, len: u64) -> Result<Mmio, Error> {
        let va = sys::map_device(phys, len, 0)?;
        Ok(Mmio(Window { va, len }))
    }

    pub fn size(&self) -> u64 {
        self.0.len
    }

    pub fn r8(&self, off: u64) -> u8 {
        self.0.read(off)
    }
    pub fn r16(&self, off: u64) -> u16 {
        self.0.read(off)
    }
    pub fn r32(&self, off: u64) -> u32 {
        self.0.read(off)
    }
    pub fn w16(&self, off: u64, v: u16) {
        self.0.write(off, v)
    }
    pub fn w32(&self, off: u64, v: u32) {
        self.0.write(off, v)
    }
    /// A 64-bit register as two 32-bit writes, low first (QEMU latches
    /// CRCR and ERSTBA on the high half).
    pub fn w64(&self, off: u64, v: u64) {
        self.w32(off, v as u32);
        self.w32(off + 4, (v >> 32) as u32);
    }
}

/// Zeroed, physically contiguous DMA memory. There is no `Drop`: memory the
/// controller may still write is given back only by [`Dma::free`], whose
/// caller vouches for that; a `Dma` that is merely dropped stays mapped.
pub struct Dma {
    win: Window,
    phys: u64,
}

impl Dma {
    /// `len` bytes (whole pages); below 4 GiB unless `wide` (the
    /// controller's 64-bit addressing, HCCPARAMS1.AC64).
    pub fn alloc(len: u64, wide: bool) -> Result<Dma, Error> {
        let len = len.div_ceil(PAGE) * PAGE;
        let (va, phys) = sys::dma_alloc(len)?;
        let d = Dma {
            win: Window { va, len },
            phys,
        };
        if !wide && phys + len > 1 << 32 {
            // SAFETY: nobody has been told this memory's address yet.
            unsafe { d.free() };
            return Err(Error::NoMemory);
        }
        Ok(d)
    }

    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// The offset of physical address `p` when it lies inside, with room
    /// for `n` bytes.
    pub fn offset_of(&self, p: u64, n: u64) -> Option<u64> {
        let off = p.checked_sub(self.phys)?;
        (off.checked_add(n)? <= self.win.len).then_some(off)
    }

    pub fn r8(&self, off: u64) -> u8 {
        self.win.read(off)
    }
    pub fn r32(&self, off: u64) -> u32 {
        self.win.read(off)
    }
    pub fn r64(&self, off: u64) -> u64 {
        self.win.read(off)
    }
    pub fn w32(&self, off: u64, v: u32) {
        self.win.write(off, v)
    }
    pub fn w64(&self, off: u64, v: u64) {
        self.win.write(off, v)
    }

    /// Zeroes `len` bytes from `off` (both multiples of 8).
    pub fn zero(&self, off: u64, len: u64) {
        for o in (off..off + len).step_by(8) {
            self.w64(o, 0);
        }
    }

    /// Gives the memory back.
    ///
    /// # Safety
    ///
    /// 1. The controller no longer reads or writes it (its slot is
    ///    disabled, or it was never told the address).
    pub unsafe fn free(self) {
        // SAFETY: `self` is consumed, so nothing of the driver uses the
        // window again; condition 1 covers the device.
        let _ = unsafe { sys::unmap(self.win.va, self.win.len) };
    }
}

/// A TRB: parameter, status and control words (the control word's cycle
/// bit is the ring's business).
#[derive(Clone, Copy, Debug)]
pub struct Trb {
    pub param: u64,
    pub status: u32,
    pub control: u32,
}

/// TRBs of a ring: one page.
pub const RING_TRBS: u64 = PAGE / 16;

/// A producer ring (command or transfer) in one page: `RING_TRBS - 1`
/// TRBs and a Link TRB back to the start that toggles the cycle.
/// Invariant: the driver never has more than `RING_TRBS - 2` TRBs
/// outstanding (one command, one control transfer, or a keyboard's few
/// reports), so the producer never catches up with the consumer.
pub struct Ring {
    mem: Dma,
    enq: u64,
    cycle: bool,
}

impl Ring {
    /// A ring in zeroed memory `mem` (at least a page); producer cycle 1.
    pub fn new(mem: Dma) -> Ring {
        let link = (RING_TRBS - 1) * 16;
        mem.w64(link, mem.phys());
        // Cycle 0: not the controller's until the producer reaches it.
        mem.w32(link + 12, trb_type(TRB_LINK) | LINK_TC);
        Ring {
            mem,
            enq: 0,
            cycle: true,
        }
    }

    /// The ring's base, for CRCR.
    pub fn base(&self) -> u64 {
        self.mem.phys()
    }

    /// The next TRB's address with the producer cycle in bit 0: a dequeue
    /// pointer with its DCS, for contexts and Set TR Dequeue Pointer.
    pub fn dequeue_pointer(&self) -> u64 {
        (self.mem.phys() + self.enq * 16) | u64::from(self.cycle)
    }

    /// Writes `t` at the enqueue point and hands it over; returns its
    /// physical address (what its completion event names). The caller
    /// rings the doorbell.
    pub fn push(&mut self, t: Trb) -> u64 {
        let off = self.enq * 16;
        let c = u32::from(self.cycle);
        self.mem.w64(off, t.param);
        self.mem.w32(off + 8, t.status);
        // The cycle bit goes last: the controller must never see a TRB
        // whose other words are not written yet.
        fence(Ordering::SeqCst);
        self.mem.w32(off + 12, (t.control & !1) | c);
        let at = self.mem.phys() + off;
        self.enq += 1;
        if self.enq == RING_TRBS - 1 {
            fence(Ordering::SeqCst);
            self.mem
                .w32(self.enq * 16 + 12, trb_type(TRB_LINK) | LINK_TC | c);
            self.enq = 0;
            self.cycle = !self.cycle;
        }
        at
    }

    /// The index of the TRB at physical address `p`, if it is one of ours.
    pub fn index_of(&self, p: u64) -> Option<u64> {
        let off = self.mem.offset_of(p, 16)?;
        (off.is_multiple_of(16) && off / 16 < RING_TRBS - 1).then_some(off / 16)
    }

    /// The parameter word the driver wrote into TRB `index`.
    pub fn param_at(&self, index: u64) -> u64 {
        self.mem.r64(index * 16)
    }

    /// Gives the ring's page back.
    ///
    /// # Safety
    ///
    /// As [`Dma::free`]: the controller no longer uses the ring.
    pub unsafe fn free(self) {
        // SAFETY: the caller's contract is `Dma::free`'s.
        unsafe { self.mem.free() }
    }
}

/// Event TRBs in the one segment of interrupter 0.
pub const EVENT_TRBS: u64 = PAGE / 16;

/// The consumer side of the event ring (one segment, one page).
pub struct EventRing {
    mem: Dma,
    deq: u64,
    cycle: bool,
}

impl EventRing {
    /// A ring in zeroed memory `mem`; consumer cycle 1.
    pub fn new(mem: Dma) -> EventRing {
        EventRing {
            mem,
            deq: 0,
            cycle: true,
        }
    }

    pub fn base(&self) -> u64 {
        self.mem.phys()
    }

    /// The next unconsumed event's address, for ERDP.
    pub fn dequeue(&self) -> u64 {
        self.mem.phys() + self.deq * 16
    }

    /// The next event the controller has written, if any.
    pub fn pop(&mut self) -> Option<Trb> {
        let off = self.deq * 16;
        let control = self.mem.r32(off + 12);
        if (control & 1 == 1) != self.cycle {
            return None;
        }
        // The other words were written before the cycle bit we just saw.
        fence(Ordering::Acquire);
        let t = Trb {
            param: self.mem.r64(off),
            status: self.mem.r32(off + 8),
            control,
        };
        self.deq += 1;
        if self.deq == EVENT_TRBS {
            self.deq = 0;
            self.cycle = !self.cycle;
        }
        Some(t)
    }
}
