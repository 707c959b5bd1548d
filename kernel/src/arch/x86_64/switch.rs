//! The context switch and a new thread's first instructions.
//!
//! A switched-out thread's state is its stack: [`switch_stacks`] pushes RFLAGS,
//! RBP and RBX and the address where the thread resumes, stores RSP into the
//! outgoing thread's context, loads the incoming thread's RSP and `ret`s to
//! the address on top of it — where the incoming thread pops the same three.
//! The other callee-saved registers of the System V ABI (R12–R15) are
//! declared clobbered instead of saved: the compiler keeps in them only what
//! the function around the switch needs, and saves for its own caller only
//! those it uses (a full save was six pushes and pops per switch, on top of
//! the prologue's own). The caller saved the rest, as for any call.
//! Interrupts are disabled for exactly those instructions (`pushfq; cli` …
//! `popfq`): RFLAGS is saved per thread, so each thread resumes with its own
//! interrupt flag. The kernel is soft-float (the `x86_64-unknown-none`
//! target), so kernel threads carry no FPU or SSE state; user threads save
//! theirs with their user context.
//!
//! The third argument is the outgoing thread; the incoming one receives it in
//! RDX, which [`switch_stacks`] returns — the `prev` LWKT's `switch_return`
//! needs — whether it resumes inside a `switch_stacks` or starts fresh in
//! [`wyvern_thread_trampoline`].
//!
//! A new thread's stack is laid out by [`init_stack`] to look like a thread
//! switched out with the trampoline as its resume address and interrupts
//! enabled.

use core::arch::naked_asm;

/// A thread's machine context: its saved RSP while not running, the top of
/// its kernel stack, and its user state if it is a user thread.
#[derive(Debug, Default)]
pub struct SwitchContext {
    /// Saved RSP of a thread that is not running.
    pub sp: core::sync::atomic::AtomicU64,
    /// Top of the thread's kernel stack (0 for a CPU's boot thread). The
    /// [`crate::arch::trap::TrapFrame`] of a user thread lives just below it.
    pub kstack_top: core::sync::atomic::AtomicU64,
    /// The `user::UserThread` of a user thread, as an address; 0 for a kernel
    /// thread. Written only by the thread itself, in a critical section.
    pub user: core::sync::atomic::AtomicUsize,
}

/// Switches stacks: saves the current thread's state on its stack and its RSP
/// at `from_sp`, resumes the thread whose saved RSP is `to_sp`. Returns, once
/// the current thread is switched back to, the `prev` its switcher passed.
///
/// Inlined into the scheduler's switch, so the registers it clobbers are
/// saved only where the function around it uses them.
///
/// # Safety
///
/// 1. `from_sp` points at the outgoing thread's saved-RSP slot; the caller is
///    that thread.
/// 2. `to_sp` is the saved RSP of a thread switched out by this function or
///    prepared by [`init_stack`], not running anywhere.
/// 3. Both threads are in critical sections (the scheduler's contract).
#[inline(always)]
pub unsafe fn switch_stacks(from_sp: *mut u64, to_sp: u64, prev: usize) -> usize {
    let prev_out: usize;
    // By the caller's conditions `from_sp` is ours to write, and `to_sp`
    // holds a resume address, RBX, RBP and RFLAGS (pushed below, or laid out
    // by `init_stack`).
    // SAFETY: so, and every register but RBX, RBP and RSP is declared
    // clobbered: the other thread runs arbitrary code before we resume.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "cli",
            "push rbp",
            "push rbx",
            "lea rax, [rip + 2f]",
            "push rax",
            "mov [rdi], rsp",
            "mov rsp, rsi",
            "ret",
            "2:",
            "pop rbx",
            "pop rbp",
            "popfq",
            in("rdi") from_sp,
            in("rsi") to_sp,
            inout("rdx") prev => prev_out,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
    prev_out
}

/// First instructions of every new thread: the switch "returned" here with
/// the previous thread in RDX and the new stack's RBX, RBP and RFLAGS on top.
#[unsafe(naked)]
pub unsafe extern "C" fn wyvern_thread_trampoline() -> ! {
    naked_asm!(
        "pop rbx",
        "pop rbp",
        "popfq",
        "mov rdi, rdx",
        "xor ebp, ebp",
        "call {start}",
        "ud2",
        start = sym crate::sched::thread_entry,
    )
}

/// RFLAGS a new thread starts with: IF set, reserved bit 1 set.
const INITIAL_RFLAGS: u64 = 0x202;

/// Lays out a new thread's stack below `top` (16-byte aligned) so that the
/// first switch to it lands in [`wyvern_thread_trampoline`] with interrupts
/// enabled and the stack aligned for a call; returns the saved RSP.
pub fn init_stack(top: u64) -> u64 {
    assert!(top.is_multiple_of(16));
    // From the saved RSP upward: resume address, rbx, rbp, rflags, two words
    // of padding (so RSP is 16-byte aligned after the trampoline's pops, as
    // its `call` needs).
    let words: [u64; 6] = [
        wyvern_thread_trampoline as *const () as u64,
        0,
        0,
        INITIAL_RFLAGS,
        0,
        0,
    ];
    let sp = top - 8 * words.len() as u64;
    for (i, w) in words.iter().enumerate() {
        // SAFETY: [sp, top) lies in the new thread's stack, which the caller
        // owns and which nothing runs on yet; `sp` is 8-byte aligned.
        unsafe { ((sp + 8 * i as u64) as *mut u64).write(*w) };
    }
    sp
}
