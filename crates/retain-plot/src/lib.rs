//! Plots of results (the only crate that depends on plotters).
//!
//! Plotters is confined here so the rest of the workspace never compiles it, and it is built
//! without its `ttf` feature: that feature finds fonts through fontconfig/freetype, which a
//! bare cluster node or a CI container often lacks. All text uses DejaVu Sans embedded in the
//! binary (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`) and registered with
//! plotters' `ab_glyph` text support, so a PNG renders identically everywhere.
//!
//! PNG text is rasterised by this crate with `ab_glyph` rather than through plotters' bitmap
//! text path, whose renderer (0.3.7) drops each glyph's side bearing and crowds narrow letters
//! ("init" reads "in it"). SVG keeps plotters' `<text>` elements so labels stay selectable.
//!
//! The heat-map is drawn directly in pixel coordinates rather than through a chart's
//! coordinate system, and the geometry lives in [`HeatmapLayout`], which both the drawing code
//! and tests use. Tests can therefore sample the pixel at a cell and check it shows that
//! cell's value, instead of only checking that some image was produced.

mod charts;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use retain_metrics::AccuracyMatrix;

pub use charts::{
    Bar, PALETTE, Point, Series, accuracy_vs_parameters, comparison_bars, series_colour,
    task_accuracy_lines,
};

/// DejaVu Sans, embedded so text renders without system font libraries.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family every text element uses. The embedded font is registered under the generic
/// name so the SVG output (which names the family instead of rasterising) stays portable.
const FAMILY: &str = "sans-serif";

/// Errors from drawing or writing a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{}: unsupported plot format, expected a .png or .svg file name", path.display())]
    UnsupportedFormat { path: PathBuf },
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing {} failed: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("the embedded font could not be loaded")]
    Font,
}

/// Maps an accuracy in `[0, 1]` to an RGB colour on the viridis colormap.
///
/// Viridis is perceptually uniform and sequential (equal accuracy steps look like equal
/// colour steps, dark = low, bright = high) and stays readable in greyscale and for
/// colour-blind readers. Values outside `[0, 1]` (and NaN) are clamped. The colours are linear
/// interpolations between nine samples of matplotlib's viridis at `k/8`.
pub fn colormap(value: f64) -> [u8; 3] {
    const VIRIDIS: [[u8; 3]; 9] = [
        [0x44, 0x01, 0x54],
        [0x47, 0x2D, 0x7B],
        [0x3B, 0x52, 0x8B],
        [0x2C, 0x72, 0x8E],
        [0x21, 0x90, 0x8C],
        [0x27, 0xAD, 0x81],
        [0x5D, 0xC8, 0x63],
        [0xAA, 0xDC, 0x32],
        [0xFD, 0xE7, 0x25],
    ];
    let v = if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    };
    let position = v * (VIRIDIS.len() - 1) as f64;
    let lower = (position.floor() as usize).min(VIRIDIS.len() - 2);
    let t = position - lower as f64;
    let (a, b) = (VIRIDIS[lower], VIRIDIS[lower + 1]);
    std::array::from_fn(|c| (a[c] as f64 + t * (b[c] as f64 - a[c] as f64)).round() as u8)
}

/// Pixel geometry of an accuracy heat-map, shared by the drawing code and by tests.
///
/// Row `0` of the grid is the untrained model ("init"), row `i` the model after training task
/// `i`; column `j` is task `j + 1`. Cells are square and laid out row-major from the top-left
/// of the grid. Coordinates are pixels with `(0, 0)` at the image's top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatmapLayout {
    /// Number of tasks `T`: the grid has `T + 1` rows and `T` columns.
    pub tasks: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Side of one square cell in pixels.
    pub cell: u32,
    /// x of the grid's left edge.
    pub grid_left: i32,
    /// y of the grid's top edge.
    pub grid_top: i32,
}

const MARGIN_LEFT: u32 = 96;
const MARGIN_TOP: u32 = 56;
const MARGIN_BOTTOM: u32 = 64;
const BAR_GAP: u32 = 24;
const BAR_WIDTH: u32 = 20;
const MARGIN_RIGHT: u32 = BAR_GAP + BAR_WIDTH + 64;
const MIN_WIDTH: u32 = 480;
const BAR_SLICES: u32 = 100;

