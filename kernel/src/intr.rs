//! Interrupt threads: every device interrupt runs its handler in a thread.
//!
//! A device IRQ's hard stub only acknowledges it — masks a level-triggered
//! source (the I/O APIC line; an edge-triggered one stays unmasked, since
//! an edge that comes while masked is lost), sends EOI — and hands it to
//! the scheduler, which (outside a
//! critical section) schedules the IRQ's interrupt thread right away or (inside
//! one) records it for the section's end. The interrupt thread runs at
//! `pri::INT` and is preemptable: if the interrupted thread is not in a
//! critical section and has lower priority, the interrupt thread preempts it
//! directly on the way out of the trap (a preemption *hit*); otherwise it waits
//! for the critical section's end (a *miss*, then the preemption). The thread
//! runs the handler, unmasks the line, and blocks until the next interrupt.
//! A pending count between the stub and the thread means an interrupt that
//! arrives while the handler runs is not lost.
//!
//! The clock and the IPI vector stay in their hard stubs (seeds/003: clock
//! interrupts need no thread), deferred by critical sections all the same.
//!
//! # The test device
//!
//! Vector [`VECTOR_TESTDEV`] is a device without hardware: an IPI on that
//! vector (to any CPU, or from the CPU's own tick every N ticks) behaves like a
//! device interrupt routed to that CPU, with a per-CPU interrupt thread running
//! whatever handler a test attached. Tests use it to drive preemption at rates
//! they choose.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use lwkt::{Builder, Thread, pri};

use crate::arch::apic::{self, with_lapic};
use crate::arch::ioapic;
use crate::percpu::{self, MAX_CPUS};
use crate::sched::X86;
use crate::trace;

/// The self-test device's vector.
pub const VECTOR_TESTDEV: u8 = 0xe0;
/// First vector of message-signalled interrupts for user drivers.
pub const VECTOR_MSI_BASE: u8 = 0xd0;
/// How many there are (up to the test device's vector).
pub const MSI_VECTORS: usize = (VECTOR_TESTDEV - VECTOR_MSI_BASE) as usize;

/// One interrupt source and its thread.
pub struct IntrSource {
    /// For `ps` and traces.
    pub name: &'static str,
    pub vector: u8,
    /// The I/O APIC line, masked while the handler has not run if it is
    /// level-triggered.
    pub gsi: Option<u32>,
    /// Its line is level-triggered.
    pub level: bool,
    handler: fn(),
    /// The ISA IRQ it is, if it is one (what `INTERRUPT_ATTACH` names).
    pub irq: Option<u8>,
    /// The MSI slot it is, if it is one (`user::irq`).
    pub msi: Option<usize>,
    /// The CPU its thread runs on (and its interrupts go to).
    pub cpu: usize,
    /// A user driver attached to it (`user::irq`): the thread delivers a
    /// pulse instead of running `handler`, and leaves the line masked
    /// until the driver unmasks it.
    pub redirected: core::sync::atomic::AtomicBool,
    thread: AtomicPtr<Thread<X86>>,
    /// Interrupts taken and not yet handled.
    pending: AtomicU32,
    /// Times the handler ran.
    pub handled: AtomicU64,
}

/// Sources by vector (the test device is per CPU, below).
static SOURCES: [AtomicPtr<IntrSource>; 256] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; 256];

fn source(p: *mut IntrSource) -> Option<&'static IntrSource> {
    // SAFETY: sources are leaked at registration and never freed.
    unsafe { p.as_ref() }
}

fn thread_of(src: &IntrSource) -> &'static Thread<X86> {
    let p = src.thread.load(Ordering::Acquire);
    // SAFETY: the thread pointer is set before the source is enabled, and
    // threads are never freed (the lwkt slab).
    unsafe { &*p }
}

/// Counts the interrupt and makes its thread runnable (the scheduler
/// preempts for it if it may). Hard-interrupt context or `splz`.
fn kick(src: &'static IntrSource) {
    src.pending.fetch_add(1, Ordering::AcqRel);
    lwkt::schedule::<X86>(thread_of(src));
}

