//! Entering the kernel with `syscall`, and every way back to user mode.
//!
//! # Where a user thread's context lives
//!
//! At the top of its own kernel stack, as a [`TrapFrame`]: the CPU loads
//! `TSS.RSP0` (traps from user mode) and the syscall entry loads
//! `PerCpu::kernel_rsp` with the top of the current user thread's kernel
//! stack, both set by the switch; so whichever way a user thread enters the
//! kernel, its user registers end up in the same frame in the same place. A
//! system call runs below that frame on the same stack, with interrupts
//! enabled, and may block like any kernel code: the frame waits with its
//! thread. There is exactly one way back to user mode, [`wyvern_user_return`],
//! after the last kernel frame of the thread is gone — so nothing ever
//! "returns twice" (seeds/002).
//!
//! # The way back
//!
//! `sysretq` when the frame was built by the syscall entry and its return
//! address is a user address (`rcx`/`r11` are the call's clobbers anyway);
//! otherwise `iretq`, which restores every register. `sysretq` to a
//! non-canonical `rcx` faults *in ring 0* on Intel CPUs with the user's stack
//! pointer loaded; the check against [`USER_TOP`] keeps it from ever seeing
//! one, and the last user page is never mapped, so no user instruction runs
//! up to the boundary. The `sysretq` path loads the registers with `mov`s
//! rather than popping the frame: `rcx` keeps the return address the check
//! loaded, and the frame's `rcx`/`r11` slots, which `sysretq` overwrites
//! anyway, are not read.
//!
//! # MSRs
//!
//! `STAR` selects kernel CS/SS = 0x08/0x10 on entry and user CS/SS =
//! 0x2b/0x23 on return (see `gdt`); `LSTAR` is the entry; `SFMASK` clears IF
//! (the entry runs with interrupts off until it is on the kernel stack), DF,
//! TF, NT and AC (SMAP stays in force in the kernel whatever the user set);
//! so the entry needs no `cld`.

use core::arch::global_asm;
use core::mem::offset_of;

use wyvern_abi::syscall::USER_TOP;
use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, KernelGsBase, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;

use super::gdt::{KERNEL_CS, USER_CS, USER_DS};
use super::trap::{FRAME_VECTOR_OFFSET, TrapFrame};
use crate::percpu;

/// The `vector` of a frame built by the syscall entry.
pub const SYSCALL_VECTOR: u64 = 256;

/// RFLAGS a user thread starts with: IF and the reserved bit 1.
pub const USER_RFLAGS: u64 = 0x202;

const FRAME_RIP_OFFSET: usize = offset_of!(TrapFrame, rip);

global_asm!(
    r#"
    .section .text.wyvern_syscall, "ax"
    .balign 16
    .global wyvern_syscall_entry
wyvern_syscall_entry:
    swapgs
    mov gs:[{user_rsp}], rsp
    mov rsp, gs:[{kernel_rsp}]
    push {user_ds}
    push qword ptr gs:[{user_rsp}]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {sysvec}
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov r12, rsp
    call wyvern_syscall_handler
    // Not reached: the handler leaves through the way back itself.
    ud2

    .balign 16
    .global wyvern_user_return
wyvern_user_return:
    cmp qword ptr [rsp + {vector}], {sysvec}
    jne wyvern_trap_return
    mov rcx, [rsp + {rip}]
    mov r11, {user_top}
    cmp rcx, r11
    jae wyvern_trap_return
    mov r15, [rsp + {r15}]
    mov r14, [rsp + {r14}]
    mov r13, [rsp + {r13}]
    mov r12, [rsp + {r12}]
    mov r10, [rsp + {r10}]
    mov r9, [rsp + {r9}]
    mov r8, [rsp + {r8}]
    mov rbp, [rsp + {rbp}]
    mov rdi, [rsp + {rdi}]
    mov rsi, [rsp + {rsi}]
    mov rdx, [rsp + {rdx}]
    mov rbx, [rsp + {rbx}]
    mov rax, [rsp + {rax}]
    mov r11, [rsp + {rflags}]
    mov rsp, [rsp + {rsp}]
    swapgs
    sysretq
    "#,
    user_rsp = const percpu::USER_RSP_OFFSET,
    kernel_rsp = const percpu::KERNEL_RSP_OFFSET,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    sysvec = const SYSCALL_VECTOR,
    vector = const FRAME_VECTOR_OFFSET,
    rip = const FRAME_RIP_OFFSET,
    user_top = const USER_TOP,
    r15 = const offset_of!(TrapFrame, r15),
    r14 = const offset_of!(TrapFrame, r14),
    r13 = const offset_of!(TrapFrame, r13),
    r12 = const offset_of!(TrapFrame, r12),
    r10 = const offset_of!(TrapFrame, r10),
    r9 = const offset_of!(TrapFrame, r9),
    r8 = const offset_of!(TrapFrame, r8),
    rbp = const offset_of!(TrapFrame, rbp),
    rdi = const offset_of!(TrapFrame, rdi),
    rsi = const offset_of!(TrapFrame, rsi),
    rdx = const offset_of!(TrapFrame, rdx),
    rbx = const offset_of!(TrapFrame, rbx),
    rax = const offset_of!(TrapFrame, rax),
    rflags = const offset_of!(TrapFrame, rflags),
    rsp = const offset_of!(TrapFrame, rsp),
);

