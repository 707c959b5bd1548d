//! ACPI tables through the `acpi` crate: the MADT (processors, I/O APICs,
//! interrupt source overrides, NMI wiring), the HPET, and for user drivers
//! (`HWINFO`) what the MCFG says of PCI configuration space and what the
//! FADT says of power and reset (the AML itself is interpreted in user
//! mode, by the power server).
//!
//! Read once on the boot CPU into a [`Platform`] summary that the rest of the
//! kernel consults; nothing here keeps a mapping of a table. ACPI tables live in
//! memory the bootloader's physical-memory mapping already covers, so "mapping"
//! a region is computing its address.

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTable, AcpiTables, HpetInfo, PhysicalMapping};
use x86_64::PhysAddr;

use wyvern_abi::syscall::AcpiInfo;

use crate::mm;
use crate::sync::Once;

#[derive(Clone, Copy)]
struct PhysMap;

impl AcpiHandler for PhysMap {
    unsafe fn map_physical_region<T>(&self, pa: usize, size: usize) -> PhysicalMapping<Self, T> {
        let va = mm::phys_to_virt(PhysAddr::new(pa as u64));
        let ptr = NonNull::new(va.as_mut_ptr::<T>()).expect("physical mapping at 0");
        // SAFETY: the physical-memory mapping covers every physical address the
        // firmware reports for ACPI tables; `va` maps `pa` for `size` bytes and
        // stays mapped forever, so the mapping outlives the PhysicalMapping.
        unsafe { PhysicalMapping::new(pa, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// A processor the MADT lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuEntry {
    /// Local APIC id (x2APIC id for x2APIC entries).
    pub apic_id: u32,
    /// ACPI processor UID.
    pub uid: u32,
    /// Usable now (`Enabled`), or may be brought online later (`OnlineCapable`).
    pub enabled: bool,
    /// Listed with the online-capable flag (hot-add); not started at boot.
    pub online_capable: bool,
}

/// An I/O APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicEntry {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

/// Trigger mode / polarity of an override or NMI source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqFlags {
    /// Active low (else active high, the ISA default).
    pub active_low: bool,
    /// Level triggered (else edge, the ISA default).
    pub level: bool,
}

impl IrqFlags {
    /// Decodes the MPS INTI flags of MADT entries; "conforms to the bus" means
    /// the ISA default (edge, active high).
    fn from_mps(flags: u16) -> Self {
        IrqFlags {
            active_low: flags & 0b11 == 0b11,
            level: (flags >> 2) & 0b11 == 0b11,
        }
    }
}

/// An ISA IRQ routed to a GSI other than its own number, or with other flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub isa_irq: u8,
    pub gsi: u32,
    pub flags: IrqFlags,
}

/// Where a local APIC's LINT pin carries NMI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapicNmi {
    /// ACPI processor UID, or `None` for all processors (0xff / 0xffffffff).
    pub uid: Option<u32>,
    pub lint: u8,
    pub flags: IrqFlags,
}

/// The ACPI power-management timer: a free-running counter at 3.579545 MHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmTimerInfo {
    /// Its register: an I/O port, or a physical address.
    pub port: Option<u16>,
    pub mmio: Option<u64>,
    /// 32 bits wide (else 24).
    pub wide: bool,
}

/// What the firmware says about the machine.
#[derive(Debug, Clone)]
pub struct Platform {
    pub local_apic_address: u64,
    pub cpus: Vec<CpuEntry>,
    pub ioapics: Vec<IoApicEntry>,
    pub overrides: Vec<Override>,
    pub nmi_sources: Vec<(u32, IrqFlags)>,
    pub lapic_nmis: Vec<LapicNmi>,
    pub has_8259: bool,
    /// HPET base address and tick period in femtoseconds is read from its
    /// registers; the table gives the base.
    pub hpet_base: Option<u64>,
    /// The ACPI PM timer, if the FADT lists one.
    pub pm_timer: Option<PmTimerInfo>,
    /// PCI configuration space and power, for user drivers.
    pub info: AcpiInfo,
}

impl Platform {
    /// Processors usable at boot.
    pub fn enabled_cpus(&self) -> impl Iterator<Item = &CpuEntry> {
        self.cpus.iter().filter(|c| c.enabled)
    }

    /// The GSI and flags of ISA IRQ `irq`, honouring overrides.
    pub fn isa_irq(&self, irq: u8) -> (u32, IrqFlags) {
        self.overrides
            .iter()
            .find(|o| o.isa_irq == irq)
            .map(|o| (o.gsi, o.flags))
            .unwrap_or((
                u32::from(irq),
                IrqFlags {
                    active_low: false,
                    level: false,
                },
            ))
    }
}

static PLATFORM: Once<Platform> = Once::new();

