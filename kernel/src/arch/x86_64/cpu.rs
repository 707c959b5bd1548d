//! Single instructions of the CPU, wrapped: interrupt flag, halt, pause, TSC,
//! control registers, CPUID.
//!
//! Every function here is one or two instructions; callers state *why* they use
//! them, these wrappers only state what they do.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Whether maskable interrupts are enabled on this CPU.
#[inline(always)]
pub fn interrupts_enabled() -> bool {
    read_rflags() & RFLAGS_IF != 0
}

/// Reads RFLAGS.
#[inline(always)]
pub fn read_rflags() -> u64 {
    let flags: u64;
    // SAFETY: pushfq/pop only touch the stack slot they allocate; no memory
    // the compiler knows about is read or written.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags
}

/// Disables maskable interrupts and returns whether they were enabled.
#[inline(always)]
pub fn interrupts_save_disable() -> bool {
    let was = interrupts_enabled();
    // Not `nomem`: the compiler must not move memory accesses across it
    // (what follows relies on interrupts off, what precedes on them on).
    // SAFETY: `cli` only clears RFLAGS.IF; the caller restores it with
    // `interrupts_restore`.
    unsafe { asm!("cli", options(nostack)) };
    was
}

/// Re-enables maskable interrupts if `enabled` (the value from
/// [`interrupts_save_disable`]).
#[inline(always)]
pub fn interrupts_restore(enabled: bool) {
    if enabled {
        // SAFETY: `sti` sets RFLAGS.IF, returning to the state the caller
        // saved; a compiler barrier like `cli`.
        unsafe { asm!("sti", options(nostack)) };
    }
}

/// Enables maskable interrupts.
#[inline(always)]
pub fn interrupts_enable() {
    // SAFETY: `sti` sets RFLAGS.IF; handlers are installed before any CPU
    // calls this. A compiler barrier (not `nomem`), like `cli`.
    unsafe { asm!("sti", options(nostack)) };
}

/// Disables maskable interrupts.
#[inline(always)]
pub fn interrupts_disable() {
    // SAFETY: `cli` only clears RFLAGS.IF. A compiler barrier (not
    // `nomem`): accesses the caller makes with interrupts off stay after it.
    unsafe { asm!("cli", options(nostack)) };
}

/// Enables interrupts and halts until the next one, atomically: `sti` takes
/// effect after the following instruction, so an interrupt pending at the `sti`
/// wakes the `hlt` instead of being taken before it. This is what lets an idle
/// loop check for work with interrupts off and then sleep without a lost wakeup.
#[inline(always)]
pub fn enable_and_halt() {
    // Not `nomem`: the idle loop's last look at its run queue, made with
    // interrupts off, stays before it, and what a handler wrote is read
    // again after it.
    // SAFETY: `sti; hlt` enables interrupts and waits for one; handlers are
    // installed.
    unsafe { asm!("sti", "hlt", options(nostack)) };
}

/// Halts with interrupts disabled, forever: the end of a CPU that must stop
/// (after a panic, or when QEMU's exit device is absent).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops this CPU; only an NMI or reset wakes it, and the
        // loop halts again.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// `pause`: tells the CPU (and QEMU's TCG) that this is a spin-wait iteration.
/// Every loop that waits for another CPU executes it (see BUILD-NOTES.md).
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no side effects; CR4.TSD is clear in ring 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads the time-stamp counter as its low and high halves, as `rdtsc`
/// gives them: for a store that needs no combining (the trace ring).
#[inline(always)]
pub fn rdtsc_halves() -> (u32, u32) {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` has no side effects; CR4.TSD is clear in ring 0.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (lo, hi)
}

/// Reads CR2, the linear address of the last page fault.
#[inline(always)]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3.
#[inline(always)]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads the frame pointer of the caller's frame.
#[inline(always)]
pub fn read_rbp() -> u64 {
    let v: u64;
    // SAFETY: copying RBP has no side effects.
    unsafe { asm!("mov {}, rbp", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Executes CPUID for `leaf`/`subleaf`.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// Whether CPUID says we run under a hypervisor (leaf 1, ECX bit 31).
pub fn under_hypervisor() -> bool {
    cpuid(1, 0).ecx & (1 << 31) != 0
}

/// The CPU's brand string (CPUID 0x8000_0002..4), trimmed.
pub fn brand_string(buf: &mut [u8; 48]) -> &str {
    if cpuid(0x8000_0000, 0).eax < 0x8000_0004 {
        return "unknown CPU";
    }
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        let r = cpuid(leaf, 0);
        for (j, reg) in [r.eax, r.ebx, r.ecx, r.edx].iter().enumerate() {
            buf[i * 16 + j * 4..i * 16 + j * 4 + 4].copy_from_slice(&reg.to_le_bytes());
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(48);
    core::str::from_utf8(&buf[..end])
        .unwrap_or("unknown CPU")
        .trim()
}

/// Calls `f(arg)` on the stack whose top is `top`, and returns on the original
/// stack.
///
/// # Safety
///
/// 1. `top` is the 16-byte-aligned top of a mapped stack that nothing else uses
///    until `f` returns.
/// 2. `f` does not unwind (the kernel aborts on panic anyway) and returns
///    normally or never.
#[unsafe(naked)]
pub unsafe extern "C" fn call_on_stack(arg: usize, f: extern "C" fn(usize), top: u64) {
    core::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "mov rsp, rdx",
        "call rsi",
        "mov rsp, rbp",
        "pop rbp",
        "ret",
    )
}

/// Fills the 4 KiB page at `page` with zeros, eight bytes per iteration
/// (`rep stosq`, as Linux's `clear_page`).
///
/// # Safety
///
/// `page` is 4 KiB-aligned, mapped writable, and nothing else references it.
#[inline]
pub unsafe fn clear_page(page: *mut u8) {
    // SAFETY: the caller guarantees the 4096 bytes at `page` are ours to write;
    // `rep stosq` writes exactly 512 quadwords upward (DF is clear in the kernel).
    unsafe {
        asm!(
            "rep stosq",
            inout("rdi") page => _,
            inout("rcx") 512usize => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        );
    }
}

/// Flushes this CPU's TLB of non-global entries (reloads CR3).
pub fn flush_tlb_local() {
    let (frame, flags) = x86_64::registers::control::Cr3::read();
    // SAFETY: writing back the current CR3 changes no mapping; it only drops
    // cached translations.
    unsafe { x86_64::registers::control::Cr3::write(frame, flags) };
}
