//! Labels drawn from an 8×8 bitmap font, pixel by pixel.
//!
//! plotters' own text needs a font engine: its `ttf` feature loads system fonts through
//! font-kit and fontconfig (missing on minimal hosts and lab images), its `ab_glyph` feature
//! needs a font file embedded in the program. Without either, plotters panics on the first
//! label. The glyphs of the font8x8 crate (plain data, no system dependency) drawn as pixels
//! give readable ASCII labels anywhere.

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, RGBColor};

use super::TimelineError;

pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Glyph cell width and height in pixels at scale 1.
pub(crate) const CELL: i32 = 8;

/// The charts' text and axes, and their grid lines: one look for every chart.
pub(crate) const INK: RGBColor = RGBColor(30, 30, 30);
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);

pub(crate) fn text_width(text: &str, scale: i32) -> i32 {
    text.chars().count() as i32 * CELL * scale
}

/// Draws `text` with its top-left corner at (x, y). Characters outside ASCII become '?'.
pub(crate) fn draw_text(area: &Area<'_>, x: i32, y: i32, text: &str, scale: i32, color: RGBColor) -> Result<(), TimelineError> {
    for (i, c) in text.chars().enumerate() {
        let code = if c.is_ascii() { c as usize } else { '?' as usize };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let cx = x + i as i32 * CELL * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // Bit 0 is the leftmost pixel of the row.
                if bits & (1 << col) == 0 {
                    continue;
                }
                let px = cx + col * scale;
                let py = y + row as i32 * scale;
                for dy in 0..scale {
                    for dx in 0..scale {
                        area.draw_pixel((px + dx, py + dy), &color).map_err(plot_err)?;
                    }
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn plot_err(e: impl std::fmt::Display) -> TimelineError {
    TimelineError::Plot(e.to_string())
}
