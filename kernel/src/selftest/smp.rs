//! SMP bring-up tests: every CPU online with its own block, tick and APIC;
//! idle CPUs halt; COM1 input through the I/O APIC; NMIs and spurious vectors
//! survived.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{Expect, SelfTest};
use crate::arch::apic::{self, VECTOR_SPURIOUS, VECTOR_TEST, with_lapic};
use crate::arch::trap::{self, TrapFrame};
use crate::arch::{cpu, tsc};
use crate::percpu::{self, MAX_CPUS, mycpu};

use crate::{check, console, println, smp};

pub static TESTS: &[SelfTest] = &[
    SelfTest {
        name: "smp",
        expect: Expect::Return,
        run: smp_online,
    },
    SelfTest {
        name: "cpumap",
        expect: Expect::Return,
        run: cpumap,
    },
    SelfTest {
        name: "nmi",
        expect: Expect::Return,
        run: nmi,
    },
    SelfTest {
        name: "serial-rx",
        expect: Expect::Return,
        run: serial_rx,
    },
    SelfTest {
        name: "many-cpus",
        expect: Expect::Return,
        run: many_cpus,
    },
];

/// Every CPU the MADT lists is online, has ticked, and halts when idle.
fn smp_online() {
    let listed = crate::acpi::platform().enabled_cpus().count();
    check!(
        smp::online() as usize == listed,
        "{} CPUs online, MADT lists {listed}",
        smp::online()
    );
    check!(percpu::online().count() == listed, "online blocks != MADT");
    // Per CPU at the start of the window: ticks, idle halts, traps.
    let before: alloc::vec::Vec<(u64, u64, u64)> = percpu::all()
        .map(|c| {
            let halts = c.lwkt.stats.idle_halts.get();
            (c.ticks.get(), halts, c.traps.get())
        })
        .collect();
    smp::wait_ticks(30);
    for c in percpu::online() {
        // Halts are read before traps: both only grow, and each halt but the
        // one in progress was ended by a trap, so `halts <= traps + 1` holds for
        // a pair read in this order (and read in the opposite order at the
        // start of the window).
        let halts = c.lwkt.stats.idle_halts.get();
        let traps = c.traps.get();
        let ticks = c.ticks.get();
        check!(ticks > 0, "cpu{} never ticked", c.index());
        let (t0, h0, x0) = before[c.index() as usize];
        let (dt, dh, dx) = (ticks - t0, halts - h0, traps - x0);
        // Over 30 ticks of the boot CPU, each other CPU must have ticked at least
        // half as often (timers are independent but run at one rate).
        check!(
            dt >= 15,
            "cpu{} ticked {dt} times in 30 boot-CPU ticks",
            c.index()
        );
        if c.index() != 0 {
            // An idle CPU halts on every pass of its idle loop, and only an
            // interrupt ends a halt: more passes than interrupts means it spun.
            check!(
                dh <= dx + 1,
                "cpu{} passed its idle loop {dh} times for {dx} interrupts: idle is spinning",
                c.index()
            );
        }
        println!(
            "cpu{}: apic {} ticks {ticks} (+{dt}) idle halts +{dh} interrupts +{dx}",
            c.index(),
            c.apic_id()
        );
    }
}

/// What the test IPI saw on each CPU: the block's index and APIC id, the id the
/// local APIC reports, the id CPUID reports.
static SEEN_BLOCK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static SEEN_LAPIC: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
static SEEN_CPUID: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
static TEST_IPIS: AtomicU32 = AtomicU32::new(0);

fn cpuid_apic_id() -> u32 {
    crate::arch::apic_mode::cpuid_apic_id(|leaf, sub| {
        let r = cpu::cpuid(leaf, sub);
        (r.eax, r.ebx, r.ecx, r.edx)
    })
}

fn record_identity(_frame: &mut TrapFrame) {
    let me = mycpu();
    let i = me.index() as usize;
    SEEN_BLOCK[i].store(
        (u64::from(me.index()) << 32) | u64::from(me.apic_id()),
        Ordering::Relaxed,
    );
    SEEN_LAPIC[i].store(apic::local_id(), Ordering::Relaxed);
    SEEN_CPUID[i].store(cpuid_apic_id(), Ordering::Relaxed);
    TEST_IPIS.fetch_add(1, Ordering::Release);
    apic::eoi();
}

/// Waits (sleeping a tick at a time) until `cond` holds or `ms` pass; returns
/// whether it held.
pub(super) fn wait_for(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = cpu::rdtsc() + tsc::ns_to_ticks(ms * 1_000_000);
    while !cond() {
        if cpu::rdtsc() > end {
            return false;
        }
        smp::wait_ticks(1);
    }
    true
}

/// Each CPU, interrupted by an IPI sent to the APIC id its block records,
/// finds its own block through GS and agrees with its local APIC and CPUID.
fn cpumap() {
    trap::register(VECTOR_TEST, record_identity);
    let n = smp::online();
    for c in percpu::online() {
        with_lapic(|l| l.send_ipi(c.apic_id(), VECTOR_TEST));
    }
    check!(
        wait_for(5000, || TEST_IPIS.load(Ordering::Acquire) == n),
        "{} of {n} CPUs answered the test IPI",
        TEST_IPIS.load(Ordering::Acquire)
    );
    let madt: alloc::vec::Vec<u32> = crate::acpi::platform()
        .enabled_cpus()
        .map(|c| c.apic_id)
        .collect();
    let mut ids = alloc::vec::Vec::new();
    for c in percpu::online() {
        let i = c.index() as usize;
        let block = SEEN_BLOCK[i].load(Ordering::Relaxed);
        let (idx, apic) = ((block >> 32) as u32, block as u32);
        let lapic = SEEN_LAPIC[i].load(Ordering::Relaxed);
        let cpuid = SEEN_CPUID[i].load(Ordering::Relaxed);
        check!(
            idx == c.index(),
            "IPI for cpu{} ran with the block of cpu{idx}",
            c.index()
        );
        check!(
            apic == c.apic_id() && lapic == apic && cpuid == apic,
            "cpu{}: block apic id {apic}, LAPIC says {lapic}, CPUID says {cpuid}",
            c.index()
        );
        check!(
            madt.contains(&apic),
            "cpu{} apic id {apic} is not in the MADT",
            c.index()
        );
        ids.push(apic);
    }
    ids.sort_unstable();
    ids.dedup();
    check!(ids.len() == n as usize, "APIC ids are not distinct");
    let dense = percpu::online().map(|c| c.index()).eq(0..n);
    check!(dense, "CPU indices are not 0..{n}");
    println!(
        "cpumap: {n} CPUs, indices 0..{n}, APIC ids {}",
        ranges(&ids)
    );
}

