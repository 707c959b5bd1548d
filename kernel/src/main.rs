//! Wyvern: an x86_64 microkernel whose scheduler is DragonFly BSD's LWKT.
//!
//! This crate is the only one that touches hardware. Boot order on the boot
//! CPU: per-CPU block and serial console first (so everything after can
//! print), then traps, boot options, memory, framebuffer, logging, ACPI; then
//! the mode the boot options ask for.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
// `Arc::try_new` and friends: a system call's allocations fail with
// `NoMemory` instead of aborting (the toolchain is pinned to a nightly).
#![feature(allocator_api)]
// The syscall handler saves no register the entry saved already.
#![feature(rust_preserve_none_cc)]

extern crate alloc;

mod acpi;
mod arch;
mod bench;
mod bootopts;
mod console;
mod fatal;
mod intr;
mod mm;
mod percpu;
mod sched;
mod selftest;
mod smp;
mod stats;
mod stress;
mod sync;
mod trace;
mod user;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{BootInfo, entry_point};
use wyvern_abi::bootopt::Mode;

use crate::sched::X86;

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
    arch::tsc::mark_boot();
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
    if let Some(fb) = framebuffer {
        let info = fb.info();
        // For a user terminal (`HWINFO`), whether or not the kernel draws.
        let va = fb.buffer().as_ptr() as u64;
        if let (Some(pa), Some(format)) = (
            mm::paging::translate_current(va),
            user::device::fb_format(info.pixel_format),
        ) {
            user::device::set_framebuffer(wyvern_abi::syscall::FbInfo {
                phys: pa.as_u64(),
                size: info.byte_len as u64,
                width: info.width as u64,
                height: info.height as u64,
                stride: info.stride as u64,
                bytes_per_pixel: info.bytes_per_pixel as u64,
                format,
            });
        }
        if opts.framebuffer {
            console::attach_framebuffer(console::fb::FbConsole::new(fb.into_buffer(), info));
        }
    }
    console::log::init(opts.log_level);

    user::ramdisk::init(boot_info.ramdisk_addr.into_option(), boot_info.ramdisk_len);
    // The root resource account, from the memory there is (before any
    // process: no first spawn pays for it).
    let _ = user::account::root();
    let platform = acpi::init(rsdp.expect("the bootloader found no RSDP"));
    let machine = arch::init_machine(platform, opts.timer, opts.apic, opts.tscref);
    if !opts.ipc_fast {
        user::ipc::FAST_PATHS.store(false, core::sync::atomic::Ordering::Relaxed);
        println!("IPC fast paths off: every message takes the general path");
    }
    arch::init_user_support();
    let report = smp::start_aps(platform);
    println!("local APIC: {}", arch::apic::describe());
    lwkt::start_cpu::<X86>();
    intr::init();
    console::input::init(platform);
    banner(platform, &machine, &report);

    // The boot thread becomes this CPU's idle thread; what the boot is for
    // runs in a thread of its own.
    lwkt::Builder::new("main")
        .spawn::<X86>(move || match opts.mode {
            Mode::Test(name) => selftest::run(name),
            Mode::Interactive => interactive(),
            Mode::Stress(name) => {
                let Some(kind) = stress::Kind::parse(name) else {
                    println!("unknown stress workload `{name}` (token, sleep, nop)");
                    arch::qemu::exit(arch::qemu::ExitCode::Failure)
                };
                let seconds = opts.param("seconds").unwrap_or(5);
                let results = stress::run(kind, seconds);
                stress::print(kind, seconds, &results);
                stats::dump();
                arch::qemu::exit(arch::qemu::ExitCode::Success)
            }
            Mode::Bench(set) => bench::run(set, &opts),
        })
        .expect("no memory for the main thread");
    lwkt::idle_loop::<X86>()
}

fn banner(platform: &acpi::Platform, machine: &arch::Machine, report: &arch::smpboot::Report) {
    let frames = mm::frame::stats();
    let mut brand = [0; 48];
    println!(
        "Wyvern {} on {}: {} MiB usable, console {}",
        env!("CARGO_PKG_VERSION"),
        arch::cpu::brand_string(&mut brand),
        frames.total_bytes() >> 20,
        if console::has_serial() {
            "COM1 + framebuffer"
        } else {
            "framebuffer"
        },
    );
    println!(
        "{} of {} CPUs online ({} local APICs); tick: {:?} timer at {} Hz; TSC {}.{:03} MHz from {:?}{}",
        smp::online(),
        platform.enabled_cpus().count(),
        if arch::apic::x2apic_mode() {
            "x2APIC"
        } else {
            "xAPIC"
        },
        machine.timer,
        arch::timer::HZ,
        machine.tsc_hz / 1_000_000,
        machine.tsc_hz / 1_000 % 1_000,
        machine.tsc_source,
        if arch::tsc::invariant() {
            ", invariant"
        } else {
            ""
        },
    );
    for c in percpu::online() {
        println!(
            "  cpu{:<3} apic id {:<4}{}",
            c.index(),
            c.apic_id(),
            if c.index() == 0 { " (boot CPU)" } else { "" }
        );
    }
    println!(
        "user mode: {}; FPU state {}; syscall/sysret",
        arch::protect::describe(),
        arch::fpu::describe()
    );
    let last = percpu::online()
        .map(|c| c.online_tsc.load(core::sync::atomic::Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let since_entry = last.saturating_sub(arch::tsc::boot_tsc());
    println!(
        "bring-up: {} of {} APs answered{} in {} us; all CPUs online {} us after kernel entry (TSC delta {})",
        report.online,
        report.asked,
        if report.missing.is_empty() {
            alloc::string::String::new()
        } else {
            alloc::format!(" (APIC ids {:?} did not)", report.missing)
        },
        arch::tsc::ticks_to_ns(report.tsc_ticks) / 1000,
        arch::tsc::ticks_to_ns(since_entry) / 1000,
        since_entry,
    );
}

/// The interactive boot: the process manager starts the user-mode
/// consoles (COM1's driver if there is a COM1, the framebuffer terminal
/// with the PS/2 and USB keyboard drivers), a shell on each, and the power
/// server; when a shell quits, the run ends. If the process manager cannot
/// start, the kernel's console keys serve on COM1.
fn interactive() {
    let services: &[u8] = if console::has_serial() {
        b"console shell screen keyboard usb power"
    } else {
        b"screen keyboard usb power"
    };
    match user::process::spawn_procman("procman", services) {
        Ok(pid) => {
            println!("started procman (pid {pid}): consoles and shells");
            let st = user::process::wait(0, pid, false).map(|(_, st)| st);
            user::process::reap(0, pid);
            println!("procman ended: {st:?}");
            arch::qemu::exit(arch::qemu::ExitCode::Success);
        }
        Err(e) => println!("cannot start procman: {e}"),
    }
    if console::has_serial() {
        println!("the kernel console keys serve");
        console::keys::run();
    }
    println!("boot complete; no console for a shell, idling");
}
