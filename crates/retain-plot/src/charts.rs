//! Charts of a collected grid: per-task accuracy over the training sequence (lines), a
//! method comparison with mean ± std over seeds (bars with error bars), and accuracy against
//! trainable parameters (scatter). PNG or SVG by extension, written atomically through
//! `retain-fs` like the heat-map.
//!
//! Series colours come from [`PALETTE`](crate::PALETTE) (matplotlib's `tab10`, distinguishable for the common
//! forms of colour blindness), cycling after ten series. Chart text goes through plotters'
//! own text path with the embedded font (the heat-map rasterises its own text because its
//! cell annotations are dense; axis labels are not).

use std::path::Path;

use plotters::prelude::*;
use retain_metrics::AccuracyMatrix;

use crate::PlotError;
use crate::colour::{rgb, series_colour};
use crate::render::render;
use crate::text::FAMILY;

/// One bar of a comparison: a configuration's mean and standard deviation (fractions).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub mean: f64,
    /// Drawn as an error bar of ± this; 0 draws none.
    pub std: f64,
}

/// One point of a scatter plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    pub x: f64,
    /// Accuracy as a fraction.
    pub y: f64,
}

/// Accuracy of every task over the training sequence: x = tasks trained (0 = untrained), one
/// line per evaluated task (`R[·, j]`), y = accuracy in percent.
pub fn task_accuracy_lines(
    path: &Path,
    matrix: &AccuracyMatrix,
    title: &str,
) -> Result<(), PlotError> {
    let tasks = matrix.tasks();
    render(path, (720, 480), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.2f64..tasks as f64 + 0.2, 0f64..100.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(tasks + 1)
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .x_desc("tasks trained (0 = untrained)")
            .y_desc("accuracy (%)")
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for j in 0..tasks {
            let colour = rgb(series_colour(j));
            let points: Vec<(f64, f64)> = (0..=tasks)
                .map(|i| (i as f64, matrix.row(i)[j] * 100.0))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("T{}", j + 1))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, colour.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// One bar per configuration (mean, in percent) with an error bar of ± one standard deviation.
pub fn comparison_bars(path: &Path, bars: &[Bar], title: &str) -> Result<(), PlotError> {
    let n = bars.len().max(1);
    let width = (160 * n as u32 + 120).max(560);
    render(path, (width, 520), |root| {
        let (plot, labels) = root.split_vertically(440);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(8)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..n as f64, 0f64..100.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("ACC (%)")
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, bar) in bars.iter().enumerate() {
            let x = i as f64;
            let mean = bar.mean * 100.0;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.2, 0.0), (x + 0.8, mean)],
                    rgb(series_colour(i)).filled(),
                )))
                .map_err(|e| e.to_string())?;
            if bar.std > 0.0 {
                let (lo, hi) = (mean - bar.std * 100.0, mean + bar.std * 100.0);
                chart
                    .draw_series(std::iter::once(ErrorBar::new_vertical(
                        x + 0.5,
                        lo.max(0.0),
                        mean,
                        hi.min(100.0),
                        BLACK.stroke_width(2),
                        12,
                    )))
                    .map_err(|e| e.to_string())?;
            }
            let (px, _) = chart.backend_coord(&(x + 0.5, 0.0));
            let (ox, _) = plot.get_base_pixel();
            let text = format!("{:.1}", mean);
            let style = TextStyle::from((FAMILY, 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            );
            labels
                .draw(&Text::new(text, (px - ox, 6), style.clone()))
                .map_err(|e| e.to_string())?;
            labels
                .draw(&Text::new(bar.label.clone(), (px - ox, 26), style))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A named group of points drawn in one colour, with a legend entry (one read-out).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

/// ACC (percent) against trainable parameters on a logarithmic axis, one labelled point per
/// configuration, one colour per series (read-out). Logarithmic because methods differ by
/// orders of magnitude (a LoRA adapter or BitFit's biases against a whole network). Points
/// with fewer than one parameter sit at 1.
pub fn accuracy_vs_parameters(
    path: &Path,
    series: &[Series],
    title: &str,
) -> Result<(), PlotError> {
    let xs = || series.iter().flat_map(|s| &s.points).map(|p| p.x.max(1.0));
    let max_x = xs().fold(1.0f64, f64::max);
    let min_x = xs().fold(max_x, f64::min);
    // Half a decade of margin on each side, so labels beside the extreme points fit.
    let (lo, hi) = (min_x / 3.0, max_x * 3.0);
    let offsets = label_offsets(series);
    render(path, (960, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..100.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("trainable parameters (log scale)")
            .y_desc("ACC (%)")
            .x_label_formatter(&|x| format_count(*x))
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let colour = rgb(series_colour(i));
            // The label sits beside the point, in pixels, so it never covers it; labels of
            // points close together are stacked instead of drawn over each other.
            chart
                .draw_series(s.points.iter().zip(&offsets[i]).map(|(p, &dy)| {
                    EmptyElement::at((p.x.max(1.0), p.y * 100.0))
                        + Circle::new((0, 0), 6, colour.filled())
                        + Text::new(
                            p.label.clone(),
                            (10, -7 + dy),
                            (FAMILY, 12).into_font().color(&BLACK),
                        )
                }))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Vertical pixel offsets of each point's label, per series, placed greedily: each label
/// takes the first of 0, +1, −1, +2, −2, … lines away from its point where it does not
/// overlap a label already placed within half a decade in x (about a label's width), so that
/// methods with the same parameter count and accuracy (LoRA and QLoRA, say) stay readable.
pub fn label_offsets(series: &[Series]) -> Vec<Vec<i32>> {
    // Vertical pixels per point of accuracy on the chart's plotting area.
    const PIXELS_PER_POINT: f64 = 4.6;
    let mut placed: Vec<(f64, f64)> = Vec::new();
    series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .map(|p| {
                    let x = p.x.max(1.0).log10();
                    let base = -p.y * 100.0 * PIXELS_PER_POINT;
                    let free = |offset: i32| {
                        let y = base + f64::from(offset);
                        placed.iter().all(|&(px, py)| {
                            (px - x).abs() >= 0.5 || (py - y).abs() >= f64::from(LINE) - 1.0
                        })
                    };
                    let offset = (0..12)
                        .flat_map(|k| [k * LINE, -k * LINE])
                        .find(|&o| free(o))
                        .unwrap_or(0);
                    placed.push((x, base + f64::from(offset)));
                    offset
                })
                .collect()
        })
        .collect()
}

/// Height of a label line, in pixels.
const LINE: i32 = 14;

/// An axis count in short form: `500`, `12k`, `1.5M`.
fn format_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{}M", trim(x / 1e6))
    } else if x >= 1e3 {
        format!("{}k", trim(x / 1e3))
    } else {
        format!("{x:.0}")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

#[cfg(test)]
mod tests;