/// `ids` (sorted, distinct) as runs: `0-7, 256`.
fn ranges(ids: &[u32]) -> alloc::string::String {
    use core::fmt::Write;
    let mut out = alloc::string::String::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        let sep = if out.is_empty() { "" } else { ", " };
        let _ = if j > i {
            write!(out, "{sep}{}-{}", ids[i], ids[j])
        } else {
            write!(out, "{sep}{}", ids[i])
        };
        i = j + 1;
    }
    out
}

/// NMIs to every CPU are counted and survived; an interrupt delivered on the
/// spurious vector is acknowledged; afterwards every CPU still ticks.
fn nmi() {
    let before: alloc::vec::Vec<u64> = percpu::online().map(|c| c.nmis.get()).collect();
    for c in percpu::online() {
        with_lapic(|l| l.send_nmi(c.apic_id()));
    }
    let all_got_one = || {
        percpu::online()
            .zip(&before)
            .all(|(c, &b)| c.nmis.get() > b)
    };
    check!(wait_for(5000, all_got_one), "not every CPU took its NMI");

    let delivered = apic::spurious_delivered();
    with_lapic(|l| l.send_self(VECTOR_SPURIOUS));
    check!(
        wait_for(1000, || apic::spurious_delivered() > delivered),
        "the interrupt sent to the spurious vector was not seen"
    );
    check!(
        !apic::in_service(VECTOR_SPURIOUS),
        "spurious vector still in service"
    );

    let ticks: alloc::vec::Vec<u64> = percpu::online().map(|c| c.ticks.get()).collect();
    smp::wait_ticks(5);
    for (c, t) in percpu::online().zip(ticks) {
        check!(
            c.ticks.get() > t,
            "cpu{} stopped ticking after the NMI",
            c.index()
        );
    }
    println!(
        "nmi: {} CPUs took an NMI and go on; spurious vector: {} delivered, {} true spurious",
        smp::online(),
        apic::spurious_delivered(),
        apic::spurious_true()
    );
}

/// cpusyncs run by each CPU, for `many_cpus`.
static SYNCED: crate::sync::Once<alloc::vec::Vec<AtomicU64>> = crate::sync::Once::new();

fn count_sync(_: usize) {
    SYNCED.get().expect("SYNCED")[percpu::cpu_index() as usize].fetch_add(1, Ordering::Relaxed);
    cpu::flush_tlb_local();
}

/// A big machine end to end, in one boot (each boot of hundreds of CPUs
/// costs a minute and more under TCG): every CPU online and ticking, each
/// reached by an IPI at the APIC id its block records, shootdowns (cpusyncs
/// that reload CR3) started from the first, the last and a middle CPU
/// reaching every CPU, and COM1 input still arriving through the I/O APIC.
fn many_cpus() {
    smp_online();
    cpumap();
    let n = smp::online() as usize;
    SYNCED.call_once(|| (0..n).map(|_| AtomicU64::new(0)).collect());
    let starters = [0, n / 2, n - 1];
    const ROUNDS: u64 = 3;
    let refs = starters
        .iter()
        .map(|&c| {
            super::spawn_on(c, "shootdown", || {
                for _ in 0..ROUNDS {
                    crate::sched::cpusync_online(count_sync, 0);
                }
            })
        })
        .collect();
    super::join_all(refs);
    let want = ROUNDS * starters.len() as u64;
    for (c, hits) in SYNCED.get().expect("SYNCED").iter().enumerate() {
        let h = hits.load(Ordering::Relaxed);
        check!(h == want, "cpu{c} ran {h} shootdowns, expected {want}");
    }
    let (fifos, bytes) = crate::sched::world().ipi.fifo_memory();
    println!(
        "many-cpus: {} shootdowns from cpu{:?} reached all {n} CPUs; {fifos} IPI FIFOs made ({} KiB) of {} possible",
        starters.len() as u64 * ROUNDS,
        starters,
        bytes >> 10,
        n * (n - 1)
    );
    serial_rx();
}

/// Bytes typed on the host's end of COM1 arrive through IRQ 4 and the I/O APIC.
fn serial_rx() {
    check!(console::has_serial(), "no COM1");
    const WANT: &[u8] = b"wyvern";
    println!("serial-rx: ready for input");
    let mut got = alloc::vec::Vec::new();
    let ok = wait_for(30_000, || {
        while let Some(b) = console::input::read_byte() {
            got.push(b);
        }
        got.windows(WANT.len()).any(|w| w == WANT)
    });
    let irqs = console::input::INTERRUPTS.load(Ordering::Relaxed);
    check!(ok, "did not receive `wyvern` within 30 s");
    check!(irqs > 0, "bytes arrived without a receive interrupt");
    println!("serial-rx: received the input in {irqs} receive interrupts");
}
