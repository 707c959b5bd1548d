//! IPI message queues: how one CPU asks another to run a function.
//!
//! Each CPU owns one single-producer/single-consumer FIFO towards every other
//! CPU (an N×N matrix; [`fifo`] documents the indices and their ordering). To
//! run `func(arg1, arg2)` on CPU B, CPU A appends a message to its A→B FIFO,
//! marks itself in B's *pending* set, and raises a hardware IPI only if B is not
//! already signalled ([`Ipi::send`]). B runs the messages of every pending
//! source in its IPI-dispatch context ([`Ipi::process`]).
//!
//! # The signal/poll handshake
//!
//! B's `npoll` word is 1 while B has been signalled and has not finished
//! processing. A sender sets its pending bit (a read-modify-write), then swaps
//! `npoll` to 1: if it was 0 it sends the IPI, otherwise the IPI is *avoided* —
//! B is bound to see the bit. B, when its pending set is empty, stores 0 to
//! `npoll`, issues a full fence and reads the pending set once more *with a
//! read-modify-write* (`fetch_or(0)`). Two read-modify-writes of one word are
//! ordered: if B's comes first, the sender's reads from it, so B's store of 0 to
//! `npoll` happens before the sender's swap, which then finds 0 and sends the
//! IPI; if the sender's comes first, B's recheck sees the bit and B goes on
//! processing. Either way no message is left behind with nobody signalled —
//! and the argument needs only release/acquire on read-modify-writes, which is
//! what the loom model in `tests/loom.rs` checks.
//!
//! # Memory
//!
//! The FIFO of a pair is made the first time its producer sends on it
//! ([`Ipi::send`] allocates it, publishes the pointer with `Release`, then
//! sets its pending bit, so a consumer that sees the bit finds the FIFO).
//! Only its producer ever creates it, so there is no race to resolve. A
//! machine of N CPUs thus holds N² pointers and a FIFO for each pair that
//! has talked: at 8 CPUs every pair soon does (56 FIFOs of 1.6 KiB), at
//! 1024 CPUs the 8 MiB of pointers and the FIFOs of pairs that actually
//! talk, instead of the 1.6 GiB a full matrix would take. An allocation
//! that fails is retried while the sender serves its own queues: the sender
//! waits, as it does for a full FIFO, and nothing is lost.
//!
//! # Full FIFOs
//!
//! A sender that finds its FIFO above [`HIGH_WATER`] does not wait for the
//! target to drain it: it drains its *own* incoming FIFOs (re-signalling the
//! target) until the FIFO is back at [`LOW_WATER`]. Two CPUs that fill each
//! other's FIFOs therefore keep serving each other instead of deadlocking.
//!
//! A message run while draining may itself send and find a FIFO full, and
//! drain again, one level deeper on the same stack. [`MAX_DRAIN_NESTING`]
//! bounds that: deeper is a panic naming the CPUs (DragonFly panics when its
//! sends nest 20 deep), not a stack overflow or a silent hang.
//!
//! # cpusync
//!
//! [`Ipi::cpusync`] runs a function on a set of CPUs and returns when all have
//! run it, following DragonFly's interlock/deinterlock: every target
//! acknowledges and then polls (in its IPI-dispatch context, re-queuing itself
//! on its own sync FIFO so other IPIs keep flowing) until the initiator
//! releases them; then each runs the function and acknowledges again.
//!
//! # Calling context
//!
//! The crate knows nothing of threads. The scheduler (`lwkt`) calls [`Ipi::send`],
//! [`Ipi::process`] and [`Ipi::cpusync`] inside the calling CPU's critical
//! section — *requires critical section* in the vocabulary of the workspace —
//! and a message's function runs in *IPI-dispatch context*: inside the target's
//! critical section, unable to block or switch.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod cpuset;
pub mod fifo;
mod sync;

use alloc::boxed::Box;
use core::marker::PhantomData;

pub use cpuset::{AtomicCpuSet, CpuSet, MAX_CPUS};
pub use fifo::{FIFO_SIZE, HIGH_WATER, IpiFunc, LOW_WATER, Msg};

use fifo::{DynFifo, PairFifo};
use sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

/// What the machine provides.
pub trait Platform: 'static {
    /// Index of the calling CPU.
    fn cpu() -> usize;
    /// Raises the IPI-queue interrupt on `cpu`.
    fn send_ipi(cpu: usize);
    /// One iteration of a spin-wait (`pause`).
    fn pause();
}

