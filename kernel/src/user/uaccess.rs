//! Typed access to user memory on top of `arch::usercopy`: every failure is
//! [`Error::Fault`], never a kernel fault.

use alloc::vec::Vec;

use wyvern_abi::syscall::{
    AccountInfo, CpuStats, Error, Info, MsgInfo, SpawnOpts, ThreadInfo, WaitStatus,
};

use crate::arch::usercopy::{copy_from_user, copy_to_user};

/// Types that are plain bytes: `repr(C)`, all fields `u64`/`i64`, no padding.
///
/// # Safety
///
/// Implementors have no padding and no invalid bit patterns.
pub unsafe trait Plain: Copy {}

// SAFETY: `repr(C)` structs of `u64`/`i64` fields (wyvern_abi::syscall).
unsafe impl Plain for WaitStatus {}
// SAFETY: as above.
unsafe impl Plain for Info {}
// SAFETY: as above.
unsafe impl Plain for CpuStats {}
// SAFETY: as above.
unsafe impl Plain for MsgInfo {}
// SAFETY: `repr(C)`: five `u64`s, then 24 bytes of arrays: 64 bytes, no
// padding, every bit pattern valid.
unsafe impl Plain for ThreadInfo {}
// SAFETY: `repr(C)` structs of `u64` fields (wyvern_abi::syscall).
unsafe impl Plain for SpawnOpts {}
// SAFETY: as above.
unsafe impl Plain for AccountInfo {}

fn bytes_of<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: `Plain` types are bytes without padding; the slice covers
    // exactly the values.
    unsafe { core::slice::from_raw_parts(v.as_ptr().cast::<u8>(), core::mem::size_of_val(v)) }
}

/// Writes `v` to user address `addr`.
pub fn write<T: Plain>(addr: u64, v: &T) -> Result<(), Error> {
    copy_to_user(addr, bytes_of(core::slice::from_ref(v))).map_err(|_| Error::Fault)
}

/// Reads a `T` from user address `addr`.
pub fn read<T: Plain + Default>(addr: u64) -> Result<T, Error> {
    let mut v = T::default();
    // SAFETY: `Plain` types are bytes without padding and every bit pattern
    // is valid, so `v` may be filled byte by byte.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(
            core::ptr::from_mut(&mut v).cast::<u8>(),
            core::mem::size_of::<T>(),
        )
    };
    copy_from_user(bytes, addr).map_err(|_| Error::Fault)?;
    Ok(v)
}

/// Writes `v` to user address `addr`, one after another.
pub fn write_slice<T: Plain>(addr: u64, v: &[T]) -> Result<(), Error> {
    copy_to_user(addr, bytes_of(v)).map_err(|_| Error::Fault)
}

/// Reads `len` bytes (at most `max`, else [`Error::Invalid`]) from `addr`.
pub fn read_bytes(addr: u64, len: u64, max: usize) -> Result<Vec<u8>, Error> {
    if len > max as u64 {
        return Err(Error::Invalid);
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| Error::NoMemory)?;
    buf.resize(len as usize, 0);
    copy_from_user(&mut buf, addr).map_err(|_| Error::Fault)?;
    Ok(buf)
}

/// Checks that `len` bytes at `addr` (`0 < len <= 4096`: at most two
/// pages) can be written, by writing a zero byte at each end: the caller
/// writes the real bytes afterwards. Cheaper than writing them twice.
pub fn probe_write(addr: u64, len: u64) -> Result<(), Error> {
    debug_assert!((1..=4096).contains(&len), "probe_write of {len} bytes");
    copy_to_user(addr, &[0]).map_err(|_| Error::Fault)?;
    copy_to_user(addr.wrapping_add(len - 1), &[0]).map_err(|_| Error::Fault)
}

/// Writes `bytes` to `addr`.
pub fn write_bytes(addr: u64, bytes: &[u8]) -> Result<(), Error> {
    copy_to_user(addr, bytes).map_err(|_| Error::Fault)
}

/// Reads into `buf` from `addr`.
pub fn read_into(buf: &mut [u8], addr: u64) -> Result<(), Error> {
    copy_from_user(buf, addr).map_err(|_| Error::Fault)
}
