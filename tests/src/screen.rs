//! Reading the guest's screen: a QEMU `screendump` (PPM) back into lines of
//! text.
//!
//! The guest's terminal and the kernel's framebuffer console draw text one
//! way, and this module assumes it: Noto Sans Mono (`noto-sans-mono-bitmap`)
//! regular, 16 px rasters, [`CHAR_W`] pixels per character, text lines
//! [`CELL_H`] pixels apart (16 rows of glyph, 2 blank), a [`MARGIN`] of
//! 4 px left and top, each glyph pixel grey `intensity * 0xd0 / 255` on
//! black. Cell (column c, row r) has its top left corner at
//! `(4 + c * CHAR_W, 4 + r * CELL_H)`. The cursor is an underline in the
//! cell's last two rows, which the decoder never looks at.
//!
//! A cell is read by comparing its 16 glyph rows with every printable ASCII
//! glyph drawn the same way: first exactly (one hash lookup), then within
//! [`TOLERANCE`] per pixel for a colour conversion that rounds. A black
//! cell is a space; a cell that matches nothing reads `?`. The brightest of
//! the three channels is compared, so the framebuffer's channel order
//! (RGB or BGR) does not matter; text in another colour than the grey
//! above reads as `?`.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

const WEIGHT: FontWeight = FontWeight::Regular;
const HEIGHT: RasterHeight = RasterHeight::Size16;
/// Pixels from one character to the next.
pub const CHAR_W: usize = get_raster_width(WEIGHT, HEIGHT);
/// Rows of a glyph.
pub const GLYPH_H: usize = HEIGHT.val();
/// Pixels from one text line to the next.
pub const CELL_H: usize = GLYPH_H + 2;
/// Blank pixels left of the first column and above the first line.
pub const MARGIN: usize = 4;
/// Full intensity of the text colour, in every channel.
pub const FG: u8 = 0xd0;
/// How far a pixel may be from the glyph's and still match.
pub const TOLERANCE: u8 = 8;

/// The level a glyph pixel of `intensity` is drawn with.
pub fn level(intensity: u8) -> u8 {
    (u16::from(FG) * u16::from(intensity) / 255) as u8
}

/// A picture as 8-bit RGB triples, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Image {
    /// A black picture.
    pub fn black(width: usize, height: usize) -> Self {
        Image {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    /// Reads a binary PPM (`P6`, maxval 255), what `screendump` writes.
    pub fn from_ppm(bytes: &[u8]) -> Result<Image> {
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b'#') {
                if bytes[at] == b'#' {
                    while at < bytes.len() && bytes[at] != b'\n' {
                        at += 1;
                    }
                } else {
                    at += 1;
                }
            }
            let start = at;
            while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            if start == at {
                bail!("PPM header cut short");
            }
            fields.push(std::str::from_utf8(&bytes[start..at]).context("PPM header")?);
        }
        // One whitespace byte ends the header.
        at += 1;
        if fields[0] != "P6" {
            bail!("not a binary PPM (magic {:?})", fields[0]);
        }
        let num = |s: &str| {
            s.parse::<usize>()
                .with_context(|| format!("PPM field {s:?}"))
        };
        let (width, height, max) = (num(fields[1])?, num(fields[2])?, num(fields[3])?);
        if max != 255 {
            bail!("PPM maxval {max}, not 255");
        }
        let len = width * height * 3;
        let rgb = bytes
            .get(at..at + len)
            .with_context(|| format!("PPM of {width}x{height} cut short"))?
            .to_vec();
        Ok(Image { width, height, rgb })
    }

    /// Writes a binary PPM.
    pub fn to_ppm(&self) -> Vec<u8> {
        let mut out = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.rgb);
        out
    }

    /// The brightest channel at (x, y).
    pub fn level_at(&self, x: usize, y: usize) -> u8 {
        let i = (y * self.width + x) * 3;
        self.rgb[i].max(self.rgb[i + 1]).max(self.rgb[i + 2])
    }

    /// Paints (x, y) grey.
    pub fn set(&mut self, x: usize, y: usize, level: u8) {
        let i = (y * self.width + x) * 3;
        self.rgb[i..i + 3].fill(level);
    }

    /// Columns and text lines of whole cells that fit.
    pub fn grid(&self) -> (usize, usize) {
        let cols = self.width.saturating_sub(MARGIN) / CHAR_W;
        let rows = (self.height.saturating_sub(MARGIN) + CELL_H - GLYPH_H) / CELL_H;
        (cols, rows)
    }

    /// The levels of cell (col, row)'s glyph rows.
    fn cell(&self, col: usize, row: usize, out: &mut Vec<u8>) {
        out.clear();
        let (x0, y0) = (MARGIN + col * CHAR_W, MARGIN + row * CELL_H);
        for y in y0..y0 + GLYPH_H {
            for x in x0..x0 + CHAR_W {
                out.push(self.level_at(x, y));
            }
        }
    }

    /// Draws `text` from cell (col, row) the way the guest's terminal
    /// does (what the decoder is tested against).
    pub fn draw_text(&mut self, col: usize, row: usize, text: &str) {
        for (i, c) in text.chars().enumerate() {
            let Some(g) = glyph(c) else { continue };
            let (x0, y0) = (MARGIN + (col + i) * CHAR_W, MARGIN + row * CELL_H);
            for (dy, line) in g.chunks(CHAR_W).enumerate() {
                for (dx, &v) in line.iter().enumerate() {
                    self.set(x0 + dx, y0 + dy, v);
                }
            }
        }
    }
}

