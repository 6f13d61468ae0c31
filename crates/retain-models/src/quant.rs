//! Weight quantisation for frozen bases (QLoRA, Dettmers et al. 2023).
//!
//! A [`QuantizedWeight`] keeps a `[outputs, inputs]` weight matrix in one of two forms and
//! gives the float matrix back on demand ([`QuantizedWeight::dequantize`]), so a layer can
//! store its frozen weight in a fraction of the bytes and dequantise it on the fly in every
//! forward pass:
//!
//! * **Int8, per output channel** (absmax, symmetric): row `r` is stored as `int8` codes
//!   `q = round(w / s_r)` with `s_r = max_j |w_rj| / 127`, and one `f32` scale per row.
//!   Round-to-nearest makes every element's error at most `s_r / 2`.
//! * **NF4, block-wise**: the weight, flattened row-major, is cut into blocks of `block`
//!   values (64 in QLoRA); each block is divided by its absolute maximum `m_b` (an `f32`
//!   scale) and every value is replaced by the index of the nearest of the 16 NormalFloat
//!   levels [`NF4_LEVELS`] (information-theoretically optimal for normally distributed
//!   weights), two 4-bit indices packed per byte. An element's error is at most `m_b` times
//!   half the widest gap between neighbouring levels.
//!
//! QLoRA's second quantisation of the block scales ("double quantisation", saving another
//! ~0.4 bit per weight) is not done: scales stay `f32`, 0.5 bit per weight at block 64.

use tch::{Device, Kind, Tensor};

/// The 16 NF4 levels of QLoRA (Dettmers et al. 2023, Appendix E; `bitsandbytes`'
/// `NF4` table): quantiles of the standard normal, normalised to `[-1, 1]`, with an exact
/// zero. `tests::nf4_levels_follow_their_construction` rebuilds them from the definition.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// How a weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// `int8` codes with one absmax scale per output channel.
    Int8,
    /// 4-bit NormalFloat codes with one absmax scale per `block` consecutive values.
    Nf4 { block: usize },
}

impl QuantFormat {
    /// `"int8"`, `"nf4"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Nf4 { .. } => "nf4",
        }
    }
}

/// A weight matrix in quantised form (see the module docs).
#[derive(Debug)]
pub struct QuantizedWeight {
    format: QuantFormat,
    shape: [i64; 2],
    /// Int8: `[outputs, inputs]` `int8`. NF4: `uint8` `[⌈blocks·block / 2⌉]`, the high nibble
    /// holding the even element.
    codes: Tensor,
    /// Int8: `[outputs]` `f32`. NF4: `[blocks]` `f32`.
    scales: Tensor,
    /// NF4 only: the two levels every byte of `codes` stands for, `[256, 2]` `f32` on the
    /// codes' device (2 KiB), so that dequantising is one gather and one product, with no
    /// host-to-device copy.
    pairs: Option<Tensor>,
}

impl QuantizedWeight {
    /// Quantises the 2-d float tensor `weight` (on its device).
    ///
    /// # Panics
    /// If `weight` is not 2-d, or `format` is NF4 with `block = 0`.
    pub fn quantize(weight: &Tensor, format: QuantFormat) -> Self {
        let size = weight.size();
        assert_eq!(size.len(), 2, "only weight matrices are quantised");
        let shape = [size[0], size[1]];
        let weight = weight.detach().to_kind(Kind::Float);
        let (codes, scales) = match format {
            QuantFormat::Int8 => {
                let absmax = weight.abs().amax([1], false);
                // An all-zero row gets scale 1 (its codes are 0 either way).
                let scales =
                    (absmax.where_scalarother(&absmax.gt(0.0), 127.0) / 127.0).to_kind(Kind::Float);
                let codes = (&weight / scales.unsqueeze(1))
                    .round()
                    .clamp(-127.0, 127.0)
                    .to_kind(Kind::Int8);
                (codes, scales)
            }
            QuantFormat::Nf4 { block } => {
                assert!(block > 0, "NF4 block size must be positive");
                let block = block as i64;
                let numel = shape[0] * shape[1];
                let blocks = (numel + block - 1) / block;
                // Pad to whole blocks (and an even count) with zeros, which code exactly.
                let padded = blocks * block + (blocks * block) % 2;
                let flat = weight.flatten(0, -1);
                let flat = if padded > numel {
                    Tensor::cat(
                        &[
                            flat,
                            Tensor::zeros([padded - numel], (Kind::Float, weight.device())),
                        ],
                        0,
                    )
                } else {
                    flat
                };
                let absmax = flat.narrow(0, 0, blocks * block).view([blocks, block]);
                let absmax = absmax.abs().amax([1], false);
                let scales = absmax.where_scalarother(&absmax.gt(0.0), 1.0);
                let per_element = scales.repeat_interleave_self_int(block, 0, None);
                let per_element = Tensor::cat(
                    &[
                        per_element.shallow_clone(),
                        Tensor::ones([padded - blocks * block], (Kind::Float, weight.device())),
                    ],
                    0,
                );
                let normalised = flat / per_element;
                let levels = levels(weight.device());
                // The nearest level: count the midpoints between neighbouring levels below.
                let midpoints = (levels.narrow(0, 1, 15) + levels.narrow(0, 0, 15)) / 2.0;
                let index = normalised.bucketize(&midpoints, false, false).view([-1, 2]);
                let codes = (index.select(1, 0) * 16 + index.select(1, 1)).to_kind(Kind::Uint8);
                (codes, scales)
            }
        };
        let pairs = matches!(format, QuantFormat::Nf4 { .. }).then(|| {
            let byte = Tensor::arange(256, (Kind::Int64, weight.device()));
            let levels = levels(weight.device());
            Tensor::stack(
                &[
                    levels.index_select(0, &byte.divide_scalar_mode(16, "floor")),
                    levels.index_select(0, &byte.remainder(16)),
                ],
                1,
            )
        });
        Self {
            format,
            shape,
            codes,
            scales,
            pairs,
        }
    }

