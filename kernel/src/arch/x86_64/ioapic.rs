//! I/O APICs (through the `x2apic` crate): every redirection entry starts
//! masked; device interrupts are routed one by one.
//!
//! GSI *g* is delivered on vector [`VECTOR_GSI_BASE`]` + g`, so a handler knows
//! its line from its vector. ISA IRQs go through the MADT's interrupt source
//! overrides (QEMU's q35 moves IRQ 0 to GSI 2, for instance) with the polarity
//! and trigger mode they give.
//!
//! # Which CPUs a device interrupt can reach
//!
//! A redirection entry names its destination with an 8-bit physical APIC id,
//! and 0xff means all CPUs: without interrupt remapping the I/O APIC (and
//! MSI) reach only APIC ids 0–254, in xAPIC and x2APIC mode alike. Wyvern
//! does not program an IOMMU's interrupt remapping, so [`route_isa`] sends
//! every device interrupt to a CPU in that range — the boot CPU whenever its
//! id is in it (on every machine seen), else the lowest-numbered CPU whose id
//! is. CPUs with APIC ids of 255 and above take IPIs (x2APIC addresses them
//! with 32-bit ids) and their own timer ticks, but no device interrupts.
//!
//! Lock: one [`SpinLock`] — routing happens at boot, and masking/unmasking from
//! interrupt stubs, where a token cannot be taken.

use alloc::vec::Vec;

use x2apic::ioapic::{IoApic, IrqFlags, IrqMode, RedirectionTableEntry};
use x86_64::PhysAddr;

use crate::acpi::Platform;
use crate::mm;
use crate::sync::{LockClass, SpinLock};

/// Vector of GSI 0.
pub const VECTOR_GSI_BASE: u8 = 0x30;
/// Highest GSI that gets a vector (vectors stop below the MSI vectors,
/// `intr::VECTOR_MSI_BASE`).
pub const MAX_GSI: u32 = 0xcf - VECTOR_GSI_BASE as u32;

struct Chip {
    gsi_base: u32,
    lines: u32,
    regs: IoApic,
}

static CHIPS_CLASS: LockClass = LockClass::new("I/O APICs", 50);
static CHIPS: SpinLock<Vec<Chip>> = SpinLock::ranked(&CHIPS_CLASS, Vec::new());

/// Maps every I/O APIC and masks all its lines. Boot CPU, once.
pub fn init(platform: &Platform) {
    // Mapping allocates page tables and the list allocates heap: both rank
    // below this lock, so build first and install under it.
    let mut chips = Vec::with_capacity(platform.ioapics.len());
    for io in &platform.ioapics {
        let va = mm::paging::map_mmio(PhysAddr::new(io.address), 0x20);
        // SAFETY: `va` maps this I/O APIC's registers uncached, permanently, and
        // this `IoApic` is the only one created for it.
        let mut regs = unsafe { IoApic::new(va.as_u64()) };
        // SAFETY: programming the chip we own: every line to its vector, masked.
        let lines = unsafe {
            regs.init(VECTOR_GSI_BASE.wrapping_add(io.gsi_base as u8));
            let n = u32::from(regs.max_table_entry()) + 1;
            for i in 0..n {
                regs.disable_irq(i as u8);
            }
            n
        };
        chips.push(Chip {
            gsi_base: io.gsi_base,
            lines,
            regs,
        });
    }
    *CHIPS.lock() = chips;
}

fn with_line<R>(gsi: u32, f: impl FnOnce(&mut IoApic, u8) -> R) -> R {
    let mut chips = CHIPS.lock();
    let chip = chips
        .iter_mut()
        .find(|c| (c.gsi_base..c.gsi_base + c.lines).contains(&gsi))
        .unwrap_or_else(|| panic!("no I/O APIC serves GSI {gsi}"));
    let line = (gsi - chip.gsi_base) as u8;
    f(&mut chip.regs, line)
}

/// The vector GSI `gsi` is delivered on.
pub fn vector_of(gsi: u32) -> u8 {
    assert!(gsi <= MAX_GSI, "GSI {gsi} has no vector");
    VECTOR_GSI_BASE + gsi as u8
}

/// The CPU device interrupts go to: the boot CPU if the I/O APIC can name
/// it, else the lowest-numbered online CPU it can (module docs). `None` only
/// on a machine where no CPU has an APIC id below 255.
pub fn device_cpu() -> Option<&'static crate::percpu::PerCpu> {
    let reachable = |c: &&crate::percpu::PerCpu| c.apic_id() <= MAX_DEST;
    crate::percpu::cpu(0)
        .filter(reachable)
        .or_else(|| crate::percpu::online().find(reachable))
}

/// The highest APIC id a redirection entry can name (0xff is broadcast).
pub const MAX_DEST: u32 = 0xfe;

/// Routes ISA IRQ `irq` (honouring overrides) to [`device_cpu`], masked;
/// returns its GSI, vector and the CPU's index, or `None` (the line stays
/// masked) when no CPU can be named.
pub fn route_isa(platform: &Platform, irq: u8) -> Option<(u32, u8, u32)> {
    let cpu = device_cpu()?;
    let (gsi, flags) = platform.isa_irq(irq);
    let vector = vector_of(gsi);
    let mut f = IrqFlags::MASKED;
    if flags.active_low {
        f |= IrqFlags::LOW_ACTIVE;
    }
    if flags.level {
        f |= IrqFlags::LEVEL_TRIGGERED;
    }
    let mut entry = RedirectionTableEntry::default();
    entry.set_vector(vector);
    entry.set_mode(IrqMode::Fixed);
    entry.set_flags(f);
    entry.set_dest(cpu.apic_id() as u8);
    // SAFETY: writing the redirection entry of a line we own; it stays masked.
    with_line(gsi, |regs, line| unsafe {
        regs.set_table_entry(line, entry)
    });
    Some((gsi, vector, cpu.index()))
}

/// Unmasks GSI `gsi`. Any context.
pub fn unmask(gsi: u32) {
    // SAFETY: clearing the mask bit of a routed line.
    with_line(gsi, |regs, line| unsafe { regs.enable_irq(line) });
}

/// Whether GSI `gsi` is level-triggered (as routed). Any context.
pub fn is_level(gsi: u32) -> bool {
    // SAFETY: reading a redirection entry has no effect.
    with_line(gsi, |regs, line| unsafe {
        regs.table_entry(line)
            .flags()
            .contains(IrqFlags::LEVEL_TRIGGERED)
    })
}

/// Masks GSI `gsi`. Any context.
pub fn mask(gsi: u32) {
    // SAFETY: setting the mask bit of a line.
    with_line(gsi, |regs, line| unsafe { regs.disable_irq(line) });
}
