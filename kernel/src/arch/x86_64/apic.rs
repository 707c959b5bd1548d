//! Local APIC (through the `x2apic` crate) and the legacy PICs.
//!
//! # Mode
//!
//! The local APICs run in x2APIC mode (registers are MSRs) whenever the CPU
//! has it, and in xAPIC mode (an MMIO page, mapped uncached) otherwise or on
//! request (`apic=xapic`); `apic_mode` holds the choice and the legal ways to
//! each mode from whatever the firmware left. The boot CPU chooses in
//! [`init_global`] and walks its own APIC there before reading any register;
//! each AP does the same in [`enter_mode`], first thing after it leaves the
//! trampoline. Until then nothing touches a register: the AP finds its
//! per-CPU block by the id its APIC reports once in the chosen mode.
//!
//! The crate configures the APIC (enable, LVT vectors, timer); the few
//! registers it does not expose — ISR, ESR, the ID register's xAPIC encoding,
//! LINT pins, the xAPIC ICR destination field — are reached through
//! [`reg_read`]/[`reg_write`], which pick MSR or MMIO by mode.
//!
//! # APIC ids
//!
//! In x2APIC mode the ID register (MSR 0x802) is the full 32-bit x2APIC id;
//! in xAPIC mode it is bits 31:24 of the MMIO ID register. The MADT lists
//! both kinds (x2APIC entries for ids above 254). CPUID leaf 0x1f/0xb gives
//! the same 32-bit id, which the `cpumap` self-test checks on every CPU.
//!
//! The legacy 8259 PICs are remapped to vectors 32–47 and fully masked.
//!
//! # Vectors owned here
//!
//! | vector | use |
//! |---|---|
//! | [`VECTOR_TIMER`] | LAPIC timer: the per-CPU tick |
//! | [`VECTOR_IPIQ`] | IPI: process this CPU's incoming IPI queues |
//! | [`VECTOR_TEST`] | IPI used by self-tests |
//! | [`VECTOR_ERROR`] | LAPIC error |
//! | [`VECTOR_SPURIOUS`] | LAPIC spurious |

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use pic8259::ChainedPics;
use x2apic::lapic::{LocalApicBuilder, TimerMode};
use x86_64::PhysAddr;
use x86_64::registers::model_specific::Msr;

use super::apic_mode::{self, Mode, Request, State};
use super::cpu;
use super::trap::{self, TrapFrame};
use crate::percpu::mycpu;
use crate::sync::Once;
use crate::{mm, println};

/// LAPIC timer.
pub const VECTOR_TIMER: u8 = 0xf8;
/// IPI-queue interrupt.
pub const VECTOR_IPIQ: u8 = 0xf4;
/// Self-test IPI.
pub const VECTOR_TEST: u8 = 0xf2;
/// LAPIC error.
pub const VECTOR_ERROR: u8 = 0xfe;
/// LAPIC spurious interrupt.
pub const VECTOR_SPURIOUS: u8 = 0xff;
/// First vector of the remapped (masked) PICs.
pub const PIC_BASE: u8 = 32;

/// The per-CPU local APIC driver (stored in `PerCpu::lapic`).
pub struct LocalApic {
    inner: x2apic::lapic::LocalApic,
}

/// x2APIC mode chosen by the boot CPU. Shared, written once before APs start.
static X2APIC: AtomicBool = AtomicBool::new(false);
/// Virtual address of the xAPIC registers (0 in x2APIC mode). Written once.
static XAPIC_VA: AtomicU64 = AtomicU64::new(0);

/// Spurious interrupts that were real deliveries to the spurious vector (ISR
/// bit set), summed over CPUs.
pub fn spurious_delivered() -> u64 {
    crate::percpu::all()
        .map(|c| c.spurious_delivered.get())
        .sum()
}

/// Spurious interrupts proper (no ISR bit, no EOI), summed over CPUs.
pub fn spurious_true() -> u64 {
    crate::percpu::all().map(|c| c.spurious_true.get()).sum()
}

