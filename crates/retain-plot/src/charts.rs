//! Charts of a collected grid: per-task accuracy over the training sequence (lines), a
//! method comparison with mean ± std over seeds (bars with error bars), and accuracy against
//! trainable parameters (scatter). PNG or SVG by extension, written atomically like the
//! heat-map.
//!
//! Series colours come from [`PALETTE`] (matplotlib's `tab10`, distinguishable for the common
//! forms of colour blindness), cycling after ten series. Chart text goes through plotters'
//! own text path with the embedded font (the heat-map rasterises its own text because its
//! cell annotations are dense; axis labels are not).

use std::io::Write;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::DrawingErrorKind;
use retain_metrics::AccuracyMatrix;

use crate::{FAMILY, Format, PlotError, embedded_font, temp_builder};

/// matplotlib's `tab10`, in order.
pub const PALETTE: [[u8; 3]; 10] = [
    [0x1f, 0x77, 0xb4],
    [0xff, 0x7f, 0x0e],
    [0x2c, 0xa0, 0x2c],
    [0xd6, 0x27, 0x28],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
    [0xe3, 0x77, 0xc2],
    [0x7f, 0x7f, 0x7f],
    [0xbc, 0xbd, 0x22],
    [0x17, 0xbe, 0xcf],
];

/// The colour of series `i`.
pub fn series_colour(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

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

fn rgb([r, g, b]: [u8; 3]) -> RGBColor {
    RGBColor(r, g, b)
}

/// Draws with `draw` on a PNG or SVG canvas (by extension) and moves the file into place.
pub(crate) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<DynBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let format = Format::of(path)?;
    embedded_font()?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io_err = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let mut tmp = temp_builder(".retain-plot-", format.suffix())
        .tempfile_in(dir)
        .map_err(io_err)?;
    match format {
        Format::Png => {
            let backend = DynBackend::Png(BitMapBackend::new(tmp.path(), size));
            let root = backend.into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
            draw(&root).map_err(draw_err)?;
            root.present().map_err(|e| draw_err(e.to_string()))?;
        }
        Format::Svg => {
            let mut svg = String::new();
            {
                let backend = DynBackend::Svg(SVGBackend::with_string(&mut svg, size));
                let root = backend.into_drawing_area();
                root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
                draw(&root).map_err(draw_err)?;
                root.present().map_err(|e| draw_err(e.to_string()))?;
            }
            tmp.as_file_mut()
                .write_all(svg.as_bytes())
                .map_err(io_err)?;
        }
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// One backend type for both formats, so each chart is written once.
pub(crate) enum DynBackend<'a> {
    Png(BitMapBackend<'a>),
    Svg(SVGBackend<'a>),
}

/// Errors of either backend, as text.
#[derive(Debug)]
pub(crate) struct BackendError(String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

fn convert<E: std::error::Error + Send + Sync>(
    e: DrawingErrorKind<E>,
) -> DrawingErrorKind<BackendError> {
    match e {
        DrawingErrorKind::DrawingError(e) => {
            DrawingErrorKind::DrawingError(BackendError(e.to_string()))
        }
        DrawingErrorKind::FontError(e) => DrawingErrorKind::FontError(e),
    }
}

macro_rules! both {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            DynBackend::Png($b) => $e.map_err(convert),
            DynBackend::Svg($b) => $e.map_err(convert),
        }
    };
}

impl DrawingBackend for DynBackend<'_> {
    type ErrorType = BackendError;

    fn get_size(&self) -> (u32, u32) {
        match self {
            DynBackend::Png(b) => b.get_size(),
            DynBackend::Svg(b) => b.get_size(),
        }
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.ensure_prepared())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.present())
    }

    fn draw_pixel(
        &mut self,
        point: (i32, i32),
        color: plotters_backend::BackendColor,
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.draw_pixel(point, color))
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: (i32, i32),
        to: (i32, i32),
        style: &S,
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.draw_line(from, to, style))
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: (i32, i32),
        bottom_right: (i32, i32),
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.draw_rect(upper_left, bottom_right, style, fill))
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = (i32, i32)>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.draw_path(path, style))
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: (i32, i32),
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.draw_circle(center, radius, style, fill))
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = (i32, i32)>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.fill_polygon(vert, style))
    }

    fn draw_text<TStyle: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: (i32, i32),
    ) -> Result<(), DrawingErrorKind<BackendError>> {
        both!(self, b => b.draw_text(text, style, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix() -> AccuracyMatrix {
        AccuracyMatrix::from_rows(&[
            vec![0.05, 0.10, 0.20],
            vec![0.95, 0.30, 0.10],
            vec![0.60, 0.85, 0.50],
            vec![0.50, 0.70, 0.90],
        ])
        .unwrap()
    }

    /// Width, height and how many pixels have each colour of `colours`.
    fn png_colour_counts(path: &Path, colours: &[[u8; 3]]) -> (u32, u32, Vec<usize>, usize) {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        let pixels: Vec<[u8; 3]> = buf.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
        let counts = colours
            .iter()
            .map(|c| pixels.iter().filter(|p| *p == c).count())
            .collect();
        let distinct: std::collections::HashSet<[u8; 3]> = pixels.into_iter().collect();
        (info.width, info.height, counts, distinct.len())
    }

    fn hex([r, g, b]: [u8; 3]) -> String {
        format!("#{r:02X}{g:02X}{b:02X}")
    }

    fn text(content: &str) -> String {
        format!("\n{content}\n</text>")
    }

    #[test]
    fn task_lines_draw_one_series_per_task() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("lines.png");
        task_accuracy_lines(&png, &matrix(), "naive (class_il)").unwrap();
        let colours: Vec<[u8; 3]> = (0..3).map(series_colour).collect();
        let (w, h, counts, distinct) = png_colour_counts(&png, &colours);
        assert_eq!((w, h), (720, 480));
        assert!(distinct > 20, "only {distinct} colours");
        for (i, count) in counts.iter().enumerate() {
            // A 2 px line over the chart and four markers: hundreds of pixels.
            assert!(*count > 200, "series {i} has {count} pixels");
        }

        let svg_path = dir.path().join("lines.svg");
        task_accuracy_lines(&svg_path, &matrix(), "naive (class_il)").unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        // One marker per point: 3 tasks × 4 rows.
        assert_eq!(svg.matches("<circle").count(), 12);
        for (i, c) in colours.iter().enumerate() {
            assert!(
                svg.contains(&format!("stroke=\"{}\"", hex(*c))),
                "series {i}"
            );
            assert!(
                svg.contains(&text(&format!("T{}", i + 1))),
                "legend T{}",
                i + 1
            );
        }
        assert!(svg.contains(&text("naive (class_il)")));
        assert!(svg.contains(&text("tasks trained (0 = untrained)")));
    }

    #[test]
    fn bars_show_means_and_error_bars() {
        let bars = vec![
            Bar {
                label: "method=naive".into(),
                mean: 0.5,
                std: 0.1,
            },
            Bar {
                label: "method=joint".into(),
                mean: 0.9,
                std: 0.0,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("bars.png");
        comparison_bars(&png, &bars, "ACC").unwrap();
        let (w, h, counts, _) = png_colour_counts(&png, &[series_colour(0), series_colour(1)]);
        assert_eq!((w, h), (560, 520));
        // Bar heights are proportional to the means: 0.9 / 0.5 of the pixels, give or take
        // the error bar drawn over the first one.
        let ratio = counts[1] as f64 / counts[0] as f64;
        assert!((1.6..2.0).contains(&ratio), "{counts:?}");

        let svg_path = dir.path().join("bars.svg");
        comparison_bars(&svg_path, &bars, "ACC").unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        for (i, label) in ["method=naive", "method=joint"].iter().enumerate() {
            assert!(svg.contains(&text(label)), "{label}");
            assert!(svg.contains(&format!("fill=\"{}\"", hex(series_colour(i)))));
        }
        assert!(svg.contains(&text("50.0")) && svg.contains(&text("90.0")));
        // The error bar: a black vertical line from 40 % to 60 % of the first bar, plus caps.
        assert!(svg.contains("stroke=\"#000000\""), "no error bar");
    }

    #[test]
    fn labels_of_points_close_together_are_stacked() {
        let point = |x: f64, y: f64| Point {
            label: String::new(),
            x,
            y,
        };
        let series = vec![
            Series {
                label: "task_il".into(),
                // LoRA and two QLoRAs: same parameters, accuracies within a point.
                points: vec![
                    point(25_226.0, 0.981),
                    point(25_226.0, 0.980),
                    point(25_226.0, 0.981),
                ],
            },
            Series {
                label: "class_il".into(),
                // Far below, and far to the left: unaffected.
                points: vec![point(25_226.0, 0.2), point(1_162.0, 0.98)],
            },
        ];
        // The first keeps its place, the second goes a line down, the third a line up.
        assert_eq!(label_offsets(&series), vec![vec![0, 14, -14], vec![0, 0]]);
    }

    #[test]
    fn scatter_places_one_labelled_point_per_configuration_on_a_log_axis() {
        let series = vec![
            Series {
                label: "class_il".into(),
                points: vec![
                    Point {
                        label: "naive".into(),
                        x: 89_610.0,
                        y: 0.2,
                    },
                    Point {
                        label: "lora".into(),
                        x: 5_000.0,
                        y: 0.6,
                    },
                ],
            },
            Series {
                label: "task_il".into(),
                points: vec![Point {
                    label: "bitfit".into(),
                    x: 310.0,
                    y: 0.9,
                }],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let svg_path = dir.path().join("scatter.svg");
        accuracy_vs_parameters(&svg_path, &series, "ACC vs params").unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert_eq!(svg.matches("<circle").count(), 3);
        for label in ["naive", "lora", "bitfit", "class_il", "task_il"] {
            assert!(svg.contains(&text(label)), "{label}");
        }
        assert!(svg.contains(&text("trainable parameters (log scale)")));
        // Decades are labelled on the logarithmic axis.
        assert!(
            svg.contains(&text("1k")) && svg.contains(&text("10k")),
            "{svg}"
        );

        let png = dir.path().join("scatter.png");
        accuracy_vs_parameters(&png, &series, "ACC vs params").unwrap();
        let (_, _, counts, _) = png_colour_counts(&png, &[series_colour(0), series_colour(1)]);
        // Filled circles of radius 6 (≈ 113 pixels each) and a 10×10 legend square per series.
        assert!(
            (2 * 80 + 100..2 * 200 + 130).contains(&counts[0]),
            "{counts:?}"
        );
        assert!((80 + 100..200 + 130).contains(&counts[1]), "{counts:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "temporary files left behind");
        assert!(matches!(
            accuracy_vs_parameters(&dir.path().join("x.gif"), &series, "t"),
            Err(PlotError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(format_count(500.0), "500");
        assert_eq!(format_count(12_000.0), "12k");
        assert_eq!(format_count(1_500_000.0), "1.5M");
    }
}
