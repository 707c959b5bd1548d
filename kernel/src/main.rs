//! Wyvern: an x86_64 microkernel whose scheduler is DragonFly BSD's LWKT.
//!
//! This crate is the only one that touches hardware. Boot order on the boot
//! CPU: per-CPU block and serial console first (so everything after can
//! print), then traps, boot options, memory, framebuffer, logging, ACPI; then
//! the mode the boot options ask for.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod acpi;
mod arch;
mod bootopts;
mod console;
mod fatal;
mod mm;
mod percpu;
mod selftest;
mod smp;
mod sync;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{BootInfo, entry_point};
use wyvern_abi::bootopt::Mode;

/// Where the bootloader puts things: the kernel at the top of the address space
/// (the kernel code model), everything it maps dynamically (physical memory,
/// boot info, framebuffer, stack) in the first 16 TiB of the kernel half, clear
/// of the kernel's own regions (see `mm`).
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.kernel_base = Mapping::FixedAddress(0xffff_ffff_8000_0000);
    config.mappings.dynamic_range_start = Some(0xffff_8000_0000_0000);
    config.mappings.dynamic_range_end = Some(0xffff_9000_0000_0000);
    config.kernel_stack_size = 256 * 1024;
    config
};

entry_point!(kmain, config = &BOOTLOADER_CONFIG);

fn kmain(boot_info: &'static mut BootInfo) -> ! {
    percpu::init_bsp();
    console::init_serial();
    mm::early_init(boot_info);
    arch::init_boot_cpu_traps();
    println!("\nWyvern {} booting", env!("CARGO_PKG_VERSION"));

    let opts = bootopts::load();
    let framebuffer = boot_info.framebuffer.take();
    let rsdp = boot_info.rsdp_addr.into_option();
    let boot_info: &'static BootInfo = boot_info;
    mm::init(boot_info);
    if opts.framebuffer
        && let Some(fb) = framebuffer
    {
        let info = fb.info();
        console::attach_framebuffer(console::fb::FbConsole::new(fb.into_buffer(), info));
    }
    console::log::init(opts.log_level);

    let platform = acpi::init(rsdp.expect("the bootloader found no RSDP"));
    banner(platform);

    match opts.mode {
        Mode::Test(name) => selftest::run(name),
        Mode::Interactive => interactive(),
        Mode::Bench(name) | Mode::Stress(name) => {
            println!("mode `{}` is not available in this kernel", name);
            arch::qemu::exit(arch::qemu::ExitCode::Failure)
        }
    }
}

fn banner(platform: &acpi::Platform) {
    let frames = mm::frame::stats();
    let mut brand = [0; 48];
    println!(
        "Wyvern {} on {}: {} MiB usable, {} CPUs in ACPI, console {}",
        env!("CARGO_PKG_VERSION"),
        arch::cpu::brand_string(&mut brand),
        frames.total_bytes() >> 20,
        platform.enabled_cpus().count(),
        if console::has_serial() {
            "COM1 + framebuffer"
        } else {
            "framebuffer"
        },
    );
}

fn interactive() -> ! {
    println!("boot complete; nothing more to run yet, halting");
    loop {
        arch::cpu::enable_and_halt();
    }
}
