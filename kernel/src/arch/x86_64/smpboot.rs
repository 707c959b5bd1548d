//! Starting the application processors: the real-mode trampoline and
//! INIT-SIPI-SIPI.
//!
//! # The trampoline
//!
//! One page below 1 MiB, taken from the frame allocator's low reserve, receives
//! a copy of `wyvern_ap_tramp_*` with a few words patched in. An AP woken by a
//! SIPI starts there in real mode and, in one go: loads a three-entry GDT, sets
//! CR4.PAE, loads CR3 with a trampoline PML4 (below 4 GiB, since real mode
//! loads only 32 bits), sets EFER.LME and EFER.NXE, sets CR0.PE|PG|WP together
//! (the SDM allows entering IA-32e mode straight from real mode) and far-jumps
//! into 64-bit code. The trampoline PML4 shares the kernel half with the
//! kernel's own tables and identity-maps the trampoline page, which is all the
//! AP touches before it jumps into the kernel.
//!
//! All APs are started at once, so they race through the same page: each takes
//! a ticket with `lock xadd` and uses the ticket's stack from a table the boot
//! CPU filled. In Rust, the AP loads the kernel's page tables, finds its
//! per-CPU block by its APIC id, and comes online.
//!
//! # Sequence and timing
//!
//! INIT to every AP, 10 ms, SIPI, 200 µs, SIPI (the MP specification's
//! sequence; a second SIPI is ignored by an AP already running). The boot CPU
//! then waits for every AP to come online, giving up [`AP_TIMEOUT_MS`] after the
//! last one arrived; one that does not is reported and skipped, and the trampoline is then left in place so a
//! late AP does not run garbage (it finds bring-up closed and halts).

use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use x86_64::VirtAddr;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};

use super::apic::{self, with_lapic};
use super::{cpu, idt, timer, tsc};
use crate::acpi::Platform;
use crate::mm::{self, frame, paging, stack::KernelStack};
use crate::percpu::{self, MAX_CPUS, PerCpu};
use crate::sync::Once;
use crate::{println, smp};

/// How long the boot CPU waits, after the SIPIs or the last AP to come
/// online, for the next one.
pub const AP_TIMEOUT_MS: u64 = 5000;

global_asm!(
    r#"
    .section .rodata.wyvern_ap_trampoline, "a"
    .balign 16
    .global wyvern_ap_tramp_start
wyvern_ap_tramp_start:
    .code16
    cli
    cld
    mov ax, cs
    mov ds, ax
    lgdt [TRAMP_GDTR_OFF]
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, dword ptr [TRAMP_PML4_OFF]
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax
    .byte 0x66, 0xea
    .global wyvern_ap_tramp_jump
wyvern_ap_tramp_jump:
    .long 0
    .word 0x08

    .code64
    .global wyvern_ap_tramp_long
wyvern_ap_tramp_long:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov eax, 1
    lock xadd dword ptr [rip + wyvern_ap_tramp_ticket], eax
    mov rbx, qword ptr [rip + wyvern_ap_tramp_stacks]
    mov rsp, qword ptr [rbx + rax * 8]
    mov edi, eax
    xor ebp, ebp
    mov rax, qword ptr [rip + wyvern_ap_tramp_entry]
    call rax
    ud2

    .balign 8
wyvern_ap_tramp_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .global wyvern_ap_tramp_gdtr
wyvern_ap_tramp_gdtr:
    .word 3 * 8 - 1
    .long 0
    .global wyvern_ap_tramp_pml4
wyvern_ap_tramp_pml4:
    .long 0
    .global wyvern_ap_tramp_ticket
wyvern_ap_tramp_ticket:
    .long 0
    .balign 8
    .global wyvern_ap_tramp_stacks
wyvern_ap_tramp_stacks:
    .quad 0
    .global wyvern_ap_tramp_entry
wyvern_ap_tramp_entry:
    .quad 0
    .global wyvern_ap_tramp_end
wyvern_ap_tramp_end:
    .set TRAMP_GDTR_OFF, wyvern_ap_tramp_gdtr - wyvern_ap_tramp_start
    .set TRAMP_PML4_OFF, wyvern_ap_tramp_pml4 - wyvern_ap_tramp_start
    .text
    "#
);

unsafe extern "C" {
    static wyvern_ap_tramp_start: u8;
    static wyvern_ap_tramp_jump: u8;
    static wyvern_ap_tramp_long: u8;
    static wyvern_ap_tramp_gdtr: u8;
    static wyvern_ap_tramp_pml4: u8;
    static wyvern_ap_tramp_ticket: u8;
    static wyvern_ap_tramp_stacks: u8;
    static wyvern_ap_tramp_entry: u8;
    static wyvern_ap_tramp_end: u8;
}

/// Offset of a trampoline symbol from its start.
fn off(sym: *const u8) -> usize {
    sym as usize - (&raw const wyvern_ap_tramp_start) as usize
}

