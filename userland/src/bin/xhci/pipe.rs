//! A keyboard's report pipe: its interrupt-IN endpoint, configured with
//! Configure Endpoint, and [`PIPE_DEPTH`] 8-byte Normal TRBs kept queued
//! on it. Each Transfer Event hands its report to the queue (`reports.rs`)
//! and queues the TRB again, from the dispatcher (no command needed).
//!
//! The xHCI order is followed: Configure Endpoint, then
//! SET_CONFIGURATION, SET_PROTOCOL(boot) and SET_IDLE(0) (xHCI §4.3.5,
//! Device Configuration: the endpoint exists in the controller before
//! the device is configured). A keyboard that refuses the two HID requests still sends
//! boot reports; QEMU's report layout is the boot layout anyway.
//!
//! An error event marks the pipe halted; `Hc::service` then resets the
//! endpoint, moves its dequeue pointer to the enqueue point (abandoning
//! the TRBs in between) and queues fresh ones. [`PIPE_FAILURES`] halts in
//! a row give the keyboard up.

use wyvern_user::println;

use crate::control::Setup;
use crate::desc;
use crate::device::{Device, Fault, INPUT, SPEED_HIGH, SPEED_SUPER};
use crate::hc::{CC_SHORT_PACKET, CC_SUCCESS, Fatal, Hc, Transfer};
use crate::mem::{IOC, ISP, PAGE, Ring, TRB_CONFIGURE_EP, TRB_NORMAL, Trb, trb_type};
use crate::port::PortState;

/// Report buffers in the device's buffer page: [`PIPE_DEPTH`] × 8 bytes.
pub const REPORTS: u64 = 3072;
/// Normal TRBs kept queued on a keyboard's interrupt-IN endpoint.
const PIPE_DEPTH: u64 = 8;
/// Halts in a row after which a keyboard is given up.
const PIPE_FAILURES: u32 = 8;

/// A keyboard's interrupt-IN endpoint.
pub struct Pipe {
    dci: u8,
    pub ring: Ring,
    /// Normal TRBs queued and not completed.
    pending: u64,
    /// Report buffers are handed out round-robin: the `pending` newest
    /// TRBs always hold distinct buffers.
    next_buf: u64,
    /// The endpoint reported an error; `Hc::recover_pipes` resets it.
    halted: bool,
    failures: u32,
}

/// The endpoint context's Interval (2^n × 125 µs) for an interrupt
/// endpoint's bInterval (xHCI table 6-12).
fn interval(speed: u8, b: u8) -> u32 {
    if speed >= SPEED_HIGH {
        u32::from(b.clamp(1, 16)) - 1
    } else {
        // bInterval in ms: floor(log2) + 3.
        b.max(1).ilog2() + 3
    }
}

/// What a transfer event did to a pipe.
enum Outcome {
    /// Not this pipe's, or an error (the pipe is halted; nothing queued).
    Nothing,
    /// A TRB completed and was queued again; the report it brought, if any.
    Requeued(Option<[u8; 8]>),
}

impl Device {
    /// Queues Normal TRBs until [`PIPE_DEPTH`] are pending; true when it
    /// queued any (the caller rings the doorbell).
    fn fill_pipe(&mut self) -> bool {
        let Some(p) = self.pipe.as_mut() else {
            return false;
        };
        let before = p.pending;
        while p.pending < PIPE_DEPTH {
            let buf = self.buf.phys() + REPORTS + 8 * (p.next_buf % PIPE_DEPTH);
            p.next_buf = p.next_buf.wrapping_add(1);
            p.ring.push(Trb {
                param: buf,
                status: 8,
                control: trb_type(TRB_NORMAL) | IOC | ISP,
            });
            p.pending += 1;
        }
        p.pending != before
    }

    /// A transfer event on the keyboard pipe (the caller rings the
    /// doorbell after a requeue).
    fn pipe_event(&mut self, t: Transfer) -> Outcome {
        let Some(p) = self.pipe.as_mut() else {
            return Outcome::Nothing;
        };
        if t.dci != p.dci || p.halted {
            return Outcome::Nothing;
        }
        let Some(index) = p.ring.index_of(t.trb) else {
            return Outcome::Nothing;
        };
        p.pending = p.pending.saturating_sub(1);
        if t.code != CC_SUCCESS && t.code != CC_SHORT_PACKET {
            p.halted = true;
            p.failures += 1;
            return Outcome::Nothing;
        }
        p.failures = 0;
        let at = p.ring.param_at(index);
        let n = 8 - u64::from(t.residual.min(8));
        let report = self
            .buf
            .offset_of(at, 8)
            .filter(|o| *o >= REPORTS && (o - REPORTS).is_multiple_of(8) && n > 0)
            .map(|o| {
                let mut r = [0u8; 8];
                for (i, b) in (0..n).zip(r.iter_mut()) {
                    *b = self.buf.r8(o + i);
                }
                r
            });
        self.fill_pipe();
        Outcome::Requeued(report)
    }
}