/// Whether the local APICs run in x2APIC mode.
pub fn x2apic_mode() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Reads local APIC register at xAPIC offset `off` (x2APIC MSR `0x800 + off/16`).
pub fn reg_read(off: u32) -> u32 {
    if x2apic_mode() {
        // SAFETY: in x2APIC mode MSRs 0x800–0x8ff are the local APIC's registers;
        // callers read only readable registers.
        unsafe { Msr::new(0x800 + (off >> 4)).read() as u32 }
    } else {
        let va = XAPIC_VA.load(Ordering::Relaxed) + u64::from(off);
        // SAFETY: the xAPIC page is mapped uncached at XAPIC_VA (boot CPU, before
        // any caller); `off` is a register offset within it.
        unsafe { core::ptr::read_volatile(va as *const u32) }
    }
}

/// Writes local APIC register at xAPIC offset `off`.
pub fn reg_write(off: u32, value: u32) {
    if x2apic_mode() {
        // SAFETY: as in `reg_read`; callers write only writable registers with
        // values the SDM allows.
        unsafe { Msr::new(0x800 + (off >> 4)).write(u64::from(value)) }
    } else {
        let va = XAPIC_VA.load(Ordering::Relaxed) + u64::from(off);
        // SAFETY: as in `reg_read`.
        unsafe { core::ptr::write_volatile(va as *mut u32, value) }
    }
}

const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xb0;
const REG_ISR: u32 = 0x100;
const REG_ESR: u32 = 0x280;
const REG_ICR_LO: u32 = 0x300;
const REG_LINT0: u32 = 0x350;
const REG_LINT1: u32 = 0x360;
/// The mask bit of an LVT entry.
const LVT_MASKED: u32 = 1 << 16;

/// The APIC id of the calling CPU, read from its local APIC.
pub fn local_id() -> u32 {
    let raw = reg_read(REG_ID);
    if x2apic_mode() { raw } else { raw >> 24 }
}

/// Signals end of interrupt. Called from interrupt handlers (interrupts off).
#[inline]
pub fn eoi() {
    reg_write(REG_EOI, 0);
}

/// Whether `vector` is in service on this CPU (its ISR bit is set).
pub fn in_service(vector: u8) -> bool {
    let word = reg_read(REG_ISR + 0x10 * u32::from(vector / 32));
    word & (1 << (vector % 32)) != 0
}

/// Runs `f` with this CPU's local APIC driver, interrupts disabled so no
/// handler on this CPU uses it meanwhile.
pub fn with_lapic<R>(f: impl FnOnce(&mut LocalApic) -> R) -> R {
    let irq = cpu::interrupts_save_disable();
    // SAFETY: the driver is local to this CPU (PerCpu docs) and interrupts are
    // off, so nothing else on this CPU holds a reference now; other CPUs never
    // touch it.
    let lapic = unsafe { (*mycpu().lapic.get()).as_mut() }.expect("local APIC not initialized");
    let r = f(lapic);
    cpu::interrupts_restore(irq);
    r
}

impl LocalApic {
    /// The ICR destination field for `apic_id` in this mode (xAPIC puts the
    /// 8-bit id in bits 56–63, which the crate writes as `dest << 32`).
    fn dest(apic_id: u32) -> u32 {
        if x2apic_mode() {
            apic_id
        } else {
            apic_id << 24
        }
    }

    /// Waits until the previous IPI left the ICR (xAPIC only reports this).
    fn wait_icr_idle(&self) {
        if !x2apic_mode() {
            for _ in 0..1_000_000 {
                if reg_read(REG_ICR_LO) & (1 << 12) == 0 {
                    return;
                }
                cpu::pause();
            }
        }
    }

    /// Sends fixed IPI `vector` to `apic_id`.
    pub fn send_ipi(&mut self, apic_id: u32, vector: u8) {
        self.wait_icr_idle();
        // SAFETY: a fixed IPI to a listed APIC id on a vector with a handler.
        unsafe { self.inner.send_ipi(vector, Self::dest(apic_id)) };
    }

    /// Sends fixed IPI `vector` to this CPU.
    pub fn send_self(&mut self, vector: u8) {
        if x2apic_mode() {
            // SAFETY: the x2APIC SELF IPI register takes a vector with a handler.
            unsafe { self.inner.send_ipi_self(vector) };
        } else {
            // xAPIC has no SELF IPI register: address ourselves by id.
            self.send_ipi(local_id(), vector);
        }
    }

    /// Sends an NMI to `apic_id`.
    pub fn send_nmi(&mut self, apic_id: u32) {
        self.wait_icr_idle();
        // SAFETY: NMIs are handled on every CPU (exception::nmi).
        unsafe { self.inner.send_nmi(Self::dest(apic_id)) };
    }

