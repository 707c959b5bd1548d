//! Per-CPU GDT and TSS.
//!
//! Each CPU has its own GDT (the TSS descriptor differs) and its own TSS, whose
//! interrupt stack table gives the double fault, NMI and machine check their own
//! stacks: those three can arrive when the current stack is unusable (a kernel
//! stack overflow runs into its guard page, which turns the page fault into a
//! double fault that must not touch the overflowed stack).
//!
//! Selector layout, fixed by `syscall`/`sysret` (STAR expects user data at
//! `base + 8` and 64-bit user code at `base + 16`):
//!
//! | index | selector | descriptor                      |
//! |-------|----------|---------------------------------|
//! | 1     | 0x08     | kernel code                     |
//! | 2     | 0x10     | kernel data                     |
//! | 3     | 0x18     | null (32-bit user code, unused) |
//! | 4     | 0x23     | user data                       |
//! | 5     | 0x2b     | user code (64-bit)              |
//! | 6–7   | 0x30     | TSS                             |
//!
//! # I/O permission bitmap
//!
//! Each TSS is followed by an I/O permission bitmap for ports
//! `0..`[`IO_PORTS`] (a set bit denies; ports above it lie past the segment
//! limit and are always denied). It denies everything until a process with
//! an I/O grant runs on the CPU: then the switch opens that process's ports
//! ([`CpuTables::set_io`]) and closes them again when a process without
//! grants comes. `IOPL` stays 0, so `cli`/`sti` still fault in user mode.

use core::cell::UnsafeCell;

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x23;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x2b;
/// TSS selector.
pub const TSS_SEL: u16 = 0x30;

/// Ports the I/O permission bitmap covers (see the module docs): all of
/// them (ACPI's PM1 ports, the reset register and PCI devices' ports lie
/// anywhere in the 64 K; 8 KiB per CPU).
pub const IO_PORTS: usize = 0x10000;
/// Port ranges a process may be granted (`Process::grant_io`).
pub const MAX_IO_RANGES: usize = 16;

/// A TSS with its I/O permission bitmap right behind it (the CPU finds the
/// bitmap at `iomap_base` from the TSS's start), and the terminating byte
/// of all ones the architecture asks for.
#[repr(C)]
struct TssIo {
    tss: TaskStateSegment,
    iomap: [u8; IO_PORTS / 8 + 1],
}

/// IST slot (1-based, as the IDT encodes it) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST slot of the NMI stack.
pub const IST_NMI: u16 = 2;
/// IST slot of the machine-check stack.
pub const IST_MACHINE_CHECK: u16 = 3;
/// IST slot of the debug-exception stack: a #DB may be taken anywhere a
/// data breakpoint or single step can fire, including the first instructions
/// of an entry, before the kernel stack is known to be good.
pub const IST_DEBUG: u16 = 4;
/// IST stacks each CPU has.
pub const IST_STACKS: usize = 4;

/// One CPU's descriptor tables. Lives as long as the CPU (static for the boot
/// CPU, leaked for the others).
///
/// Local: written only by the CPU that owns them (once in [`CpuTables::load`],
/// then RSP0 on switches to user threads); the hardware reads them at trap time.
pub struct CpuTables {
    gdt: UnsafeCell<GlobalDescriptorTable<8>>,
    tss: UnsafeCell<TssIo>,
    /// The ranges the bitmap opens now (first port, count), to close them
    /// again without rewriting all 8 KiB.
    open: UnsafeCell<[(u16, u32); MAX_IO_RANGES]>,
}

// SAFETY: a CPU's tables are written only by that CPU (see the type's docs); other
// CPUs never touch them, so sharing the reference cannot race.
unsafe impl Sync for CpuTables {}

impl CpuTables {
    /// Empty tables, filled in by [`CpuTables::load`].
    pub const fn new() -> Self {
        CpuTables {
            gdt: UnsafeCell::new(GlobalDescriptorTable::empty()),
            tss: UnsafeCell::new(TssIo {
                tss: TaskStateSegment::new(),
                iomap: [0xff; IO_PORTS / 8 + 1],
            }),
            open: UnsafeCell::new([(0, 0); MAX_IO_RANGES]),
        }
    }

