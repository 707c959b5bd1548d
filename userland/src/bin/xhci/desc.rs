//! USB descriptors (USB 2.0 chapter 9, HID 1.11): what the driver reads of
//! a device's device descriptor and first configuration. Everything is
//! parsed from bytes the device sent, so every length is checked; a
//! malformed descriptor ends the walk, never the driver.

use alloc::format;
use alloc::string::String;

pub const DESC_DEVICE: u8 = 1;
pub const DESC_CONFIG: u8 = 2;
const DESC_INTERFACE: u8 = 4;
const DESC_ENDPOINT: u8 = 5;
const DESC_SS_COMPANION: u8 = 0x30;

const CLASS_HID: u8 = 3;
const CLASS_STORAGE: u8 = 8;
pub const CLASS_HUB: u8 = 9;

/// Of the device descriptor.
pub struct DeviceInfo {
    pub class: u8,
    pub vendor: u16,
    pub product: u16,
}

/// The 18-byte device descriptor.
pub fn device(d: &[u8]) -> Option<DeviceInfo> {
    (d.len() >= 18 && d[1] == DESC_DEVICE).then(|| DeviceInfo {
        class: d[4],
        vendor: u16::from_le_bytes([d[8], d[9]]),
        product: u16::from_le_bytes([d[10], d[11]]),
    })
}

/// wTotalLength of a configuration descriptor's first 9 bytes.
pub fn config_total(d: &[u8]) -> Option<u16> {
    if d.len() < 9 || d[1] != DESC_CONFIG {
        return None;
    }
    let total = u16::from_le_bytes([d[2], d[3]]);
    (total >= 9).then_some(total)
}

/// A HID boot keyboard interface and its interrupt-IN endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Keyboard {
    pub interface: u8,
    /// bEndpointAddress (bit 7 set: IN).
    pub endpoint: u8,
    /// wMaxPacketSize: size in bits 10:0, extra transactions in bits 12:11.
    pub max_packet: u16,
    pub interval: u8,
    /// bMaxBurst of a SuperSpeed endpoint companion (0 otherwise).
    pub burst: u8,
}

/// What the driver needs of a configuration.
pub struct Configuration {
    /// bConfigurationValue, for SET_CONFIGURATION.
    pub value: u8,
    /// Class, subclass, protocol of the first interface (alternate 0).
    pub first: Option<(u8, u8, u8)>,
    /// The first boot keyboard interface with an interrupt-IN endpoint.
    pub keyboard: Option<Keyboard>,
}

/// Walks a whole configuration (descriptor and what follows it).
pub fn parse_config(c: &[u8]) -> Configuration {
    let mut cfg = Configuration {
        value: c.get(5).copied().unwrap_or(1),
        first: None,
        keyboard: None,
    };
    // The current interface: its number, and whether it is the boot
    // keyboard whose endpoint we still look for.
    let mut iface: Option<(u8, bool)> = None;
    let mut after_keyboard_ep = false;
    let mut i = 0usize;
    while let Some(&len) = c.get(i) {
        let len = usize::from(len);
        let Some(d) = c.get(i..i + len).filter(|_| len >= 2) else {
            break;
        };
        let companion_ok = core::mem::take(&mut after_keyboard_ep);
        match d[1] {
            DESC_INTERFACE if len >= 9 => {
                let (alt, kind) = (d[3], (d[5], d[6], d[7]));
                if alt == 0 && cfg.first.is_none() {
                    cfg.first = Some(kind);
                }
                let wanted = alt == 0 && kind == (CLASS_HID, 1, 1) && cfg.keyboard.is_none();
                iface = Some((d[2], wanted));
            }
            DESC_ENDPOINT if len >= 7 => {
                if let Some((num, true)) = iface
                    && d[2] & 0x80 != 0
                    && d[3] & 3 == 3
                {
                    cfg.keyboard = Some(Keyboard {
                        interface: num,
                        endpoint: d[2],
                        max_packet: u16::from_le_bytes([d[4], d[5]]),
                        interval: d[6],
                        burst: 0,
                    });
                    iface = Some((num, false));
                    after_keyboard_ep = true;
                }
            }
            DESC_SS_COMPANION if len >= 6 && companion_ok => {
                if let Some(k) = cfg.keyboard.as_mut() {
                    k.burst = d[2];
                }
            }
            _ => {}
        }
        i += len;
    }
    cfg
}

/// A device we do not drive, in one phrase for the log.
pub fn describe(first: Option<(u8, u8, u8)>, info: &DeviceInfo) -> String {
    let what = match first {
        Some((CLASS_HUB, ..)) => String::from("hub"),
        Some((CLASS_STORAGE, ..)) => String::from("mass-storage device"),
        Some((CLASS_HID, 1, 2)) => String::from("boot mouse"),
        Some((CLASS_HID, s, p)) => format!("HID device ({s}/{p})"),
        Some((c, s, p)) => format!("device (class {c:#04x}/{s:#04x}/{p:#04x})"),
        None => String::from("device without interfaces"),
    };
    format!("{what} {:04x}:{:04x}", info.vendor, info.product)
}
