//! One single-producer/single-consumer FIFO of IPI messages.
//!
//! # Indices and their ordering
//!
//! All three indices count messages since the FIFO was made and wrap at 2³²;
//! a slot is `index % FIFO_SIZE`.
//!
//! * `windex` — written only by the producer. It stores the message into the
//!   slot, then publishes it with a `Release` store of `windex + 1`; the
//!   consumer's `Acquire` load of `windex` therefore sees the slot's contents.
//! * `rindex` — written only by the consumer. It copies the message out of the
//!   slot, then frees the slot with a `Release` store of `rindex + 1`; the
//!   producer's `Acquire` load of `rindex` (to compute the fill level) therefore
//!   happens after the copy, so it never overwrites a slot still being read.
//! * `xindex` — written only by the consumer, with `Release`, after the
//!   message's function *returned*: "everything before `xindex` has been
//!   executed". A sender that must know its message ran waits on it
//!   ([`crate::Ipi::wait_seq`]) with `Acquire`.
//!
//! The consumer may be re-entered on the same CPU (a message's function sends
//! an IPI, finds a FIFO full and drains its own incoming queues); the run loop
//! tolerates `rindex` moving past the `windex` it sampled, as DragonFly's does.

use crate::sync::{AtomicU32, Ordering, UnsafeCell};

/// Messages the FIFO of a CPU pair holds (a power of two). The loom models
/// use 4, so a full ring and its drain (and the index wrap) stay within what
/// loom can explore; the code does not depend on the size.
pub const FIFO_SIZE: usize = if cfg!(loom) { 4 } else { 64 };
/// Above this fill level a sender stops to drain ([`crate::Ipi::send`]).
pub const HIGH_WATER: u32 = FIFO_SIZE as u32 / 2;
/// A draining sender resumes at or below this fill level.
pub const LOW_WATER: u32 = FIFO_SIZE as u32 / 4;

/// A function run on another CPU in its IPI-dispatch context: inside that CPU's
/// critical section, on whatever thread it was running, so it must not block.
pub type IpiFunc = fn(usize, usize);

/// One message: `func(arg1, arg2)` to run on the target CPU.
#[derive(Clone, Copy)]
pub struct Msg {
    pub func: IpiFunc,
    pub arg1: usize,
    pub arg2: usize,
}

impl core::fmt::Debug for Msg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Msg")
            .field("func", &(self.func as *const ()))
            .field("arg1", &self.arg1)
            .field("arg2", &self.arg2)
            .finish()
    }
}

fn nothing(_: usize, _: usize) {}

const EMPTY: Msg = Msg {
    func: nothing,
    arg1: 0,
    arg2: 0,
};

/// Where a FIFO keeps its messages: a fixed array (the per-pair FIFOs, whose
/// size is a constant the compiler folds in) or a boxed slice sized at run
/// time (a CPU's own sync queue, sized by the number of CPUs).
pub(crate) trait Slots {
    /// Capacity minus one (a power of two minus one).
    fn mask(&self) -> u32;
    /// Slot `i & mask`.
    fn slot(&self, i: u32) -> &UnsafeCell<Msg>;
}

impl<const N: usize> Slots for [UnsafeCell<Msg>; N] {
    #[inline(always)]
    fn mask(&self) -> u32 {
        const { assert!(N.is_power_of_two() && N <= 1 << 16) };
        N as u32 - 1
    }

    #[inline(always)]
    fn slot(&self, i: u32) -> &UnsafeCell<Msg> {
        &self[(i & self.mask()) as usize]
    }
}

impl Slots for alloc::boxed::Box<[UnsafeCell<Msg>]> {
    #[inline(always)]
    fn mask(&self) -> u32 {
        self.len() as u32 - 1
    }

    #[inline(always)]
    fn slot(&self, i: u32) -> &UnsafeCell<Msg> {
        &self[(i & self.mask()) as usize]
    }
}

/// The FIFO of a CPU pair: [`FIFO_SIZE`] messages inline.
pub(crate) type PairFifo = Fifo<[UnsafeCell<Msg>; FIFO_SIZE]>;

