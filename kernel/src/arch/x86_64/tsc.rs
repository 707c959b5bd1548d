//! The time-stamp counter: its frequency, and time and delays from it.
//!
//! The frequency comes from CPUID leaf 0x15 (TSC/crystal ratio and crystal
//! frequency) when the CPU reports it, then leaf 0x16 (base frequency); failing
//! both, it is measured against the HPET, and failing that against the PIT's
//! channel 2. Under QEMU's `-icount` every one of these clocks advances with
//! guest instructions, so the measured frequency is the guest's own and time
//! computed from the TSC stays consistent with the timers.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::{cpu, hpet};

/// Where the frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// CPUID leaf 0x15.
    Cpuid15,
    /// CPUID leaf 0x16 base frequency.
    Cpuid16,
    /// Measured against the HPET.
    Hpet,
    /// Measured against PIT channel 2.
    Pit,
}

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC at kernel entry (for uptime and the bring-up figure).
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

/// Records the TSC at kernel entry. First thing at boot.
pub fn mark_boot() {
    BOOT_TSC.store(cpu::rdtsc(), Ordering::Relaxed);
}

/// TSC value at kernel entry.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// TSC ticks per second (0 before calibration).
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since kernel entry.
pub fn uptime_ns() -> u64 {
    ticks_to_ns(cpu::rdtsc().saturating_sub(boot_tsc()))
}

/// Converts TSC ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => ((u128::from(ticks) * 1_000_000_000) / u128::from(hz)) as u64,
    }
}

/// TSC ticks in `ns` nanoseconds.
pub fn ns_to_ticks(ns: u64) -> u64 {
    ((u128::from(ns) * u128::from(hz())) / 1_000_000_000) as u64
}

/// Spins (with `pause`) for at least `us` microseconds. Only for the short,
/// fixed waits the hardware demands (AP start-up).
pub fn delay_us(us: u64) {
    let end = cpu::rdtsc() + ns_to_ticks(us * 1000);
    while cpu::rdtsc() < end {
        cpu::pause();
    }
}

fn from_cpuid() -> Option<(u64, Source)> {
    let max = cpu::cpuid(0, 0).eax;
    if max >= 0x15 {
        let r = cpu::cpuid(0x15, 0);
        let (den, num, crystal) = (u64::from(r.eax), u64::from(r.ebx), u64::from(r.ecx));
        if den != 0 && num != 0 && crystal != 0 {
            return Some((crystal * num / den, Source::Cpuid15));
        }
    }
    if max >= 0x16 {
        let mhz = u64::from(cpu::cpuid(0x16, 0).eax & 0xffff);
        if mhz != 0 {
            return Some((mhz * 1_000_000, Source::Cpuid16));
        }
    }
    None
}

/// Measures the TSC over ~10 ms of HPET time.
fn against_hpet(h: &hpet::Hpet) -> u64 {
    let period_fs = h.period_fs();
    let ticks = 10_000_000_000_000 / period_fs; // 10 ms in HPET ticks
    let h0 = h.counter();
    let t0 = cpu::rdtsc();
    let mut h1 = h0;
    while h.elapsed(h0, h1) < ticks {
        cpu::pause();
        h1 = h.counter();
    }
    let t1 = cpu::rdtsc();
    let elapsed_fs = u128::from(h.elapsed(h0, h1)) * u128::from(period_fs);
    ((u128::from(t1 - t0) * 1_000_000_000_000_000) / elapsed_fs) as u64
}

/// PIT input clock.
const PIT_HZ: u64 = 1_193_182;

/// Measures the TSC over ~10 ms of PIT channel 2 (gate via port 0x61).
fn against_pit() -> u64 {
    let count: u16 = (PIT_HZ / 100) as u16;
    let mut gate = Port::<u8>::new(0x61);
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42/0x43/0x61 are the PIT and the system control port on
    // every PC; channel 2 drives only the speaker, whose output we keep off.
    unsafe {
        let g = gate.read();
        gate.write((g & !0x02) | 0x01); // gate high, speaker off
        cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(count as u8);
        ch2.write((count >> 8) as u8);
        let t0 = cpu::rdtsc();
        while gate.read() & 0x20 == 0 {
            cpu::pause();
        }
        let t1 = cpu::rdtsc();
        (t1 - t0) * PIT_HZ / u64::from(count)
    }
}

/// Shuts down PIT channel 0, which the firmware leaves ticking (its line is
/// masked, but the counter keeps running, and under QEMU every period is a
/// timer event in the emulator): one-shot mode with a zero count, as Linux's
/// `pit_shutdown` does. Boot CPU, once, after the legacy PICs are masked.
pub fn stop_pit_channel0() {
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch0 = Port::<u8>::new(0x40);
    // SAFETY: the PIT's command and channel 0 ports on every PC; channel 0's
    // output goes to IRQ 0, which nothing uses (the PICs are masked and the
    // I/O APIC pin stays masked).
    unsafe {
        cmd.write(0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
        ch0.write(0);
        ch0.write(0);
    }
}

/// Determines the TSC frequency. Boot CPU, once, before the timers start.
pub fn calibrate(hpet: Option<&hpet::Hpet>) -> (u64, Source) {
    let (hz, src) = from_cpuid()
        .or_else(|| hpet.map(|h| (against_hpet(h), Source::Hpet)))
        .unwrap_or_else(|| (against_pit(), Source::Pit));
    TSC_HZ.store(hz, Ordering::Relaxed);
    (hz, src)
}

/// Whether the TSC runs at a constant rate in every P/C-state (CPUID
/// 0x8000_0007 EDX bit 8).
pub fn invariant() -> bool {
    cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0007 && cpu::cpuid(0x8000_0007, 0).edx & (1 << 8) != 0
}
