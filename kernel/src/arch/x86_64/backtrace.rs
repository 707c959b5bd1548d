//! Frame-pointer backtraces.
//!
//! The kernel is built with `-C force-frame-pointers=yes`, so every Wyvern
//! function keeps `rbp` pointing at `[saved rbp, return address]`. The walk checks
//! each frame pointer before reading through it (aligned, in the kernel half,
//! mapped), so a corrupt chain ends the trace instead of faulting inside the
//! fault report. Lines are printed as `BT #n <rip> +<offset>`, where `offset` is
//! the address in the kernel ELF; `xtask` symbolizes them on the host.

use crate::mm;

/// Deepest trace printed.
const MAX_FRAMES: usize = 48;

/// Start of the kernel half of the address space.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

fn readable(addr: u64) -> bool {
    addr >= KERNEL_HALF && addr.is_multiple_of(8) && mm::is_mapped(addr) && mm::is_mapped(addr + 8)
}

/// Calls `f(depth, return_address)` for each frame of the chain starting at `rbp`.
pub fn walk(mut rbp: u64, mut f: impl FnMut(usize, u64)) {
    for depth in 0..MAX_FRAMES {
        if rbp == 0 || !readable(rbp) {
            return;
        }
        // SAFETY: `readable` checked that both words of the frame record are mapped
        // kernel memory and aligned; reading them cannot fault.
        let (next, ret) = unsafe {
            let p = rbp as *const u64;
            (p.read_volatile(), p.add(1).read_volatile())
        };
        if ret == 0 {
            return;
        }
        f(depth, ret);
        // Frames grow down: the caller's frame is above ours. Anything else is a
        // broken chain.
        if next <= rbp {
            return;
        }
        rbp = next;
    }
}

/// Prints one backtrace line for `rip`.
pub fn print_frame(n: usize, rip: u64) {
    crate::println!(
        "{} #{n} {rip:#018x} +{:#x}",
        wyvern_abi::result::BACKTRACE_TAG,
        rip.wrapping_sub(mm::kernel_image_base())
    );
}

/// Prints the trace of the caller.
#[inline(never)]
pub fn print_current() {
    print_from(super::cpu::read_rbp(), None);
}

/// Prints `first` (the interrupted `rip`, if any) and then the chain from `rbp`.
pub fn print_from(rbp: u64, first: Option<u64>) {
    let mut n = 0;
    if let Some(rip) = first {
        print_frame(n, rip);
        n += 1;
    }
    walk(rbp, |_, ret| {
        print_frame(n, ret);
        n += 1;
    });
}
