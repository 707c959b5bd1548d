//! Exit codes of a test boot.
//!
//! QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`)
//! turns a write of `value` to its port into the process exit status
//! `(value << 1) | 1`. A boot therefore never exits with 0, and any status other than
//! [`HOST_SUCCESS`] — QEMU's own 1, a triple-fault reset under `-no-reboot`, a kill
//! by the host's deadline — is a failure.

/// I/O port of the `isa-debug-exit` device.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Value the kernel writes for "the boot did what it was asked".
pub const GUEST_SUCCESS: u32 = 0x10;
/// Value the kernel writes for "the boot failed" (failed check, panic, fatal trap).
pub const GUEST_FAILURE: u32 = 0x11;

/// Process status of QEMU after the guest wrote `value` to the exit port.
pub const fn host_status(value: u32) -> i32 {
    ((value << 1) | 1) as i32
}

/// Status the host sees for [`GUEST_SUCCESS`]: 33.
pub const HOST_SUCCESS: i32 = host_status(GUEST_SUCCESS);
/// Status the host sees for [`GUEST_FAILURE`]: 35.
pub const HOST_FAILURE: i32 = host_status(GUEST_FAILURE);

/// How the host reads a QEMU exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The guest wrote [`GUEST_SUCCESS`].
    Success,
    /// The guest wrote [`GUEST_FAILURE`].
    Failure,
    /// Anything else: QEMU's own error status, a reset, a signal.
    Other(i32),
}

impl Verdict {
    /// Classifies a process status.
    pub const fn from_status(status: i32) -> Self {
        match status {
            HOST_SUCCESS => Verdict::Success,
            HOST_FAILURE => Verdict::Failure,
            other => Verdict::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_isa_debug_exit() {
        assert_eq!(HOST_SUCCESS, 33);
        assert_eq!(HOST_FAILURE, 35);
        assert_eq!(Verdict::from_status(33), Verdict::Success);
        assert_eq!(Verdict::from_status(35), Verdict::Failure);
        assert_eq!(Verdict::from_status(1), Verdict::Other(1));
        assert_eq!(Verdict::from_status(0), Verdict::Other(0));
    }
}
