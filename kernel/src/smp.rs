//! The set of online CPUs, bringing the APs up, stopping them, and the idle
//! loop.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::{apic, cpu, smpboot};
use crate::percpu::{PerCpu, mycpu};

/// CPUs running Wyvern code.
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Number of CPUs online.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// Called by an AP once it runs Wyvern code with its own tables, APIC and
/// tick: it counts as online from here.
pub fn ap_online(block: &PerCpu) {
    block.online_tsc.store(cpu::rdtsc(), Ordering::Relaxed);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    block.set_online();
}

/// Marks the boot CPU online.
pub fn bsp_online() {
    let me = mycpu();
    me.online_tsc.store(cpu::rdtsc(), Ordering::Relaxed);
    me.set_online();
}

/// Starts the APs (boot CPU, once).
pub fn start_aps(platform: &crate::acpi::Platform) -> smpboot::Report {
    smpboot::start_aps(platform)
}

/// Stops every other CPU (the fatal path): an NMI to all others; their NMI
/// handler sees the boot is ending and halts them.
pub fn stop_others() {
    if online() > 1 {
        apic::nmi_all_others_raw();
    }
}

/// Sleeps the calling thread for `ticks` scheduler ticks.
///
/// Thread context; blocks.
pub fn wait_ticks(ticks: u64) {
    let ident = core::ptr::from_ref(lwkt::current::<crate::sched::X86>()) as usize;
    lwkt::tsleep::<crate::sched::X86>(ident, 0, "ticks", ticks);
}
