//! The scheduler's global state: every CPU, the IPI queues, the thread slab,
//! the sleep-queue CPU sets.

use alloc::boxed::Box;
use alloc::vec::Vec;

use ipi::{AtomicCpuSet, Ipi};

use crate::Machine;
use crate::cpu::Cpu;
use crate::slab::Slab;
use crate::sleep::BUCKETS;

/// Global scheduler state, made once by [`init`].
pub struct World<M: Machine> {
    /// Every CPU, by index.
    pub cpus: Vec<&'static Cpu<M>>,
    /// The IPI queues between them.
    pub ipi: Ipi<M>,
    /// Where threads come from.
    pub slab: Slab<M>,
    /// Per sleep bucket, the CPUs that may have sleepers in it (see `sleep`).
    pub(crate) sleep_cpus: Box<[AtomicCpuSet]>,
    /// CPUs with user threads waiting for a turn (`usched`'s pulls look
    /// here).
    pub(crate) overloaded: AtomicCpuSet,
    /// How many CPUs `overloaded` holds (one load for the common "none").
    pub(crate) noverloaded: core::sync::atomic::AtomicU32,
}

/// Builds the scheduler's global state for `cpus` (index order) and returns it
/// for the machine to publish through [`Machine::world`]. Then each CPU calls
/// [`start_cpu`].
///
/// Boot CPU, once, in its boot thread.
pub fn init<M: Machine>(cpus: Vec<&'static Cpu<M>>) -> &'static World<M> {
    assert!(!cpus.is_empty());
    for (i, c) in cpus.iter().enumerate() {
        assert_eq!(c.index(), i, "CPU list out of order");
    }
    let n = cpus.len();
    Box::leak(Box::new(World {
        cpus,
        ipi: Ipi::new(n),
        slab: Slab::new(),
        sleep_cpus: (0..BUCKETS).map(|_| AtomicCpuSet::with_cpus(n)).collect(),
        overloaded: AtomicCpuSet::with_cpus(n),
        noverloaded: core::sync::atomic::AtomicU32::new(0),
    }))
}

/// Starts this CPU's own scheduler threads (its softclock thread). Each CPU,
/// once, after [`init`] is published, from its boot thread.
pub fn start_cpu<M: Machine>() {
    let cpu = M::mycpu();
    let sc = crate::Builder::new("softclock")
        .cpu(cpu.index())
        .priority(crate::pri::SOFT_TIMER)
        .preemptable()
        .spawn::<M>(crate::callout::softclock_main::<M>)
        .expect("no memory for the softclock thread");
    cpu.softclock.store(
        crate::slab::ptr(sc.thread()),
        core::sync::atomic::Ordering::Relaxed,
    );
    crate::usched::set_online(cpu);
}
