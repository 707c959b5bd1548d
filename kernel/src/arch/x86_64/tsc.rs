//! The time-stamp counter: its frequency, and time and delays from it.
//!
//! # Where the frequency comes from
//!
//! CPUID leaf 0x15 (TSC/crystal ratio and crystal frequency) when the CPU
//! reports it, then leaf 0x16 (base frequency); failing both, it is measured
//! over 10 ms of a reference clock, the first of these the machine has:
//!
//! 1. the HPET (from its ACPI table; absent with `-machine q35,hpet=off` and
//!    on many laptops);
//! 2. the ACPI PM timer (from the FADT: 3.579545 MHz, 24 or 32 bits);
//! 3. the PIT's channel 2 (1.193182 MHz; absent with `pit=off`, and on
//!    machines whose chipset dropped the 8254).
//!
//! A reference is trusted only once it is seen to count, and every wait on
//! it is bounded in TSC ticks ([`GIVE_UP`]), so a clock that is listed but
//! dead, or a port that reads all ones because nothing is behind it, costs a
//! fraction of a second and a line in the log, never a hang. A measured
//! frequency outside [`PLAUSIBLE`] is refused the same way. With no
//! reference at all the kernel assumes [`ASSUMED_HZ`] and says so: times
//! are then wrong by the ratio, but the machine runs.
//!
//! Under QEMU's `-icount` every one of these clocks advances with guest
//! instructions, so the measured frequency is the guest's own and time
//! computed from the TSC stays consistent with the timers.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::{cpu, hpet};
use wyvern_abi::bootopt::TscRef;

use crate::acpi::PmTimerInfo;
use crate::println;

/// Where the frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// CPUID leaf 0x15.
    Cpuid15,
    /// CPUID leaf 0x16 base frequency.
    Cpuid16,
    /// Measured against the HPET.
    Hpet,
    /// Measured against the ACPI PM timer.
    PmTimer,
    /// Measured against PIT channel 2.
    Pit,
    /// No reference clock: [`ASSUMED_HZ`].
    Assumed,
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

/// TSC ticks after which a reference clock that has not delivered its
/// window is given up: 2^33, about 4 s at 2 GHz and 0.9 s at 10 GHz.
const GIVE_UP: u64 = 1 << 33;
/// TSC ticks within which a reference must be seen to change at all: 2^27,
/// about 65 ms at 2 GHz — thousands of periods of the slowest one (the PIT).
const STUCK: u64 = 1 << 27;
/// Frequencies a TSC may have, in Hz; a measurement outside is refused.
const PLAUSIBLE: core::ops::RangeInclusive<u64> = 100_000_000..=50_000_000_000;
/// What the kernel assumes when it has nothing to measure against.
pub const ASSUMED_HZ: u64 = 2_000_000_000;

/// A free-running counter of known frequency.
trait Reference {
    /// Its name, for the log.
    const NAME: &'static str;
    /// Counts per second.
    fn hz(&self) -> u64;
    /// The counter's width, as a mask.
    fn mask(&self) -> u64;
    /// The counter now (counting up).
    fn read(&self) -> u64;
}

impl Reference for hpet::Hpet {
    const NAME: &'static str = "HPET";
    fn hz(&self) -> u64 {
        1_000_000_000_000_000 / self.period_fs()
    }
    fn mask(&self) -> u64 {
        self.elapsed(0, u64::MAX)
    }
    fn read(&self) -> u64 {
        self.counter()
    }
}

/// The ACPI PM timer.
struct PmTimer(PmTimerInfo, u64);

impl Reference for PmTimer {
    const NAME: &'static str = "ACPI PM timer";
    fn hz(&self) -> u64 {
        3_579_545
    }
    fn mask(&self) -> u64 {
        if self.0.wide { 0xffff_ffff } else { 0xff_ffff }
    }
    fn read(&self) -> u64 {
        let raw = match self.0.port {
            // SAFETY: the FADT says the PM timer is this 32-bit read-only
            // I/O register.
            Some(port) => unsafe { Port::<u32>::new(port).read() },
            // SAFETY: `self.1` maps the FADT's PM timer register, uncached.
            None => unsafe { core::ptr::read_volatile(self.1 as *const u32) },
        };
        u64::from(raw) & self.mask()
    }
}

/// PIT channel 2, counting down from 0xffff in mode 2 (rate generator),
/// read with the latch command; its gate held high through port 0x61 with
/// the speaker off.
struct Pit;

/// PIT input clock.
const PIT_HZ: u64 = 1_193_182;

