//! I/O port access for drivers: `in` and `out` of 8, 16 and 32 bits.
//!
//! A port the process was not granted (`PM_IO_GRANT`) makes the instruction
//! fault, and the kernel ends the process with a report; a granted one
//! drives a device, which may do anything the device can — so these are
//! `unsafe`, and each driver says in its own words why its ports are its to
//! drive.

/// Reads a byte from `port`.
///
/// # Safety
///
/// The process holds a grant for `port`, and reading it has no effect on
/// the device the caller did not intend.
#[inline]
pub unsafe fn in8(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller's contract; `in` touches no memory.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// Reads 16 bits from `port`.
///
/// # Safety
///
/// As for [`in8`], for `port` and `port + 1`.
#[inline]
pub unsafe fn in16(port: u16) -> u16 {
    let v: u16;
    // SAFETY: the caller's contract; `in` touches no memory.
    unsafe { core::arch::asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack)) };
    v
}

/// Reads 32 bits from `port`.
///
/// # Safety
///
/// As for [`in8`], for `port` to `port + 3`.
#[inline]
pub unsafe fn in32(port: u16) -> u32 {
    let v: u32;
    // SAFETY: the caller's contract; `in` touches no memory.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)) };
    v
}

/// Writes a byte to `port`.
///
/// # Safety
///
/// The process holds a grant for `port`, and what the write makes the
/// device do is what the caller intends.
#[inline]
pub unsafe fn out8(port: u16, v: u8) {
    // SAFETY: the caller's contract; `out` touches no memory.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

/// Writes 16 bits to `port`.
///
/// # Safety
///
/// As for [`out8`], for `port` and `port + 1`.
#[inline]
pub unsafe fn out16(port: u16, v: u16) {
    // SAFETY: the caller's contract; `out` touches no memory.
    unsafe { core::arch::asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack)) };
}

/// Writes 32 bits to `port`.
///
/// # Safety
///
/// As for [`out8`], for `port` to `port + 3`.
#[inline]
pub unsafe fn out32(port: u16, v: u32) {
    // SAFETY: the caller's contract; `out` touches no memory.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack)) };
}