    /// The float (`f32`) matrix the codes stand for, on the codes' device.
    pub fn dequantize(&self) -> Tensor {
        match self.format {
            QuantFormat::Int8 => self.codes.to_kind(Kind::Float) * self.scales.unsqueeze(1),
            QuantFormat::Nf4 { block } => {
                let pairs = self.pairs.as_ref().expect("NF4 keeps its byte table");
                let numel = self.shape[0] * self.shape[1];
                let blocks = self.scales.size()[0];
                let values = pairs
                    .index_select(0, &self.codes.to_kind(Kind::Int))
                    .flatten(0, -1)
                    .narrow(0, 0, blocks * block as i64)
                    .view([blocks, block as i64])
                    * self.scales.unsqueeze(1);
                values.flatten(0, -1).narrow(0, 0, numel).view(self.shape)
            }
        }
    }

    /// A bound on `|w - dequantize(w)|` per element, `[outputs, inputs]`, from the scales:
    /// `s_r / 2` for int8, `m_b · max gap / 2` for NF4.
    pub fn error_bound(&self) -> Tensor {
        match self.format {
            QuantFormat::Int8 => (&self.scales / 2.0)
                .unsqueeze(1)
                .expand([self.shape[0], self.shape[1]], false)
                .contiguous(),
            QuantFormat::Nf4 { block } => {
                let widest = NF4_LEVELS
                    .windows(2)
                    .map(|w| f64::from(w[1] - w[0]))
                    .fold(0.0, f64::max);
                let numel = self.shape[0] * self.shape[1];
                (&self.scales * (widest / 2.0))
                    .repeat_interleave_self_int(block as i64, 0, None)
                    .narrow(0, 0, numel)
                    .view(self.shape)
            }
        }
    }

    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// `[outputs, inputs]` of the matrix.
    pub fn shape(&self) -> [i64; 2] {
        self.shape
    }

    /// Bytes of the stored codes and scales (the 2 KiB byte table of NF4, a constant per
    /// layer, is left out).
    pub fn bytes(&self) -> u64 {
        [&self.codes, &self.scales]
            .iter()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    }

    /// The codes and scales, for checkpoints of a quantised model.
    pub fn parts(&self) -> (&Tensor, &Tensor) {
        (&self.codes, &self.scales)
    }
}