/// Reads the tables from the RSDP the bootloader found. Boot CPU, once, after
/// the heap is up.
pub fn init(rsdp: u64) -> &'static Platform {
    PLATFORM.call_once(|| {
        // SAFETY: the bootloader got `rsdp` from the firmware; the handler maps all
        // of physical memory.
        let tables = unsafe { AcpiTables::from_rsdp(PhysMap, rsdp as usize) }
            .expect("cannot read the ACPI tables");
        let madt = tables.find_table::<Madt>().expect("no MADT");
        let mut p = Platform {
            local_apic_address: u64::from(madt.get().local_apic_address),
            cpus: Vec::new(),
            ioapics: Vec::new(),
            overrides: Vec::new(),
            nmi_sources: Vec::new(),
            lapic_nmis: Vec::new(),
            has_8259: madt.get().supports_8259(),
            hpet_base: HpetInfo::new(&tables).ok().map(|h| h.base_address as u64),
            pm_timer: tables.find_table::<Fadt>().ok().and_then(|fadt| {
                let wide = { fadt.flags }.pm_timer_is_32_bit();
                let base = fadt.pm_timer_block().ok().flatten()?;
                match base.address_space {
                    AddressSpace::SystemIo => {
                        u16::try_from(base.address).ok().map(|port| PmTimerInfo {
                            port: Some(port),
                            mmio: None,
                            wide,
                        })
                    }
                    AddressSpace::SystemMemory => Some(PmTimerInfo {
                        port: None,
                        mmio: Some(base.address),
                        wide,
                    }),
                    _ => None,
                }
            }),
            info: driver_info(&tables),
        };
        for entry in madt.get().entries() {
            match entry {
                MadtEntry::LocalApic(e) => {
                    let flags = e.flags;
                    p.cpus.push(CpuEntry {
                        apic_id: u32::from(e.apic_id),
                        uid: u32::from(e.processor_id),
                        enabled: flags & 1 != 0,
                        online_capable: flags & 2 != 0,
                    });
                }
                MadtEntry::LocalX2Apic(e) => {
                    let (flags, id, uid) = (e.flags, e.x2apic_id, e.processor_uid);
                    p.cpus.push(CpuEntry {
                        apic_id: id,
                        uid,
                        enabled: flags & 1 != 0,
                        online_capable: flags & 2 != 0,
                    });
                }
                MadtEntry::IoApic(e) => p.ioapics.push(IoApicEntry {
                    id: e.io_apic_id,
                    address: u64::from(e.io_apic_address),
                    gsi_base: e.global_system_interrupt_base,
                }),
                MadtEntry::InterruptSourceOverride(e) => p.overrides.push(Override {
                    isa_irq: e.irq,
                    gsi: e.global_system_interrupt,
                    flags: IrqFlags::from_mps(e.flags),
                }),
                MadtEntry::NmiSource(e) => p
                    .nmi_sources
                    .push((e.global_system_interrupt, IrqFlags::from_mps(e.flags))),
                MadtEntry::LocalApicNmi(e) => p.lapic_nmis.push(LapicNmi {
                    uid: (e.processor_id != 0xff).then_some(u32::from(e.processor_id)),
                    lint: e.nmi_line,
                    flags: IrqFlags::from_mps(e.flags),
                }),
                MadtEntry::X2ApicNmi(e) => p.lapic_nmis.push(LapicNmi {
                    uid: (e.processor_uid != u32::MAX).then_some(e.processor_uid),
                    lint: e.nmi_line,
                    flags: IrqFlags::from_mps(e.flags),
                }),
                MadtEntry::LocalApicAddressOverride(e) => {
                    p.local_apic_address = e.local_apic_address;
                }
                _ => {}
            }
        }
        // A CPU listed twice (xAPIC and x2APIC entries) counts once.
        p.cpus.dedup_by_key(|c| c.apic_id);
        p
    })
}

/// What `HWINFO` tells user drivers: MCFG's first range, the DSDT's AML,
/// the FADT's power and reset registers.
fn driver_info(tables: &AcpiTables<PhysMap>) -> AcpiInfo {
    let mut i = AcpiInfo {
        reset_space: u64::MAX,
        ..AcpiInfo::default()
    };
    if let Ok(mcfg) = tables.find_table::<Mcfg>()
        && let Some(e) = mcfg
            .get()
            .entries()
            .iter()
            .find(|e| e.pci_segment_group == 0)
    {
        let (base, start, end) = (e.base_address, e.bus_number_start, e.bus_number_end);
        i.ecam_base = base + (u64::from(start) << 20);
        i.ecam_bus_start = u64::from(start);
        i.ecam_bus_end = u64::from(end);
    }
    if let Ok(dsdt) = tables.dsdt() {
        i.dsdt_phys = dsdt.address as u64;
        i.dsdt_len = u64::from(dsdt.length);
    }
    if let Ok(fadt) = tables.find_table::<Fadt>() {
        let io_port = |g: acpi::address::GenericAddress| {
            (g.address_space == AddressSpace::SystemIo).then_some(g.address)
        };
        i.pm1a_cnt = fadt
            .pm1a_control_block()
            .ok()
            .and_then(io_port)
            .unwrap_or(0);
        i.pm1b_cnt = fadt
            .pm1b_control_block()
            .ok()
            .flatten()
            .and_then(io_port)
            .unwrap_or(0);
        if { fadt.flags }.supports_system_reset_via_fadt()
            && let Ok(r) = fadt.reset_register()
            && r.address != 0
        {
            i.reset_space = match r.address_space {
                AddressSpace::SystemMemory => 0,
                AddressSpace::SystemIo => 1,
                AddressSpace::PciConfigSpace => 2,
                _ => u64::MAX,
            };
            i.reset_addr = r.address;
            i.reset_value = u64::from(fadt.reset_value);
        }
        i.smi_cmd = u64::from(fadt.smi_cmd_port);
        i.acpi_enable = u64::from(fadt.acpi_enable);
        // The IA-PC boot flags exist from FADT revision 3 (ACPI 2.0).
        if fadt.header().revision >= 3 {
            let f = fadt.iapc_boot_arch;
            i.iapc_boot_arch = u64::from(f.legacy_devices_are_accessible())
                | u64::from(f.motherboard_implements_8042()) << 1
                | u64::from(f.dont_probe_vga()) << 2;
            i.iapc_valid = 1;
        }
    }
    i
}

/// The summary read at boot.
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("ACPI not initialized")
}
