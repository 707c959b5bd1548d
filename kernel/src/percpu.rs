//! Per-CPU data, reached through the GS base.
//!
//! Each CPU's GS base points at its [`PerCpu`], whose first word points at
//! itself, so [`mycpu`] is a single `mov rax, gs:[0]`. The boot CPU's block is
//! static and installed before anything else runs; the boot CPU makes every
//! AP's block before starting it, and each AP installs its own as the first
//! thing it does in Rust.
//!
//! Field discipline: a *local* field is written only by its own CPU. Local
//! counters are atomics used with `Relaxed` loads and stores (never
//! read-modify-write, so no `lock` prefix) only so that an interrupt on the
//! same CPU, and a statistics reader on another, may read them without a data
//! race. A *shared* field says who writes it and with what ordering.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use crate::arch::apic::LocalApic;
use crate::arch::gdt::CpuTables;
use crate::mm::stack::KernelStack;

/// Most CPUs Wyvern brings up; more in the MADT are reported and left off.
/// Memory per CPU is allocated for the CPUs present only: the tables sized
/// by this are pointer tables (8 KiB).
pub const MAX_CPUS: usize = ipi::MAX_CPUS;

/// A local counter: written only by its CPU, read by anyone. Transparent:
/// [`count_syscall`] increments one in place by its address.
#[derive(Default)]
#[repr(transparent)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    /// A zero counter.
    pub const fn new() -> Self {
        LocalCounter(AtomicU64::new(0))
    }

    /// Adds one. Only the owning CPU calls it, and only from one context that
    /// no other incrementer of the same counter can interrupt (for example the
    /// timer handler for `ticks`): it is a plain load and store, not an atomic
    /// read-modify-write, so it costs no `lock` prefix.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Same rule as [`LocalCounter::inc`].
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Current value. Any CPU.
    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One CPU's private data.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this block: `gs:[0]`. Written once before the GS base is set.
    self_ptr: *const PerCpu,
    /// Top of the kernel stack of the user thread running here: where the
    /// syscall entry switches to (`gs:[KERNEL_RSP_OFFSET]`). Local, set by the
    /// switch.
    pub kernel_rsp: AtomicU64,
    /// The user RSP while the syscall entry changes stacks. Local scratch.
    user_rsp: AtomicU64,
    /// Address of the user address space whose PML4 is in CR3 (0: the
    /// kernel's). Local (`mm::aspace`).
    pub loaded_space: core::sync::atomic::AtomicUsize,
    /// Id of the user thread whose FPU state is in this CPU's registers (0:
    /// none). Local (`user`).
    pub fpu_owner: AtomicU64,
    /// Index of this CPU, 0 for the boot CPU, dense. Written once before the
    /// block is published.
    index: u32,
    /// Local APIC id. Written once before the block is published.
    apic_id: u32,
    /// Set by the CPU itself once it runs Wyvern code with interrupts on.
    /// Shared: `Release` store, `Acquire` load.
    online: AtomicBool,
    /// GDT and TSS of this CPU. Local.
    pub tables: CpuTables,
    /// Whose I/O ports this CPU's TSS bitmap opens: 0 for nobody, else the
    /// process's I/O key (`Process::io_key`). Local (the switch).
    pub io_key: AtomicU64,
    /// The local APIC driver. Local, used with interrupts disabled
    /// (`arch::apic`).
    pub(crate) lapic: UnsafeCell<Option<LocalApic>>,
    /// IST stacks (double fault, NMI, machine check) of an AP; the boot CPU
    /// uses static ones. Written once before the block is published.
    ist: Option<[KernelStack; crate::arch::gdt::IST_STACKS]>,
    /// The scheduler's state of this CPU (DragonFly's `globaldata`).
    pub lwkt: lwkt::Cpu<crate::sched::X86>,
    /// Timer interrupts taken (whether the scheduler processed them at once or
    /// after a critical section). Local counter (timer interrupt).
    pub ticks: LocalCounter,
    /// Interrupts and exceptions taken, all vectors. Local counter (trap
    /// entry, interrupts off).
    pub traps: LocalCounter,
    /// NMIs taken. Local counter (NMI handler).
    pub nmis: LocalCounter,
    /// Spurious-vector interrupts that were real deliveries (ISR bit set).
    /// Local counter (spurious handler).
    pub spurious_delivered: LocalCounter,
    /// Spurious interrupts proper. Local counter (spurious handler).
    pub spurious_true: LocalCounter,
    /// System calls entered. Local counter (syscall entry).
    pub syscalls: LocalCounter,
    /// Interrupts taken per vector. Local counters (trap entry).
    pub vectors: [LocalCounter; 256],
    /// TSC when this CPU came online. Local, written once.
    pub online_tsc: AtomicU64,
    /// Next TSC deadline of the tick (TSC-deadline mode). Local.
    pub timer_deadline: AtomicU64,
    /// This CPU's trace ring. Local writer, any reader.
    pub trace: crate::trace::TraceRing,
    /// Spinlocks this CPU holds (debug rank checking). Local.
    pub held_locks: crate::sync::HeldLocks,
    /// Set while the CPU halts in its idle loop (the benchmarks wait for
    /// the CPUs they do not use to be there: `bench::parties::settle`).
    /// Local writer, any reader.
    pub halted: AtomicBool,
}

