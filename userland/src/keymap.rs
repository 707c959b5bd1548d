//! Keyboards to bytes: scan codes and USB boot reports to HID usages, and
//! usages to what a serial terminal would send (US layout).
//!
//! HID usage ids (USB HID Usage Tables, keyboard page 0x07) are the common
//! currency: the PS/2 driver turns scan code set 1 into usages with
//! [`ps2_set1`], the USB keyboard driver turns boot-protocol reports into
//! presses and releases with [`boot_report_diff`], and both feed
//! [`Keyboard::key`], which keeps the modifier state and appends the bytes a
//! press produces:
//!
//! * letters, digits and punctuation of the US layout; Shift, and CapsLock
//!   for letters only (Shift with CapsLock gives lower case again);
//! * Ctrl with a letter gives 0x01..0x1A, with `@ [ \ ] ^ _` 0x00 and
//!   0x1B..0x1F, with Space 0x00, with `?` 0x7F;
//! * Alt puts ESC before the byte of a character key (a terminal's
//!   "meta sends escape");
//! * Enter and keypad Enter `\r`, Backspace 0x7F, Tab `\t` (Shift-Tab
//!   `ESC [ Z`), Esc 0x1B;
//! * arrows `ESC [ A/B/C/D` (up, down, right, left), Home `ESC [ H`, End
//!   `ESC [ F`, Insert `ESC [ 2 ~`, Delete `ESC [ 3 ~`, Page Up/Down
//!   `ESC [ 5 ~` / `ESC [ 6 ~`;
//! * the keypad always gives its digits and operators (as with NumLock on:
//!   there is no NumLock state, since the arrows have keys of their own);
//! * function keys, NumLock, ScrollLock, PrintScreen, Pause and the GUI keys
//!   give nothing.
//!
//! A release gives nothing. A held key's typematic repeats (PS/2 sends the
//! make code again) give the bytes again, but CapsLock toggles only on the
//! press that finds it up.
//!
//! This module uses nothing of the runtime but `alloc::vec::Vec`, so that
//! the host tests (`tests/src/lib.rs` includes this file) exercise it as is.

use alloc::vec::Vec;

/// HID usages this module names.
mod hid {
    pub const A: u8 = 0x04;
    pub const Z: u8 = 0x1d;
    pub const TAB: u8 = 0x2b;
    pub const CAPS_LOCK: u8 = 0x39;
    pub const PRINT_SCREEN: u8 = 0x46;
    pub const PAUSE: u8 = 0x48;
    pub const INSERT: u8 = 0x49;
    pub const HOME: u8 = 0x4a;
    pub const PAGE_UP: u8 = 0x4b;
    pub const DELETE: u8 = 0x4c;
    pub const END: u8 = 0x4d;
    pub const PAGE_DOWN: u8 = 0x4e;
    pub const RIGHT: u8 = 0x4f;
    pub const LEFT: u8 = 0x50;
    pub const DOWN: u8 = 0x51;
    pub const UP: u8 = 0x52;
    pub const KP_ENTER: u8 = 0x58;
    pub const NON_US_BACKSLASH: u8 = 0x64;
    pub const APPLICATION: u8 = 0x65;
    /// Left Control; the eight modifiers are 0xE0..=0xE7 in the order of
    /// the boot report's modifier bits.
    pub const LEFT_CTRL: u8 = 0xe0;
    pub const RIGHT_GUI: u8 = 0xe7;
}

/// ErrorRollOver: what every key slot of a boot report holds when more keys
/// are down than the report can tell.
const ROLL_OVER: u8 = 0x01;
/// Usages below this are not keys (none, ErrorRollOver, POSTFail,
/// ErrorUndefined).
const FIRST_KEY: u8 = hid::A;

