//! QEMU's debug devices: `isa-debug-exit` and `fw_cfg`.
//!
//! Both are only touched when CPUID says we run under a hypervisor, so a real
//! machine never sees writes to ports 0xf4 or 0x510.

use x86_64::instructions::port::Port;

use super::cpu;
use wyvern_abi::exit::{DEBUG_EXIT_PORT, GUEST_FAILURE, GUEST_SUCCESS};

/// How a boot ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The boot did what it was asked.
    Success,
    /// A check failed, the kernel panicked or took a fatal trap.
    Failure,
}

/// Ends the boot: under QEMU, writes the code to `isa-debug-exit`, which makes
/// QEMU exit with status 33 or 35; on real hardware (or if the device is
/// missing) halts this CPU forever.
pub fn exit(code: ExitCode) -> ! {
    if cpu::under_hypervisor() {
        let value = match code {
            ExitCode::Success => GUEST_SUCCESS,
            ExitCode::Failure => GUEST_FAILURE,
        };
        let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
        // SAFETY: under a hypervisor port 0xf4 is QEMU's isa-debug-exit (or
        // unassigned, where the write is dropped); writing it has no other effect.
        unsafe { port.write(value) };
    }
    cpu::halt_forever()
}

const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_SIGNATURE: u16 = 0x0000;
const FW_CFG_FILE_DIR: u16 = 0x0019;

struct FwCfg {
    selector: Port<u16>,
    data: Port<u8>,
}

impl FwCfg {
    fn new() -> Self {
        FwCfg {
            selector: Port::new(FW_CFG_SELECTOR),
            data: Port::new(FW_CFG_DATA),
        }
    }

    fn select(&mut self, key: u16) {
        // SAFETY: only called under a hypervisor whose fw_cfg signature was
        // checked (or to check it); selecting a key has no other effect.
        unsafe { self.selector.write(key) };
    }

    fn read(&mut self, buf: &mut [u8]) {
        for b in buf {
            // SAFETY: reading the data port advances within the selected item only.
            *b = unsafe { self.data.read() };
        }
    }

    fn read_be32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.read(&mut b);
        u32::from_be_bytes(b)
    }

    fn read_be16(&mut self) -> u16 {
        let mut b = [0; 2];
        self.read(&mut b);
        u16::from_be_bytes(b)
    }
}

/// Reads the `fw_cfg` file `name` into `buf`. Returns the number of bytes read,
/// `None` if there is no fw_cfg device or no such file, or `Some(Err(size))` if
/// the file is larger than `buf`.
pub fn fw_cfg_file(name: &str, buf: &mut [u8]) -> Option<Result<usize, usize>> {
    if !cpu::under_hypervisor() {
        return None;
    }
    let mut cfg = FwCfg::new();
    cfg.select(FW_CFG_SIGNATURE);
    let mut sig = [0; 4];
    cfg.read(&mut sig);
    if &sig != b"QEMU" {
        return None;
    }
    cfg.select(FW_CFG_FILE_DIR);
    let count = cfg.read_be32();
    for _ in 0..count {
        let size = cfg.read_be32() as usize;
        let key = cfg.read_be16();
        let _reserved = cfg.read_be16();
        let mut fname = [0u8; 56];
        cfg.read(&mut fname);
        let len = fname.iter().position(|&c| c == 0).unwrap_or(56);
        if &fname[..len] == name.as_bytes() {
            if size > buf.len() {
                return Some(Err(size));
            }
            cfg.select(key);
            cfg.read(&mut buf[..size]);
            return Some(Ok(size));
        }
    }
    None
}
