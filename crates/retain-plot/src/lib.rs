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
//!
//! # Layout
//!
//! `render` draws on a PNG or SVG canvas (`backend` puts both behind one type) and writes the
//! file through `retain-fs`, the workspace's atomic writer; `text` holds the embedded font
//! and the raster text path, `colour` the colour maps, `heatmap` and `charts` the plots.
//! Every public function draws one plot and may run on any thread (the font registry is
//! locked, temporary names are unique per write), so a caller with several plots renders them
//! in parallel itself.

mod backend;
mod charts;
mod colour;
mod heatmap;
mod render;
mod text;

use std::path::PathBuf;

pub use charts::{
    Bar, Point, Series, accuracy_vs_parameters, comparison_bars, task_accuracy_lines,
};
pub use colour::{PALETTE, colormap, series_colour};
pub use heatmap::{HeatmapLayout, accuracy_heatmap};

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