/// The levels of `c`'s glyph as the guest draws it, row by row, or `None`
/// where the font has no glyph.
fn glyph(c: char) -> Option<Vec<u8>> {
    let r = get_raster(c, WEIGHT, HEIGHT)?;
    Some(
        r.raster()
            .iter()
            .flat_map(|row| row.iter().map(|&v| level(v)))
            .collect(),
    )
}

/// Every printable ASCII glyph, for reading cells.
pub struct Font {
    exact: HashMap<Vec<u8>, char>,
    glyphs: Vec<(char, Vec<u8>)>,
}

impl Font {
    /// The guest's font.
    pub fn new() -> Self {
        let glyphs: Vec<(char, Vec<u8>)> = ('!'..='~')
            .filter_map(|c| glyph(c).map(|g| (c, g)))
            .collect();
        let exact = glyphs.iter().map(|(c, g)| (g.clone(), *c)).collect();
        Font { exact, glyphs }
    }

    /// The character whose glyph these levels show.
    fn read(&self, levels: &[u8]) -> char {
        if levels.iter().all(|&v| v <= TOLERANCE) {
            return ' ';
        }
        if let Some(&c) = self.exact.get(levels) {
            return c;
        }
        let mut best: Option<(u32, char)> = None;
        'glyphs: for (c, g) in &self.glyphs {
            let mut sum = 0u32;
            for (&a, &b) in levels.iter().zip(g) {
                let d = a.abs_diff(b);
                if d > TOLERANCE {
                    continue 'glyphs;
                }
                sum += u32::from(d);
            }
            if best.is_none_or(|(s, _)| sum < s) {
                best = Some((sum, *c));
            }
        }
        best.map_or('?', |(_, c)| c)
    }

    /// The text on `img`, one string per text line, trailing spaces
    /// removed.
    pub fn decode(&self, img: &Image) -> Vec<String> {
        let (cols, rows) = img.grid();
        let mut levels = Vec::with_capacity(CHAR_W * GLYPH_H);
        (0..rows)
            .map(|row| {
                let line: String = (0..cols)
                    .map(|col| {
                        img.cell(col, row, &mut levels);
                        self.read(&levels)
                    })
                    .collect();
                line.trim_end().to_owned()
            })
            .collect()
    }
}

