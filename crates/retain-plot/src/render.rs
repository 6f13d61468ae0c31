//! Rendering to a file: the format from the extension, a white canvas to draw on, and the
//! finished image written through `retain-fs`, so a crash never leaves half a PNG or SVG.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use retain_fs::AtomicError;

use crate::PlotError;
use crate::backend::DynBackend;
use crate::text::embedded_font;

/// The image formats a plot can be written in.
#[derive(Clone, Copy)]
pub(crate) enum Format {
    Png,
    Svg,
}

impl Format {
    /// From the file extension, any case.
    pub(crate) fn of(path: &Path) -> Result<Self, PlotError> {
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
}

/// Draws with `draw` on a white PNG or SVG canvas (by the extension of `path`) of `size`
/// pixels and writes the image to `path` atomically.
///
/// The image is encoded straight into `retain-fs`'s temporary sibling, which is flushed and
/// renamed into place only once it is complete. The PNG is rasterised in memory and encoded
/// here, with the encoder plotters would use, because plotters picks the encoder from the file
/// name and the temporary name does not end in `.png`.
pub(crate) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<DynBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let format = Format::of(path)?;
    embedded_font()?;
    let io_err = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let on_canvas = |root: DrawingArea<DynBackend<'_>, Shift>| -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        draw(&root).map_err(draw_err)?;
        root.present().map_err(|e| draw_err(e.to_string()))
    };
    retain_fs::write_atomically_with(path, |temporary| {
        // Opened before drawing, so that an unwritable destination is reported as I/O.
        // `File::create` gives the user's ordinary mode (0o666 less the umask).
        let mut out = BufWriter::new(File::create(temporary).map_err(io_err)?);
        match format {
            Format::Png => {
                let (width, height) = size;
                let mut pixels = vec![0; 3 * width as usize * height as usize];
                on_canvas(
                    DynBackend::Png(BitMapBackend::with_buffer(&mut pixels, size))
                        .into_drawing_area(),
                )?;
                PngEncoder::new(&mut out)
                    .write_image(&pixels, width, height, image::ColorType::Rgb8)
                    .map_err(|e| draw_err(e.to_string()))?;
            }
            Format::Svg => {
                let mut svg = String::new();
                on_canvas(
                    DynBackend::Svg(SVGBackend::with_string(&mut svg, size)).into_drawing_area(),
                )?;
                out.write_all(svg.as_bytes()).map_err(io_err)?;
            }
        }
        out.flush().map_err(io_err)
    })
    .map_err(|e| match e {
        AtomicError::Writer(e) => e,
        // Errors name the destination; the temporary name means nothing to the user.
        AtomicError::Write(e) => io_err(e.source),
    })
}
