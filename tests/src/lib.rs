//! The host side of Wyvern's QEMU boots, shared by `cargo xtask` and the
//! integration tests in `tests/`.
//!
//! * [`mod@env`] finds QEMU and OVMF, installing them on Debian/Ubuntu when it can.
//! * [`qemu`] turns a [`qemu::Boot`] into a QEMU command line and runs it with a
//!   deadline, keeping the serial transcript.
//! * [`symbolize`] turns the kernel's `BT` lines into function, file and line.
//! * [`mod@bench`] reads a benchmark boot's `BENCH` lines: parses, checks and
//!   turns them into figures.
//! * [`linux`] boots Debian's Linux kernel on a benchmark boot's machine,
//!   running the counterparts of Wyvern's benchmarks.
//! * [`harness`] is what a test calls: boot one self-test, check both pass
//!   conditions (exit status and the final `TEST <name> ok` line), and fail with
//!   the transcript's tail when either is missing.
//! * [`console_boot`] and [`machine`] boot the interactive system for a test
//!   that drives it as a person would: [`keyboard`] turns text into QEMU key
//!   strokes, [`screen`] reads the guest's screen back into text, [`monitor`]
//!   talks to QEMU's human monitor and hears its QMP events.

pub mod bench;
pub mod console_boot;
pub mod env;
pub mod harness;
pub mod keyboard;
pub mod linux;
pub mod machine;
pub mod monitor;
pub mod qemu;
pub mod screen;
pub mod symbolize;

/// The kernel's portable hardware logic, tested here on the host: the
/// local APIC mode choice and its transitions (including the locked
/// x2APIC state no emulator shows).
#[cfg(test)]
#[allow(dead_code)] // what only the kernel uses
#[path = "../../kernel/src/arch/x86_64/apic_mode.rs"]
mod kernel_apic_mode;

/// The keyboard layout of the user runtime (`userland/src/keymap.rs`, which
/// needs nothing but `alloc`): scan codes and USB boot reports to bytes.
#[cfg(test)]
extern crate alloc;
#[cfg(test)]
#[allow(dead_code)] // what only the drivers use
#[path = "../../userland/src/keymap.rs"]
mod user_keymap;

/// The framebuffer terminal's text grid (`userland/src/bin/term/screen.rs`),
/// drawn into memory here and read back with [`screen`]'s decoder: the
/// layout the terminal draws is the one the harness reads.
#[cfg(test)]
#[allow(dead_code)] // what only the terminal uses
#[path = "../../userland/src/bin/term/screen.rs"]
mod user_term_screen;

/// Defines a boot test once for each local APIC the guest may have: `fn
/// name(apic) { … }` becomes the tests `name::xapic` and `name::x2apic`, the
/// body run with [`qemu::Apic::XApic`] and [`qemu::Apic::X2Apic`]. `cargo
/// xtask test` skips the `x2apic` half, and says so, where QEMU cannot
/// show x2APIC.
#[macro_export]
macro_rules! apic_tests {
    ($( $(#[$attr:meta])* fn $name:ident($apic:ident) $body:block )*) => {
        $(
            $(#[$attr])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($apic: $crate::qemu::Apic) $body

                #[test]
                fn xapic() {
                    body($crate::qemu::Apic::XApic)
                }

                #[test]
                fn x2apic() {
                    body($crate::qemu::Apic::X2Apic)
                }
            }
        )*
    };
}

#[cfg(test)]
mod term_layout {
    use wyvern_abi::syscall::{FbInfo, fbformat};

    use crate::screen::{CELL_H, CHAR_W, FG, Font, Image, MARGIN};
    use crate::user_term_screen::Screen;

    /// A framebuffer of `format` and `bpp` in memory, with a stride wider
    /// than the picture.
    fn framebuffer(format: u64, bpp: u64) -> (FbInfo, &'static mut [u8]) {
        let (width, height, stride) = (200, 100, 208);
        let size = stride * height * bpp;
        let info = FbInfo {
            phys: 0x8000_0000,
            size,
            width,
            height,
            stride,
            bytes_per_pixel: bpp,
            format,
        };
        let fb = Box::leak(vec![0x55u8; size as usize].into_boxed_slice());
        (info, fb)
    }

    /// What a screendump of `fb` would show.
    fn picture(info: &FbInfo, fb: &[u8]) -> Image {
        let (w, h) = (info.width as usize, info.height as usize);
        let bpp = info.bytes_per_pixel as usize;
        let mut img = Image::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let p = &fb[(y * info.stride as usize + x) * bpp..][..bpp];
                let rgb = match info.format {
                    fbformat::RGB => [p[0], p[1], p[2]],
                    fbformat::BGR => [p[2], p[1], p[0]],
                    _ => [p[0]; 3],
                };
                img.rgb[(y * w + x) * 3..][..3].copy_from_slice(&rgb);
            }
        }
        img
    }

    #[test]
    fn the_harness_reads_what_the_terminal_draws() {
        let font = Font::new();
        for (format, bpp) in [
            (fbformat::RGB, 4),
            (fbformat::BGR, 4),
            (fbformat::RGB, 3),
            (fbformat::GREY, 1),
        ] {
            let (info, fb) = framebuffer(format, bpp);
            let mut s = Screen::new(fb, &info).unwrap();
            assert_eq!((s.cols, s.rows), (27, 5));
            let lines = |s: &mut Screen, bytes: &[u8]| {
                s.write(bytes);
                s.flush();
                let mut l = font.decode(&picture(&info, s.pixels()));
                l.truncate(5);
                l
            };
            assert_eq!(
                lines(&mut s, b"hello\nworld\x1b[31mred\x1b[0m\r\nab\x08X\tT\n"),
                ["hello", "worldred", "aX      T", "", ""]
            );
            assert_eq!(lines(&mut s, b"1\n2\n3\n4\n5"), ["1", "2", "3", "4", "5"]);
            let long = [b'x'; 30];
            assert_eq!(
                lines(&mut s, &[b"\n".as_slice(), &long].concat()),
                ["3", "4", "5", &"x".repeat(27), "xxx"]
            );
            for _ in 0..4 {
                s.erase_back();
            }
            assert_eq!(lines(&mut s, b""), ["3", "4", "5", &"x".repeat(26), ""]);
            // The cursor: the last pixel row of its cell (column 26 of row
            // 3), full grey; the row above it blank.
            let img = picture(&info, s.pixels());
            let (x, y) = (MARGIN + 26 * CHAR_W, MARGIN + 3 * CELL_H);
            for dx in 0..CHAR_W {
                assert_eq!(img.level_at(x + dx, y + CELL_H - 1), FG);
                assert_eq!(img.level_at(x + dx, y + CELL_H - 2), 0);
            }
            // Everything right of and below the grid is black.
            for y in 0..100 {
                for x in MARGIN + 27 * CHAR_W..200 {
                    assert_eq!(img.level_at(x, y), 0);
                }
            }
            for y in MARGIN + 5 * CELL_H..100 {
                for x in 0..200 {
                    assert_eq!(img.level_at(x, y), 0);
                }
            }
        }
    }
}
