//! x86_64: descriptor tables, trap entry, the CPU's registers, QEMU's debug devices.

pub mod apic;
pub mod apic_mode;
pub mod backtrace;
pub mod cpu;
pub mod exception;
pub mod fpu;
pub mod gdt;
pub mod hpet;
pub mod idt;
pub mod ioapic;
pub mod protect;
pub mod qemu;
pub mod smpboot;
pub mod switch;
pub mod syscall;
pub mod timer;
pub mod trap;
pub mod tsc;
pub mod usercopy;

/// Static IST stacks of the boot CPU (the APs get guarded ones from `mm::stack`).
#[repr(C, align(16))]
struct IstStacks([[u8; 16384]; gdt::IST_STACKS]);

static mut BSP_IST: IstStacks = IstStacks([[0; 16384]; gdt::IST_STACKS]);

/// Loads the boot CPU's GDT, TSS and the IDT. Before anything can fault.
pub fn init_boot_cpu_traps() {
    let base = (&raw const BSP_IST) as u64;
    let top = |i: u64| ::x86_64::VirtAddr::new(base + (i + 1) * 16384);
    crate::percpu::mycpu()
        .tables
        .load([top(0), top(1), top(2), top(3)]);
    idt::load();
}

/// Prepares this CPU to run user threads: protections (SMEP, SMAP, UMIP),
/// the FPU/SSE/XSAVE state, `syscall`. Every CPU, once, after its GDT.
pub fn init_user_support() {
    protect::init_local();
    fpu::init_local();
    syscall::init_local();
}

/// What `init_machine` set up.
pub struct Machine {
    pub tsc_hz: u64,
    pub tsc_source: tsc::Source,
    pub timer: timer::Mode,
}

/// Interrupt controllers, clocks and the boot CPU's tick; ends with interrupts
/// enabled on the boot CPU. Boot CPU, once, after ACPI.
pub fn init_machine(
    platform: &crate::acpi::Platform,
    timer_choice: wyvern_abi::bootopt::TimerChoice,
    apic_choice: wyvern_abi::bootopt::ApicChoice,
    tscref: wyvern_abi::bootopt::TscRef,
) -> Machine {
    if platform.has_8259 {
        apic::disable_legacy_pics();
        tsc::stop_pit_channel0();
    }
    use wyvern_abi::bootopt::ApicChoice;
    let request = match apic_choice {
        ApicChoice::Auto => apic_mode::Request::Auto,
        ApicChoice::XApic => apic_mode::Request::XApic,
        ApicChoice::X2Apic => apic_mode::Request::X2Apic,
    };
    apic::init_global(platform, request);
    crate::percpu::set_bsp_apic_id(apic::local_id());
    ioapic::init(platform);
    let hpet = platform.hpet_base.map(hpet::Hpet::new);
    let (tsc_hz, tsc_source) = tsc::calibrate(hpet.as_ref(), platform.pm_timer, tscref);
    let timer = timer::select(timer_choice);
    apic::init_local(timer::uses_deadline());
    timer::init_global();
    timer::start_local();
    crate::smp::bsp_online();
    cpu::interrupts_enable();
    Machine {
        tsc_hz,
        tsc_source,
        timer,
    }
}