impl Hc {
    /// Configures the keyboard's interrupt-IN endpoint, selects the
    /// configuration and the boot protocol, and queues the first reads.
    pub fn start_keyboard(
        &mut self,
        dev: &mut Device,
        config: u8,
        k: desc::Keyboard,
    ) -> Result<(), Fault> {
        let dci = 2 * (k.endpoint & 0xf) + 1;
        if dci < 3 {
            println!("xhci: port {}: keyboard endpoint 0?", dev.port);
            return Err(Fault::Device);
        }
        let ring = match self.dma(PAGE) {
            Ok(m) => Ring::new(m),
            Err(e) => {
                println!("xhci: port {}: no memory ({e})", dev.port);
                return Err(Fault::Device);
            }
        };
        let dequeue = ring.dequeue_pointer();
        // Owned by the device from here, so `release` frees it too.
        dev.pipe = Some(Pipe {
            dci,
            ring,
            pending: 0,
            next_buf: 0,
            halted: false,
            failures: 0,
        });

        let cs = self.ctx;
        let x = &dev.ctx;
        x.zero(INPUT, PAGE);
        x.w32(INPUT + 4, 1 | (1 << dci));
        // The slot context as it is now, with Context Entries covering dci.
        for o in (0..cs).step_by(4) {
            x.w32(INPUT + cs + o, x.r32(o));
        }
        let s0 = x.r32(INPUT + cs);
        let entries = ((s0 >> 27) & 0x1f).max(u32::from(dci));
        x.w32(INPUT + cs, (s0 & !(0x1f << 27)) | (entries << 27));
        let mps = u32::from(k.max_packet & 0x7ff);
        let burst = match dev.speed {
            SPEED_HIGH => u32::from(k.max_packet >> 11) & 3,
            s if s >= SPEED_SUPER => u32::from(k.burst),
            _ => 0,
        };
        let esit = mps * (burst + 1);
        let ep = INPUT + (u64::from(dci) + 1) * cs;
        x.w32(
            ep,
            (interval(dev.speed, k.interval) << 16) | ((esit >> 16) << 24),
        );
        // CErr 3, type 7 (interrupt IN).
        x.w32(ep + 4, (3 << 1) | (7 << 3) | (burst << 8) | (mps << 16));
        x.w64(ep + 8, dequeue);
        x.w32(ep + 16, 8 | ((esit & 0xffff) << 16));
        let control = trb_type(TRB_CONFIGURE_EP) | (u32::from(dev.slot) << 24);
        let c = self.command(x.phys() + INPUT, control)?;
        if c.code != CC_SUCCESS {
            println!(
                "xhci: port {}: Configure Endpoint failed (code {})",
                dev.port, c.code
            );
            return Err(Fault::Device);
        }

        let port = dev.port;
        let set_config = Setup {
            kind: 0x00,
            request: 9,
            value: u16::from(config),
            index: 0,
            length: 0,
        };
        if let Err(code) = self.control(dev, set_config)? {
            println!("xhci: port {port}: SET_CONFIGURATION refused (code {code})");
            return Err(Fault::Device);
        }
        // HID class requests to the interface; a keyboard that refuses
        // them (some refuse SET_IDLE) still sends boot reports.
        let iface = u16::from(k.interface);
        for (request, name) in [(0x0b, "SET_PROTOCOL(boot)"), (0x0a, "SET_IDLE(0)")] {
            let s = Setup {
                kind: 0x21,
                request,
                value: 0,
                index: iface,
                length: 0,
            };
            if let Err(code) = self.control(dev, s)? {
                println!("xhci: port {port}: {name} refused (code {code}); going on");
            }
        }
        dev.fill_pipe();
        self.doorbell(dev.slot, dci);
        Ok(())
    }

    /// A transfer event on an endpoint other than EP0 (dispatch context:
    /// no commands).
    pub fn pipe_event(&mut self, t: Transfer) {
        let Some(dev) = self.devices.iter_mut().find(|d| d.slot == t.slot) else {
            return;
        };
        let Outcome::Requeued(report) = dev.pipe_event(t) else {
            return;
        };
        if let Some(r) = report {
            self.reports.push(u64::from(t.slot), r);
        }
        self.doorbell(t.slot, t.dci);
    }

    /// Resets halted keyboard endpoints and queues their reads again;
    /// gives up a keyboard that keeps failing.
    pub fn recover_pipes(&mut self) -> Result<(), Fatal> {
        let mut i = 0;
        while let Some(dev) = self.devices.get(i) {
            let Some(p) = dev.pipe.as_ref().filter(|p| p.halted) else {
                i += 1;
                continue;
            };
            let (slot, port, dci) = (dev.slot, dev.port, p.dci);
            let dequeue = p.ring.dequeue_pointer();
            if p.failures > PIPE_FAILURES {
                println!("xhci: port {port}: keyboard keeps failing; ignored");
                // `i` now names the next one.
                let dev = self.devices.swap_remove(i);
                self.port_state[usize::from(port)] = PortState::Ignored;
                self.release(dev)?;
                continue;
            }
            let moved = self.reset_endpoint(slot, dci, dequeue)?;
            // Commands only drain events; devices come and go in
            // `port_changed` alone, so `i` is still this one.
            if let Some(dev) = self.devices.get_mut(i)
                && let Some(p) = dev.pipe.as_mut()
            {
                if moved {
                    p.pending = 0;
                }
                p.halted = false;
                if dev.fill_pipe() {
                    self.doorbell(slot, dci);
                }
            }
            i += 1;
        }
        Ok(())
    }
}
