//! x86_64: descriptor tables, trap entry, the CPU's registers, QEMU's debug devices.

pub mod backtrace;
pub mod cpu;
pub mod exception;
pub mod gdt;
pub mod idt;
pub mod qemu;
pub mod trap;

/// Static IST stacks of the boot CPU (the APs get guarded ones from `mm::stack`).
#[repr(C, align(16))]
struct IstStacks([[u8; 16384]; 3]);

static mut BSP_IST: IstStacks = IstStacks([[0; 16384]; 3]);

/// Loads the boot CPU's GDT, TSS and the IDT. Before anything can fault.
pub fn init_boot_cpu_traps() {
    let base = (&raw const BSP_IST) as u64;
    let top = |i: u64| ::x86_64::VirtAddr::new(base + (i + 1) * 16384);
    crate::percpu::mycpu().tables.load([top(0), top(1), top(2)]);
    idt::load();
}
