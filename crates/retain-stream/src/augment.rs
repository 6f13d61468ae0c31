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
use tch::{Device, Kind, Tensor};

const MASK: i64 = 0xffff_ffff;
const MULTIPLIER: i64 = 0x045d_9f3b;

/// The 32-bit integer hash applied elementwise on the device (Thomas Mueller's
/// `0x45d9f3b` finaliser); `x` holds values in `[0, 2³²)`. A bijection of `[0, 2³²)`: each
/// step (xor-shift, multiplication by an odd constant modulo 2³²) is invertible.
pub fn hash32_device(x: &Tensor) -> Tensor {
    let step = |x: &Tensor| {
        (x.bitwise_right_shift_tensor_scalar(16)
            .bitwise_xor_tensor(x)
            * MULTIPLIER)
            .bitwise_and(MASK)
    };
    let x = step(&step(x));
    x.bitwise_right_shift_tensor_scalar(16)
        .bitwise_xor_tensor(&x)
}

/// `len` distinct pseudo-random keys in `[0, 2³²)`, `[len]` `int64` on `device`, for draw
/// `key`: `hash32(i ^ key)` for `i = 0..len` (distinct because the hash is a bijection). A
/// uniform random permutation of `0..len` is their `argsort`; computed on the device, so a
/// draw needs no host→device copy and is the same on every device.
pub fn random_keys(len: i64, key: u32, device: Device) -> Tensor {
    hash32_device(&Tensor::arange(len, (Kind::Int64, device)).bitwise_xor(i64::from(key)))
}

/// The same hash on the host, for checks.
pub fn hash32(x: u32) -> u32 {
    let mut x = x;
    x = ((x >> 16) ^ x).wrapping_mul(MULTIPLIER as u32);
    x = ((x >> 16) ^ x).wrapping_mul(MULTIPLIER as u32);
    (x >> 16) ^ x
}

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
    params_from(config, len, device, |x| x.bitwise_xor(i64::from(key)))
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
    params_from(config, len, device, |x| x.bitwise_xor_tensor(key))
}

/// The draws of [`params`] and [`params_keyed`], with `mix_key` xoring the key into the
/// per-sample counters.
fn params_from(
    config: &AugmentConfig,
    len: i64,
    device: Device,
    mix_key: impl Fn(&Tensor) -> Tensor,
) -> AugmentParams {
    let position = Tensor::arange(len, (Kind::Int64, device)) * 3;
    let draw = |stream: i64| hash32_device(&mix_key(&(&position + stream)));
    let span = 2 * config.crop_padding as i64 + 1;
    let flip = if config.flip {
        draw(2).bitwise_and(1)
    } else {
        Tensor::zeros([len], (Kind::Int64, device))
    };
    AugmentParams {
        dy: draw(0).remainder(span),
        dx: draw(1).remainder(span),
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