impl Default for Font {
    fn default() -> Self {
        Font::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(lines: &[&str]) -> Image {
        let mut img = Image::black(640, 200);
        for (row, l) in lines.iter().enumerate() {
            img.draw_text(0, row, l);
        }
        img
    }

    #[test]
    fn reads_back_what_was_drawn() {
        let lines = ["wyvern> help", "commands:", "  help              this list"];
        let got = Font::new().decode(&screen(&lines));
        assert_eq!(got[..3], lines);
        assert!(got[3..].iter().all(String::is_empty), "{got:?}");
    }

    #[test]
    fn every_printable_character_is_told_apart() {
        let all: String = (' '..='~').collect();
        let mut img = Image::black(MARGIN * 2 + all.len() * CHAR_W, 40);
        img.draw_text(0, 0, &all);
        assert_eq!(Font::new().decode(&img)[0], all.trim_end());
    }

    #[test]
    fn through_a_ppm_with_the_cursor_and_a_colour_error() {
        let mut img = screen(&["wyvern> ps"]);
        // The cursor: an underline in the last two rows of the cell after
        // the text.
        let x0 = MARGIN + 10 * CHAR_W;
        for y in [MARGIN + GLYPH_H, MARGIN + GLYPH_H + 1] {
            for x in x0..x0 + CHAR_W {
                img.set(x, y, FG);
            }
        }
        // Every level off by a little, as a colour conversion may leave it.
        for v in img.rgb.iter_mut() {
            *v = v.saturating_sub(3);
        }
        let back = Image::from_ppm(&img.to_ppm()).unwrap();
        assert_eq!(back, img);
        assert_eq!(Font::new().decode(&back)[0], "wyvern> ps");
    }

    #[test]
    fn what_is_not_the_font_reads_as_a_question_mark() {
        let mut img = screen(&["a b"]);
        // A solid block in the blank between `a` and `b`.
        let x0 = MARGIN + CHAR_W;
        for y in MARGIN..MARGIN + GLYPH_H {
            for x in x0..x0 + CHAR_W {
                img.set(x, y, 0xff);
            }
        }
        assert_eq!(Font::new().decode(&img)[0], "a?b");
        // A glyph the decoder does not know (outside ASCII).
        let mut img = Image::black(100, 30);
        let e_acute: Vec<u8> = glyph('e').unwrap().iter().map(|v| v / 2).collect();
        for (dy, line) in e_acute.chunks(CHAR_W).enumerate() {
            for (dx, &v) in line.iter().enumerate() {
                img.set(MARGIN + dx, MARGIN + dy, v);
            }
        }
        assert_eq!(Font::new().decode(&img)[0], "?");
    }

    #[test]
    fn the_layout_is_the_terminals() {
        // Written out, not derived from the constants above.
        assert_eq!((CHAR_W, GLYPH_H, CELL_H, MARGIN), (7, 16, 18, 4));
        assert_eq!((level(255), level(128), level(0)), (0xd0, 104, 0));
        let mut img = Image::black(64, 64);
        img.draw_text(2, 1, "A");
        let raster = get_raster('A', WEIGHT, HEIGHT).unwrap();
        for (dy, row) in raster.raster().iter().enumerate() {
            for (dx, &v) in row.iter().enumerate() {
                let (x, y) = (4 + 2 * 7 + dx, 4 + 18 + dy);
                let i = (y * 64 + x) * 3;
                let want = (u32::from(v) * 0xd0 / 255) as u8;
                assert_eq!(img.rgb[i..i + 3], [want; 3], "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn the_grid_counts_whole_cells() {
        let img = Image::black(1280, 800);
        assert_eq!(img.grid(), ((1280 - 4) / CHAR_W, 44));
        // A last line needs its 16 glyph rows, not its 2 blank ones.
        let img = Image::black(100, MARGIN + CELL_H + GLYPH_H);
        assert_eq!(img.grid().1, 2);
        let img = Image::black(100, MARGIN + CELL_H + GLYPH_H - 1);
        assert_eq!(img.grid().1, 1);
    }

    #[test]
    fn bad_ppms_are_refused() {
        assert!(Image::from_ppm(b"P5\n2 2\n255\n....").is_err());
        assert!(Image::from_ppm(b"P6\n2 2\n255\n...").is_err());
        assert!(Image::from_ppm(b"P6\n2").is_err());
        let ok = Image::from_ppm(b"P6\n# comment\n1 1\n255\n\x01\x02\x03").unwrap();
        assert_eq!(ok.rgb, [1, 2, 3]);
    }
}
