//! The set of online CPUs.
//!
//! Until the APs are started (the SMP bring-up), only the boot CPU is online.

use core::sync::atomic::{AtomicU32, Ordering};

/// CPUs running Wyvern code.
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Number of CPUs online.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// Stops every other online CPU (from the fatal path). With one CPU online
/// there is nobody to stop.
pub fn stop_others() {
    debug_assert_eq!(online(), 1, "stopping APs needs the NMI broadcast");
}
