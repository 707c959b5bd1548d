//! The kernel's machine under LWKT: x86_64 implements `lwkt::Machine`.
//!
//! * Each CPU's `lwkt::Cpu` lives in its per-CPU block, so `mycpu()` is one
//!   GS-relative load and an offset.
//! * Threads run on guarded kernel stacks (`mm::stack`); the switch is
//!   `arch::switch`.
//! * The IPI-queue interrupt is [`VECTOR_IPIQ`]; its hard handler and the
//!   timer's call into `lwkt`, which defers them inside critical sections.
//! * Device vectors routed through `lwkt` are masked at the source and
//!   acknowledged by their hard stub, then deferred or dispatched to their
//!   handler (`DEVICES`).
//! * `local_or`/`local_and_not` are single non-locked `or`/`and`
//!   instructions: atomic with respect to this CPU's interrupts, which is all
//!   `reqflags` needs.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use lwkt::{Cpu, Machine, Thread, World};

use crate::arch::apic::{self, with_lapic};
use crate::arch::cpu;
use crate::arch::switch::{SwitchContext, init_stack, switch_stacks};
use crate::arch::trap::{self, TrapFrame};
use crate::mm::stack::KernelStack;
use crate::percpu;
use crate::sync::Once;

pub use apic::VECTOR_IPIQ;

/// The x86_64 machine.
pub struct X86;

static WORLD: Once<&'static World<X86>> = Once::new();

/// Whether the scheduler's global state exists (every CPU block is known and
/// the IPI queues are allocated).
pub fn ready() -> bool {
    WORLD.is_completed()
}

impl ipi::Platform for X86 {
    #[inline]
    fn cpu() -> usize {
        percpu::cpu_index() as usize
    }

    fn send_ipi(cpu: usize) {
        let target = percpu::cpu(cpu as u32).expect("IPI to a CPU without a block");
        with_lapic(|l| l.send_ipi(target.apic_id(), VECTOR_IPIQ));
    }

    #[inline]
    fn pause() {
        cpu::pause();
    }
}

/// A thread pointer handed back by the switch.
fn thread_at(p: usize) -> &'static Thread<X86> {
    // SAFETY: the switch only ever passes the address of a live `Thread`
    // (threads live in the lwkt slab or a per-CPU block and are never freed).
    unsafe { &*(p as *const Thread<X86>) }
}

impl Machine for X86 {
    type Context = SwitchContext;
    type Stack = KernelStack;

    #[allow(clippy::declare_interior_mutable_const)]
    const NEW_CONTEXT: SwitchContext = SwitchContext {
        sp: core::sync::atomic::AtomicU64::new(0),
        kstack_top: core::sync::atomic::AtomicU64::new(0),
        user: AtomicUsize::new(0),
    };

    #[inline(always)]
    fn mycpu() -> &'static Cpu<X86> {
        &percpu::mycpu().lwkt
    }

    #[inline]
    fn world() -> &'static World<X86> {
        WORLD.get().expect("lwkt world not initialized")
    }

    fn stack_alloc() -> Option<KernelStack> {
        KernelStack::new()
    }

    fn context_init(td: &'static Thread<X86>, stack: &KernelStack) {
        // The top of every stack is kept for a user frame (a user thread's
        // registers while it is in the kernel); the thread starts below it.
        let top = stack.top().as_u64();
        let ctx = td.context();
        ctx.kstack_top.store(top, Ordering::Relaxed);
        ctx.user.store(0, Ordering::Relaxed);
        ctx.sp.store(
            init_stack(top - core::mem::size_of::<TrapFrame>() as u64),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    unsafe fn switch(from: &'static Thread<X86>, to: &'static Thread<X86>) -> &'static Thread<X86> {
        crate::user::switch_hook(from, to);
        // SAFETY: `from` is current and `to` not running, both in critical
        // sections (the trait's conditions 1 and 2); `to`'s saved RSP came from
        // a previous switch or `init_stack`.
        let prev = unsafe {
            switch_stacks(
                from.context().sp.as_ptr(),
                to.context().sp.load(Ordering::Relaxed),
                core::ptr::from_ref(from) as usize,
            )
        };
        thread_at(prev)
    }

    unsafe fn switch_exit(from: &'static Thread<X86>, to: &'static Thread<X86>) -> ! {
        crate::user::switch_hook(from, to);
        // SAFETY: as in `switch`; `from` never resumes, and its stack is reaped
        // only after `to` runs.
        unsafe {
            switch_stacks(
                from.context().sp.as_ptr(),
                to.context().sp.load(Ordering::Relaxed),
                core::ptr::from_ref(from) as usize,
            );
        }
        unreachable!("an exited thread was resumed")
    }

    #[inline]
    fn idle_halt() {
        // A halting CPU drops the user address space it may still have
        // loaded (kernel threads keep whatever CR3 they find): otherwise
        // every unmap in that space would wake it with a shootdown IPI, for
        // nothing. Interrupts are off, so nothing else on this CPU runs.
        let me = percpu::mycpu();
        if me.loaded_space.load(Ordering::Relaxed) != 0 {
            crate::mm::aspace::unload(0);
        }
        me.halted.store(true, Ordering::Relaxed);
        cpu::enable_and_halt();
        me.halted.store(false, Ordering::Relaxed);
    }

    #[inline]
    fn interrupts_disable() -> bool {
        cpu::interrupts_save_disable()
    }

    #[inline]
    fn interrupts_restore(enabled: bool) {
        cpu::interrupts_restore(enabled);
    }

    #[inline(always)]
    fn local_or(word: &AtomicU32, bits: u32) {
        // SAFETY: `word` is a valid, aligned u32 (it is a reference); a single
        // non-locked `or` is atomic with respect to interrupts on this CPU, and
        // no other CPU writes the word (lwkt's contract for `reqflags`).
        unsafe {
            core::arch::asm!("or dword ptr [{0}], {1:e}", in(reg) word.as_ptr(), in(reg) bits, options(nostack));
        }
    }

    #[inline(always)]
    fn local_and_not(word: &AtomicU32, bits: u32) {
        // SAFETY: as in `local_or`.
        unsafe {
            core::arch::asm!("and dword ptr [{0}], {1:e}", in(reg) word.as_ptr(), in(reg) !bits, options(nostack));
        }
    }

    #[inline]
    fn trace(event: lwkt::Event, arg: u64) {
        crate::trace::record(event as u32, arg);
    }

    fn dispatch_device(vector: u8) {
        let f = DEVICES[usize::from(vector)].load(Ordering::Acquire);
        assert!(f != 0, "device vector {vector} has no handler");
        // SAFETY: only `register_device` stores here, from a `fn(u8)`.
        let f: fn(u8) = unsafe { core::mem::transmute::<usize, fn(u8)>(f) };
        f(vector);
    }
}

