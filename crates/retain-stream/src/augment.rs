//! Training-batch augmentation on the device: random crop after zero padding, and
//! horizontal flip.
//!
//! The random numbers come from a counter-based hash evaluated *on the device* from a key
//! (the stream's augmentation seed mixed with the caller's draw number) and the position in
//! the batch. So augmentation needs no host→device copy, no generator state, and is
//! identical on CPU and CUDA, for every method, given the same draw: a batch can be
//! re-created exactly. The hash uses only 32-bit values held in `int64`, multiplied by
//! constants below 2³¹, so no operation overflows and every backend computes the same bits.
//!
//! Both transforms are one pair of `gather`s on the `uint8` batch: row `y` of the output
//! takes padded row `dy + y`, column `x` takes padded column `dx + x`, or `dx + W − 1 − x`
//! when flipped. Padding is with raw zeros before normalisation, as torchvision's
//! `RandomCrop(32, padding=4)` pads the image before `ToTensor` and `Normalize`.

use retain_config::AugmentConfig;
use retain_graph::Elementwise;
use tch::{Device, Kind, Tensor};

use crate::hash::{hash32, hash32_xor, hash32_xor_tensor};

/// `len` distinct pseudo-random keys in `[0, 2³²)`, `[len]` `int64` on `device`, for draw
/// `key`: `hash32(i ^ key)` for `i = 0..len` (distinct because the hash is a bijection). A
/// uniform random permutation of `0..len` is their `argsort`; computed on the device, so a
/// draw needs no host→device copy and is the same on every device.
pub fn random_keys(len: i64, key: u32, device: Device) -> Tensor {
    hash32_xor(&Tensor::arange(len, (Kind::Int64, device)), i64::from(key))
}

/// One augmentation draw for every sample as one fused kernel on CUDA:
/// `hash32((position + stream) ^ key) % modulus`, `key` a `[]` device tensor (a captured
/// step's key).
const DRAW: Elementwise = Elementwise::new(
    "retain_augment_draw",
    concat!(
        crate::hash32_cuda_source!(),
        "template <typename T> T retain_augment_draw(T position, T key, int64_t stream,
                                                     int64_t modulus) {
           return retain_hash32_of((position + stream) ^ key) % modulus;
         }"
    ),
);

/// Per-sample augmentation parameters of one batch, on the device: vertical and horizontal
/// crop offsets into the padded image (`0..=2·padding`) and the flip flag (0 or 1), each
/// `[B]`, `int64`.
#[derive(Debug)]
pub struct AugmentParams {
    pub dy: Tensor,
    pub dx: Tensor,
    pub flip: Tensor,
}

/// Draws the parameters of a batch of `len` samples for `key` (32 significant bits).
pub fn params(config: &AugmentConfig, key: u32, len: i64, device: Device) -> AugmentParams {
    params_from(config, len, device, DrawKey::Host(i64::from(key)))
}

/// [`params`] with the key in a `[]` `int64` device tensor instead of a host scalar: the
/// same values, and what a captured step uses, since a host scalar would be frozen into the
/// graph.
pub fn params_keyed(
    config: &AugmentConfig,
    key: &Tensor,
    len: i64,
    device: Device,
) -> AugmentParams {
    params_from(config, len, device, DrawKey::Device(key))
}

/// Where a draw's key is: a host scalar or a `[]` device tensor.
#[derive(Clone, Copy)]
enum DrawKey<'a> {
    Host(i64),
    Device(&'a Tensor),
}

/// The draws of [`params`] and [`params_keyed`]: stream `s` of sample `i` is
/// `hash32((3i + s) ^ key)`.
fn params_from(
    config: &AugmentConfig,
    len: i64,
    device: Device,
    key: DrawKey<'_>,
) -> AugmentParams {
    let position = Tensor::arange(len, (Kind::Int64, device)) * 3;
    let draw = |stream: i64, modulus: i64| {
        // The eager path's host key takes the two-kernel route below.
        let fused = match key {
            DrawKey::Device(key) if key.kind() == Kind::Int64 => {
                DRAW.launch(&[&position, key], &[stream, modulus])
            }
            _ => None,
        };
        fused.unwrap_or_else(|| {
            let shifted = &position + stream;
            let hashed = match key {
                DrawKey::Host(key) => hash32_xor(&shifted, key),
                DrawKey::Device(key) => hash32_xor_tensor(&shifted, key),
            };
            hashed.remainder(modulus)
        })
    };
    let span = 2 * config.crop_padding as i64 + 1;
    let flip = if config.flip {
        draw(2, 2)
    } else {
        Tensor::zeros([len], (Kind::Int64, device))
    };
    AugmentParams {
        dy: draw(0, span),
        dx: draw(1, span),
        flip,
    }
}

/// The same parameters computed on the host: `(dy, dx, flip)` of sample `i`.
pub fn params_host(config: &AugmentConfig, key: u32, i: u32) -> (i64, i64, bool) {
    let span = 2 * config.crop_padding as u32 + 1;
    let draw = |stream: u32| hash32((3 * i + stream) ^ key);
    (
        i64::from(draw(0) % span),
        i64::from(draw(1) % span),
        config.flip && draw(2) & 1 == 1,
    )
}

/// Crops and flips `images` (`[B, C, H, W]`, any dtype) as `params` say.
pub fn apply(images: &Tensor, config: &AugmentConfig, params: &AugmentParams) -> Tensor {
    let [b, c, h, w] = images.size()[..] else {
        panic!("augmentation expects [B, C, H, W], got {:?}", images.size())
    };
    let pad = config.crop_padding as i64;
    let device = images.device();
    let padded = if pad > 0 {
        images.constant_pad_nd([pad, pad, pad, pad])
    } else {
        images.shallow_clone()
    };
    let rows = Tensor::arange(h, (Kind::Int64, device)).unsqueeze(0) + params.dy.unsqueeze(1);
    let columns = Tensor::arange(w, (Kind::Int64, device)).unsqueeze(0);
    let mirrored = columns.neg() + (w - 1);
    let flipped = params.flip.unsqueeze(1).to_kind(Kind::Bool);
    let columns = mirrored.where_self(&flipped, &columns) + params.dx.unsqueeze(1);
    padded
        .gather(
            2,
            &rows
                .view([b, 1, h, 1])
                .expand([b, c, h, w + 2 * pad], false),
            false,
        )
        .gather(
            3,
            &columns.view([b, 1, 1, w]).expand([b, c, h, w], false),
            false,
        )
}
