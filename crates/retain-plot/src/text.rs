//! Text: the embedded font, registered with plotters for its own text path, and a canvas
//! that draws text either natively (SVG `<text>`) or rasterised with `ab_glyph` (PNG).

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::PlotError;

/// DejaVu Sans, embedded so text renders without system font libraries.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family every text element uses. The embedded font is registered under the generic
/// name so the SVG output (which names the family instead of rasterising) stays portable.
pub(crate) const FAMILY: &str = "sans-serif";

/// The embedded font, parsed once and also registered with plotters for its own text path.
pub(crate) fn embedded_font() -> Result<FontRef<'static>, PlotError> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).ok()?;
        FontRef::try_from_slice(DEJAVU_SANS).ok()
    })
    .clone()
    .ok_or(PlotError::Font)
}

/// How text reaches the image.
#[derive(Clone, Copy)]
pub(crate) enum TextMode {
    /// Plotters' text element: SVG keeps `<text>` so the labels stay selectable and scalable.
    Native,
    /// Glyphs rasterised here with `ab_glyph`. Plotters 0.3.7's own ab_glyph path drops each
    /// glyph's left side bearing, which visibly crowds narrow letters ("init" reads "in it").
    Raster,
}

/// The drawing area plus what text drawing needs.
pub(crate) struct Canvas<'a, DB: DrawingBackend> {
    pub(crate) root: &'a DrawingArea<DB, Shift>,
    pub(crate) text: TextMode,
    pub(crate) font: FontRef<'static>,
}

impl<DB: DrawingBackend> Canvas<'_, DB> {
    /// A filled rectangle covering `x0 <= x < x1`, `y0 <= y < y1` (both backends treat the
    /// corners as half-open, so adjacent rectangles tile without gaps or overlap).
    pub(crate) fn fill_rect(
        &self,
        (x0, y0): (i32, i32),
        (x1, y1): (i32, i32),
        colour: RGBColor,
    ) -> Result<(), String> {
        self.root
            .draw(&Rectangle::new([(x0, y0), (x1, y1)], colour.filled()))
            .map_err(|e| e.to_string())
    }

    /// Draws `text` of pixel height `size` anchored at `pos` as `h`/`v` say.
    pub(crate) fn text(
        &self,
        text: &str,
        pos: (i32, i32),
        size: f64,
        colour: RGBColor,
        h: HPos,
        v: VPos,
    ) -> Result<(), String> {
        match self.text {
            TextMode::Native => {
                let style = (FAMILY, size)
                    .into_font()
                    .color(&colour)
                    .pos(Pos::new(h, v));
                self.root
                    .draw(&Text::new(text.to_owned(), pos, style))
                    .map_err(|e| e.to_string())
            }
            TextMode::Raster => self.raster_text(text, pos, size, colour, h, v),
        }
    }

    fn raster_text(
        &self,
        text: &str,
        (x, y): (i32, i32),
        size: f64,
        colour: RGBColor,
        h: HPos,
        v: VPos,
    ) -> Result<(), String> {
        let scale = PxScale::from(size as f32);
        let scaled = self.font.as_scaled(scale);
        // Pen positions along the baseline, with kerning.
        let mut pen = 0.0f32;
        let mut previous = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars() {
            let id = self.font.glyph_id(c);
            if let Some(p) = previous {
                pen += scaled.kern(p, id);
            }
            glyphs.push((id, pen));
            pen += scaled.h_advance(id);
            previous = Some(id);
        }
        let left = match h {
            HPos::Left => x as f32,
            HPos::Center => x as f32 - pen / 2.0,
            HPos::Right => x as f32 - pen,
        };
        let baseline = match v {
            VPos::Top => y as f32 + scaled.ascent(),
            VPos::Center => y as f32 + (scaled.ascent() + scaled.descent()) / 2.0,
            VPos::Bottom => y as f32 + scaled.descent(),
        };
        let mut result = Ok(());
        for (id, offset) in glyphs {
            let glyph = id.with_scale_and_position(scale, point(left + offset, baseline));
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue; // whitespace
            };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                if result.is_ok() && coverage > 0.0 {
                    let px = bounds.min.x as i32 + gx as i32;
                    let py = bounds.min.y as i32 + gy as i32;
                    result = self
                        .root
                        .draw_pixel((px, py), &colour.mix(f64::from(coverage.min(1.0))))
                        .map_err(|e| e.to_string());
                }
            });
        }
        result
    }
}