    /// Sends an INIT IPI to `apic_id` (AP start-up).
    pub fn send_init(&mut self, apic_id: u32) {
        self.wait_icr_idle();
        // SAFETY: INIT resets the target, which is an AP not running Wyvern yet.
        unsafe { self.inner.send_init_ipi(Self::dest(apic_id)) };
    }

    /// Sends a start-up IPI to `apic_id`: it starts in real mode at `page << 12`.
    pub fn send_sipi(&mut self, apic_id: u32, page: u8) {
        self.wait_icr_idle();
        // SAFETY: the target was just INITed and `page` holds the trampoline.
        unsafe { self.inner.send_sipi(page, Self::dest(apic_id)) };
    }

    /// Arms the TSC-deadline timer at absolute TSC `deadline` (0 disarms).
    pub fn set_tsc_deadline(&mut self, deadline: u64) {
        // SAFETY: IA32_TSC_DEADLINE exists when the timer was set up in
        // TSC-deadline mode, the only mode that calls this.
        unsafe { Msr::new(0x6e0).write(deadline) };
    }

    /// Programs the timer in periodic mode with `initial` bus ticks (divide 16).
    pub fn set_periodic(&mut self, initial: u32) {
        // SAFETY: reprogramming our own LAPIC timer.
        unsafe {
            self.inner
                .set_timer_divide(x2apic::lapic::TimerDivide::Div16);
            self.inner.set_timer_mode(TimerMode::Periodic);
            self.inner.set_timer_initial(initial);
            self.inner.enable_timer();
        }
    }

    /// Programs a one-shot count of `initial` bus ticks (divide 16), masked,
    /// for calibration; returns nothing, read progress with [`Self::current`].
    pub fn start_count(&mut self, initial: u32) {
        // SAFETY: reprogramming our own LAPIC timer; masked, so it raises nothing.
        unsafe {
            self.inner.disable_timer();
            self.inner
                .set_timer_divide(x2apic::lapic::TimerDivide::Div16);
            self.inner.set_timer_mode(TimerMode::OneShot);
            self.inner.set_timer_initial(initial);
        }
    }

    /// Current count of the timer.
    pub fn current(&self) -> u32 {
        // SAFETY: reading our own LAPIC timer's current count.
        unsafe { self.inner.timer_current() }
    }

    /// Stops the timer.
    pub fn stop_timer(&mut self) {
        // SAFETY: masking our own timer.
        unsafe {
            self.inner.disable_timer();
            self.inner.set_timer_initial(0);
        }
    }
}

/// Sends an NMI to every CPU but this one, without the per-CPU driver: the
/// fatal path uses it, possibly while this CPU's driver is borrowed.
pub fn nmi_all_others_raw() {
    // ICR: delivery mode NMI (0b100 << 8), level assert (1 << 14), shorthand
    // "all excluding self" (0b11 << 18).
    let icr: u32 = (0b100 << 8) | (1 << 14) | (0b11 << 18);
    if x2apic_mode() {
        // SAFETY: writing the x2APIC ICR MSR sends the IPI described above.
        unsafe { Msr::new(0x830).write(u64::from(icr)) };
    } else {
        reg_write(REG_ICR_LO, icr);
    }
}

/// Remaps the legacy PICs to 32–47 and masks every line: Wyvern routes device
/// interrupts through the I/O APIC only.
pub fn disable_legacy_pics() {
    // SAFETY: the PIC ports are the standard ones; remapping moves their vectors
    // off the exception range and masking silences them.
    unsafe {
        let mut pics = ChainedPics::new(PIC_BASE, PIC_BASE + 8);
        pics.initialize();
        pics.write_masks(0xff, 0xff);
    }
}

/// `IA32_APIC_BASE`.
const MSR_APIC_BASE: u32 = 0x1b;
/// `IA32_ARCH_CAPABILITIES`; bit 21 enumerates [`MSR_XAPIC_DISABLE_STATUS`].
const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
/// `IA32_XAPIC_DISABLE_STATUS`; bit 0: x2APIC is locked on.
const MSR_XAPIC_DISABLE_STATUS: u32 = 0xbd;

fn read_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no
    // side effects.
    unsafe { Msr::new(MSR_APIC_BASE).read() }
}