unsafe extern "C" {
    /// The `LSTAR` target. Not callable.
    fn wyvern_syscall_entry();
    /// The way back to user mode, with RSP at a user [`TrapFrame`].
    fn wyvern_user_return() -> !;
}

/// Enables `syscall`/`sysret` on this CPU. Every CPU, once, after its GDT.
pub fn init_local() {
    // SAFETY: SCE only makes the `syscall` instruction work; its target and
    // selectors are set right below, before any user code can run.
    unsafe { Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
    // SAFETY: user base 0x18 gives SS 0x23 and CS 0x2b on `sysret`, kernel base
    // 0x08 gives CS 0x08 and SS 0x10 on `syscall`: the GDT's layout.
    unsafe { Star::write_raw(0x18, KERNEL_CS) };
    LStar::write(VirtAddr::new(wyvern_syscall_entry as *const () as u64));
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::NESTED_TASK
            | RFlags::ALIGNMENT_CHECK,
    );
    // User mode's GS base is 0 (it cannot change it: FSGSBASE is off): the
    // value `swapgs` exchanges with the kernel's on every crossing.
    KernelGsBase::write(VirtAddr::new(0));
}

/// Called by the syscall entry on the thread's kernel stack with interrupts
/// disabled, `frame` the user frame it pushed; leaves for user mode through
/// [`wyvern_user_return`] itself (with interrupts disabled) instead of
/// returning to the entry: the frame holds every user register, so nothing
/// this function would restore on a return is needed again — which is why
/// it uses the `preserve_none` convention (its argument in `r12`): it saves
/// none of the callee-saved registers the C convention would make it keep.
#[unsafe(no_mangle)]
extern "rust-preserve-none" fn wyvern_syscall_handler(frame: *mut TrapFrame) -> ! {
    // SAFETY: the entry passes the frame it just pushed at the top of this
    // thread's kernel stack; nothing else refers to it while we run.
    let f = unsafe { &mut *frame };
    percpu::count_syscall();
    super::cpu::interrupts_enable();
    let u = crate::user::syscall::dispatch(f);
    super::cpu::interrupts_disable();
    crate::user::before_syscall_return(u, f);
    // SAFETY: `frame` is at the top of the stack, where the entry built it
    // (so moving RSP there discards only this function's frame, which holds
    // nothing to drop); interrupts are off, as the way back needs.
    unsafe {
        core::arch::asm!(
            "mov rsp, {frame}",
            "jmp {ret}",
            frame = in(reg) frame,
            ret = sym wyvern_user_return,
            options(noreturn),
        )
    }
}

/// Leaves the kernel for user mode with the registers of `frame`, which must
/// be the current thread's user frame at the top of its kernel stack.
///
/// # Safety
///
/// 1. `frame` is `user_frame(kstack_top)` of the current thread, filled with
///    a user context: `cs`/`ss` the user selectors, `rip` below
///    [`USER_TOP`], `rflags` with IF.
/// 2. The thread's address space, kernel stack top and FPU state are active
///    on this CPU (the switch made them so), and nothing below `frame` on the
///    stack is needed again: it is abandoned.
pub unsafe fn enter_user(frame: *mut TrapFrame) -> ! {
    // SAFETY: the caller's conditions; the frame is at the top of the stack,
    // so moving RSP there discards only the caller's own frames.
    unsafe {
        core::arch::asm!(
            "cli",
            "mov rsp, {frame}",
            "jmp {ret}",
            frame = in(reg) frame,
            ret = sym wyvern_user_return,
            options(noreturn),
        )
    }
}

/// Where the user frame of a thread whose kernel stack ends at `top` lives.
pub fn user_frame(top: u64) -> *mut TrapFrame {
    (top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame
}

/// A user frame for a new thread: starts at `rip` with stack `rsp` and the
/// first two argument registers set.
pub fn initial_frame(rip: u64, rsp: u64, rdi: u64, rsi: u64) -> TrapFrame {
    TrapFrame {
        rdi,
        rsi,
        rip,
        rsp,
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        rflags: USER_RFLAGS,
        // Not a syscall frame: the first entry goes through `iretq`, which
        // restores every register as written here.
        vector: 0,
        ..TrapFrame::default()
    }
}