impl HeatmapLayout {
    /// The layout for a matrix of `tasks` tasks. Cells shrink as tasks grow (96 px down to a
    /// floor of 28 px) so common task counts give images of a few hundred pixels while 50+
    /// tasks still fit on a screen.
    pub fn new(tasks: usize) -> Self {
        let tasks = tasks.max(1);
        let t = u32::try_from(tasks).unwrap_or(u32::MAX);
        let cell = (720 / t).clamp(28, 96);
        let natural = MARGIN_LEFT + t * cell + MARGIN_RIGHT;
        let width = natural.max(MIN_WIDTH);
        let height = MARGIN_TOP + (t + 1) * cell + MARGIN_BOTTOM;
        Self {
            tasks,
            width,
            height,
            cell,
            // Centre the grid and colour bar when the minimum width adds space.
            grid_left: (MARGIN_LEFT + (width - natural) / 2) as i32,
            grid_top: MARGIN_TOP as i32,
        }
    }

    /// Number of grid rows, `T + 1`.
    pub fn rows(&self) -> usize {
        self.tasks + 1
    }

    /// Half-open pixel rectangle `((x0, y0), (x1, y1))` of cell `(row, col)`: it covers
    /// `x0 <= x < x1`, `y0 <= y < y1`. The coloured fill leaves a 1 px white gutter inside it.
    pub fn cell_rect(&self, row: usize, col: usize) -> ((i32, i32), (i32, i32)) {
        assert!(
            row < self.rows() && col < self.tasks,
            "cell ({row}, {col}) is outside a {}-task heat-map",
            self.tasks
        );
        let c = self.cell as i32;
        let x0 = self.grid_left + col as i32 * c;
        let y0 = self.grid_top + row as i32 * c;
        ((x0, y0), (x0 + c, y0 + c))
    }

    /// Pixel centre of cell `(row, col)`, where its value annotation is drawn.
    pub fn cell_center(&self, row: usize, col: usize) -> (i32, i32) {
        let ((x0, y0), _) = self.cell_rect(row, col);
        let half = self.cell as i32 / 2;
        (x0 + half, y0 + half)
    }

    fn grid_right(&self) -> i32 {
        self.grid_left + (self.tasks as u32 * self.cell) as i32
    }

    fn grid_bottom(&self) -> i32 {
        self.grid_top + (self.rows() as u32 * self.cell) as i32
    }

    /// Font size of the per-cell annotations, scaled with the cell.
    fn annotation_size(&self) -> f64 {
        let cell = f64::from(self.cell);
        if self.cell >= 56 {
            (cell * 0.26).min(20.0)
        } else {
            // Small cells show bare integers, which can take a larger share of the width.
            (cell * 0.3).max(8.0)
        }
    }

    /// Annotation of one cell: "95.0%" where it fits, a bare "95" in small cells.
    fn annotation(&self, value: f64) -> String {
        if self.cell >= 56 {
            format!("{:.1}%", value * 100.0)
        } else {
            format!("{:.0}", value * 100.0)
        }
    }
}

/// Heat-map of an accuracy matrix: rows = "init" then "after T1".."after Tn", columns = "T1".."Tn", each cell coloured by accuracy (0..1, a perceptual sequential colormap) and annotated with the value as a percentage; title given; a colour bar or legend.
///
/// The format follows the extension of `path` (`.png` or `.svg`, any case). The image size is
/// [`HeatmapLayout::new`]`(matrix.tasks())`. The file is written to a temporary sibling and
/// renamed into place, so an interrupted run never leaves a truncated image.
pub fn accuracy_heatmap(
    path: &Path,
    matrix: &AccuracyMatrix,
    title: &str,
) -> Result<(), PlotError> {
    // PNG text is rasterised with ab_glyph (plotters' bitmap text drops glyph side bearings);
    // SVG keeps native `<text>` elements.
    let text = match Format::of(path)? {
        Format::Png => TextMode::Raster,
        Format::Svg => TextMode::Native,
    };
    let font = embedded_font()?;
    let layout = HeatmapLayout::new(matrix.tasks());
    charts::render(path, (layout.width, layout.height), |root| {
        let canvas = Canvas {
            root,
            text,
            font: font.clone(),
        };
        draw_heatmap(&canvas, &layout, matrix, title)
    })
}