/// A counter written by one CPU only, read by anyone: a plain load and store,
/// no read-modify-write.
#[derive(Debug, Default)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    fn inc(&self) {
        self.add(1);
    }

    fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One CPU's IPI counters; each is written only by that CPU.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages this CPU sent to other CPUs.
    pub sent: LocalCounter,
    /// Messages this CPU ran for other CPUs.
    pub received: LocalCounter,
    /// Hardware IPIs this CPU raised.
    pub ipis: LocalCounter,
    /// Hardware IPIs avoided because the target was already signalled.
    pub avoided: LocalCounter,
    /// Sends that found the FIFO above the high-water mark and drained.
    pub fifo_full: LocalCounter,
    /// Passive sends (no IPI).
    pub passive: LocalCounter,
    /// cpusyncs this CPU initiated.
    pub cpusync: LocalCounter,
    /// FIFOs this CPU made (one per CPU it has sent to).
    pub fifos: LocalCounter,
    /// Times a FIFO could not be allocated and the sender waited.
    pub fifo_nomem: LocalCounter,
}

/// A copy of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub sent: u64,
    pub received: u64,
    pub ipis: u64,
    pub avoided: u64,
    pub fifo_full: u64,
    pub passive: u64,
    pub cpusync: u64,
    pub fifos: u64,
    pub fifo_nomem: u64,
}

impl Stats {
    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            sent: self.sent.get(),
            received: self.received.get(),
            ipis: self.ipis.get(),
            avoided: self.avoided.get(),
            fifo_full: self.fifo_full.get(),
            passive: self.passive.get(),
            cpusync: self.cpusync.get(),
            fifos: self.fifos.get(),
            fifo_nomem: self.fifo_nomem.get(),
        }
    }
}

/// How deep a CPU's drains of its own queues may nest (a message run while
/// draining sends to a full FIFO and drains again): DragonFly's bound on
/// nested IPI sends.
pub const MAX_DRAIN_NESTING: u32 = 20;

/// A CPU's receiving side.
struct IpiCpu {
    /// Sources with messages for this CPU (SeqCst; see the handshake).
    pending: AtomicCpuSet,
    /// 1 while signalled and not done processing (SeqCst).
    npoll: AtomicU32,
    /// This CPU's own queue of cpusync polls, written and read by this CPU:
    /// one polling entry per concurrent cpusync aimed at it, so at most one
    /// per other CPU.
    syncq: DynFifo,
    /// cpusyncs this CPU is initiating right now. Local.
    mastering: AtomicU32,
    /// Drains of a sender waiting for room (or memory) in progress on this
    /// CPU, nested. Local.
    draining: AtomicU32,
    /// Counters. Local.
    stats: Stats,
}

/// The IPI queues of `ncpus` CPUs.
pub struct Ipi<P: Platform> {
    ncpus: usize,
    cpus: Box<[IpiCpu]>,
    /// FIFO from `a` to `b` at `a * ncpus + b`, made on first use (null
    /// before); written only by `a`.
    fifos: Box<[AtomicPtr<PairFifo>]>,
    _platform: PhantomData<P>,
}

impl<P: Platform> Ipi<P> {
    /// Queues for `ncpus` CPUs (at most [`MAX_CPUS`]).
    pub fn new(ncpus: usize) -> Self {
        assert!((1..=MAX_CPUS).contains(&ncpus), "{ncpus} CPUs");
        Ipi {
            ncpus,
            cpus: (0..ncpus)
                .map(|_| IpiCpu {
                    pending: AtomicCpuSet::with_cpus(ncpus),
                    npoll: AtomicU32::new(0),
                    syncq: DynFifo::with_capacity(ncpus),
                    mastering: AtomicU32::new(0),
                    draining: AtomicU32::new(0),
                    stats: Stats::default(),
                })
                .collect(),
            fifos: (0..ncpus * ncpus)
                .map(|_| AtomicPtr::new(core::ptr::null_mut()))
                .collect(),
            _platform: PhantomData,
        }
    }

    /// Number of CPUs.
    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// The FIFO from `from` to `to`, which exists: the consumer calls this
    /// for a source whose pending bit it saw, the producer for a FIFO it
    /// sent on.
    fn fifo(&self, from: usize, to: usize) -> &PairFifo {
        let p = self.fifos[from * self.ncpus + to].load(Ordering::Acquire);
        assert!(
            !p.is_null(),
            "IPI FIFO {from}->{to} used before it was made"
        );
        // SAFETY: non-null pointers here come from `fifo_out`, which leaks a
        // live, initialized FIFO that is freed only when `self` is dropped.
        unsafe { &*p }
    }

