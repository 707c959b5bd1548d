//! A USB device on a root port: enumeration (Enable Slot, Address
//! Device, device and configuration descriptors) and its end (Disable
//! Slot). Control transfers are in `control.rs`, a keyboard's report pipe
//! in `pipe.rs`.
//!
//! Each device owns its DMA memory: two pages of contexts (output context
//! at 0, input context at [`INPUT`]), a page of EP0 ring, a page of
//! buffers (descriptors from 0, report buffers from `pipe::REPORTS`) and,
//! for a keyboard, a page of interrupt ring. The memory goes back only
//! after Disable Slot completed (`Hc::release`), when the controller no
//! longer touches it.
//!
//! A device that fails (a timeout, a refused request, no memory) is given
//! up on: its slot is disabled, its port marked ignored until it is
//! plugged again. Only the controller's own failures end the driver.

use alloc::format;
use alloc::string::String;

use wyvern_abi::syscall::Error;
use wyvern_user::println;

use crate::desc::{self, CLASS_HUB, DESC_CONFIG, DESC_DEVICE};
use crate::hc::{CC_SLOT_NOT_ENABLED, CC_SUCCESS, Fatal, Hc};
use crate::mem::{
    Dma, PAGE, Ring, TRB_ADDRESS_DEVICE, TRB_DISABLE_SLOT, TRB_ENABLE_SLOT, TRB_EVALUATE_CTX,
    trb_type,
};
use crate::pipe::Pipe;
use crate::port::{PORT_PED, PortState};

/// PORTSC speed ids (the defaults; QEMU has no PSI table).
pub const SPEED_FULL: u8 = 1;
pub const SPEED_HIGH: u8 = 3;
pub const SPEED_SUPER: u8 = 4;

/// The input context's offset in a device's context pages.
pub const INPUT: u64 = PAGE;
/// Longest descriptor read (a configuration is cut there).
pub const DESC_MAX: u16 = 2048;

/// Why enumeration stopped.
pub enum Fault {
    /// The controller failed: the driver ends.
    Fatal,
    /// This device failed (reason printed): give it up.
    Device,
}

impl From<Fatal> for Fault {
    fn from(_: Fatal) -> Fault {
        Fault::Fatal
    }
}

/// What an enumerated device turned out to be.
enum Kind {
    Keyboard,
    Other(String),
}

pub struct Device {
    pub slot: u8,
    pub port: u8,
    /// PORTSC speed id.
    pub speed: u8,
    pub mps0: u16,
    /// Output context at 0, input context at [`INPUT`].
    pub ctx: Dma,
    pub ep0: Ring,
    /// Descriptors from 0, report buffers from `pipe::REPORTS`.
    pub buf: Dma,
    pub pipe: Option<Pipe>,
}

impl Device {
    fn new(hc: &Hc, slot: u8, port: u8, speed: u8) -> Result<Device, Error> {
        let ctx = hc.dma(2 * PAGE)?;
        let ep0 = match hc.dma(PAGE) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: the controller was never told this address.
                unsafe { ctx.free() };
                return Err(e);
            }
        };
        let buf = match hc.dma(PAGE) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: as above, for both.
                unsafe {
                    ctx.free();
                    ep0.free();
                }
                return Err(e);
            }
        };
        let mps0 = match speed {
            SPEED_HIGH => 64,
            s if s >= SPEED_SUPER => 512,
            _ => 8,
        };
        Ok(Device {
            slot,
            port,
            speed,
            mps0,
            ctx,
            ep0: Ring::new(ep0),
            buf,
            pipe: None,
        })
    }

    /// Gives the device's memory back.
    ///
    /// # Safety
    ///
    /// 1. The controller no longer uses it: the slot is disabled.
    unsafe fn free(self) {
        // SAFETY: condition 1 holds for every piece.
        unsafe {
            self.ctx.free();
            self.ep0.free();
            self.buf.free();
            if let Some(p) = self.pipe {
                p.ring.free();
            }
        }
    }
}

impl Hc {
    /// Enumerates what is connected to `port`; a keyboard is kept and
    /// started, anything else reported and left alone.
    pub fn attach(&mut self, port: u8) -> Result<(), Fatal> {
        // Until proven a keyboard: a device that fails is not retried
        // before it is plugged again.
        self.port_state[usize::from(port)] = PortState::Ignored;
        if self.portsc(port) & PORT_PED == 0 && !self.reset_port(port) {
            println!("xhci: port {port}: reset failed; ignored");
            return Ok(());
        }
        let speed = ((self.portsc(port) >> 10) & 0xf) as u8;
        let ty = u32::from(self.slot_type(port));
        let c = self.command(0, trb_type(TRB_ENABLE_SLOT) | (ty << 16))?;
        if c.code != CC_SUCCESS || c.slot == 0 || c.slot > self.max_slots {
            println!(
                "xhci: port {port}: no slot (code {}, slot {})",
                c.code, c.slot
            );
            if c.code == CC_SUCCESS && c.slot != 0 {
                self.command(0, trb_type(TRB_DISABLE_SLOT) | (u32::from(c.slot) << 24))?;
            }
            return Ok(());
        }
        let slot = c.slot;
        let mut dev = match Device::new(self, slot, port, speed) {
            Ok(d) => d,
            Err(e) => {
                println!("xhci: port {port}: no memory ({e}); ignored");
                self.command(0, trb_type(TRB_DISABLE_SLOT) | (u32::from(slot) << 24))?;
                return Ok(());
            }
        };
        match self.enumerate(&mut dev) {
            Ok(Kind::Keyboard) => {
                println!("xhci: port {port}: keyboard (slot {slot})");
                self.port_state[usize::from(port)] = PortState::Keyboard(slot);
                self.devices.push(dev);
                Ok(())
            }
            Ok(Kind::Other(what)) => {
                println!("xhci: port {port}: {what} ignored");
                self.release(dev)
            }
            Err(Fault::Device) => {
                println!("xhci: port {port}: device not usable; ignored");
                self.release(dev)
            }
            Err(Fault::Fatal) => Err(Fatal),
        }
    }