/// The interrupt thread: run the handler for every interrupt taken, unmask,
/// block until the next.
fn ithread_main(src: &'static IntrSource) {
    loop {
        let g = lwkt::crit_enter::<X86>();
        while src.pending.load(Ordering::Acquire) == 0 {
            lwkt::deschedule_self::<X86>(&g);
            lwkt::switch::<X86>();
        }
        src.pending.store(0, Ordering::Release);
        drop(g);
        trace!(trace::Event::IntrThread, src.vector);
        if let Some(i) = src.msi {
            crate::user::irq::fire_msi(i);
            src.handled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(irq) = src.irq
            && src.redirected.load(Ordering::Acquire)
            && crate::user::irq::fire(irq)
        {
            // The driver unmasks a level-triggered line when it has served
            // the device (an edge-triggered one was never masked).
            src.handled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        (src.handler)();
        src.handled.fetch_add(1, Ordering::Relaxed);
        if let Some(gsi) = src.gsi {
            ioapic::unmask(gsi);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn new_source(
    name: &'static str,
    vector: u8,
    irq: Option<u8>,
    msi: Option<usize>,
    gsi: Option<u32>,
    cpu: usize,
    handler: fn(),
) -> &'static IntrSource {
    let src: &'static IntrSource = Box::leak(Box::new(IntrSource {
        name,
        vector,
        gsi,
        handler,
        irq,
        msi,
        cpu,
        level: gsi.is_some_and(ioapic::is_level),
        redirected: core::sync::atomic::AtomicBool::new(false),
        thread: AtomicPtr::new(core::ptr::null_mut()),
        pending: AtomicU32::new(0),
        handled: AtomicU64::new(0),
    }));
    let td = Builder::new(name)
        .cpu(cpu)
        .priority(pri::INT)
        .preemptable()
        .spawn::<X86>(move || ithread_main(src))
        .expect("no memory for an interrupt thread");
    src.thread.store(
        core::ptr::from_ref(td.thread()).cast_mut(),
        Ordering::Release,
    );
    src
}

/// Gives I/O APIC line `gsi`, delivered on `vector` to CPU `cpu`, an
/// interrupt thread on that CPU running `handler`; unmasks the line. Thread
/// context (it creates a thread), once per vector.
pub fn attach_gsi(
    name: &'static str,
    irq: Option<u8>,
    gsi: u32,
    vector: u8,
    cpu: usize,
    handler: fn(),
) -> &'static IntrSource {
    let src = new_source(name, vector, irq, None, Some(gsi), cpu, handler);
    let prev =
        SOURCES[usize::from(vector)].swap(core::ptr::from_ref(src).cast_mut(), Ordering::AcqRel);
    assert!(prev.is_null(), "vector {vector} attached twice");
    crate::sched::register_device(vector, ack_gsi, dispatch);
    ioapic::unmask(gsi);
    src
}

/// Masks the source and acknowledges the APIC: the hard stub's whole job.
fn ack_gsi(vector: u8) {
    if let Some(src) = source(SOURCES[usize::from(vector)].load(Ordering::Acquire))
        && let Some(gsi) = src.gsi
        && src.level
    {
        ioapic::mask(gsi);
    }
    apic::eoi();
}

fn dispatch(vector: u8) {
    trace!(trace::Event::Interrupt, vector);
    if let Some(src) = source(SOURCES[usize::from(vector)].load(Ordering::Acquire)) {
        kick(src);
    }
}

/// The test device of each CPU.
static TESTDEV: [AtomicPtr<IntrSource>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Fire the test device every this many ticks on each CPU (0 = never).
static TESTDEV_PERIOD: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

fn testdev_ack(_vector: u8) {
    apic::eoi();
}

fn testdev_dispatch(_vector: u8) {
    trace!(trace::Event::Interrupt, VECTOR_TESTDEV);
    let me = percpu::cpu_index() as usize;
    if let Some(src) = source(TESTDEV[me].load(Ordering::Acquire)) {
        kick(src);
    }
}

/// Installs the test device's vector. Boot, once.
pub fn init() {
    crate::sched::register_device(VECTOR_TESTDEV, testdev_ack, testdev_dispatch);
}

/// Gives CPU `cpu` a test device whose interrupt thread runs `handler`
/// (replacing nothing: once per CPU). Thread context.
pub fn testdev_attach(cpu: usize, handler: fn()) -> &'static IntrSource {
    let src = new_source("testdev", VECTOR_TESTDEV, None, None, None, cpu, handler);
    let prev = TESTDEV[cpu].swap(core::ptr::from_ref(src).cast_mut(), Ordering::AcqRel);
    assert!(prev.is_null(), "cpu{cpu} has a test device already");
    src
}