/// Scan code set 1 make codes 0x00..=0x58 to usages (0: unknown).
const SET1: [u8; 0x59] = [
    0x00, 0x29, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, // 00: -, Esc, 1..6
    0x24, 0x25, 0x26, 0x27, 0x2d, 0x2e, 0x2a, 0x2b, // 08: 7..0, - =, Bksp, Tab
    0x14, 0x1a, 0x08, 0x15, 0x17, 0x1c, 0x18, 0x0c, // 10: q w e r t y u i
    0x12, 0x13, 0x2f, 0x30, 0x28, 0xe0, 0x04, 0x16, // 18: o p [ ] Enter LCtrl a s
    0x07, 0x09, 0x0a, 0x0b, 0x0d, 0x0e, 0x0f, 0x33, // 20: d f g h j k l ;
    0x34, 0x35, 0xe1, 0x31, 0x1d, 0x1b, 0x06, 0x19, // 28: ' ` LShift \ z x c v
    0x05, 0x11, 0x10, 0x36, 0x37, 0x38, 0xe5, 0x55, // 30: b n m , . / RShift KP*
    0xe2, 0x2c, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, // 38: LAlt Space Caps F1..F5
    0x3f, 0x40, 0x41, 0x42, 0x43, 0x53, 0x47, 0x5f, // 40: F6..F10 NumLock ScrLk KP7
    0x60, 0x61, 0x56, 0x5c, 0x5d, 0x5e, 0x57, 0x59, // 48: KP8 KP9 KP- KP4..6 KP+ KP1
    0x5a, 0x5b, 0x62, 0x63, 0x46, 0x00, 0x64, 0x44, // 50: KP2 KP3 KP0 KP. SysRq - NonUS\ F11
    0x45, // 58: F12
];

/// The usage of set-1 make code `code` after an 0xE0 prefix.
fn set1_extended(code: u8) -> Option<u8> {
    Some(match code {
        0x1c => hid::KP_ENTER,
        0x1d => 0xe4, // right Ctrl
        0x35 => 0x54, // keypad /
        0x37 => hid::PRINT_SCREEN,
        0x38 => 0xe6,       // right Alt
        0x46 => hid::PAUSE, // Ctrl-Break
        0x47 => hid::HOME,
        0x48 => hid::UP,
        0x49 => hid::PAGE_UP,
        0x4b => hid::LEFT,
        0x4d => hid::RIGHT,
        0x4f => hid::END,
        0x50 => hid::DOWN,
        0x51 => hid::PAGE_DOWN,
        0x52 => hid::INSERT,
        0x53 => hid::DELETE,
        0x5b => 0xe3, // left GUI
        0x5c => hid::RIGHT_GUI,
        0x5d => hid::APPLICATION,
        _ => return None,
    })
}

/// Scan code set 1 (what an i8042 with translation on gives): `code` is one
/// byte, `ext` says an 0xE0 prefix came before it. Returns the HID usage and
/// whether the key went down (bit 7 clear) or up. `None` for codes with no
/// key: unknown ones, the prefixes themselves, and the "fake shifts"
/// (`E0 2A`, `E0 36` and their releases) the keyboard wraps around
/// PrintScreen and the navigation keys, which the caller should drop
/// without complaint. Pause (`E1 1D 45 E1 9D C5`) is the caller's to
/// recognise; its usage is that of `ps2_set1(true, 0x46)`.
pub fn ps2_set1(ext: bool, code: u8) -> Option<(u8, bool)> {
    let pressed = code & 0x80 == 0;
    let make = code & 0x7f;
    let u = if ext {
        set1_extended(make)?
    } else {
        match SET1.get(usize::from(make)) {
            Some(&u) if u != 0 => u,
            _ => return None,
        }
    };
    Some((u, pressed))
}

/// Modifier bits, as in a boot report's first byte (bit `i` is usage
/// `0xE0 + i`).
const CTRL: u8 = 0x11;
const SHIFT: u8 = 0x22;
const ALT: u8 = 0x44;

/// The state of one keyboard: which modifiers are down, CapsLock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyboard {
    /// Modifier keys down, bit `i` for usage `0xE0 + i`.
    mods: u8,
    /// CapsLock is on.
    caps: bool,
    /// The CapsLock key is down (its repeats must not toggle).
    caps_down: bool,
}

