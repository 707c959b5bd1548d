//! The text grid on the framebuffer: what is written goes into a shadow
//! buffer of characters, and [`Screen::flush`] draws the cells that differ
//! from what the framebuffer shows.
//!
//! # Layout (the test harness reads the screen by it)
//!
//! * Font: `noto-sans-mono-bitmap` 0.3, `FontWeight::Regular`,
//!   `RasterHeight::Size16`: every glyph is [`CHAR_W`] (7) pixels wide and
//!   [`GLYPH_H`] (16) high, an intensity 0..=255 per pixel. A byte the font
//!   lacks is drawn as `?`.
//! * Colours: background black (every byte of a pixel 0); a glyph pixel of
//!   intensity `i` has each colour channel `i * 0xd0 / 255` (integer
//!   division), i.e. grey `[0xd0, 0xd0, 0xd0]` scaled. RGB and BGR pixels
//!   are 3 or 4 bytes (the fourth 0), GREY pixels have the grey byte first
//!   (any further bytes 0); a format the kernel does not name is written as
//!   grey in the first three bytes.
//! * Grid: [`MARGIN`] (4) pixels left and top; `cols = (width - 8) / 7`,
//!   `rows = (height - 8) / 18` ([`LINE_H`] = 16 + 2). Cell `(c, r)` covers
//!   pixels `x = 4 + 7c .. 4 + 7c + 7`, `y = 4 + 18r .. 4 + 18r + 18`; its
//!   glyph is drawn in the cell's rows 0..16 with its top-left pixel at the
//!   cell's, rows 16 and 17 are background — except that the cursor's cell
//!   has row 17 (the last) drawn at full intensity (0xd0 grey) across all
//!   7 pixels. Every pixel outside the grid is black.
//! * The cursor sits after the last character written; when that filled
//!   the last column it is shown on the last column (the line wraps only
//!   when the next character comes).
//!
//! # Cost
//!
//! Writing only changes the shadow buffer; scrolling is a `copy_within` of
//! it. [`Screen::flush`] (once per request the terminal serves) compares
//! the shadow with a copy of what was drawn, row by row, and draws each
//! cell that differs: 18 rows of 7 pixels, written, never read (the
//! framebuffer is write-combined: reading it is slow). So a flush costs
//! what changed since the last one — one cell for an echoed key, at most
//! the whole grid (about one full-screen write) however many lines a
//! request scrolled — and a screen of mostly blank lines scrolls cheaply,
//! since blank cells that stay blank are not drawn.
//!
//! # What is understood
//!
//! Printable ASCII is drawn; `\n` moves to the start of the next line
//! (scrolling at the bottom), `\r` to the start of this one, backspace one
//! cell left (from a full line's end: to its last cell), `\t` to the next
//! multiple of 8 (at most the last column). `ESC [ … final` (CSI),
//! `ESC ] … BEL` or `ESC ] … ESC \` (OSC) and other two-byte escapes are
//! parsed and dropped; other control bytes are ignored. Of UTF-8, each
//! lead byte draws `?` and continuation bytes nothing.

use alloc::vec;
use alloc::vec::Vec;

use noto_sans_mono_bitmap::{
    FontWeight, RasterHeight, RasterizedChar, get_raster, get_raster_width,
};
use wyvern_abi::syscall::{FbInfo, fbformat};

const WEIGHT: FontWeight = FontWeight::Regular;
const HEIGHT: RasterHeight = RasterHeight::Size16;
/// Glyph width and height in pixels.
pub const CHAR_W: usize = get_raster_width(WEIGHT, HEIGHT);
pub const GLYPH_H: usize = HEIGHT.val();
/// A text line: the glyph and two blank rows (the last holds the cursor).
pub const LINE_H: usize = GLYPH_H + 2;
/// Blank pixels left of and above the grid (and at least right and below).
pub const MARGIN: usize = 4;
/// The text colour at full intensity.
const FG: [u8; 3] = [0xd0, 0xd0, 0xd0];

/// A grid larger than this is cut to it (a 8K screen has 1096 × 475).
const MAX_COLS: usize = 1200;
const MAX_ROWS: usize = 600;
/// Bytes of a CSI or OSC sequence at most before it is abandoned.
const SEQ_MAX: u16 = 256;

/// Where the escape-sequence parser is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seq {
    None,
    /// After ESC.
    Esc,
    /// In `ESC [`, after this many parameter bytes.
    Csi(u16),
    /// In `ESC ]`, after this many bytes.
    Osc(u16),
    /// ESC inside an OSC (the start of its `ESC \` end).
    OscEsc,
}