/// Raises the test device's interrupt on CPU `cpu`. Any context.
pub fn testdev_fire(cpu: usize) {
    let target = percpu::cpu(cpu as u32).expect("no such CPU");
    with_lapic(|l| l.send_ipi(target.apic_id(), VECTOR_TESTDEV));
}

/// Makes CPU `cpu`'s tick raise the test device every `ticks` ticks (0 stops).
pub fn testdev_periodic(cpu: usize, ticks: usize) {
    TESTDEV_PERIOD[cpu].store(ticks, Ordering::Relaxed);
}

/// Called by the tick handler: fires the test device when its period is due.
pub fn testdev_tick(cpu: usize, tick: u64) {
    let p = TESTDEV_PERIOD[cpu].load(Ordering::Relaxed);
    if p != 0 && tick.is_multiple_of(p as u64) {
        with_lapic(|l| l.send_self(VECTOR_TESTDEV));
    }
}

/// The source of ISA IRQ `irq`, if one is attached.
pub fn isa_source(irq: u8) -> Option<&'static IntrSource> {
    SOURCES
        .iter()
        .filter_map(|p| source(p.load(Ordering::Acquire)))
        .find(|s| s.irq == Some(irq))
}

/// Serializes the routing of sources made on demand (a driver's first
/// attach): two drivers asking at once do not both register a vector.
static ROUTE: crate::sync::TokenCell<()> = crate::sync::TokenCell::new(());

/// A kernel handler for a line only a user driver serves.
fn nothing() {}

/// The source of ISA IRQ `irq`, routed now (to the CPU that takes device
/// interrupts, with a handler that does nothing) if nobody routed it yet.
/// Thread context; may block.
pub fn isa_source_routed(irq: u8) -> Option<&'static IntrSource> {
    if let Some(s) = isa_source(irq) {
        return Some(s);
    }
    ROUTE.with(|()| {
        if let Some(s) = isa_source(irq) {
            return Some(s);
        }
        let platform = crate::acpi::platform();
        let (gsi, vector, cpu) = ioapic::route_isa(platform, irq)?;
        if !SOURCES[usize::from(vector)]
            .load(Ordering::Acquire)
            .is_null()
        {
            // Its GSI's vector serves another source (an override sent two
            // IRQs to one line): not for a driver.
            return None;
        }
        let name = ISA_NAMES.get(usize::from(irq)).copied().unwrap_or("irq");
        Some(attach_gsi(
            name,
            Some(irq),
            gsi,
            vector,
            cpu as usize,
            nothing,
        ))
    })
}

const ISA_NAMES: [&str; 16] = [
    "irq0", "irq1", "irq2", "irq3", "irq4", "irq5", "irq6", "irq7", "irq8", "irq9", "irq10",
    "irq11", "irq12", "irq13", "irq14", "irq15",
];

/// MSI slot `i`'s source, made on first use: its vector and the APIC id of
/// the CPU it is delivered to; `None` when no CPU can take device
/// interrupts. Thread context; may block.
pub fn msi_source(i: usize) -> Option<(u8, u32)> {
    if i >= MSI_VECTORS {
        return None;
    }
    let vector = VECTOR_MSI_BASE + i as u8;
    ROUTE.with(|()| {
        if let Some(s) = source(SOURCES[usize::from(vector)].load(Ordering::Acquire)) {
            let cpu = crate::percpu::cpu(s.cpu as u32)?;
            return Some((vector, cpu.apic_id()));
        }
        let cpu = ioapic::device_cpu()?;
        let src = new_source(
            "msi",
            vector,
            None,
            Some(i),
            None,
            cpu.index() as usize,
            nothing,
        );
        SOURCES[usize::from(vector)].store(core::ptr::from_ref(src).cast_mut(), Ordering::Release);
        crate::sched::register_device(vector, ack_msi, dispatch);
        Some((vector, cpu.apic_id()))
    })
}

/// An MSI's hard stub: there is no line to mask, only the APIC to
/// acknowledge.
fn ack_msi(_vector: u8) {
    apic::eoi();
}

/// Unmasks a source's line (a user driver served its device).
pub fn unmask(src: &IntrSource) {
    if let Some(gsi) = src.gsi {
        ioapic::unmask(gsi);
    }
}

/// Every attached source, for statistics.
pub fn sources() -> impl Iterator<Item = &'static IntrSource> {
    SOURCES
        .iter()
        .chain(TESTDEV.iter())
        .filter_map(|p| source(p.load(Ordering::Acquire)))
}
