//! The ramdisk: a cpio archive (newc, as Linux's initramfs) of the user
//! programs, loaded by the bootloader next to the kernel (`cargo xtask`
//! builds it from `userland/`). Programs are found by name with
//! `cpio_reader`; the archive is read in place, never copied.

use crate::sync::Once;

static RAMDISK: Once<&'static [u8]> = Once::new();

/// Records where the bootloader put the ramdisk. Boot CPU, once, after
/// `mm::init` (the bootloader's mapping of it is part of the kernel half).
pub fn init(addr: Option<u64>, len: u64) {
    let Some(addr) = addr.filter(|_| len > 0) else {
        crate::println!("ramdisk: none (no user programs)");
        return;
    };
    // SAFETY: the bootloader mapped `len` bytes of ramdisk at `addr` in the
    // kernel half, in frames it marked as used, and nothing writes them.
    let bytes: &'static [u8] =
        unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
    let programs = cpio_reader::iter_files(bytes).count();
    if programs == 0 {
        crate::println!("ramdisk: {len} bytes, no cpio entries; ignored");
        return;
    }
    RAMDISK.call_once(|| bytes);
    crate::println!("ramdisk: {} KiB, {programs} programs", len / 1024);
}

/// The program called `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    cpio_reader::iter_files(RAMDISK.get()?)
        .find(|e| e.name() == name)
        .map(|e| e.file())
}