/// The framebuffer terminal's screen.
pub struct Screen {
    fb: &'static mut [u8],
    /// Bytes per line of pixels, and per pixel.
    pitch: usize,
    bpp: usize,
    /// The bytes of a pixel of each intensity.
    lut: [[u8; 4]; 256],
    pub cols: usize,
    pub rows: usize,
    /// The characters of the grid, row by row…
    text: Vec<u8>,
    /// …and those the framebuffer shows (0: nothing drawn yet).
    drawn: Vec<u8>,
    /// The cursor: `cx == cols` after the last column was written.
    cx: usize,
    cy: usize,
    /// The cell the cursor was last drawn in.
    drawn_cursor: Option<usize>,
    esc: Seq,
}

impl Screen {
    /// Takes over framebuffer `fb` described by `info`, clearing it.
    pub fn new(fb: &'static mut [u8], info: &FbInfo) -> Result<Screen, &'static str> {
        let bpp = usize::try_from(info.bytes_per_pixel).unwrap_or(0);
        let width = usize::try_from(info.width).unwrap_or(0);
        let stride = usize::try_from(info.stride).unwrap_or(0);
        let mut height = usize::try_from(info.height).unwrap_or(0);
        if !(1..=4).contains(&bpp) {
            return Err("pixels of more than 4 bytes");
        }
        if matches!(info.format, fbformat::RGB | fbformat::BGR) && bpp < 3 {
            return Err("colour pixels of fewer than 3 bytes");
        }
        if stride < width {
            return Err("a stride below the width");
        }
        let pitch = stride * bpp;
        // Only lines wholly inside the mapping.
        height = height.min(fb.len() / pitch.max(1));
        if width < 2 * MARGIN + CHAR_W || height < 2 * MARGIN + LINE_H {
            return Err("a framebuffer too small for one character");
        }
        let cols = ((width - 2 * MARGIN) / CHAR_W).min(MAX_COLS);
        let rows = ((height - 2 * MARGIN) / LINE_H).min(MAX_ROWS);
        let mut lut = [[0u8; 4]; 256];
        for (i, px) in lut.iter_mut().enumerate() {
            let scale = |c: u8| ((u16::from(c) * i as u16) / 255) as u8;
            let (r, g, b) = (scale(FG[0]), scale(FG[1]), scale(FG[2]));
            *px = match info.format {
                fbformat::RGB => [r, g, b, 0],
                fbformat::BGR => [b, g, r, 0],
                fbformat::GREY => [g, 0, 0, 0],
                _ => [g, g, g, 0],
            };
        }
        fb.fill(0);
        let mut s = Screen {
            fb,
            pitch,
            bpp,
            lut,
            cols,
            rows,
            text: vec![b' '; cols * rows],
            drawn: vec![0; cols * rows],
            cx: 0,
            cy: 0,
            drawn_cursor: None,
            esc: Seq::None,
        };
        s.flush();
        Ok(s)
    }

    /// Writes `bytes` (module docs: what is understood) into the shadow
    /// buffer; [`Screen::flush`] shows them.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match self.esc {
            Seq::None => self.plain(b),
            Seq::Esc => match b {
                b'[' => self.esc = Seq::Csi(0),
                b']' => self.esc = Seq::Osc(0),
                // Intermediates (`ESC ( B`): the final byte is still to come.
                0x20..=0x2f => {}
                0x30..=0x7e => self.esc = Seq::None,
                _ => {
                    self.esc = Seq::None;
                    self.plain(b);
                }
            },
            Seq::Csi(n) => match b {
                0x40..=0x7e => self.esc = Seq::None,
                0x20..=0x3f if n < SEQ_MAX => self.esc = Seq::Csi(n + 1),
                0x20..=0x3f => self.esc = Seq::None,
                _ => {
                    self.esc = Seq::None;
                    self.plain(b);
                }
            },
            Seq::Osc(n) => match b {
                0x07 => self.esc = Seq::None,
                0x1b => self.esc = Seq::OscEsc,
                _ if n < SEQ_MAX => self.esc = Seq::Osc(n + 1),
                _ => self.esc = Seq::None,
            },
            Seq::OscEsc => self.esc = Seq::None,
        }
    }

    /// A byte outside any escape sequence.
    fn plain(&mut self, b: u8) {
        match b {
            b' '..=b'~' => self.cell(b),
            0xc0..=0xff => self.cell(b'?'),
            b'\n' => self.newline(),
            b'\r' => self.cx = 0,
            0x08 => {
                if self.cx >= self.cols {
                    self.cx = self.cols - 1;
                } else {
                    self.cx = self.cx.saturating_sub(1);
                }
            }
            b'\t' => {
                if self.cx < self.cols {
                    self.cx = ((self.cx / 8 + 1) * 8).min(self.cols - 1);
                }
            }
            0x1b => self.esc = Seq::Esc,
            _ => {}
        }
    }

    /// Puts `b` at the cursor and moves it right (wrapping first if the
    /// line is full).
    fn cell(&mut self, b: u8) {
        if self.cx >= self.cols {
            self.newline();
        }
        self.text[self.cy * self.cols + self.cx] = b;
        self.cx += 1;
    }

    fn newline(&mut self) {
        self.cx = 0;
        if self.cy + 1 < self.rows {
            self.cy += 1;
        } else {
            self.text.copy_within(self.cols.., 0);
            let last = (self.rows - 1) * self.cols;
            self.text[last..].fill(b' ');
        }
    }

    /// Erases the character before the cursor, going back over a line's
    /// wrap (the line discipline's erase); does nothing at the top left.
    pub fn erase_back(&mut self) {
        if self.cx >= self.cols {
            self.cx = self.cols - 1;
        } else if self.cx > 0 {
            self.cx -= 1;
        } else if self.cy > 0 {
            self.cy -= 1;
            self.cx = self.cols - 1;
        } else {
            return;
        }
        self.text[self.cy * self.cols + self.cx] = b' ';
    }

    /// The framebuffer's bytes (for the host test, `tests/src/lib.rs`,
    /// which reads them back as the harness reads a screendump).
    #[cfg(test)]
    pub fn pixels(&self) -> &[u8] {
        self.fb
    }

    /// The cell the cursor is shown in.
    fn cursor(&self) -> usize {
        self.cy * self.cols + self.cx.min(self.cols - 1)
    }

    /// Draws every cell that differs from what was drawn, and the cursor.
    pub fn flush(&mut self) {
        let cur = self.cursor();
        for r in 0..self.rows {
            let row = r * self.cols..(r + 1) * self.cols;
            if self.text[row.clone()] == self.drawn[row.clone()] {
                continue;
            }
            for i in row {
                if self.text[i] != self.drawn[i] {
                    self.draw(i, i == cur);
                    self.drawn[i] = self.text[i];
                }
            }
        }
        if self.drawn_cursor != Some(cur) {
            if let Some(old) = self.drawn_cursor {
                self.draw(old, false);
            }
            self.draw(cur, true);
            self.drawn_cursor = Some(cur);
        }
        // The writes sit in write-combining buffers; a serializing
        // instruction sends them on to the screen now.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Draws cell `i` (module docs: layout), with the cursor's underline
    /// if `cursor`.
    fn draw(&mut self, i: usize, cursor: bool) {
        let glyph = glyph(self.text[i]);
        let raster = glyph.raster();
        let (x0, y0) = (
            MARGIN + (i % self.cols) * CHAR_W,
            MARGIN + (i / self.cols) * LINE_H,
        );
        let bpp = self.bpp;
        let mut line = [0u8; CHAR_W * 4];
        for dy in 0..LINE_H {
            line.fill(0);
            let intensities: &[u8] = if dy < GLYPH_H {
                raster.get(dy).copied().unwrap_or(&[])
            } else if dy == LINE_H - 1 && cursor {
                &[255; CHAR_W]
            } else {
                &[]
            };
            for (dx, &v) in intensities.iter().take(CHAR_W).enumerate() {
                line[dx * bpp..dx * bpp + bpp].copy_from_slice(&self.lut[usize::from(v)][..bpp]);
            }
            let off = (y0 + dy) * self.pitch + x0 * bpp;
            if let Some(dst) = self.fb.get_mut(off..off + CHAR_W * bpp) {
                dst.copy_from_slice(&line[..CHAR_W * bpp]);
            }
        }
    }
}

/// The glyph of byte `b`: its character, or `?` if the font lacks it.
fn glyph(b: u8) -> RasterizedChar {
    get_raster(char::from(b), WEIGHT, HEIGHT)
        .or_else(|| get_raster('?', WEIGHT, HEIGHT))
        .expect("the font has '?'")
}