/// Where every new thread starts (called by the switch trampoline).
pub extern "C" fn thread_entry(prev: usize) -> ! {
    lwkt::thread_start::<X86>(thread_at(prev))
}

/// Handlers of device vectors routed through lwkt, as `fn(u8)` addresses.
static DEVICES: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Routes device vector `vector` through the scheduler: its hard stub runs
/// `ack` (mask the source, EOI — with interrupts off, right away), and then
/// `handler` runs in the stub if the interrupted thread is outside critical
/// sections, or when its critical section ends. `handler` typically
/// schedules an interrupt thread.
///
/// Boot or thread context, once per vector.
pub fn register_device(vector: u8, ack: fn(u8), handler: fn(u8)) {
    let prev = DEVICES[usize::from(vector)].swap(handler as usize, Ordering::AcqRel);
    assert!(prev == 0, "device vector {vector} registered twice");
    ACKS[usize::from(vector)].store(ack as usize, Ordering::Release);
    trap::register(vector, device_stub);
}

static ACKS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

fn device_stub(frame: &mut TrapFrame) {
    let v = frame.vector as u8;
    let ack = ACKS[usize::from(v)].load(Ordering::Acquire);
    // SAFETY: stored by `register_device` from a `fn(u8)` before the vector's
    // handler was installed.
    let ack: fn(u8) = unsafe { core::mem::transmute::<usize, fn(u8)>(ack) };
    ack(v);
    lwkt::device_interrupt::<X86>(v);
}

/// The IPI-queue vector's hard handler.
fn ipiq_stub(_frame: &mut TrapFrame) {
    apic::eoi();
    lwkt::ipi_interrupt::<X86>();
}

/// Builds the scheduler's global state for every CPU that has a block (the
/// boot CPU and the APs about to start) and publishes it; installs the IPI
/// vector. Boot CPU, once, before the APs start.
pub fn init() -> &'static World<X86> {
    let cpus: alloc::vec::Vec<&'static Cpu<X86>> = percpu::all().map(|c| &c.lwkt).collect();
    let world = lwkt::init::<X86>(cpus);
    trap::register(VECTOR_IPIQ, ipiq_stub);
    WORLD.call_once(|| world)
}

/// The IPI queues' and scheduler's counters of CPU `cpu`.
pub fn world() -> &'static World<X86> {
    X86::world()
}

/// The set of online CPUs. Any context.
pub fn online_set() -> ipi::CpuSet {
    let mut set = ipi::CpuSet::new();
    for c in percpu::online() {
        set.insert(c.index() as usize);
    }
    set
}

/// Runs `func(arg)` on every online CPU (this one included) and returns when
/// all have: a cpusync. Thread context; not while holding a spinlock.
pub fn cpusync_online(func: fn(usize), arg: usize) {
    let g = lwkt::crit_enter::<X86>();
    world().ipi.cpusync(&online_set(), func, arg);
    drop(g);
}

/// Flushes every online CPU's TLB (non-global entries): a cpusync reloading
/// CR3 everywhere. Thread context; not while holding a spinlock.
pub fn flush_tlb_everywhere() {
    cpusync_online(|_| cpu::flush_tlb_local(), 0);
}