    /// Forgets what was on `port` (unplugged, or given up).
    pub fn detach(&mut self, port: u8) -> Result<(), Fatal> {
        let state = core::mem::replace(&mut self.port_state[usize::from(port)], PortState::Empty);
        if let PortState::Keyboard(slot) = state
            && let Some(i) = self.devices.iter().position(|d| d.slot == slot)
        {
            let dev = self.devices.swap_remove(i);
            println!("xhci: port {port}: keyboard gone");
            self.release(dev)?;
        }
        Ok(())
    }

    /// Disables the device's slot, then gives its memory back.
    pub fn release(&mut self, dev: Device) -> Result<(), Fatal> {
        let slot = dev.slot;
        let c = self.command(0, trb_type(TRB_DISABLE_SLOT) | (u32::from(slot) << 24))?;
        self.set_context(slot, 0);
        if c.code == CC_SUCCESS || c.code == CC_SLOT_NOT_ENABLED {
            // SAFETY: the slot is disabled: the controller no longer reads
            // or writes its contexts, rings or buffers.
            unsafe { dev.free() };
        } else {
            // Still the controller's, perhaps: it stays mapped (no `Drop`).
            println!(
                "xhci: slot {slot}: Disable Slot failed (code {}); memory kept",
                c.code
            );
        }
        Ok(())
    }

    fn enumerate(&mut self, dev: &mut Device) -> Result<Kind, Fault> {
        self.address(dev)?;
        // The first 8 bytes hold bMaxPacketSize0: only a full-speed
        // device's may differ from the default.
        let d = self.descriptor(dev, DESC_DEVICE, 8)?;
        if dev.speed == SPEED_FULL
            && let Some(&m) = d.get(7)
            && matches!(m, 8 | 16 | 32 | 64)
            && u16::from(m) != dev.mps0
        {
            self.set_mps0(dev, u16::from(m))?;
        }
        let d = self.descriptor(dev, DESC_DEVICE, 18)?;
        let Some(info) = desc::device(&d) else {
            println!("xhci: port {}: bad device descriptor", dev.port);
            return Err(Fault::Device);
        };
        if info.class == CLASS_HUB {
            let id = format!("{:04x}:{:04x}", info.vendor, info.product);
            return Ok(Kind::Other(format!("hub {id}")));
        }
        let c = self.descriptor(dev, DESC_CONFIG, 9)?;
        let Some(total) = desc::config_total(&c) else {
            println!("xhci: port {}: bad configuration descriptor", dev.port);
            return Err(Fault::Device);
        };
        let c = self.descriptor(dev, DESC_CONFIG, total.min(DESC_MAX))?;
        let cfg = desc::parse_config(&c);
        match cfg.keyboard {
            Some(k) => {
                self.start_keyboard(dev, cfg.value, k)?;
                Ok(Kind::Keyboard)
            }
            None => Ok(Kind::Other(desc::describe(cfg.first, &info))),
        }
    }

    /// Address Device (BSR 0: the controller sends SET_ADDRESS).
    fn address(&mut self, dev: &mut Device) -> Result<(), Fault> {
        let cs = self.ctx;
        let x = &dev.ctx;
        x.zero(INPUT, PAGE);
        // Add the slot and EP0 contexts.
        x.w32(INPUT + 4, 0b11);
        x.w32(INPUT + cs, (u32::from(dev.speed) << 20) | (1 << 27));
        x.w32(INPUT + cs + 4, u32::from(dev.port) << 16);
        let ep0 = INPUT + 2 * cs;
        // CErr 3, type 4 (control).
        x.w32(ep0 + 4, (3 << 1) | (4 << 3) | (u32::from(dev.mps0) << 16));
        x.w64(ep0 + 8, dev.ep0.dequeue_pointer());
        x.w32(ep0 + 16, 8);
        self.set_context(dev.slot, x.phys());
        let control = trb_type(TRB_ADDRESS_DEVICE) | (u32::from(dev.slot) << 24);
        let c = self.command(x.phys() + INPUT, control)?;
        if c.code != CC_SUCCESS {
            println!(
                "xhci: port {}: Address Device failed (code {})",
                dev.port, c.code
            );
            return Err(Fault::Device);
        }
        Ok(())
    }

    /// Evaluate Context with EP0's real max packet size.
    fn set_mps0(&mut self, dev: &mut Device, mps: u16) -> Result<(), Fault> {
        let x = &dev.ctx;
        x.w32(INPUT, 0);
        x.w32(INPUT + 4, 0b10);
        x.w32(
            INPUT + 2 * self.ctx + 4,
            (3 << 1) | (4 << 3) | (u32::from(mps) << 16),
        );
        let control = trb_type(TRB_EVALUATE_CTX) | (u32::from(dev.slot) << 24);
        let c = self.command(x.phys() + INPUT, control)?;
        if c.code != CC_SUCCESS {
            println!(
                "xhci: port {}: Evaluate Context failed (code {})",
                dev.port, c.code
            );
            return Err(Fault::Device);
        }
        dev.mps0 = mps;
        Ok(())
    }
}
