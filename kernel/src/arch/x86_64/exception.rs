//! Exceptions (vectors 0–31): the report, and what survives.
//!
//! Every exception in kernel mode is fatal except an NMI (counted and reported;
//! the kernel goes on, unless a panic is stopping the CPUs) and a breakpoint
//! (reported, execution resumes after the `int3`). A fatal one prints a report —
//! vector and name, error code decoded, `rip` with its ELF offset, `cr2` for page
//! faults, the registers and a backtrace — and ends the boot through
//! [`crate::fatal`].
//!
//! A kernel stack overflow runs into the stack's unmapped guard page: the page
//! fault cannot push its frame there, so the CPU raises a double fault, which
//! runs on its own IST stack. The double-fault handler looks `cr2` up among the
//! guard pages and reports the overflow by name instead of as a double fault.

use super::backtrace;
use super::cpu;
use super::trap::TrapFrame;
use crate::fatal::{self, Fatal};
use crate::mm;
use crate::println;

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range exceeded",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack-segment fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

/// Name of exception `vector`.
pub fn name(vector: u64) -> &'static str {
    if vector == super::syscall::SYSCALL_VECTOR {
        return "system call";
    }
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}

pub(super) fn handle(frame: &mut TrapFrame) {
    if frame.vector == 14 && demand_page(frame) {
        // A user stack grew into its reservation: retry the access.
        return;
    }
    // A double fault is the kernel's failing to deliver an exception: never
    // the program's, whatever CS its frame shows. NMIs and machine checks
    // are the machine's.
    if frame.user_mode() && !matches!(frame.vector, 2 | 8 | 18) {
        // A fault of the user program: it ends its process, not the kernel.
        let addr = (frame.vector == 14).then(cpu::read_cr2);
        crate::user::fault(frame, addr);
    }
    if (frame.vector == 14 || frame.vector == 13) && super::usercopy::fixup(frame) {
        // A bad user pointer met by the copy routine: it returns an error.
        return;
    }
    match frame.vector {
        2 => nmi(frame),
        3 => {
            println!(
                "breakpoint at {:#x} on CPU {}",
                frame.rip - 1,
                crate::percpu::cpu_index()
            );
        }
        8 => double_fault(frame),
        14 => {
            let cr2 = cpu::read_cr2();
            report(frame, Some(cr2));
            fatal::die(Fatal::Trap {
                vector: 14,
                addr: Some(cr2),
            })
        }
        v => {
            report(frame, None);
            fatal::die(Fatal::Trap {
                vector: v as u8,
                addr: None,
            })
        }
    }
}

/// A not-present page fault on a user address, by user code or by the copy
/// routine on a user thread's behalf: maps the page if it belongs to a stack
/// (`user::demand_page`). Runs with interrupts enabled if the faulting
/// context had them (the mapping takes a token).
fn demand_page(frame: &TrapFrame) -> bool {
    let addr = cpu::read_cr2();
    let not_present = frame.error & 1 == 0;
    if !not_present || addr >= wyvern_abi::syscall::USER_TOP {
        return false;
    }
    if !frame.user_mode() && !super::usercopy::in_copy(frame) {
        return false;
    }
    let irq = frame.rflags & (1 << 9) != 0;
    if irq {
        cpu::interrupts_enable();
    }
    let ok = crate::user::demand_page(addr);
    cpu::interrupts_disable();
    ok
}

/// A vector at or above 32 with no handler: a device or the APIC raised
/// something nobody asked for. Fatal: it means a routing bug.
pub(super) fn unexpected_interrupt(frame: &mut TrapFrame) {
    report(frame, None);
    fatal::die(Fatal::Trap {
        vector: frame.vector as u8,
        addr: None,
    })
}

fn nmi(frame: &mut TrapFrame) {
    crate::percpu::mycpu().nmis.inc();
    if fatal::stopping() {
        // Another CPU panicked and stops everyone with an NMI.
        fatal::stopped_by_nmi(frame);
    }
    // An NMI nobody sent to stop us: an operator's (QEMU's `nmi` monitor
    // command, which the test harness sends to a boot that missed its
    // deadline) — say where this CPU is and what it did last.
    let me = crate::percpu::mycpu();
    let td = me.lwkt.curthread();
    println!(
        "NMI on CPU {} at rip {:#x} ({} mode, thread `{}` pid {}); continuing",
        me.index(),
        frame.rip,
        if frame.user_mode() { "user" } else { "kernel" },
        td.name().as_str(),
        crate::user::pid_of(td),
    );
    crate::trace::dump(me, cpu::rdtsc());
}

fn double_fault(frame: &mut TrapFrame) {
    let cr2 = cpu::read_cr2();
    crate::console::enter_panic_mode();
    if let Some(stack) = mm::stack::guard_page_owner(cr2) {
        println!(
            "KERNEL STACK OVERFLOW on CPU {}: {stack}, guard page hit at {cr2:#x}",
            crate::percpu::cpu_index(),
        );
        report(frame, Some(cr2));
        fatal::die(Fatal::StackOverflow { addr: cr2 })
    }
    report(frame, Some(cr2));
    fatal::die(Fatal::Trap {
        vector: 8,
        addr: Some(cr2),
    })
}

fn page_fault_cause(error: u64) -> &'static str {
    match (error & 1 != 0, error & 2 != 0, error & 16 != 0) {
        (_, _, true) => "instruction fetch",
        (false, false, _) => "read of a not-present page",
        (false, true, _) => "write to a not-present page",
        (true, false, _) => "read protection violation",
        (true, true, _) => "write protection violation",
    }
}

/// Prints the report of a fatal trap: what, where, registers, backtrace.
/// Panic mode first, so the report goes straight to COM1 and the screen
/// even when a user driver has them (their drivers will not run again).
pub fn report(frame: &TrapFrame, addr: Option<u64>) {
    crate::console::enter_panic_mode();
    let base = mm::kernel_image_base();
    println!(
        "FATAL TRAP: {} (vector {}) error={:#x} on CPU {}{}",
        name(frame.vector),
        frame.vector,
        frame.error,
        crate::percpu::cpu_index(),
        if frame.user_mode() {
            " in user mode"
        } else {
            " in kernel mode"
        },
    );
    println!(
        "  rip={:#018x} (+{:#x}) cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}",
        frame.rip,
        frame.rip.wrapping_sub(base),
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss
    );
    if frame.vector == 14 {
        println!(
            "  cr2={:#018x} cause: {}{}",
            addr.unwrap_or(0),
            page_fault_cause(frame.error),
            if frame.error & 8 != 0 {
                " (reserved bit set)"
            } else {
                ""
            },
        );
    } else if let Some(a) = addr {
        println!("  cr2={a:#018x}");
    }
    println!(
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx
    );
    println!(
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}",
        frame.rsi, frame.rdi, frame.rbp, frame.r8
    );
    println!(
        "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}",
        frame.r9, frame.r10, frame.r11, frame.r12
    );
    println!(
        "  r13={:#018x} r14={:#018x} r15={:#018x} cr3={:#018x}",
        frame.r13,
        frame.r14,
        frame.r15,
        cpu::read_cr3()
    );
    if !frame.user_mode() {
        backtrace::print_from(frame.rbp, Some(frame.rip));
    }
}
