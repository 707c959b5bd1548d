//! The machine as the power server may touch it: [`Io`], the ports the
//! process manager grants it, reached by `in`/`out`; device memory through
//! a mapping made for one access; and [`Firmware`], the `aml::Handler` that
//! lets the interpreter reach exactly these (PCI configuration space not at
//! all). What is refused reads as all ones (ports, PCI) or 0 (memory),
//! writes are dropped, and each refusal is logged a bounded number of times.

use wyvern_abi::syscall::{AcpiInfo, devmap};
use wyvern_user::sys;

use crate::{KBC_CMD, KBC_DATA, RST_CNT};

/// The I/O ports the process manager grants this program: its policy for
/// `power` computed from the same `HWINFO`, as `[first, end)` ranges.
#[derive(Clone, Copy)]
pub(crate) struct Io {
    ranges: [(u32, u32); 7],
}

impl Io {
    pub(crate) fn granted(i: &AcpiInfo) -> Io {
        let r = |port: u64, len: u32| match u16::try_from(port) {
            Ok(p) if p != 0 => (u32::from(p), u32::from(p) + len),
            _ => (0, 0),
        };
        let reset = if i.reset_space == 1 { i.reset_addr } else { 0 };
        Io {
            ranges: [
                r(i.pm1a_cnt, 2),
                r(i.pm1b_cnt, 2),
                r(reset, 1),
                r(RST_CNT.into(), 1),
                r(KBC_DATA.into(), 1),
                r(KBC_CMD.into(), 1),
                r(i.smi_cmd, 1),
            ],
        }
    }

    fn allows(&self, port: u16, width: u32) -> bool {
        let (p, e) = (u32::from(port), u32::from(port) + width);
        matches!(width, 1 | 2 | 4) && self.ranges.iter().any(|&(a, b)| a <= p && e <= b)
    }

    /// Reads `width` (1, 2 or 4) bytes from `port`; None when not granted.
    pub(crate) fn read(&self, port: u16, width: u32) -> Option<u32> {
        if !self.allows(port, width) {
            return None;
        }
        // SAFETY: the process manager granted `[port, port + width)` to this
        // program (`Io::granted` mirrors its policy, `allows` checked the
        // range); reading ACPI's registers is what the AML asked for.
        let v = unsafe {
            match width {
                1 => wyvern_user::port::in8(port).into(),
                2 => wyvern_user::port::in16(port).into(),
                _ => wyvern_user::port::in32(port),
            }
        };
        Some(v)
    }

    /// Writes the low `width` bytes of `v` to `port`; false when not granted.
    pub(crate) fn write(&self, port: u16, width: u32, v: u32) -> bool {
        if !self.allows(port, width) {
            return false;
        }
        // SAFETY: as in `read`: the range is granted (what the write does
        // to the machine is the point).
        unsafe {
            match width {
                1 => wyvern_user::port::out8(port, v as u8),
                2 => wyvern_user::port::out16(port, v as u16),
                _ => wyvern_user::port::out32(port, v),
            }
        }
        true
    }
}

/// Maps `width` (1, 2, 4 or 8) naturally aligned bytes of device memory at
/// `phys` for one access `f(address)`, then unmaps them; None when the
/// kernel refuses (nobody granted them, or they are RAM).
fn with_device<R>(phys: u64, width: u64, write: bool, f: impl FnOnce(u64) -> R) -> Option<R> {
    if !matches!(width, 1 | 2 | 4 | 8) || !phys.is_multiple_of(width) {
        return None;
    }
    let flags = if write { 0 } else { devmap::READ_ONLY };
    let va = sys::map_device(phys, width, flags).ok()?;
    let r = f(va);
    let page = va & !0xfff;
    // SAFETY: the mapping was made above for `f` alone, which has returned;
    // nothing else holds its address.
    let _ = unsafe { sys::unmap(page, ((va + width + 0xfff) & !0xfff) - page) };
    Some(r)
}

fn mem_read(phys: usize, width: u64) -> Option<u64> {
    with_device(phys as u64, width, false, |va| {
        // SAFETY: `with_device` mapped `width` bytes at `va` for us, aligned
        // as `phys` is (the mapping keeps the offset in the page).
        unsafe {
            match width {
                1 => u64::from((va as *const u8).read_volatile()),
                2 => u64::from((va as *const u16).read_volatile()),
                4 => u64::from((va as *const u32).read_volatile()),
                _ => (va as *const u64).read_volatile(),
            }
        }
    })
}