/// Stacks the APs start on, by ticket; they become the APs' idle stacks and
/// live forever.
static AP_STACKS: Once<Vec<KernelStack>> = Once::new();
/// Set when the boot CPU stops waiting: an AP arriving later halts.
static BRINGUP_CLOSED: AtomicBool = AtomicBool::new(false);
/// APs that reached Rust (for the report).
static ARRIVED: AtomicU32 = AtomicU32::new(0);

/// The frames of the trampoline: the code page, the PML4 and the three tables
/// of its identity mapping.
struct Trampoline {
    page: PhysFrame,
    pml4: PhysFrame,
    tables: [PhysFrame; 3],
}

fn table(frame: PhysFrame) -> &'static mut PageTable {
    // SAFETY: `frame` is a page-table frame this module allocated and owns until
    // `Trampoline::free`; the physical-memory mapping makes it addressable.
    unsafe { &mut *mm::phys_to_virt(frame.start_address()).as_mut_ptr::<PageTable>() }
}

impl Trampoline {
    /// Copies and patches the trampoline and builds its page tables.
    fn build(stack_tops: &[u64]) -> Self {
        let page = frame::alloc_low().expect("no free page below 1 MiB for the AP trampoline");
        let pml4 = frame::alloc_low().expect("no free page below 1 MiB for the AP page table");
        let tables = [
            frame::alloc_zeroed().expect("AP page tables"),
            frame::alloc_zeroed().expect("AP page tables"),
            frame::alloc_zeroed().expect("AP page tables"),
        ];
        let base = page.start_address().as_u64();
        assert!((0x1000..0x10_0000).contains(&base));

        // Code and data.
        let start = &raw const wyvern_ap_tramp_start;
        let len = off(&raw const wyvern_ap_tramp_end);
        assert!(len <= 4096, "AP trampoline is larger than a page");
        let dst = mm::phys_to_virt(page.start_address()).as_mut_ptr::<u8>();
        // SAFETY: `start..start+len` is the trampoline blob in the kernel's
        // read-only data; `dst` is a page we own, mapped through the physical
        // mapping; they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(start, dst, len) };
        let patch32 = |o: usize, v: u32| {
            // SAFETY: `o` is the offset of a 32-bit slot inside the copied blob.
            unsafe { dst.add(o).cast::<u32>().write_unaligned(v) }
        };
        let patch64 = |o: usize, v: u64| {
            // SAFETY: `o` is the offset of a 64-bit slot inside the copied blob.
            unsafe { dst.add(o).cast::<u64>().write_unaligned(v) }
        };
        let gdt_off = off(&raw const wyvern_ap_tramp_gdtr) - 3 * 8;
        patch32(
            off(&raw const wyvern_ap_tramp_jump),
            (base + off(&raw const wyvern_ap_tramp_long) as u64) as u32,
        );
        patch32(
            off(&raw const wyvern_ap_tramp_gdtr) + 2,
            (base + gdt_off as u64) as u32,
        );
        patch32(
            off(&raw const wyvern_ap_tramp_pml4),
            pml4.start_address().as_u64() as u32,
        );
        patch32(off(&raw const wyvern_ap_tramp_ticket), 0);
        patch64(
            off(&raw const wyvern_ap_tramp_stacks),
            stack_tops.as_ptr() as u64,
        );
        patch64(
            off(&raw const wyvern_ap_tramp_entry),
            ap_entry as *const () as u64,
        );

        // Page tables: the kernel half shared, the trampoline page identity-mapped.
        let kernel = table(paging::kernel_pml4());
        let t4 = table(pml4);
        t4.zero();
        for i in 256..512 {
            t4[i] = kernel[i].clone();
        }
        let va = VirtAddr::new(base);
        let [t3f, t2f, t1f] = tables;
        t4[usize::from(va.p4_index())].set_frame(t3f, F::PRESENT | F::WRITABLE);
        table(t3f)[usize::from(va.p3_index())].set_frame(t2f, F::PRESENT | F::WRITABLE);
        table(t2f)[usize::from(va.p2_index())].set_frame(t1f, F::PRESENT | F::WRITABLE);
        table(t1f)[usize::from(va.p1_index())].set_frame(page, F::PRESENT | F::WRITABLE);
        Trampoline { page, pml4, tables }
    }

    /// SIPI vector: the page number.
    fn vector(&self) -> u8 {
        (self.page.start_address().as_u64() >> 12) as u8
    }

    /// Returns every frame. Only when no AP can still be running it.
    fn free(self) {
        for f in [self.page, self.pml4].into_iter().chain(self.tables) {
            frame::free(f);
        }
    }
}

/// What bring-up achieved.
pub struct Report {
    /// APs asked to start.
    pub asked: usize,
    /// APs online.
    pub online: usize,
    /// APIC ids of APs that did not answer.
    pub missing: Vec<u32>,
    /// TSC ticks from the first INIT to the last AP online.
    pub tsc_ticks: u64,
}