/// US layout: the characters of usages 0x1E..=0x38 without and with Shift.
const US: [(u8, u8); 0x1b] = [
    (b'1', b'!'),
    (b'2', b'@'),
    (b'3', b'#'),
    (b'4', b'$'),
    (b'5', b'%'),
    (b'6', b'^'),
    (b'7', b'&'),
    (b'8', b'*'),
    (b'9', b'('),
    (b'0', b')'),
    (b'\r', b'\r'), // Enter
    (0x1b, 0x1b),   // Escape
    (0x7f, 0x7f),   // Backspace
    (b'\t', b'\t'), // Tab (Shift-Tab is a sequence, below)
    (b' ', b' '),
    (b'-', b'_'),
    (b'=', b'+'),
    (b'[', b'{'),
    (b']', b'}'),
    (b'\\', b'|'),
    (b'\\', b'|'), // Non-US # (what some boards report for the \ key)
    (b';', b':'),
    (b'\'', b'"'),
    (b'`', b'~'),
    (b',', b'<'),
    (b'.', b'>'),
    (b'/', b'?'),
];

/// The byte of a character key (a letter, digit, punctuation, Space, the
/// keypad, Enter, Esc, Backspace, Tab), before Ctrl and Alt.
fn character(u: u8, shift: bool, caps: bool) -> Option<u8> {
    Some(match u {
        hid::A..=hid::Z => {
            let c = b'a' + (u - hid::A);
            if shift != caps {
                c.to_ascii_uppercase()
            } else {
                c
            }
        }
        0x1e..=0x38 => {
            let (plain, shifted) = US[usize::from(u - 0x1e)];
            if shift { shifted } else { plain }
        }
        hid::NON_US_BACKSLASH => {
            if shift {
                b'|'
            } else {
                b'\\'
            }
        }
        0x54 => b'/',
        0x55 => b'*',
        0x56 => b'-',
        0x57 => b'+',
        hid::KP_ENTER => b'\r',
        0x59..=0x61 => b'1' + (u - 0x59),
        0x62 => b'0',
        0x63 => b'.',
        _ => return None,
    })
}

/// What a character key gives with Ctrl down.
fn control(c: u8) -> u8 {
    match c {
        b'a'..=b'z' => c - b'a' + 1,
        b'@'..=b'_' => c & 0x1f, // upper case, @ [ \ ] ^ _
        b' ' => 0,
        b'?' => 0x7f,
        _ => c,
    }
}

/// The escape sequence a navigation key sends.
fn sequence(u: u8, shift: bool) -> Option<&'static [u8]> {
    Some(match u {
        hid::UP => b"\x1b[A",
        hid::DOWN => b"\x1b[B",
        hid::RIGHT => b"\x1b[C",
        hid::LEFT => b"\x1b[D",
        hid::HOME => b"\x1b[H",
        hid::END => b"\x1b[F",
        hid::INSERT => b"\x1b[2~",
        hid::DELETE => b"\x1b[3~",
        hid::PAGE_UP => b"\x1b[5~",
        hid::PAGE_DOWN => b"\x1b[6~",
        hid::TAB if shift => b"\x1b[Z",
        _ => return None,
    })
}

impl Keyboard {
    /// No modifier down, CapsLock off.
    pub fn new() -> Self {
        Keyboard::default()
    }

    /// Key `usage` went down (`pressed`) or up: updates the modifiers and
    /// appends to `out` the bytes a press produces (nothing for a release,
    /// a modifier or a key with no bytes).
    pub fn key(&mut self, usage: u8, pressed: bool, out: &mut Vec<u8>) {
        if (hid::LEFT_CTRL..=hid::RIGHT_GUI).contains(&usage) {
            let bit = 1u8 << (usage - hid::LEFT_CTRL);
            if pressed {
                self.mods |= bit;
            } else {
                self.mods &= !bit;
            }
            return;
        }
        if usage == hid::CAPS_LOCK {
            if pressed && !self.caps_down {
                self.caps = !self.caps;
            }
            self.caps_down = pressed;
            return;
        }
        if !pressed {
            return;
        }
        let shift = self.mods & SHIFT != 0;
        if let Some(s) = sequence(usage, shift) {
            out.extend_from_slice(s);
            return;
        }
        let Some(mut c) = character(usage, shift, self.caps) else {
            return;
        };
        if self.mods & CTRL != 0 && (hid::A..=hid::Z).contains(&usage) {
            // Ctrl with a letter is the letter's control code whatever
            // Shift and CapsLock say.
            c = usage - hid::A + 1;
        } else if self.mods & CTRL != 0 {
            c = control(c);
        }
        if self.mods & ALT != 0 {
            out.push(0x1b);
        }
        out.push(c);
    }
}

