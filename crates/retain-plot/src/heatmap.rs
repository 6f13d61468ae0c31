//! The accuracy heat-map: its pixel geometry ([`HeatmapLayout`]) and its drawing.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use retain_metrics::AccuracyMatrix;

use crate::PlotError;
use crate::colour::{colormap, rgb, text_colour_on};
use crate::render::{Format, render};
use crate::text::{Canvas, TextMode, embedded_font};

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
/// [`HeatmapLayout::new`]`(matrix.tasks())`. The file is written through `retain-fs` (a
/// temporary sibling renamed into place), so an interrupted run never leaves a truncated image.
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
    render(path, (layout.width, layout.height), |root| {
        let canvas = Canvas {
            root,
            text,
            font: font.clone(),
        };
        draw_heatmap(&canvas, &layout, matrix, title)
    })
}

fn draw_heatmap<DB: DrawingBackend>(
    canvas: &Canvas<'_, DB>,
    layout: &HeatmapLayout,
    matrix: &AccuracyMatrix,
    title: &str,
) -> Result<(), String> {
    // The white background is laid by `render`.
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
mod tests;