/// Starts every enabled AP the MADT lists. Boot CPU, once, interrupts on,
/// after its own APIC and timer are up.
pub fn start_aps(platform: &Platform) -> Report {
    let bsp = percpu::mycpu().apic_id();
    let mut targets: Vec<u32> = platform
        .enabled_cpus()
        .map(|c| c.apic_id)
        .filter(|&id| id != bsp)
        .collect();
    if targets.len() + 1 > MAX_CPUS {
        println!(
            "smp: {} CPUs listed; starting the first {MAX_CPUS}",
            targets.len() + 1
        );
        targets.truncate(MAX_CPUS - 1);
    }
    if targets.is_empty() {
        crate::sched::init();
        return Report {
            asked: 0,
            online: 0,
            missing: Vec::new(),
            tsc_ticks: 0,
        };
    }
    // Blocks (index in MADT order), IST stacks, boot stacks.
    let blocks: Vec<&'static PerCpu> = targets
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let ist = core::array::from_fn(|_| KernelStack::new().expect("AP IST stack"));
            percpu::create_ap(i as u32 + 1, id, ist)
        })
        .collect();
    let stacks = AP_STACKS.call_once(|| {
        (0..targets.len())
            .map(|_| KernelStack::new().expect("AP boot stack"))
            .collect()
    });
    let tops: Vec<u64> = stacks.iter().map(|s| s.top().as_u64()).collect();
    let tramp = Trampoline::build(&tops);
    mm::stack::enable_quarantine();
    // Every CPU block exists: the scheduler's global state can be built, and
    // must be before any AP ticks.
    crate::sched::init();

    let t0 = cpu::rdtsc();
    with_lapic(|l| targets.iter().for_each(|&id| l.send_init(id)));
    tsc::delay_us(10_000);
    for _ in 0..2 {
        with_lapic(|l| {
            targets
                .iter()
                .for_each(|&id| l.send_sipi(id, tramp.vector()))
        });
        tsc::delay_us(200);
    }
    // The deadline moves with progress: hundreds of APs under an emulator
    // on a few host cores take seconds to arrive, one after another, while
    // a CPU that is dead never does.
    let patience = tsc::ns_to_ticks(AP_TIMEOUT_MS * 1_000_000);
    let mut deadline = cpu::rdtsc() + patience;
    let mut seen = 0;
    loop {
        let online = blocks.iter().filter(|b| b.is_online()).count();
        if online == blocks.len() {
            break;
        }
        if online > seen {
            seen = online;
            deadline = cpu::rdtsc() + patience;
        } else if cpu::rdtsc() >= deadline {
            break;
        }
        // Interrupts are on: the tick wakes us.
        cpu::enable_and_halt();
    }
    BRINGUP_CLOSED.store(true, Ordering::SeqCst);
    let last = blocks
        .iter()
        .map(|b| b.online_tsc.load(Ordering::Relaxed))
        .max()
        .unwrap_or(t0);
    let missing: Vec<u32> = blocks
        .iter()
        .filter(|b| !b.is_online())
        .map(|b| b.apic_id())
        .collect();
    for id in &missing {
        println!("smp: CPU with APIC id {id} did not answer; skipped");
    }
    // Tickets were taken by every AP that reached the trampoline's 64-bit part;
    // if all came online, none can still be inside it.
    // Otherwise a late AP may still read the page and the stack-top table:
    // both stay, leaked.
    if missing.is_empty() && ARRIVED.load(Ordering::SeqCst) as usize == targets.len() {
        tramp.free();
        drop(tops);
    } else {
        core::mem::forget(tops);
    }
    Report {
        asked: targets.len(),
        online: blocks.iter().filter(|b| b.is_online()).count(),
        missing,
        tsc_ticks: last.saturating_sub(t0),
    }
}

/// First Rust code of an AP, on its ticket's stack, still on the trampoline's
/// page tables.
extern "C" fn ap_entry(_ticket: u32) -> ! {
    // SAFETY: the kernel PML4 maps everything this AP runs from here on (the
    // kernel half is shared with the trampoline tables, whose identity mapping
    // we no longer need); PCID is off.
    unsafe { Cr3::write(paging::kernel_pml4(), Cr3::read().1) };
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    // The firmware may have left this CPU's APIC in either mode (an INIT
    // keeps it): move it to the boot CPU's choice before reading its id.
    apic::enter_mode();
    let id = apic::local_id();
    let block = percpu::all().find(|b| b.index() != 0 && b.apic_id() == id);
    let Some(block) = block.filter(|_| !BRINGUP_CLOSED.load(Ordering::SeqCst)) else {
        cpu::halt_forever()
    };
    // SAFETY: the boot CPU made this block for our APIC id and nothing else has
    // installed it; this is our first call.
    unsafe { percpu::install_ap(block) };
    let ist = block.ist_tops().expect("AP blocks have IST stacks");
    block.tables.load(ist);
    idt::load();
    super::init_user_support();
    apic::init_local(timer::uses_deadline());
    timer::start_local();
    lwkt::start_cpu::<crate::sched::X86>();
    smp::ap_online(block);
    lwkt::idle_loop::<crate::sched::X86>()
}