/// Compares two HID boot-protocol keyboard reports (modifier byte, reserved
/// byte, six key slots) and calls `f(usage, pressed)` for every change:
/// first the modifiers (bits of byte 0 as usages 0xE0..=0xE7), then keys
/// gone from `now` (released), then keys new in `now` (pressed) — so a
/// press is seen with the modifiers `now` reports. A key listed twice
/// counts once; slots below usage 4 (none, ErrorRollOver, …) are not keys.
///
/// A `now` whose key slots are all ErrorRollOver (too many keys down) says
/// nothing and is ignored. The caller should then keep its `prev`; a `prev`
/// that is such a report counts as having no keys down (its modifiers
/// still count).
pub fn boot_report_diff(prev: &[u8; 8], now: &[u8; 8], mut f: impl FnMut(u8, bool)) {
    let roll_over = |r: &[u8; 8]| r[2..].iter().all(|&k| k == ROLL_OVER);
    if roll_over(now) {
        return;
    }
    let changed = prev[0] ^ now[0];
    for bit in 0..8u8 {
        if changed & (1 << bit) != 0 {
            f(hid::LEFT_CTRL + bit, now[0] & (1 << bit) != 0);
        }
    }
    let no_keys = [0u8; 6];
    let prev_keys: &[u8] = if roll_over(prev) {
        &no_keys
    } else {
        &prev[2..]
    };
    let now_keys = &now[2..];
    // Each key once: the first slot that names it.
    let first = |keys: &[u8], i: usize| keys[i] >= FIRST_KEY && !keys[..i].contains(&keys[i]);
    for i in 0..prev_keys.len() {
        if first(prev_keys, i) && !now_keys.contains(&prev_keys[i]) {
            f(prev_keys[i], false);
        }
    }
    for i in 0..now_keys.len() {
        if first(now_keys, i) && !prev_keys.contains(&now_keys[i]) {
            f(now_keys[i], true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a sequence of set-1 scan codes (with 0xE0 prefixes).
    fn typed(codes: &[u8]) -> Vec<u8> {
        let mut kb = Keyboard::new();
        let mut out = Vec::new();
        let mut ext = false;
        for &c in codes {
            if c == 0xe0 {
                ext = true;
                continue;
            }
            if let Some((u, p)) = ps2_set1(ext, c) {
                kb.key(u, p, &mut out);
            }
            ext = false;
        }
        out
    }

    #[test]
    fn letters_digits_and_shift() {
        // h i, then Shift-1, Shift-a, release Shift, 2.
        let out = typed(&[0x23, 0xa3, 0x17, 0x97, 0x2a, 0x02, 0x82, 0x1e, 0xaa, 0x03]);
        assert_eq!(out, b"hi!A2");
        // Right shift works too.
        assert_eq!(typed(&[0x36, 0x1e, 0xb6, 0x1e]), b"Aa");
    }

    #[test]
    fn caps_lock_toggles_once_per_press() {
        // Caps down, a repeat, up; a; Shift-a; Caps again; a.
        let out = typed(&[
            0x3a, 0x3a, 0xba, 0x1e, 0x2a, 0x1e, 0xaa, 0x02, 0x3a, 0xba, 0x1e,
        ]);
        assert_eq!(out, b"Aa1a");
    }

    #[test]
    fn control_and_alt() {
        // Ctrl-C, Ctrl-Shift-a, Ctrl-[, Alt-x.
        let out = typed(&[0x1d, 0x2e, 0x2a, 0x1e, 0xaa, 0x1a, 0x9d, 0x38, 0x2d, 0xb8]);
        assert_eq!(out, b"\x03\x01\x1b\x1bx");
        // Right Ctrl (E0 1D) and its release.
        assert_eq!(typed(&[0xe0, 0x1d, 0x2c, 0xe0, 0x9d, 0x2c]), b"\x1az");
    }

    #[test]
    fn special_keys() {
        let out = typed(&[0x1c, 0x0e, 0x0f, 0x01, 0x39]);
        assert_eq!(out, b"\r\x7f\t\x1b ");
        let nav = typed(&[
            0xe0, 0x48, 0xe0, 0x50, 0xe0, 0x4d, 0xe0, 0x4b, 0xe0, 0x47, 0xe0, 0x4f, 0xe0, 0x53,
        ]);
        assert_eq!(nav, b"\x1b[A\x1b[B\x1b[C\x1b[D\x1b[H\x1b[F\x1b[3~");
        // Keypad digits, operators and Enter.
        let kp = typed(&[
            0x47, 0x4f, 0x52, 0x53, 0x4a, 0x4e, 0x37, 0xe0, 0x35, 0xe0, 0x1c,
        ]);
        assert_eq!(kp, b"710.-+*/\r");
        // Shift-Tab.
        assert_eq!(typed(&[0x2a, 0x0f]), b"\x1b[Z");
    }

    #[test]
    fn every_known_make_code_round_trips_its_break() {
        for ext in [false, true] {
            for code in 0..0x80u8 {
                match (ps2_set1(ext, code), ps2_set1(ext, code | 0x80)) {
                    (Some((u, true)), Some((v, false))) => assert_eq!(u, v),
                    (None, None) => {}
                    other => panic!("{ext} {code:#x}: {other:?}"),
                }
            }
        }
        assert_eq!(ps2_set1(true, 0x2a), None); // fake shift
        assert_eq!(ps2_set1(false, 0x55), None);
        assert_eq!(ps2_set1(false, 0x7f), None);
        assert_eq!(ps2_set1(true, 0x46), Some((hid::PAUSE, true)));
    }

    #[test]
    fn boot_reports() {
        let mut ev = Vec::new();
        let none = [0u8; 8];
        // Left Shift and `a` at once: Shift first.
        let shift_a = [0x02, 0, 0x04, 0, 0, 0, 0, 0];
        boot_report_diff(&none, &shift_a, |u, p| ev.push((u, p)));
        assert_eq!(ev, [(0xe1, true), (0x04, true)]);
        ev.clear();
        // Shift up, `a` still down, `b` added twice.
        let ab = [0x00, 0, 0x04, 0x05, 0x05, 0, 0, 0];
        boot_report_diff(&shift_a, &ab, |u, p| ev.push((u, p)));
        assert_eq!(ev, [(0xe1, false), (0x05, true)]);
        ev.clear();
        // Roll-over: ignored; from it, the keys count as none.
        let roll = [0x00, 0, 1, 1, 1, 1, 1, 1];
        boot_report_diff(&ab, &roll, |u, p| ev.push((u, p)));
        assert!(ev.is_empty());
        boot_report_diff(&roll, &ab, |u, p| ev.push((u, p)));
        assert_eq!(ev, [(0x04, true), (0x05, true)]);
        ev.clear();
        // Everything released; Ctrl pressed.
        boot_report_diff(&ab, &[0x10, 0, 0, 0, 0, 0, 0, 0], |u, p| ev.push((u, p)));
        assert_eq!(ev, [(0xe4, true), (0x04, false), (0x05, false)]);
    }

    #[test]
    fn usb_keyboard_types_like_ps2() {
        let mut kb = Keyboard::new();
        let mut out = Vec::new();
        let mut prev = [0u8; 8];
        for r in [
            [0x02, 0, 0x0b, 0, 0, 0, 0, 0], // Shift-h
            [0x00, 0, 0, 0, 0, 0, 0, 0],
            [0x00, 0, 0x0c, 0, 0, 0, 0, 0],    // i
            [0x01, 0, 0x0c, 0x06, 0, 0, 0, 0], // Ctrl, c
            [0x00, 0, 0, 0, 0, 0, 0, 0],
            [0x00, 0, 0x28, 0, 0, 0, 0, 0], // Enter
        ] {
            boot_report_diff(&prev, &r, |u, p| kb.key(u, p, &mut out));
            prev = r;
        }
        assert_eq!(out, b"Hi\x03\r");
    }
}