pub(crate) fn mem_write(phys: usize, width: u64, v: u64) -> bool {
    with_device(phys as u64, width, true, |va| {
        // SAFETY: as in `mem_read`, mapped writable; device memory, which no
        // Rust object of this process lives in.
        unsafe {
            match width {
                1 => (va as *mut u8).write_volatile(v as u8),
                2 => (va as *mut u16).write_volatile(v as u16),
                4 => (va as *mut u32).write_volatile(v as u32),
                _ => (va as *mut u64).write_volatile(v),
            }
        }
    })
    .is_some()
}

/// What AML may touch, as this process may (module docs).
pub(crate) struct Firmware {
    pub(crate) io: Io,
}

impl Firmware {
    fn mem(&self, a: usize, width: u64) -> u64 {
        mem_read(a, width).unwrap_or_else(|| {
            note!("AML read of memory {a:#x} refused: 0");
            0
        })
    }

    fn mem_set(&mut self, a: usize, width: u64, v: u64) {
        if !mem_write(a, width, v) {
            note!("AML write of memory {a:#x} refused");
        }
    }

    fn port(&self, p: u16, width: u32) -> u32 {
        self.io.read(p, width).unwrap_or_else(|| {
            note!("AML read of port {p:#x} refused: all ones");
            u32::MAX
        })
    }

    fn port_set(&self, p: u16, width: u32, v: u32) {
        if !self.io.write(p, width, v) {
            note!("AML write of port {p:#x} refused");
        }
    }

    fn pci(&self, bus: u8, dev: u8, func: u8, off: u16, write: bool) {
        let what = if write { "write" } else { "read" };
        note!("AML {what} of PCI {bus:02x}:{dev:02x}.{func} {off:#x} refused");
    }
}

impl aml::Handler for Firmware {
    fn read_u8(&self, a: usize) -> u8 {
        self.mem(a, 1) as u8
    }
    fn read_u16(&self, a: usize) -> u16 {
        self.mem(a, 2) as u16
    }
    fn read_u32(&self, a: usize) -> u32 {
        self.mem(a, 4) as u32
    }
    fn read_u64(&self, a: usize) -> u64 {
        self.mem(a, 8)
    }
    fn write_u8(&mut self, a: usize, v: u8) {
        self.mem_set(a, 1, v.into());
    }
    fn write_u16(&mut self, a: usize, v: u16) {
        self.mem_set(a, 2, v.into());
    }
    fn write_u32(&mut self, a: usize, v: u32) {
        self.mem_set(a, 4, v.into());
    }
    fn write_u64(&mut self, a: usize, v: u64) {
        self.mem_set(a, 8, v);
    }
    fn read_io_u8(&self, p: u16) -> u8 {
        self.port(p, 1) as u8
    }
    fn read_io_u16(&self, p: u16) -> u16 {
        self.port(p, 2) as u16
    }
    fn read_io_u32(&self, p: u16) -> u32 {
        self.port(p, 4)
    }
    fn write_io_u8(&self, p: u16, v: u8) {
        self.port_set(p, 1, v.into());
    }
    fn write_io_u16(&self, p: u16, v: u16) {
        self.port_set(p, 2, v.into());
    }
    fn write_io_u32(&self, p: u16, v: u32) {
        self.port_set(p, 4, v);
    }
    fn read_pci_u8(&self, _seg: u16, b: u8, d: u8, f: u8, o: u16) -> u8 {
        self.pci(b, d, f, o, false);
        u8::MAX
    }
    fn read_pci_u16(&self, _seg: u16, b: u8, d: u8, f: u8, o: u16) -> u16 {
        self.pci(b, d, f, o, false);
        u16::MAX
    }
    fn read_pci_u32(&self, _seg: u16, b: u8, d: u8, f: u8, o: u16) -> u32 {
        self.pci(b, d, f, o, false);
        u32::MAX
    }
    fn write_pci_u8(&self, _seg: u16, b: u8, d: u8, f: u8, o: u16, _v: u8) {
        self.pci(b, d, f, o, true);
    }
    fn write_pci_u16(&self, _seg: u16, b: u8, d: u8, f: u8, o: u16, _v: u16) {
        self.pci(b, d, f, o, true);
    }
    fn write_pci_u32(&self, _seg: u16, b: u8, d: u8, f: u8, o: u16, _v: u32) {
        self.pci(b, d, f, o, true);
    }
    /// The crate's default panics; a `Fatal` op fails the method instead.
    fn handle_fatal_error(&self, kind: u8, code: u32, arg: u64) {
        note!("AML Fatal ({kind:#x}, {code:#x}, {arg:#x})");
    }
}
