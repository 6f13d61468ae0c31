//! Colours: the viridis map of the heat-map, the categorical palette of the charts, and the
//! text colour that reads on a given background.

use plotters::style::{BLACK, RGBColor, WHITE};

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

/// A plotters colour from RGB bytes.
pub(crate) fn rgb([r, g, b]: [u8; 3]) -> RGBColor {
    RGBColor(r, g, b)
}

/// Black or white, whichever reads better on `background`.
pub(crate) fn text_colour_on([r, g, b]: [u8; 3]) -> RGBColor {
    let luminance = 0.2126 * f64::from(r) + 0.7152 * f64::from(g) + 0.0722 * f64::from(b);
    if luminance > 140.0 { BLACK } else { WHITE }
}

#[cfg(test)]
mod tests;