    /// The FIFO from this CPU (`me`) to `to`, made now if this is the first
    /// message on it. Requires critical section (only `me` writes the slot).
    fn fifo_out(&self, me: usize, to: usize) -> &PairFifo {
        let slot = &self.fifos[me * self.ncpus + to];
        let p = slot.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: as in `fifo`; we made it, so Relaxed suffices.
            return unsafe { &*p };
        }
        let layout = core::alloc::Layout::new::<PairFifo>();
        let p = loop {
            // SAFETY: `layout` has a non-zero size.
            let p = unsafe { alloc::alloc::alloc(layout) }.cast::<PairFifo>();
            if !p.is_null() {
                break p;
            }
            // No memory now: serve our own queues (which is what frees the
            // senders waiting on us) and try again.
            self.cpus[me].stats.fifo_nomem.inc();
            self.drain(me, to);
            P::pause();
        };
        // SAFETY: `p` is fresh memory of `PairFifo`'s layout.
        unsafe { p.write(PairFifo::new()) };
        self.cpus[me].stats.fifos.inc();
        // Published before any pending bit that names it (`enqueue`).
        slot.store(p, Ordering::Release);
        // SAFETY: just initialized; lives until `self` is dropped.
        unsafe { &*p }
    }

    /// FIFOs made so far, over all CPUs, and their bytes.
    pub fn fifo_memory(&self) -> (u64, usize) {
        let n: u64 = self.cpus.iter().map(|c| c.stats.fifos.get()).sum();
        (n, n as usize * core::mem::size_of::<PairFifo>())
    }

    /// CPU `cpu`'s counters.
    pub fn stats(&self, cpu: usize) -> &Stats {
        &self.cpus[cpu].stats
    }

    /// Runs our own queues for a sender on CPU `me` waiting for room in its
    /// FIFO to `to`, counting how deep such drains nest.
    ///
    /// # Panics
    ///
    /// Nested deeper than [`MAX_DRAIN_NESTING`]: messages run while
    /// draining keep finding full FIFOs, and the stack would not last.
    fn drain(&self, me: usize, to: usize) {
        let depth = &self.cpus[me].draining;
        let d = depth.load(Ordering::Relaxed) + 1;
        assert!(
            d <= MAX_DRAIN_NESTING,
            "IPI: cpu {me} waiting for room towards cpu {to} drains its own queues \
             {d} deep: the messages it runs keep sending to full FIFOs"
        );
        depth.store(d, Ordering::Relaxed);
        self.process();
        depth.store(d - 1, Ordering::Relaxed);
    }

    /// Signals `to` unless it is signalled already.
    fn signal(&self, me: usize, to: usize) {
        if self.cpus[to].npoll.swap(1, Ordering::SeqCst) == 0 {
            self.cpus[me].stats.ipis.inc();
            P::send_ipi(to);
        } else {
            self.cpus[me].stats.avoided.inc();
        }
    }

    /// Appends `msg` to the FIFO to `to`, draining our own incoming FIFOs
    /// first if it is above the high-water mark. Returns the message's sequence
    /// number for [`Ipi::wait_seq`].
    fn enqueue(&self, me: usize, to: usize, msg: Msg) -> u32 {
        let q = self.fifo_out(me, to);
        if q.fill() > HIGH_WATER {
            self.cpus[me].stats.fifo_full.inc();
            while q.fill() > LOW_WATER {
                // The target may have missed passive messages: make sure it is
                // signalled, then serve whoever is filling *our* FIFOs.
                self.signal(me, to);
                self.drain(me, to);
                P::pause();
            }
        }
        let seq = q.push(msg);
        self.cpus[me].stats.sent.inc();
        self.cpus[to].pending.insert(me);
        seq
    }

    /// Runs `func(arg1, arg2)` on CPU `to`: directly if `to` is this CPU,
    /// otherwise through the FIFO with an IPI if `to` is not signalled yet.
    /// Returns the sequence number to wait for with [`Ipi::wait_seq`] (0 when
    /// run directly).
    ///
    /// Requires critical section; may run other CPUs' messages while a FIFO is
    /// full.
    pub fn send(&self, to: usize, func: IpiFunc, arg1: usize, arg2: usize) -> u32 {
        let me = P::cpu();
        if to == me {
            func(arg1, arg2);
            return 0;
        }
        let seq = self.enqueue(me, to, Msg { func, arg1, arg2 });
        self.signal(me, to);
        seq
    }

    /// Like [`Ipi::send`], without an IPI: `to` runs the message when it next
    /// processes its queues (at the latest on its next tick), or when the FIFO
    /// fills up. For work that is not urgent.
    ///
    /// Requires critical section.
    pub fn send_passive(&self, to: usize, func: IpiFunc, arg1: usize, arg2: usize) -> u32 {
        let me = P::cpu();
        assert!(to != me, "passive IPI to self");
        self.cpus[me].stats.passive.inc();
        self.enqueue(me, to, Msg { func, arg1, arg2 })
    }

    /// Whether anything waits for this CPU (cheap: for the tick's poll of
    /// passive messages). Any context.
    pub fn has_pending(&self) -> bool {
        let me = P::cpu();
        !self.cpus[me].pending.is_empty() || !self.cpus[me].syncq.is_empty()
    }

    /// Runs every message queued for this CPU, then ends the signalled state
    /// (see the handshake in the crate docs). Returns the number of messages run.
    ///
    /// IPI-dispatch context: requires critical section; the messages' functions
    /// run here, on the caller's stack.
    pub fn process(&self) -> u64 {
        let me = P::cpu();
        let cpu = &self.cpus[me];
        let mut ran = 0u64;
        loop {
            cpu.pending.take_each(|src| {
                loop {
                    let (n, more) = self.fifo(src, me).run();
                    ran += u64::from(n);
                    if !more {
                        break;
                    }
                }
            });
            if !cpu.syncq.is_empty() {
                let (n, more) = cpu.syncq.run();
                ran += u64::from(n);
                // A CPU interlocked by another keeps polling here until
                // released; one that is itself initiating a cpusync returns to
                // its own wait loop instead, which calls us again.
                if more && cpu.mastering.load(Ordering::Relaxed) == 0 {
                    P::pause();
                    continue;
                }
            }
            if !cpu.pending.is_empty() {
                continue;
            }
            cpu.npoll.store(0, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if cpu.pending.is_empty_latest() {
                break;
            }
        }
        cpu.stats.received.add(ran);
        ran
    }

    /// Waits until the message with sequence number `seq` sent from this CPU to
    /// `to` has run, processing our own queues meanwhile.
    ///
    /// Requires critical section.
    pub fn wait_seq(&self, to: usize, seq: u32) {
        let me = P::cpu();
        if to == me {
            return;
        }
        let q = self.fifo(me, to);
        while (q.completed().wrapping_sub(seq) as i32) < 0 {
            self.process();
            P::pause();
        }
    }

    /// Runs `func(arg)` on every CPU of `targets` (this one included if it is
    /// in the set) and returns when all have run it. While the call lasts,
    /// each target CPU sits in its IPI-dispatch context: quiescent, serving
    /// other IPIs only. Used for TLB shootdown.
    ///
    /// Requires critical section; `&'static self` because the targets reach the
    /// queues through it.
    pub fn cpusync(&'static self, targets: &CpuSet, func: fn(usize), arg: usize) {
        let cs = CpuSync {
            mask: *targets,
            mack: AtomicCpuSet::with_cpus(self.ncpus),
            func,
            arg,
            ipi: self as *const Self as usize,
        };
        self.interlock(&cs);
        self.deinterlock(&cs);
    }

    /// Stage 1: every other target acknowledges and starts polling.
    fn interlock(&'static self, cs: &CpuSync) {
        let me = P::cpu();
        let mut others = CpuSet::new();
        cs.mask
            .iter()
            .filter(|&c| c != me && c < self.ncpus)
            .for_each(|c| others.insert(c));
        self.cpus[me].stats.cpusync.inc();
        let mastering = &self.cpus[me].mastering;
        mastering.store(mastering.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        for c in others.iter() {
            self.send(c, cpusync_remote1::<P>, cs as *const CpuSync as usize, 0);
        }
        while !cs.mack.equals(&others) {
            self.process();
            P::pause();
        }
    }

    /// Stage 2: release the targets; each runs the function and acknowledges.
    fn deinterlock(&'static self, cs: &CpuSync) {
        let me = P::cpu();
        let acked = cs.mack.take();
        if cs.mask.contains(me) {
            (cs.func)(cs.arg);
        }
        while !cs.mack.equals(&acked) {
            self.process();
            P::pause();
        }
        let mastering = &self.cpus[me].mastering;
        mastering.store(mastering.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        // Polls left on our sync queue while we were mastering were not looped
        // on; serve them now.
        self.process();
    }
}

impl<P: Platform> Drop for Ipi<P> {
    fn drop(&mut self) {
        for slot in self.fifos.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: `p` came from `fifo_out`'s allocation with this
                // layout and was initialized there; `&mut self` means no CPU
                // uses the queues any more.
                unsafe {
                    core::ptr::drop_in_place(p);
                    alloc::alloc::dealloc(p.cast(), core::alloc::Layout::new::<PairFifo>());
                }
            }
        }
    }
}

