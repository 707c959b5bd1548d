//! Root ports: PORTSC writes that never clear a change bit or disable a
//! port by accident, port reset, and what a port change means for the
//! device on it.
//!
//! A port is [`PortState::Empty`], [`PortState::Ignored`] (something we
//! do not drive, or that failed: not retried until it is plugged again)
//! or [`PortState::Keyboard`]. Port Status Change events only mark a port
//! pending (a bitmap: a flood of events costs nothing); `Hc::service` then
//! looks at each pending port once. A connect status change or a lost
//! connection detaches what was there; a connected empty port is
//! enumerated (`device.rs`). Devices present when the controller starts
//! raise no events (QEMU sets their CSC while it is halted), so
//! [`Hc::scan_ports`] marks every port pending once.

use wyvern_user::sys;

use crate::hc::{Fatal, Hc, MS, wait_for};

pub const PORT_CCS: u32 = 1 << 0;
pub const PORT_PED: u32 = 1 << 1;
const PORT_PR: u32 = 1 << 4;
const PORT_CSC: u32 = 1 << 17;
const PORT_PRC: u32 = 1 << 21;
/// CSC, PEC, WRC, OCC, PRC, PLC, CEC: write 1 to clear.
const PORT_CHANGES: u32 = 0x7f << 17;
/// The bits a PORTSC write must give back as read (read-only and
/// read-write-sticky ones): never PED, PR or a change bit by accident.
const PORT_PRESERVE: u32 = 0x4e00_ffe9;

/// What the driver did with a root port.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortState {
    Empty,
    /// Something is connected that we do not drive (or could not).
    Ignored,
    /// A keyboard, in this slot.
    Keyboard(u8),
}

impl Hc {
    /// Clears the change bits that are set; returns PORTSC as read.
    fn clear_changes(&self, port: u8) -> u32 {
        let sc = self.portsc(port);
        if sc & PORT_CHANGES != 0 {
            self.set_portsc(port, (sc & PORT_PRESERVE) | (sc & PORT_CHANGES));
        }
        sc
    }

    /// Resets a connected port (USB2 ports need it to be enabled); true
    /// when it came out connected and enabled.
    pub fn reset_port(&self, port: u8) -> bool {
        let sc = self.portsc(port);
        self.set_portsc(port, (sc & PORT_PRESERVE) | PORT_PR);
        let done = wait_for(500 * MS, || self.portsc(port) & PORT_PRC != 0);
        self.clear_changes(port);
        // Reset recovery (USB 2.0 §7.1.7.5).
        let _ = sys::sleep_ns(10 * MS);
        done && self.portsc(port) & (PORT_CCS | PORT_PED) == PORT_CCS | PORT_PED
    }

    /// Port `port` is to be looked at (a number out of range is ignored).
    pub fn mark_pending(&mut self, port: u8) {
        if port != 0 && port <= self.ports {
            self.pending[usize::from(port / 64)] |= 1 << (port % 64);
        }
    }

    /// The lowest pending port, no longer pending.
    pub fn take_pending(&mut self) -> Option<u8> {
        let (i, w) = self
            .pending
            .iter_mut()
            .enumerate()
            .find(|(_, w)| **w != 0)?;
        let bit = w.trailing_zeros();
        *w &= !(1 << bit);
        Some((i * 64) as u8 + bit as u8)
    }

    /// Examines every root port (devices present at start give no events).
    pub fn scan_ports(&mut self) -> Result<(), Fatal> {
        for p in 1..=self.ports {
            self.mark_pending(p);
        }
        self.service()
    }

    /// A port changed (or is looked at for the first time): whatever was
    /// there is gone if the connection changed; a new connection is
    /// enumerated.
    pub fn port_changed(&mut self, port: u8) -> Result<(), Fatal> {
        let sc = self.clear_changes(port);
        let connected = sc & PORT_CCS != 0;
        let state = self.port_state[usize::from(port)];
        let lost = match state {
            PortState::Empty => false,
            PortState::Ignored => sc & PORT_CSC != 0 || !connected,
            // A keyboard's port also goes when it is disabled (an error).
            PortState::Keyboard(_) => sc & PORT_CSC != 0 || sc & PORT_PED == 0,
        };
        if lost {
            self.detach(port)?;
        }
        if connected && self.port_state[usize::from(port)] == PortState::Empty {
            self.attach(port)?;
        }
        Ok(())
    }
}
