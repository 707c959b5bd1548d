//! Copying between kernel memory and the current user address space, and
//! surviving a bad user pointer.
//!
//! The only kernel code that touches user memory is the copy loop below
//! (`rep movsq`, then `rep movsb` for the last bytes, between `stac` and
//! `clac` when SMAP is on). A fault on either instruction — an unmapped or
//! read-only user page — is not fatal: the page-fault handler sees the
//! faulting address is the loop's ([`fixup`]) and resumes at its recovery
//! label, which returns how many bytes were left, so the copy reports a
//! fault to its caller. (Under `-icount` every iteration of a `rep` counts:
//! eight bytes a quadword make the small copies of the system calls —
//! gather lists, a `MsgInfo` — an eighth of the instructions.)
//!
//! Before any copy, [`check`] refuses ranges that are not wholly user
//! addresses (kernel half, non-canonical, wrapping), so the loop never touches
//! kernel memory on a user's behalf.

use core::arch::global_asm;

use wyvern_abi::syscall::USER_TOP;

use super::protect;
use super::trap::TrapFrame;

macro_rules! copy_routine {
    ($name:literal, $stac:literal, $clac:literal) => {
        concat!(
            "    .balign 16\n",
            "    .global ",
            $name,
            "\n",
            $name,
            ":\n",
            "    ",
            $stac,
            "\n",
            // Eight bytes at a time, then the rest byte by byte.
            "    mov rcx, rdx\n",
            "    shr rcx, 3\n",
            "    .global ",
            $name,
            "_insn8\n",
            $name,
            "_insn8:\n",
            "    rep movsq\n",
            "    mov rcx, rdx\n",
            "    and rcx, 7\n",
            "    .global ",
            $name,
            "_insn\n",
            $name,
            "_insn:\n",
            "    rep movsb\n",
            "    ",
            $clac,
            "\n",
            "    xor eax, eax\n",
            "    ret\n",
            // A fault in the quadword loop: RCX quadwords and the tail left.
            "    .global ",
            $name,
            "_fault8\n",
            $name,
            "_fault8:\n",
            "    ",
            $clac,
            "\n",
            "    and rdx, 7\n",
            "    lea rax, [rdx + rcx * 8]\n",
            "    ret\n",
            "    .global ",
            $name,
            "_fault\n",
            $name,
            "_fault:\n",
            "    ",
            $clac,
            "\n",
            "    mov rax, rcx\n",
            "    ret\n",
        )
    };
}

global_asm!(
    ".section .text.wyvern_usercopy, \"ax\"",
    copy_routine!("wyvern_copy_smap", "stac", "clac"),
    copy_routine!("wyvern_copy_plain", "nop", "nop"),
);

unsafe extern "C" {
    /// Copies `len` bytes from `src` to `dst`; returns the bytes left when a
    /// fault stopped it (0: all copied). With `stac`/`clac`.
    fn wyvern_copy_smap(dst: *mut u8, src: *const u8, len: usize) -> usize;
    /// The same without `stac`/`clac` (no SMAP).
    fn wyvern_copy_plain(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static wyvern_copy_smap_insn8: u8;
    static wyvern_copy_smap_fault8: u8;
    static wyvern_copy_smap_insn: u8;
    static wyvern_copy_smap_fault: u8;
    static wyvern_copy_plain_insn8: u8;
    static wyvern_copy_plain_fault8: u8;
    static wyvern_copy_plain_insn: u8;
    static wyvern_copy_plain_fault: u8;
}

/// A user pointer the kernel cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault;

/// Whether `[addr, addr + len)` lies in user space.
pub fn check(addr: u64, len: u64) -> Result<(), Fault> {
    match addr.checked_add(len) {
        Some(end) if end <= USER_TOP => Ok(()),
        _ => Err(Fault),
    }
}

fn copy(dst: *mut u8, src: *const u8, len: usize) -> usize {
    // SAFETY: the callers checked that the user side lies in user space and
    // the kernel side is theirs for `len` bytes; a fault on the user side is
    // recovered by `fixup` and reported as bytes left.
    unsafe {
        if protect::smap() {
            wyvern_copy_smap(dst, src, len)
        } else {
            wyvern_copy_plain(dst, src, len)
        }
    }
}

/// Copies `dst.len()` bytes from user address `src`.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), Fault> {
    check(src, dst.len() as u64)?;
    match copy(dst.as_mut_ptr(), src as *const u8, dst.len()) {
        0 => Ok(()),
        _ => Err(Fault),
    }
}

/// Copies `src` to user address `dst`.
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), Fault> {
    check(dst, src.len() as u64)?;
    match copy(dst as *mut u8, src.as_ptr(), src.len()) {
        0 => Ok(()),
        _ => Err(Fault),
    }
}

/// The copy loops' faulting instructions and their recovery labels.
fn sites() -> [(u64, u64); 4] {
    [
        (
            &raw const wyvern_copy_smap_insn8 as u64,
            &raw const wyvern_copy_smap_fault8 as u64,
        ),
        (
            &raw const wyvern_copy_smap_insn as u64,
            &raw const wyvern_copy_smap_fault as u64,
        ),
        (
            &raw const wyvern_copy_plain_insn8 as u64,
            &raw const wyvern_copy_plain_fault8 as u64,
        ),
        (
            &raw const wyvern_copy_plain_insn as u64,
            &raw const wyvern_copy_plain_fault as u64,
        ),
    ]
}

/// Whether a kernel-mode fault hit the copy loop.
pub fn in_copy(frame: &TrapFrame) -> bool {
    !frame.user_mode() && sites().iter().any(|&(insn, _)| frame.rip == insn)
}

/// Called by the page-fault and general-protection handlers for a fault in
/// kernel mode: if it hit the copy loop, moves `rip` to the loop's recovery
/// label and returns true (the fault is handled).
pub fn fixup(frame: &mut TrapFrame) -> bool {
    if frame.user_mode() {
        return false;
    }
    for (insn, fault) in sites() {
        if frame.rip == insn {
            frame.rip = fault;
            return true;
        }
    }
    false
}