    /// Opens exactly the port ranges `allowed` (first port, count; at most
    /// [`MAX_IO_RANGES`], each within [`IO_PORTS`]), closing the ones open
    /// before. The owning CPU, in a critical section (the switch).
    pub fn set_io(&self, allowed: &[(u16, u32)]) {
        // SAFETY: only the owning CPU writes its TSS and `open` (type docs);
        // the CPU reads the bitmap only for an `in`/`out` in user mode,
        // which cannot run while this CPU runs this kernel code.
        let (map, open) = unsafe { (&mut (*self.tss.get()).iomap, &mut *self.open.get()) };
        let mark = |map: &mut [u8], first: u16, count: u32, deny: bool| {
            let end = (u32::from(first) + count).min(IO_PORTS as u32);
            for p in u32::from(first)..end {
                let (byte, bit) = ((p / 8) as usize, p % 8);
                if deny {
                    map[byte] |= 1 << bit;
                } else {
                    map[byte] &= !(1 << bit);
                }
            }
        };
        for (first, count) in open.iter_mut() {
            if *count != 0 {
                mark(map, *first, *count, true);
                *count = 0;
            }
        }
        for (slot, &(first, count)) in open.iter_mut().zip(allowed) {
            mark(map, first, count, false);
            *slot = (first, count);
        }
    }

    /// Sets the stack the CPU switches to on a trap from user mode (the top
    /// of the kernel stack of the user thread about to run). The owning CPU,
    /// in a critical section (the switch).
    pub fn set_rsp0(&self, top: u64) {
        // SAFETY: only the owning CPU writes its TSS (type docs), and the CPU
        // reads RSP0 only on a privilege change, which cannot happen while this
        // CPU runs this kernel code; an aligned u64 store.
        unsafe { (*self.tss.get()).tss.privilege_stack_table[0] = VirtAddr::new(top) };
    }

    /// Fills in the TSS and the GDT and loads them on this CPU. Called once per
    /// CPU, by that CPU, before it enables interrupts.
    ///
    /// `ist` are the tops of the double-fault, NMI, machine-check and debug
    /// stacks.
    pub fn load(&'static self, ist: [VirtAddr; IST_STACKS]) {
        // SAFETY: called once, on the owning CPU, before the TSS is loaded: nothing
        // else reads or writes it now.
        let tss = unsafe { &mut (*self.tss.get()).tss };
        tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
        tss.interrupt_stack_table[usize::from(IST_DOUBLE_FAULT - 1)] = ist[0];
        tss.interrupt_stack_table[usize::from(IST_NMI - 1)] = ist[1];
        tss.interrupt_stack_table[usize::from(IST_MACHINE_CHECK - 1)] = ist[2];
        tss.interrupt_stack_table[usize::from(IST_DEBUG - 1)] = ist[3];
        // SAFETY: as above; from here on the TSS is only read (and RSP0 written by
        // this CPU through `set_rsp0`).
        let both: &'static TssIo = unsafe { &*self.tss.get() };
        let tss = &both.tss;
        let mut gdt = GlobalDescriptorTable::empty();
        let kcs = gdt.append(Descriptor::kernel_code_segment());
        let kds = gdt.append(Descriptor::kernel_data_segment());
        gdt.append(Descriptor::UserSegment(0));
        let uds = gdt.append(Descriptor::user_data_segment());
        let ucs = gdt.append(Descriptor::user_code_segment());
        let tsss = gdt.append(
            Descriptor::tss_segment_with_iomap(tss, &both.iomap)
                .expect("the I/O bitmap follows the TSS and ends in 0xff"),
        );
        debug_assert_eq!(
            (kcs.0, kds.0, uds.0, ucs.0, tsss.0),
            (KERNEL_CS, KERNEL_DS, USER_DS, USER_CS, TSS_SEL)
        );
        // SAFETY: called once, on the owning CPU, before this GDT is loaded.
        let slot = unsafe { &mut *self.gdt.get() };
        *slot = gdt;
        // SAFETY: the GDT is 'static and no longer written.
        let gdt: &'static GlobalDescriptorTable<8> = unsafe { &*self.gdt.get() };
        gdt.load();
        // The selectors index the 'static GDT just loaded: 64-bit ring-0 code,
        // writable data, and the TSS descriptor of `self.tss` (lives with the CPU).
        // SAFETY: valid descriptors of the loaded, 'static GDT (see above).
        unsafe {
            CS::set_reg(SegmentSelector(KERNEL_CS));
            SS::set_reg(SegmentSelector(KERNEL_DS));
            DS::set_reg(SegmentSelector(KERNEL_DS));
            ES::set_reg(SegmentSelector(KERNEL_DS));
            FS::set_reg(SegmentSelector(0));
            load_tss(SegmentSelector(TSS_SEL));
        }
    }
}