impl Pit {
    /// Starts channel 2. Boot CPU, before the measurement.
    fn start() -> Pit {
        let mut gate = Port::<u8>::new(0x61);
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch2 = Port::<u8>::new(0x42);
        // On a machine without a PIT the writes go nowhere and reads give
        // all ones, which the measurement refuses as a counter that stops.
        // SAFETY: ports 0x42/0x43/0x61 are the PIT and the system control
        // port on a PC; channel 2 drives only the speaker, kept off.
        unsafe {
            let g = gate.read();
            gate.write((g & !0x02) | 0x01); // gate high, speaker off
            cmd.write(0b1011_0100); // channel 2, lobyte/hibyte, mode 2, binary
            ch2.write(0xff);
            ch2.write(0xff);
        }
        Pit
    }
}

impl Reference for Pit {
    const NAME: &'static str = "PIT";
    fn hz(&self) -> u64 {
        PIT_HZ
    }
    fn mask(&self) -> u64 {
        0xffff
    }
    fn read(&self) -> u64 {
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch2 = Port::<u8>::new(0x42);
        // SAFETY: the latch command for channel 2, then its count, low byte
        // first; no other CPU uses the PIT during calibration.
        let count = unsafe {
            cmd.write(0b1000_0000);
            let lo = ch2.read();
            let hi = ch2.read();
            u16::from_le_bytes([lo, hi])
        };
        // Counting down: turn it into a count up.
        u64::from(0xffff - count)
    }
}

/// Measures the TSC over about 10 ms of `r`, or says why not.
fn measure<R: Reference>(r: &R) -> Result<u64, &'static str> {
    let window = (r.hz() / 100).min(r.mask() / 2);
    let c0 = r.read();
    let t0 = cpu::rdtsc();
    let mut moved = false;
    loop {
        let c = r.read();
        let t = cpu::rdtsc();
        let elapsed = c.wrapping_sub(c0) & r.mask();
        if elapsed >= window {
            let hz = u128::from(t - t0) * u128::from(r.hz()) / u128::from(elapsed);
            let hz = u64::try_from(hz).unwrap_or(u64::MAX);
            return if PLAUSIBLE.contains(&hz) {
                Ok(hz)
            } else {
                Err("gives an implausible TSC frequency")
            };
        }
        moved |= elapsed != 0;
        if !moved && t - t0 > STUCK {
            return Err("does not count");
        }
        if t - t0 > GIVE_UP {
            return Err("counts too slowly");
        }
        cpu::pause();
    }
}

/// `measure`, logging a refusal.
fn try_reference<R: Reference>(r: &R) -> Option<u64> {
    measure(r)
        .inspect_err(|why| println!("tsc: the {} {why}; not used", R::NAME))
        .ok()
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

/// Determines the TSC frequency from CPUID or the first reference clock
/// that works (module docs). Boot CPU, once, before the timers start.
///
/// `start` skips the sources before it (the boot option `tscref=`, which
/// lets a test exercise each).
pub fn calibrate(
    hpet: Option<&hpet::Hpet>,
    pm_timer: Option<PmTimerInfo>,
    start: TscRef,
) -> (u64, Source) {
    let hpet = hpet.filter(|_| matches!(start, TscRef::Auto | TscRef::Hpet));
    let pm_timer = pm_timer.filter(|_| !matches!(start, TscRef::Pit));
    let (hz, src) = from_cpuid()
        .filter(|_| start == TscRef::Auto)
        .or_else(|| {
            let h = hpet.filter(|h| {
                let ok = (1..=100_000_000).contains(&h.period_fs());
                if !ok {
                    println!(
                        "tsc: the HPET reports a period of {} fs; not used",
                        h.period_fs()
                    );
                }
                ok
            })?;
            try_reference(h).map(|hz| (hz, Source::Hpet))
        })
        .or_else(|| {
            let t = pm_timer?;
            let va = t.mmio.map_or(0, |pa| {
                crate::mm::paging::map_mmio(x86_64::PhysAddr::new(pa), 4).as_u64()
            });
            try_reference(&PmTimer(t, va)).map(|hz| (hz, Source::PmTimer))
        })
        .or_else(|| try_reference(&Pit::start()).map(|hz| (hz, Source::Pit)))
        .unwrap_or_else(|| {
            println!(
                "tsc: no clock to measure the TSC against (CPUID gives no frequency, and no \
                 HPET, ACPI PM timer or PIT worked); assuming {} MHz: times will be off by the ratio",
                ASSUMED_HZ / 1_000_000
            );
            (ASSUMED_HZ, Source::Assumed)
        });
    TSC_HZ.store(hz, Ordering::Relaxed);
    (hz, src)
}

/// Whether the TSC runs at a constant rate in every P/C-state (CPUID
/// 0x8000_0007 EDX bit 8).
pub fn invariant() -> bool {
    cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0007 && cpu::cpuid(0x8000_0007, 0).edx & (1 << 8) != 0
}