#[derive(Clone, Copy)]
enum Format {
    Png,
    Svg,
}

impl Format {
    /// From the file extension, any case.
    fn of(path: &Path) -> Result<Self, PlotError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(PlotError::UnsupportedFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Format::Png => ".png",
            Format::Svg => ".svg",
        }
    }
}

/// A temporary-file builder whose files get the ordinary mode (`0o666` less the umask)
/// instead of tempfile's private `0o600`, because the file is renamed into place and kept.
fn temp_builder<'a>(prefix: &'a str, suffix: &'a str) -> tempfile::Builder<'a, 'a> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
}

/// The embedded font, parsed once and also registered with plotters for its own text path.
fn embedded_font() -> Result<FontRef<'static>, PlotError> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).ok()?;
        FontRef::try_from_slice(DEJAVU_SANS).ok()
    })
    .clone()
    .ok_or(PlotError::Font)
}

fn rgb([r, g, b]: [u8; 3]) -> RGBColor {
    RGBColor(r, g, b)
}

/// Black or white, whichever reads better on `background`.
fn text_colour_on([r, g, b]: [u8; 3]) -> RGBColor {
    let luminance = 0.2126 * f64::from(r) + 0.7152 * f64::from(g) + 0.0722 * f64::from(b);
    if luminance > 140.0 { BLACK } else { WHITE }
}

/// How text reaches the image.
#[derive(Clone, Copy)]
enum TextMode {
    /// Plotters' text element: SVG keeps `<text>` so the labels stay selectable and scalable.
    Native,
    /// Glyphs rasterised here with `ab_glyph`. Plotters 0.3.7's own ab_glyph path drops each
    /// glyph's left side bearing, which visibly crowds narrow letters ("init" reads "in it").
    Raster,
}

/// The drawing area plus what text drawing needs.
struct Canvas<'a, DB: DrawingBackend> {
    root: &'a DrawingArea<DB, Shift>,
    text: TextMode,
    font: FontRef<'static>,
}