/// A cpusync in progress; lives on the initiator's stack.
struct CpuSync {
    mask: CpuSet,
    mack: AtomicCpuSet,
    func: fn(usize),
    arg: usize,
    /// The `Ipi` it runs on (`&'static Ipi<P>` as an address).
    ipi: usize,
}

/// # Safety
///
/// `arg` is the address of a live `CpuSync`: the initiator keeps it on its
/// stack until every target has set its final acknowledgement, and a target
/// touches it only before setting that bit.
unsafe fn cpusync_from<'a>(arg: usize) -> &'a CpuSync {
    // SAFETY: the caller guarantees `arg` points at a live `CpuSync`.
    unsafe { &*(arg as *const CpuSync) }
}

/// On a target: acknowledge stage 1, then poll.
fn cpusync_remote1<P: Platform>(arg: usize, _: usize) {
    // SAFETY: sent by `interlock`, which does not return before we acknowledge
    // stage 2 (see `cpusync_from`).
    let cs = unsafe { cpusync_from(arg) };
    cs.mack.insert(P::cpu());
    cpusync_remote2::<P>(arg, 0);
}

/// On a target: still interlocked? Re-queue ourselves on our own sync FIFO
/// (so the dispatch loop keeps serving other IPIs). Released? Run the function
/// and acknowledge.
fn cpusync_remote2<P: Platform>(arg: usize, _: usize) {
    // SAFETY: as in `cpusync_remote1`: the initiator waits for our final
    // acknowledgement, after which we no longer touch `cs`.
    let cs = unsafe { cpusync_from(arg) };
    let me = P::cpu();
    if !cs.mack.contains(me) {
        (cs.func)(cs.arg);
        cs.mack.insert(me);
        // `cs` may be gone from here on.
    } else {
        // SAFETY: `cs.ipi` is the `&'static Ipi<P>` that sent us this message.
        let ipi = unsafe { &*(cs.ipi as *const Ipi<P>) };
        P::pause();
        ipi.cpus[me].syncq.push(Msg {
            func: cpusync_remote2::<P>,
            arg1: arg,
            arg2: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpusets() {
        let mut s = CpuSet::new();
        assert!(s.is_empty());
        for c in [0, 5, 63, 64, 200, 255, 256, 1023] {
            s.insert(c);
        }
        assert_eq!(s.len(), 8);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![0, 5, 63, 64, 200, 255, 256, 1023]
        );
        s.remove(64);
        assert!(!s.contains(64) && s.contains(63));
        assert_eq!(CpuSet::first(3).iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        let a = AtomicCpuSet::new();
        a.insert(7);
        a.insert(130);
        assert_eq!(a.load().len(), 2);
        assert_eq!(a.take().iter().collect::<Vec<_>>(), vec![7, 130]);
        assert!(a.load().is_empty());
        // A set for 300 CPUs uses five words and reaches CPU 299.
        let b = AtomicCpuSet::with_cpus(300);
        b.insert(299);
        b.insert(3);
        assert!(b.contains(299) && !b.contains(298) && !b.is_empty_latest());
        let mut seen = Vec::new();
        b.for_each_latest(|c| seen.push(c));
        assert_eq!(seen, vec![3, 299]);
        let mut want = CpuSet::new();
        want.insert(3);
        want.insert(299);
        assert!(b.equals(&want));
        want.insert(1000);
        assert!(!b.equals(&want));
        seen.clear();
        b.take_each(|c| seen.push(c));
        assert_eq!(seen, vec![3, 299]);
        assert!(b.is_empty() && b.is_empty_latest());
    }
}
