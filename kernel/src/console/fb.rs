//! A text console on the UEFI framebuffer.
//!
//! Real machines booted from the USB image usually have no serial port, so
//! everything the kernel prints — the boot log and, above all, panics — is also
//! drawn here, in Noto Sans Mono (the `noto-sans-mono-bitmap` crate, 16 px).
//!
//! When the text reaches the bottom it wraps to the top, clearing the line it
//! writes and the one below it (a blank line marks where the newest text
//! ends). A new line therefore costs one line of pixels, whatever the screen
//! size: moving the whole picture up (as this console once did) reads and
//! writes all of a framebuffer that is uncached or write-combined — milliseconds
//! per line with interrupts off, which let one program printing newlines
//! starve every CPU waiting for the console.
//!
//! Under QEMU the test harness turns this off (`fb=off`).

use bootloader_api::info::{FrameBufferInfo, PixelFormat};
use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

const WEIGHT: FontWeight = FontWeight::Regular;
const HEIGHT: RasterHeight = RasterHeight::Size16;
const CHAR_W: usize = get_raster_width(WEIGHT, HEIGHT);
const LINE_H: usize = HEIGHT.val() + 2;
const MARGIN: usize = 4;
/// Text colour (grey on black keeps the intensity bitmap readable).
const FG: [u8; 3] = [0xd0, 0xd0, 0xd0];

/// The framebuffer console.
pub struct FbConsole {
    buf: &'static mut [u8],
    info: FrameBufferInfo,
    x: usize,
    y: usize,
    /// How far text reaches on each text line (pixels from the left):
    /// clearing a line clears only that, so a flood of empty lines costs
    /// nearly nothing.
    widths: [u16; MAX_LINES],
}

/// Text lines a screen may have (a 2160-pixel-high one has 120).
const MAX_LINES: usize = 256;

impl FbConsole {
    /// Takes over the framebuffer the bootloader mapped and clears it.
    pub fn new(buf: &'static mut [u8], info: FrameBufferInfo) -> Self {
        buf.fill(0);
        FbConsole {
            buf,
            info,
            x: MARGIN,
            y: MARGIN,
            widths: [0; MAX_LINES],
        }
    }

    fn newline(&mut self) {
        self.x = MARGIN;
        self.y += LINE_H;
        if self.y + LINE_H > self.info.height {
            self.y = MARGIN;
        }
        // Clear the line about to be written (the marker a previous newline
        // made already, but for the first wrap) and the next one: the marker
        // between the newest text and the oldest.
        self.clear_line(self.y);
        let next = if self.y + 2 * LINE_H > self.info.height {
            MARGIN
        } else {
            self.y + LINE_H
        };
        self.clear_line(next);
    }

    /// The text line whose top is at `y`.
    fn line_of(y: usize) -> usize {
        ((y - MARGIN) / LINE_H).min(MAX_LINES - 1)
    }

    /// Blanks the text line whose top is at `y`, as far as text reaches.
    fn clear_line(&mut self, y: usize) {
        let line = Self::line_of(y);
        let width = usize::from(self.widths[line]).min(self.info.width);
        if width == 0 {
            return;
        }
        let bpp = self.info.bytes_per_pixel;
        let row = self.info.stride * bpp;
        for py in y..(y + LINE_H).min(self.info.height) {
            let start = (py * row).min(self.buf.len());
            let end = (py * row + width * bpp).min(self.buf.len());
            self.buf[start..end].fill(0);
        }
        self.widths[line] = 0;
    }

    fn put_pixel(&mut self, x: usize, y: usize, intensity: u8) {
        let bpp = self.info.bytes_per_pixel;
        let off = (y * self.info.stride + x) * bpp;
        let scale = |c: u8| ((u16::from(c) * u16::from(intensity)) / 255) as u8;
        let (r, g, b) = (scale(FG[0]), scale(FG[1]), scale(FG[2]));
        let px: [u8; 4] = match self.info.pixel_format {
            PixelFormat::Rgb => [r, g, b, 0],
            PixelFormat::Bgr => [b, g, r, 0],
            PixelFormat::U8 => [g, 0, 0, 0],
            _ => [g, g, g, 0],
        };
        let n = bpp.min(4);
        if let Some(dst) = self.buf.get_mut(off..off + n) {
            dst.copy_from_slice(&px[..n]);
        }
    }

    fn put_char(&mut self, c: char) {
        match c {
            '\n' => self.newline(),
            '\r' => self.x = MARGIN,
            c => {
                if self.x + CHAR_W + MARGIN > self.info.width {
                    self.newline();
                }
                let glyph = get_raster(c, WEIGHT, HEIGHT)
                    .or_else(|| get_raster('?', WEIGHT, HEIGHT))
                    .expect("the font has '?'");
                for (dy, row) in glyph.raster().iter().enumerate() {
                    for (dx, &v) in row.iter().enumerate() {
                        self.put_pixel(self.x + dx, self.y + dy, v);
                    }
                }
                self.x += glyph.width();
                let line = Self::line_of(self.y);
                self.widths[line] = self.widths[line].max(self.x as u16);
            }
        }
    }

    /// Draws `s`.
    pub fn write_str(&mut self, s: &str) {
        for c in s.chars() {
            self.put_char(c);
        }
    }
}
