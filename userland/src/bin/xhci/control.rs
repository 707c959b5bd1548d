//! Control transfers on EP0 (xHCI §4.11.2.2, USB 2.0 §9.3): a Setup TRB
//! with the request inline, a Data TRB into the device's buffer page when
//! there is data, a Status TRB the other way; one transfer in flight.
//!
//! The Data TRB asks for an event on a short packet (ISP), which gives the
//! length actually moved; the Status TRB's event ends the transfer. An
//! error on any stage (a STALL, typically: a request the device does not
//! do) halts EP0: it is reset and its dequeue pointer moved past the
//! transfer, and the caller gets the completion code to judge. A transfer
//! that does not end within [`XFER_TIMEOUT`] gives the device up.

use alloc::vec::Vec;

use wyvern_user::{println, sys};

use crate::device::{DESC_MAX, Device, Fault};
use crate::hc::{CC_SHORT_PACKET, CC_SUCCESS, Fatal, Hc, MS};
use crate::mem::{
    DIR_IN, IDT, IOC, ISP, TRB_DATA, TRB_RESET_EP, TRB_SET_TR_DEQUEUE, TRB_SETUP, TRB_STATUS, Trb,
    trb_type,
};

const XFER_TIMEOUT: u64 = 1000 * MS;

/// A control request (USB 2.0 §9.3).
pub struct Setup {
    /// bmRequestType: bit 7 set for device-to-host.
    pub kind: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl Setup {
    /// The 8-byte setup packet, as a Setup TRB's immediate data.
    fn packet(&self) -> u64 {
        u64::from(self.kind)
            | (u64::from(self.request) << 8)
            | (u64::from(self.value) << 16)
            | (u64::from(self.index) << 32)
            | (u64::from(self.length) << 48)
    }
}

impl Hc {
    /// GET_DESCRIPTOR of `kind` (index 0), at most `len` bytes.
    pub fn descriptor(&mut self, dev: &mut Device, kind: u8, len: u16) -> Result<Vec<u8>, Fault> {
        let s = Setup {
            kind: 0x80,
            request: 6,
            value: u16::from(kind) << 8,
            index: 0,
            length: len.min(DESC_MAX),
        };
        match self.control(dev, s)? {
            Ok(n) => Ok((0..n as u64).map(|i| dev.buf.r8(i)).collect()),
            Err(code) => {
                println!(
                    "xhci: port {}: GET_DESCRIPTOR refused (code {code})",
                    dev.port
                );
                Err(Fault::Device)
            }
        }
    }

    /// One control transfer on EP0, data (if any) in the buffer page.
    /// `Ok(Err(code))`: the device refused (EP0 is reset again);
    /// `Ok(Ok(n))`: `n` bytes of data moved.
    pub fn control(&mut self, dev: &mut Device, s: Setup) -> Result<Result<u32, u8>, Fault> {
        let len = u32::from(s.length.min(DESC_MAX));
        let dir_in = s.kind & 0x80 != 0;
        let (trt, data_dir) = match (len, dir_in) {
            (0, _) => (0, 0),
            (_, true) => (3, DIR_IN),
            (_, false) => (2, 0),
        };
        let setup = dev.ep0.push(Trb {
            param: s.packet(),
            status: 8,
            control: trb_type(TRB_SETUP) | IDT | (trt << 16),
        });
        let data = (len > 0).then(|| {
            dev.ep0.push(Trb {
                param: dev.buf.phys(),
                status: len,
                control: trb_type(TRB_DATA) | ISP | data_dir,
            })
        });
        // The status stage goes the other way (IN when there is no data).
        let status_dir = if len > 0 && dir_in { 0 } else { DIR_IN };
        let status = dev.ep0.push(Trb {
            param: 0,
            status: 0,
            control: trb_type(TRB_STATUS) | IOC | status_dir,
        });
        self.doorbell(dev.slot, 1);
        let deadline = sys::clock_ns() + XFER_TIMEOUT;
        let mut moved = len;
        loop {
            let Some(t) = self.await_ep0(dev.slot, deadline)? else {
                println!("xhci: port {}: control transfer timed out", dev.port);
                return Err(Fault::Device);
            };
            let ok = t.code == CC_SUCCESS || t.code == CC_SHORT_PACKET;
            if ok && Some(t.trb) == data {
                if t.code == CC_SHORT_PACKET {
                    moved = len - t.residual.min(len);
                }
            } else if ok && t.trb == status {
                return Ok(Ok(moved));
            } else if t.trb == setup || Some(t.trb) == data || t.trb == status {
                // EP0 halted (a STALL, say): reset it past this transfer.
                self.reset_endpoint(dev.slot, 1, dev.ep0.dequeue_pointer())?;
                return Ok(Err(t.code));
            }
            // Anything else is left over from an abandoned transfer.
        }
    }

    /// Reset Endpoint, then Set TR Dequeue Pointer to `dequeue` (with its
    /// DCS); true when the dequeue pointer moved.
    pub fn reset_endpoint(&mut self, slot: u8, dci: u8, dequeue: u64) -> Result<bool, Fatal> {
        let target = (u32::from(slot) << 24) | (u32::from(dci) << 16);
        // A Context State Error here only means it was not halted.
        self.command(0, trb_type(TRB_RESET_EP) | target)?;
        let c = self.command(dequeue, trb_type(TRB_SET_TR_DEQUEUE) | target)?;
        Ok(c.code == CC_SUCCESS)
    }
}