/// Offset of [`PerCpu::kernel_rsp`], for the syscall entry.
pub const KERNEL_RSP_OFFSET: usize = core::mem::offset_of!(PerCpu, kernel_rsp);
/// Offset of the user RSP scratch slot, for the syscall entry.
pub const USER_RSP_OFFSET: usize = core::mem::offset_of!(PerCpu, user_rsp);

// SAFETY: `self_ptr`, `index`, `apic_id` and `ist` are written once before the
// block is published (to the CPU table and the GS base) and only read after;
// `lapic` is touched only by its own CPU with interrupts disabled
// (`arch::apic::with_lapic`); every other field is atomic.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    /// A block for CPU `index` with local APIC id `apic_id`.
    pub const fn new(
        index: u32,
        apic_id: u32,
        ist: Option<[KernelStack; crate::arch::gdt::IST_STACKS]>,
    ) -> Self {
        PerCpu {
            self_ptr: core::ptr::null(),
            kernel_rsp: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
            loaded_space: core::sync::atomic::AtomicUsize::new(0),
            fpu_owner: AtomicU64::new(0),
            index,
            apic_id,
            online: AtomicBool::new(false),
            tables: CpuTables::new(),
            io_key: AtomicU64::new(0),
            lapic: UnsafeCell::new(None),
            ist,
            lwkt: lwkt::Cpu::new(index),
            ticks: LocalCounter::new(),
            traps: LocalCounter::new(),
            nmis: LocalCounter::new(),
            spurious_delivered: LocalCounter::new(),
            spurious_true: LocalCounter::new(),
            syscalls: LocalCounter::new(),
            vectors: [const { LocalCounter::new() }; 256],
            online_tsc: AtomicU64::new(0),
            timer_deadline: AtomicU64::new(0),
            trace: crate::trace::TraceRing::new(),
            held_locks: crate::sync::HeldLocks::new(),
            halted: AtomicBool::new(false),
        }
    }

    /// This CPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// This CPU's local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.apic_id
    }

    /// Whether the CPU has come online.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Marks the calling CPU online. Its own CPU, once.
    pub fn set_online(&self) {
        debug_assert!(core::ptr::eq(self, mycpu()));
        self.online.store(true, Ordering::Release);
    }

    /// Tops of this AP's IST stacks, if it has its own.
    pub fn ist_tops(&self) -> Option<[x86_64::VirtAddr; crate::arch::gdt::IST_STACKS]> {
        self.ist
            .as_ref()
            .map(|s| [s[0].top(), s[1].top(), s[2].top(), s[3].top()])
    }
}

/// The block of the boot CPU.
static mut BSP: PerCpu = PerCpu::new(0, 0, None);

