//! The context switch and a new thread's first instructions.
//!
//! A switched-out thread's state is its stack: [`wyvern_switch`] pushes RFLAGS
//! and the six callee-saved registers of the System V ABI (the caller saved
//! the rest, as for any call), stores RSP into the outgoing thread's context,
//! loads the incoming thread's RSP and pops the same. Interrupts are disabled
//! for exactly those instructions (`pushfq; cli` … `popfq`): RFLAGS is saved
//! per thread, so each thread resumes with its own interrupt flag. The kernel
//! is soft-float (the `x86_64-unknown-none` target), so kernel threads carry no
//! FPU or SSE state; user threads will save theirs with their user context.
//!
//! The third argument is the outgoing thread; the incoming one receives it in
//! RAX as the function's return value — the `prev` LWKT's `switch_return`
//! needs — whether it resumes inside `wyvern_switch` or starts fresh in
//! [`wyvern_thread_trampoline`].
//!
//! A new thread's stack is laid out by [`init_stack`] to look like a thread
//! switched out right before the trampoline, with interrupts enabled.

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

/// Switches stacks.
///
/// # Safety
///
/// 1. `from_sp` points at the outgoing thread's saved-RSP slot; the caller is
///    that thread.
/// 2. `to_sp` is the saved RSP of a thread switched out by this function or
///    prepared by [`init_stack`], not running anywhere.
/// 3. Both threads are in critical sections (the scheduler's contract).
#[unsafe(naked)]
pub unsafe extern "C" fn wyvern_switch(from_sp: *mut u64, to_sp: u64, prev: usize) -> usize {
    naked_asm!(
        "pushfq",
        "cli",
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "mov rax, rdx",
        "popfq",
        "ret",
    )
}

/// First instructions of every new thread: `wyvern_switch` "returned" here with
/// the previous thread in RAX.
#[unsafe(naked)]
pub unsafe extern "C" fn wyvern_thread_trampoline() -> ! {
    naked_asm!(
        "mov rdi, rax",
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
    // From the saved RSP upward: r15 r14 r13 r12 rbx rbp, rflags, return
    // address, two words of padding (so RSP is 16-byte aligned after the
    // `ret`, as the trampoline's `call` needs).
    let words: [u64; 10] = [
        0,
        0,
        0,
        0,
        0,
        0,
        INITIAL_RFLAGS,
        wyvern_thread_trampoline as *const () as u64,
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