fn levels(device: Device) -> Tensor {
    Tensor::from_slice(&NF4_LEVELS).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QLoRA's construction (bitsandbytes `create_normal_map(offset = 0.9677083)`): 8
    /// positive quantiles `Φ⁻¹(p)` for `p` evenly spaced from the offset down to ½ (excluded),
    /// 7 negative ones likewise, an exact 0, everything divided by the largest. `Φ⁻¹(p) =
    /// √2 · erfinv(2p − 1)`, computed here in double precision.
    #[test]
    fn nf4_levels_follow_their_construction() {
        let offset = 0.967_708_3_f64;
        let quantile = |p: &Tensor| (p * 2.0 - 1.0).erfinv() * std::f64::consts::SQRT_2;
        let spaced = |n: i64| Tensor::linspace(offset, 0.5, n, (Kind::Double, Device::Cpu));
        let positive = quantile(&spaced(9).narrow(0, 0, 8));
        let negative = -quantile(&spaced(8).narrow(0, 0, 7));
        let all = Tensor::cat(
            &[
                negative,
                Tensor::zeros([1], (Kind::Double, Device::Cpu)),
                positive,
            ],
            0,
        )
        .sort(0, false)
        .0;
        let all = &all / all.max();
        let built = Vec::<f64>::try_from(all).unwrap();
        assert_eq!(built.len(), 16);
        for (level, (built, published)) in built.iter().zip(NF4_LEVELS).enumerate() {
            assert!(
                (built - f64::from(published)).abs() < 2e-6,
                "level {level}: construction {built}, published {published}"
            );
        }
    }

    fn sample_weight() -> Tensor {
        tch::manual_seed(3);
        // Rows of very different magnitude, a zero row and an outlier: per-channel and
        // per-block scales matter.
        let w = Tensor::randn([6, 50], (Kind::Float, Device::Cpu));
        let row_scale = Tensor::from_slice(&[1.0f32, 0.01, 10.0, 0.0, 0.5, 3.0]).unsqueeze(1);
        let w = w * row_scale;
        let _ = w.get(4).get(7).fill_(40.0);
        w
    }

    fn worst_excess(q: &QuantizedWeight, w: &Tensor) -> f64 {
        let error = (q.dequantize() - w).abs();
        // Relative slack for float rounding of the division and multiplication.
        let slack = w.abs() * 1e-6 + 1e-12;
        (error - q.error_bound() - slack).max().double_value(&[])
    }

    #[test]
    fn int8_round_trip_stays_within_half_a_step_per_channel() {
        let w = sample_weight();
        let q = QuantizedWeight::quantize(&w, QuantFormat::Int8);
        assert_eq!(q.dequantize().size(), vec![6, 50]);
        assert!(worst_excess(&q, &w) <= 0.0);
        // The zero row is exact; the row's extreme values are exact (±127 · s).
        assert_eq!(q.dequantize().get(3).abs().max().double_value(&[]), 0.0);
        let row = q.dequantize().get(4);
        assert!((row.double_value(&[7]) - 40.0).abs() < 1e-5);
        // A row's step is its own absmax / 127, not the matrix's: the small row keeps its
        // precision.
        let small = (q.dequantize().get(1) - w.get(1))
            .abs()
            .max()
            .double_value(&[]);
        assert!(small <= w.get(1).abs().max().double_value(&[]) / 254.0 * (1.0 + 1e-6));
        // 1 byte per weight plus 4 per row.
        assert_eq!(q.bytes(), 6 * 50 + 6 * 4);
    }

    #[test]
    fn nf4_round_trip_stays_within_half_the_widest_gap_per_block() {
        let w = sample_weight();
        for block in [64, 7, 300, 301] {
            let q = QuantizedWeight::quantize(&w, QuantFormat::Nf4 { block });
            let dq = q.dequantize();
            assert_eq!(dq.size(), vec![6, 50]);
            assert!(worst_excess(&q, &w) <= 0.0, "block {block}");
            let blocks = 300usize.div_ceil(block) as u64;
            let code_bytes = (blocks * block as u64).div_ceil(2);
            assert_eq!(q.bytes(), code_bytes + 4 * blocks, "block {block}");
        }
        // Values that are levels times the block's absmax come back exactly.
        let levels = Tensor::from_slice(&NF4_LEVELS);
        let exact = (Tensor::cat(&[&levels, &levels.flip([0])], 0) * 2.5).view([4, 8]);
        let q = QuantizedWeight::quantize(&exact, QuantFormat::Nf4 { block: 16 });
        assert!(q.dequantize().allclose(&exact, 1e-6, 1e-7, false));
        // A weight half-way between two levels is bounded by the gap, and the codebook is
        // really used: 16 distinct values over a large normal matrix.
        let big = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        let q = QuantizedWeight::quantize(&big, QuantFormat::Nf4 { block: 64 });
        let per_block = q.dequantize().view([64, 64]) / q.scales.unsqueeze(1);
        // Rounded, since the division by the scale is not exact in floats.
        let distinct = (per_block.flatten(0, -1) * 1e4)
            .round()
            .unique_dim(0, true, false, false)
            .0;
        assert_eq!(distinct.size(), vec![16]);
    }

    #[test]
    fn quantised_bytes_are_several_times_smaller_than_floats() {
        let w = Tensor::randn([256, 784], (Kind::Float, Device::Cpu));
        let floats = (256 * 784 * 4) as f64;
        let int8 = QuantizedWeight::quantize(&w, QuantFormat::Int8).bytes() as f64;
        let nf4 = QuantizedWeight::quantize(&w, QuantFormat::Nf4 { block: 64 }).bytes() as f64;
        assert!(
            floats / int8 > 3.9 && floats / int8 < 4.0,
            "{}",
            floats / int8
        );
        assert!(floats / nf4 > 7.0 && floats / nf4 < 7.2, "{}", floats / nf4);
    }
}
