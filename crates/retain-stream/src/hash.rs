//! The counter-based 32-bit hash behind every device-side random draw (augmentation, replay
//! sampling, the reservoir's slot rule), on the host and on the device.
//!
//! The hash is Thomas Mueller's `0x45d9f3b` finaliser: two rounds of xor-shift and
//! multiplication by an odd constant modulo 2³², then a last xor-shift; a bijection of
//! `[0, 2³²)`. On the device it works on `int64` tensors holding 32-bit values. As tensor
//! operations it is ten kernels; on CUDA it runs as one fused kernel
//! ([`retain_graph::Elementwise`]) that computes the same `int64` operations bit for bit, so
//! the two paths give identical results and a captured step launches one kernel per hash.

use retain_graph::Elementwise;
use tch::{Kind, Tensor};

pub(crate) const MASK: i64 = 0xffff_ffff;
pub(crate) const MULTIPLIER: i64 = 0x045d_9f3b;

/// The hash as CUDA C++ over `int64_t`, the exact bits of [`hash32_device`]'s tensor
/// operations for every `int64` input: the arithmetic shift of `bitwise_right_shift`, the
/// wrapping product of an `int64` multiplication, the mask. Other kernels call it.
#[macro_export]
#[doc(hidden)]
macro_rules! hash32_cuda_source {
    () => {
        "__device__ __forceinline__ int64_t retain_hash32_of(int64_t v) {
           v = (int64_t)((uint64_t)((v >> 16) ^ v) * 0x045d9f3bull) & 0xffffffffll;
           v = (int64_t)((uint64_t)((v >> 16) ^ v) * 0x045d9f3bull) & 0xffffffffll;
           return (v >> 16) ^ v;
         }
        "
    };
}

const HASH: Elementwise = Elementwise::new(
    "retain_hash32",
    concat!(
        hash32_cuda_source!(),
        "template <typename T> T retain_hash32(T x) { return retain_hash32_of(x); }"
    ),
);

const HASH_XOR: Elementwise = Elementwise::new(
    "retain_hash32_xor",
    concat!(
        hash32_cuda_source!(),
        "template <typename T> T retain_hash32_xor(T x, T key) { return retain_hash32_of(x ^ key); }"
    ),
);

const HASH_XOR_SCALAR: Elementwise = Elementwise::new(
    "retain_hash32_xor_scalar",
    concat!(
        hash32_cuda_source!(),
        "template <typename T> T retain_hash32_xor_scalar(T x, int64_t salt) {
           return retain_hash32_of(x ^ salt);
         }"
    ),
);

/// Whether the fused kernels may take these inputs: they are written for `int64` only.
fn all_int64(inputs: &[&Tensor]) -> bool {
    inputs.iter().all(|t| t.kind() == Kind::Int64)
}

/// The hash on the host.
pub fn hash32(x: u32) -> u32 {
    let mut x = x;
    x = ((x >> 16) ^ x).wrapping_mul(MULTIPLIER as u32);
    x = ((x >> 16) ^ x).wrapping_mul(MULTIPLIER as u32);
    (x >> 16) ^ x
}

/// The hash elementwise on the device; `x` (`int64`) holds values in `[0, 2³²)`.
pub fn hash32_device(x: &Tensor) -> Tensor {
    if all_int64(&[x])
        && let Some(out) = HASH.launch(&[x], &[])
    {
        return out;
    }
    hash32_unfused(x)
}

/// `hash32(x ^ salt)` elementwise.
pub fn hash32_xor(x: &Tensor, salt: i64) -> Tensor {
    if all_int64(&[x])
        && let Some(out) = HASH_XOR_SCALAR.launch(&[x], &[salt])
    {
        return out;
    }
    hash32_unfused(&x.bitwise_xor(salt))
}

/// `hash32(x ^ key)` elementwise, `key` broadcast against `x` (a `[]` device key, say).
pub fn hash32_xor_tensor(x: &Tensor, key: &Tensor) -> Tensor {
    if all_int64(&[x, key])
        && let Some(out) = HASH_XOR.launch(&[x, key], &[])
    {
        return out;
    }
    hash32_unfused(&x.bitwise_xor_tensor(key))
}

/// The hash as tensor operations (every device; the reference of the fused kernels).
pub fn hash32_unfused(x: &Tensor) -> Tensor {
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