impl<DB: DrawingBackend> Canvas<'_, DB> {
    /// A filled rectangle covering `x0 <= x < x1`, `y0 <= y < y1` (both backends treat the
    /// corners as half-open, so adjacent rectangles tile without gaps or overlap).
    fn fill_rect(
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
    fn text(
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

fn draw_heatmap<DB: DrawingBackend>(
    canvas: &Canvas<'_, DB>,
    layout: &HeatmapLayout,
    matrix: &AccuracyMatrix,
    title: &str,
) -> Result<(), String> {
    // The white background is laid by `charts::render`.
    canvas.text(
        title,
        (layout.width as i32 / 2, MARGIN_TOP as i32 / 2),
        22.0,
        BLACK,
        HPos::Center,
        VPos::Center,
    )?;

    // Cells with their annotations; a 1 px white gutter inside each cell separates them.
    let annotation_size = layout.annotation_size();
    for row in 0..layout.rows() {
        for (col, &value) in matrix.row(row).iter().enumerate() {
            let colour = colormap(value);
            let ((x0, y0), (x1, y1)) = layout.cell_rect(row, col);
            canvas.fill_rect((x0 + 1, y0 + 1), (x1 - 1, y1 - 1), rgb(colour))?;
            canvas.text(
                &layout.annotation(value),
                layout.cell_center(row, col),
                annotation_size,
                text_colour_on(colour),
                HPos::Center,
                VPos::Center,
            )?;
        }
    }

    // Row labels to the left, column labels and axis caption below.
    for row in 0..layout.rows() {
        let text = if row == 0 {
            "init".to_owned()
        } else {
            format!("after T{row}")
        };
        let (_, y) = layout.cell_center(row, 0);
        canvas.text(
            &text,
            (layout.grid_left - 8, y),
            14.0,
            BLACK,
            HPos::Right,
            VPos::Center,
        )?;
    }
    for col in 0..layout.tasks {
        let (x, _) = layout.cell_center(0, col);
        let pos = (x, layout.grid_bottom() + 6);
        canvas.text(
            &format!("T{}", col + 1),
            pos,
            14.0,
            BLACK,
            HPos::Center,
            VPos::Top,
        )?;
    }
    let caption = (
        (layout.grid_left + layout.grid_right()) / 2,
        layout.grid_bottom() + 32,
    );
    canvas.text(
        "evaluated task",
        caption,
        14.0,
        BLACK,
        HPos::Center,
        VPos::Top,
    )?;

    // Colour bar: 0 % at the bottom, 100 % at the top, spanning the grid's height.
    let bar_left = layout.grid_right() + BAR_GAP as i32;
    let bar_right = bar_left + BAR_WIDTH as i32;
    let (top, bottom) = (layout.grid_top, layout.grid_bottom());
    let span = bottom - top;
    for k in 0..BAR_SLICES as i32 {
        let y0 = top + k * span / BAR_SLICES as i32;
        let y1 = top + (k + 1) * span / BAR_SLICES as i32;
        let value = 1.0 - (f64::from(k) + 0.5) / f64::from(BAR_SLICES);
        canvas.fill_rect((bar_left, y0), (bar_right, y1), rgb(colormap(value)))?;
    }
    // An outline rectangle's edges are drawn on the given (inclusive) coordinates.
    canvas
        .root
        .draw(&Rectangle::new(
            [(bar_left - 1, top - 1), (bar_right, bottom)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    for percent in [0, 25, 50, 75, 100] {
        let y = bottom - span * percent / 100;
        canvas
            .root
            .draw(&PathElement::new(
                vec![(bar_right, y), (bar_right + 4, y)],
                BLACK,
            ))
            .map_err(|e| e.to_string())?;
        canvas.text(
            &format!("{percent}%"),
            (bar_right + 7, y),
            12.0,
            BLACK,
            HPos::Left,
            VPos::Center,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> AccuracyMatrix {
        AccuracyMatrix::from_rows(&[
            vec![0.05, 0.10, 0.20],
            vec![0.95, 0.30, 0.10],
            vec![0.60, 0.85, 0.50],
            vec![0.50, 0.70, 0.90],
        ])
        .unwrap()
    }

    fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb, "plotters writes RGB8");
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixel(image: &(u32, u32, Vec<u8>), (x, y): (i32, i32)) -> [u8; 3] {
        let i = (y as usize * image.0 as usize + x as usize) * 3;
        [image.2[i], image.2[i + 1], image.2[i + 2]]
    }

    /// A point inside cell `(row, col)` clear of its centred annotation: up 3/8 of a cell.
    fn swatch(layout: &HeatmapLayout, row: usize, col: usize) -> (i32, i32) {
        let (x, y) = layout.cell_center(row, col);
        (x, y - layout.cell as i32 * 3 / 8)
    }

    fn close([a, b, c]: [u8; 3], [x, y, z]: [u8; 3]) -> bool {
        a.abs_diff(x) <= 2 && b.abs_diff(y) <= 2 && c.abs_diff(z) <= 2
    }

    #[test]
    fn colormap_is_viridis_and_monotone_in_brightness() {
        assert_eq!(colormap(0.0), [68, 1, 84]);
        assert_eq!(colormap(1.0), [253, 231, 37]);
        assert_eq!(colormap(0.5), [0x21, 0x90, 0x8C]);
        assert_eq!(colormap(-1.0), colormap(0.0));
        assert_eq!(colormap(f64::NAN), colormap(0.0));
        let brightness = |v| colormap(v).iter().map(|&c| u32::from(c)).sum::<u32>();
        for k in 0..100 {
            let (a, b) = (f64::from(k) / 100.0, f64::from(k + 1) / 100.0);
            assert!(brightness(a) <= brightness(b) + 3, "{a} vs {b}");
        }
    }

    #[test]
    fn png_heatmap_shows_the_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heatmap.png");
        let matrix = example();
        accuracy_heatmap(&path, &matrix, "naive — class_il").unwrap();

        let layout = HeatmapLayout::new(3);
        let image = decode_png(&path);
        assert_eq!((image.0, image.1), (layout.width, layout.height));

        let distinct: std::collections::HashSet<[u8; 3]> = image
            .2
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        assert!(distinct.len() > 100, "only {} colours", distinct.len());

        // Every cell shows its own value's colour.
        for row in 0..layout.rows() {
            for (col, &value) in matrix.row(row).iter().enumerate() {
                let got = pixel(&image, swatch(&layout, row, col));
                let want = colormap(value);
                assert!(
                    close(got, want),
                    "cell ({row},{col}) = {value}: {got:?} vs {want:?}"
                );
            }
        }
        // High and low accuracy are told apart: R[1,1] = 0.95 against b_1 = 0.05.
        let high = pixel(&image, swatch(&layout, 1, 0));
        let low = pixel(&image, swatch(&layout, 0, 0));
        assert!(!close(high, low), "{high:?} vs {low:?}");

        // The annotation is drawn at the centre: some pixel around it is text, not the fill.
        let (cx, cy) = layout.cell_center(1, 0);
        let fill = colormap(0.95);
        let text_pixels = (-10..=10)
            .flat_map(|dx| (-4..=4).map(move |dy| (cx + dx, cy + dy)))
            .filter(|&p| !close(pixel(&image, p), fill))
            .count();
        assert!(text_pixels > 5, "no annotation in cell (1,0)");

        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["heatmap.png"], "temporary file left behind");
        #[cfg(unix)]
        {
            // The plot gets the same mode as any file the user creates, not tempfile's 0600.
            use std::os::unix::fs::PermissionsExt;
            let reference = dir.path().join("reference");
            std::fs::write(&reference, b"").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&reference));
        }
    }

    #[test]
    fn svg_heatmap_has_one_rectangle_and_label_per_cell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heatmap.SVG");
        let matrix = example();
        accuracy_heatmap(&path, &matrix, "naive").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        // Plotters puts a text element's content on a line of its own.
        let text = |content: &str| format!("\n{content}\n</text>");

        let tasks = matrix.tasks();
        let cells = tasks * (tasks + 1);
        // Background + cells + colour-bar slices + colour-bar frame.
        assert_eq!(
            svg.matches("<rect").count(),
            1 + cells + BAR_SLICES as usize + 1
        );
        // Title + annotations + row labels + column labels + axis caption + 5 ticks.
        assert_eq!(
            svg.matches("<text").count(),
            1 + cells + (tasks + 1) + tasks + 1 + 5
        );
        for row in 0..=tasks {
            for &value in matrix.row(row) {
                let [r, g, b] = colormap(value);
                assert!(svg.contains(&format!("fill=\"#{r:02X}{g:02X}{b:02X}\"")));
                assert!(svg.contains(&text(&format!("{:.1}%", value * 100.0))));
            }
        }
        for label in [
            "naive",
            "init",
            "after T3",
            "T1",
            "T3",
            "evaluated task",
            "100%",
        ] {
            assert!(svg.contains(&text(label)), "missing {label}");
        }
    }

    #[test]
    fn layout_scales_with_tasks_and_keeps_cells_inside_the_image() {
        for tasks in [1, 2, 5, 10, 20, 50, 100] {
            let l = HeatmapLayout::new(tasks);
            let ((x0, y0), _) = l.cell_rect(0, 0);
            let (_, (x1, y1)) = l.cell_rect(tasks, tasks - 1);
            assert!(x0 > 0 && y0 > 0);
            assert!(
                x1 + (MARGIN_RIGHT as i32) <= l.width as i32,
                "{tasks} tasks"
            );
            assert!(y1 < l.height as i32, "{tasks} tasks");
        }
        assert!(HeatmapLayout::new(20).cell < HeatmapLayout::new(5).cell);
    }

    #[test]
    fn unknown_extension_is_rejected_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heatmap.jpg");
        let err = accuracy_heatmap(&path, &example(), "x").unwrap_err();
        assert!(matches!(err, PlotError::UnsupportedFormat { .. }));
        assert!(err.to_string().contains("heatmap.jpg"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn large_matrix_renders() {
        let tasks = 20;
        let rows: Vec<Vec<f64>> = (0..=tasks)
            .map(|i| {
                (0..tasks)
                    .map(|j| ((i * 7 + j * 3) % 11) as f64 / 10.0)
                    .collect()
            })
            .collect();
        let matrix = AccuracyMatrix::from_rows(&rows).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        accuracy_heatmap(&path, &matrix, "20 tasks").unwrap();
        let layout = HeatmapLayout::new(tasks);
        let image = decode_png(&path);
        assert_eq!((image.0, image.1), (layout.width, layout.height));
        let got = pixel(&image, swatch(&layout, tasks, tasks - 1));
        assert!(close(got, colormap(matrix.row(tasks)[tasks - 1])));
    }
}