/// Whether this CPU's firmware locked its APIC in x2APIC mode.
fn x2apic_locked() -> bool {
    let leaf7 = cpu::cpuid(0, 0).eax >= 7 && cpu::cpuid(7, 0).edx & (1 << 29) != 0;
    if !leaf7 {
        return false;
    }
    // SAFETY: CPUID.7:EDX[29] says IA32_ARCH_CAPABILITIES exists; reading it
    // has no side effects.
    let caps = unsafe { Msr::new(MSR_ARCH_CAPABILITIES).read() };
    // SAFETY: ARCH_CAPABILITIES bit 21 says IA32_XAPIC_DISABLE_STATUS exists.
    caps & (1 << 21) != 0 && unsafe { Msr::new(MSR_XAPIC_DISABLE_STATUS).read() } & 1 != 0
}

/// How the boot CPU found its APIC, for the boot report.
static HANDOVER_STATE: AtomicU8 = AtomicU8::new(0);
/// Whether the boot CPU's firmware locked x2APIC on.
static HANDOVER_LOCKED: AtomicBool = AtomicBool::new(false);
/// Why `apic=` was not followed, if it was not.
static OVERRULED: Once<&'static str> = Once::new();
/// APs by the state they arrived in (indexed by `state_code`).
static AP_ARRIVALS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

fn state_code(s: State) -> u8 {
    match s {
        State::Disabled => 0,
        State::XApic => 1,
        State::X2Apic => 2,
        State::Invalid => 3,
    }
}

fn state_of(code: u8) -> State {
    match code {
        0 => State::Disabled,
        1 => State::XApic,
        2 => State::X2Apic,
        _ => State::Invalid,
    }
}

/// Walks this CPU's APIC from whatever state it is in to the chosen mode.
/// Returns the state it found. Any CPU, interrupts off, before it touches an
/// APIC register.
fn walk_to(mode: Mode, locked: bool) -> State {
    let base = read_base();
    let steps = apic_mode::transition(base, mode, locked).unwrap_or_else(|why| {
        panic!(
            "local APIC of CPU with IA32_APIC_BASE {base:#x}: {why} (the boot CPU chose {})",
            mode.name()
        )
    });
    for &v in steps.as_slice() {
        // SAFETY: `apic_mode::transition` gives only the SDM's legal moves,
        // keeping the base address and BSP bits; nothing uses the APIC
        // between the steps (interrupts are off and no register is read).
        unsafe { Msr::new(MSR_APIC_BASE).write(v) };
    }
    State::from_base(base)
}

/// Chooses the local APIC mode (`request`, the CPU, the firmware's hand-over,
/// the MADT's APIC ids), puts the boot CPU's APIC in it and maps the xAPIC
/// page if that is the mode. Boot CPU, once, interrupts off, before any other
/// APIC access.
pub fn init_global(platform: &crate::acpi::Platform, request: Request) {
    let base = read_base();
    let locked = x2apic_locked();
    let facts = apic_mode::Facts {
        cpu_has_x2apic: cpu::cpuid(1, 0).ecx & (1 << 21) != 0,
        handover: State::from_base(base),
        locked,
        max_apic_id: platform.cpus.iter().map(|c| c.apic_id).max().unwrap_or(0),
    };
    let choice = apic_mode::choose(facts, request);
    X2APIC.store(choice.mode == Mode::X2Apic, Ordering::Relaxed);
    HANDOVER_STATE.store(state_code(facts.handover), Ordering::Relaxed);
    HANDOVER_LOCKED.store(locked, Ordering::Relaxed);
    if let Some(why) = choice.overruled {
        OVERRULED.call_once(|| why);
    }
    walk_to(choice.mode, locked);
    if choice.mode == Mode::XApic {
        // The register page is where IA32_APIC_BASE says (the MADT's address
        // is the same on sane firmware; the MSR is what the CPU decodes).
        let pa = read_base() & 0x000f_ffff_ffff_f000;
        if pa != platform.local_apic_address {
            println!(
                "local APIC: IA32_APIC_BASE says {pa:#x}, the MADT {:#x}; using the MSR",
                platform.local_apic_address
            );
        }
        let va = mm::paging::map_mmio(PhysAddr::new(pa), 4096);
        XAPIC_VA.store(va.as_u64(), Ordering::Relaxed);
    }
    trap::register(VECTOR_SPURIOUS, spurious);
    trap::register(VECTOR_ERROR, error);
}