/// Every CPU's block, by index; null where there is none.
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// Makes `block` this CPU's per-CPU block.
///
/// # Safety
///
/// 1. Called once per CPU, by that CPU, before anything reads `mycpu()`.
/// 2. `block` lives as long as the CPU, and nothing else holds a mutable
///    reference to it.
unsafe fn install(block: *mut PerCpu) {
    // SAFETY: condition 2: no other reference writes `block`; `self_ptr` is read
    // only through GS, which is not pointed here yet.
    unsafe { (*block).self_ptr = block };
    // Condition 1: this CPU reads its block through GS only after this point,
    // and the block is 'static (condition 2).
    x86_64::registers::model_specific::GsBase::write(x86_64::VirtAddr::from_ptr(block));
}

/// Installs the boot CPU's static block. First thing `kmain` does.
pub fn init_bsp() {
    let block = &raw mut BSP;
    // SAFETY: called once, first thing on the boot CPU (condition 1); `BSP` is
    // only reached through `mycpu()` and the CPU table afterwards (condition 2).
    unsafe { install(block) };
    CPUS[0].store(block, Ordering::Release);
    lwkt::bootstrap_cpu(&mycpu().lwkt);
}

/// Records the boot CPU's APIC id, learned from its local APIC once mapped.
pub fn set_bsp_apic_id(apic_id: u32) {
    let bsp = &raw mut BSP;
    // SAFETY: boot CPU, before any AP runs and before anything reads the id
    // from another CPU; a single aligned store to a field of the static block.
    unsafe { (*bsp).apic_id = apic_id };
}

/// Creates and publishes the block of AP `index`. Boot CPU, before starting it.
pub fn create_ap(
    index: u32,
    apic_id: u32,
    ist: [KernelStack; crate::arch::gdt::IST_STACKS],
) -> &'static PerCpu {
    let block = alloc::boxed::Box::leak(alloc::boxed::Box::new(PerCpu::new(
        index,
        apic_id,
        Some(ist),
    )));
    CPUS[index as usize].store(block, Ordering::Release);
    block
}

/// Installs AP block `block` on the calling AP (first thing an AP does in Rust).
///
/// # Safety
///
/// `block` was made by [`create_ap`] for this CPU, and this is the CPU's first
/// call.
pub unsafe fn install_ap(block: &'static PerCpu) {
    // SAFETY: the caller guarantees condition 1; `create_ap` leaked the block,
    // so it lives forever, and no `&mut` to it exists (condition 2).
    unsafe { install(core::ptr::from_ref(block).cast_mut()) };
    lwkt::bootstrap_cpu(&block.lwkt);
}

/// This CPU's block.
///
/// The read is `pure`: the compiler may reuse the value of an earlier read
/// when no call and no memory write (an `sti`/`cli` counts as one) lies
/// between them. That is sound because a thread changes CPU only by
/// switching, inside a call, and a preempted thread resumes on its own CPU.
#[inline(always)]
pub fn mycpu() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: the GS base of every CPU points at its installed, 'static `PerCpu`,
    // whose first word is its own address; reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(pure, readonly, nostack, preserves_flags));
        &*p
    }
}

/// Counts a system call on this CPU ([`PerCpu::syscalls`]): one GS-relative
/// `inc`, which no interrupt on this CPU can split. Any context.
#[inline(always)]
pub fn count_syscall() {
    // SAFETY: the GS base points at this CPU's installed `PerCpu` (see
    // `mycpu`); `syscalls` is a `LocalCounter`, an `AtomicU64` at its offset,
    // written only by its own CPU.
    unsafe {
        core::arch::asm!(
            "inc qword ptr gs:[{off}]",
            off = const core::mem::offset_of!(PerCpu, syscalls),
            options(nostack),
        );
    }
}

/// This CPU's index (0 for the boot CPU).
#[inline(always)]
pub fn cpu_index() -> u32 {
    mycpu().index
}

/// The block of CPU `index`, if it exists.
pub fn cpu(index: u32) -> Option<&'static PerCpu> {
    let p = CPUS.get(index as usize)?.load(Ordering::Acquire);
    // SAFETY: non-null entries point at blocks that live forever (the static
    // BSP block or a leaked AP block), published with Release.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Every CPU with a block, in index order.
pub fn all() -> impl Iterator<Item = &'static PerCpu> {
    (0..MAX_CPUS as u32).map_while(cpu)
}

/// Every online CPU.
pub fn online() -> impl Iterator<Item = &'static PerCpu> {
    all().filter(|c| c.is_online())
}