/// A FIFO sized at run time.
pub(crate) type DynFifo = Fifo<alloc::boxed::Box<[UnsafeCell<Msg>]>>;

/// The FIFO.
#[derive(Debug)]
pub(crate) struct Fifo<S> {
    windex: AtomicU32,
    rindex: AtomicU32,
    xindex: AtomicU32,
    slots: S,
}

// SAFETY: the slots are accessed under the single-producer/single-consumer
// protocol of the module docs: a slot is written only by the producer while it
// is outside [rindex, windex) and read only by the consumer while inside, and
// the Release/Acquire pairs on the indices order those accesses.
unsafe impl<S: Slots> Sync for Fifo<S> {}

impl PairFifo {
    pub(crate) fn new() -> Self {
        Fifo {
            windex: AtomicU32::new(0),
            rindex: AtomicU32::new(0),
            xindex: AtomicU32::new(0),
            slots: core::array::from_fn(|_| UnsafeCell::new(EMPTY)),
        }
    }
}

impl DynFifo {
    /// A FIFO of at least `n` messages (rounded up to a power of two).
    pub(crate) fn with_capacity(n: usize) -> Self {
        let cap = n.max(1).next_power_of_two();
        assert!(cap <= 1 << 16, "FIFO of {n} messages");
        Fifo {
            windex: AtomicU32::new(0),
            rindex: AtomicU32::new(0),
            xindex: AtomicU32::new(0),
            slots: (0..cap).map(|_| UnsafeCell::new(EMPTY)).collect(),
        }
    }
}

impl<S: Slots> Fifo<S> {
    /// Messages queued and not yet taken. Producer's view.
    pub(crate) fn fill(&self) -> u32 {
        self.windex
            .load(Ordering::Relaxed)
            .wrapping_sub(self.rindex.load(Ordering::Acquire))
    }

    /// Whether the consumer has anything to take. Consumer's view.
    pub(crate) fn is_empty(&self) -> bool {
        self.rindex.load(Ordering::Relaxed) == self.windex.load(Ordering::Acquire)
    }

    /// Producer: appends `msg`; returns its sequence number (the `windex`
    /// after it). The caller made sure the FIFO is not full.
    pub(crate) fn push(&self, msg: Msg) -> u32 {
        let w = self.windex.load(Ordering::Relaxed);
        assert!(
            w.wrapping_sub(self.rindex.load(Ordering::Acquire)) <= self.slots.mask(),
            "IPI FIFO overflow"
        );
        // SAFETY: slot `w` is outside [rindex, windex) (checked above), so the
        // consumer does not read it; only this producer writes it.
        self.slots.slot(w).with_mut(|p| unsafe { p.write(msg) });
        self.windex.store(w.wrapping_add(1), Ordering::Release);
        w.wrapping_add(1)
    }

    /// Consumer: runs the messages queued when it started (and any a nested
    /// run has not taken); returns how many it ran and whether more are queued.
    pub(crate) fn run(&self) -> (u32, bool) {
        let w = self.windex.load(Ordering::Acquire);
        let mut ran = 0;
        loop {
            let r = self.rindex.load(Ordering::Relaxed);
            // Signed distance: a nested run may have taken us past `w`.
            if w.wrapping_sub(r) as i32 <= 0 {
                break;
            }
            // SAFETY: `r < w` and `w` was published with Release, so the slot
            // holds a complete message the producer will not touch until we
            // advance `rindex`.
            let msg = self.slots.slot(r).with(|p| unsafe { p.read() });
            self.rindex.store(r.wrapping_add(1), Ordering::Release);
            (msg.func)(msg.arg1, msg.arg2);
            ran += 1;
            self.xindex
                .store(self.rindex.load(Ordering::Relaxed), Ordering::Release);
        }
        (ran, !self.is_empty())
    }

    /// Sequence number of the last message whose function has returned.
    pub(crate) fn completed(&self) -> u32 {
        self.xindex.load(Ordering::Acquire)
    }
}