/// Puts the calling AP's APIC in the boot CPU's mode. Each AP, first thing
/// after the trampoline, interrupts off, before any other APIC access.
pub fn enter_mode() {
    let mode = if x2apic_mode() {
        Mode::X2Apic
    } else {
        Mode::XApic
    };
    let found = walk_to(mode, x2apic_locked());
    AP_ARRIVALS[usize::from(state_code(found))].fetch_add(1, Ordering::Relaxed);
}

/// One line for the boot report: the mode, the state the firmware handed
/// each CPU over in, and any request that was overruled.
pub fn describe() -> alloc::string::String {
    use core::fmt::Write;
    let found = state_of(HANDOVER_STATE.load(Ordering::Relaxed));
    let mode = if x2apic_mode() { "x2APIC" } else { "xAPIC" };
    let mut s = alloc::format!(
        "{mode} mode; firmware handed over the boot CPU in {}",
        found.name()
    );
    if HANDOVER_LOCKED.load(Ordering::Relaxed) {
        s.push_str(" (locked)");
    }
    for (code, n) in AP_ARRIVALS.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n > 0 {
            let _ = write!(s, ", {n} APs in {}", state_of(code as u8).name());
        }
    }
    if let Some(why) = OVERRULED.get() {
        let _ = write!(s, "; {why}");
    }
    s
}

/// Enables this CPU's local APIC (spurious, error and timer vectors; timer
/// stopped; LINT pins per the MADT: NMI where it says so, masked elsewhere).
/// Every CPU, once, with interrupts off.
pub fn init_local(tsc_deadline: bool) {
    let mut b = LocalApicBuilder::new();
    b.timer_vector(usize::from(VECTOR_TIMER))
        .error_vector(usize::from(VECTOR_ERROR))
        .spurious_vector(usize::from(VECTOR_SPURIOUS))
        .timer_mode(if tsc_deadline {
            TimerMode::TscDeadline
        } else {
            TimerMode::OneShot
        })
        .timer_initial(0);
    if !x2apic_mode() {
        b.set_xapic_base(XAPIC_VA.load(Ordering::Relaxed));
    }
    let mut inner = b.build().expect("local APIC configuration");
    // SAFETY: enabling this CPU's own APIC with vectors that have handlers; the
    // timer count is 0, so it does not fire until programmed.
    unsafe { inner.enable() };
    // LINT pins: the crate leaves both unmasked with vector 0 (a stray
    // ExtINT or fixed delivery would then raise an illegal-vector error):
    // mask both, then wire NMI where the MADT says.
    reg_write(REG_LINT0, LVT_MASKED);
    reg_write(REG_LINT1, LVT_MASKED);
    let platform = crate::acpi::platform();
    let uid = platform
        .cpus
        .iter()
        .find(|c| c.apic_id == local_id())
        .map(|c| c.uid);
    for n in &platform.lapic_nmis {
        if n.uid.is_none() || n.uid == uid {
            let mut lvt = 0b100 << 8; // delivery mode NMI
            if n.flags.active_low {
                lvt |= 1 << 13;
            }
            reg_write(if n.lint == 0 { REG_LINT0 } else { REG_LINT1 }, lvt);
        }
    }
    // Clear stale errors (write before read, per the SDM).
    reg_write(REG_ESR, 0);
    // SAFETY: this CPU's driver slot; interrupts are off and nothing else holds
    // it (see `with_lapic`).
    unsafe { *mycpu().lapic.get() = Some(LocalApic { inner }) };
}

/// The spurious vector. A true spurious interrupt sets no ISR bit and must not
/// be acknowledged; a fixed interrupt that was sent to this vector did set it
/// and needs its EOI. Checking the ISR bit handles both.
fn spurious(_frame: &mut TrapFrame) {
    if in_service(VECTOR_SPURIOUS) {
        mycpu().spurious_delivered.inc();
        eoi();
    } else {
        mycpu().spurious_true.inc();
    }
}

/// LAPIC error: report the error status and go on.
fn error(_frame: &mut TrapFrame) {
    reg_write(REG_ESR, 0);
    let esr = reg_read(REG_ESR);
    println!(
        "local APIC error on CPU {}: ESR={esr:#x}",
        crate::percpu::cpu_index()
    );
    eoi();
}
