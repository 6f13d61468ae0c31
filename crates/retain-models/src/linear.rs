//! The linear layer every backbone uses where parameter-efficient methods may attach: a
//! plain `nn::Linear` plus three optional, independent extras that methods set from outside
//! through [`crate::Backbone`]:
//!
//! * a [`LowRank`] update (LoRA): `y = W x + b + scale · B A x`;
//! * a [`Bottleneck`] adapter on the output (Houlsby et al. 2019): `y ← y + U relu(D y + d) + u`;
//! * a quantised frozen weight ([`QuantizedWeight`], QLoRA): `W` is dequantised on the fly
//!   from codes and scales, and the float variable's storage is released.
//!
//! The extras sit behind a `Mutex` because `Backbone` methods take `&self` (models are shared
//! by reference with the trainer); the lock is uncontended (one training thread per model).

use std::sync::{Mutex, MutexGuard};

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::quant::{QuantFormat, QuantizedWeight};

/// A low-rank update of a linear layer (LoRA, Hu et al. 2021): the layer computes
/// `W x + b + scale · B A x` with `A: [rank, inputs]` and `B: [outputs, rank]`, without ever
/// forming `B A`. The tensors are shared with whoever made the adapter (usually variables of
/// the model's `VarStore`), so gradients reach them through the layer.
#[derive(Debug)]
pub struct LowRank {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// A bottleneck adapter on a layer's output (Houlsby et al. 2019): `y + up(relu(down(y)))`
/// with `down: [width, outputs]` (+ bias `[width]`) and `up: [outputs, width]` (+ bias
/// `[outputs]`). With `up` zero it is the identity, so a fresh adapter changes nothing.
#[derive(Debug)]
pub struct Bottleneck {
    pub down_weight: Tensor,
    pub down_bias: Tensor,
    pub up_weight: Tensor,
    pub up_bias: Tensor,
}

impl Bottleneck {
    fn apply(&self, ys: &Tensor) -> Tensor {
        let hidden = ys.linear(&self.down_weight, Some(&self.down_bias)).relu();
        ys + hidden.linear(&self.up_weight, Some(&self.up_bias))
    }
}

#[derive(Debug, Default)]
struct Extras {
    low_rank: Option<LowRank>,
    bottleneck: Option<Bottleneck>,
    quantized: Option<QuantizedWeight>,
}

/// A linear layer with optional [`LowRank`], [`Bottleneck`] and quantised-weight extras (see
/// the module docs).
#[derive(Debug)]
pub struct AdaptableLinear {
    pub(crate) inner: nn::Linear,
    extras: Mutex<Extras>,
}

impl AdaptableLinear {
    pub fn new(path: nn::Path, inputs: i64, outputs: i64) -> Self {
        Self {
            inner: nn::linear(path, inputs, outputs, Default::default()),
            extras: Mutex::new(Extras::default()),
        }
    }

    fn extras(&self) -> MutexGuard<'_, Extras> {
        self.extras.lock().expect("layer extras lock")
    }

    /// `[outputs, inputs]`.
    pub fn shape(&self) -> [i64; 2] {
        let size = self.inner.ws.size();
        match self.extras().quantized.as_ref() {
            Some(q) if size.len() != 2 || size[0] * size[1] == 0 => q.shape(),
            _ => [size[0], size[1]],
        }
    }

    /// The weight variable (empty while quantised).
    pub fn weight(&self) -> &Tensor {
        &self.inner.ws
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bs.as_ref()
    }

    pub fn set_low_rank(&self, adapter: Option<LowRank>) {
        self.extras().low_rank = adapter;
    }

    pub fn set_bottleneck(&self, adapter: Option<Bottleneck>) {
        self.extras().bottleneck = adapter;
    }

    /// Whether any extra is attached (then the layer is not a plain `W x + b`).
    pub fn has_extras(&self) -> bool {
        let extras = self.extras();
        extras.low_rank.is_some() || extras.bottleneck.is_some() || extras.quantized.is_some()
    }

    /// Stores the current weight quantised in `format` and releases the float variable's
    /// storage (it becomes an empty tensor; the variable keeps its name). `None` restores a
    /// float weight from the codes (the quantisation error stays). Returns the bytes of the
    /// quantised form (0 after `None`).
    pub fn set_quantized(&self, format: Option<QuantFormat>) -> u64 {
        let _no_grad = tch::no_grad_guard();
        let mut extras = self.extras();
        let mut variable = self.inner.ws.shallow_clone();
        // Back to floats first, so that re-quantising in another format starts from a full
        // matrix.
        if let Some(q) = extras.quantized.take() {
            variable.set_data(&q.dequantize());
        }
        match format {
            Some(format) => {
                let q = QuantizedWeight::quantize(&variable, format);
                let bytes = q.bytes();
                variable.set_data(&Tensor::empty([0], (Kind::Float, variable.device())));
                extras.quantized = Some(q);
                bytes
            }
            None => 0,
        }
    }

    /// Bytes of the quantised weight, 0 when the weight is a float variable.
    pub fn quantized_bytes(&self) -> u64 {
        self.extras().quantized.as_ref().map_or(0, |q| q.bytes())
    }

    /// Adds `scale · B A` of the attached low-rank update into the weight and detaches it;
    /// the outputs stay the same to float rounding. Refused (false) while the weight is
    /// quantised or no update is attached.
    pub fn merge_low_rank(&self) -> bool {
        let mut extras = self.extras();
        if extras.quantized.is_some() {
            return false;
        }
        let Some(lr) = extras.low_rank.take() else {
            return false;
        };
        let _no_grad = tch::no_grad_guard();
        let _ = self
            .inner
            .ws
            .shallow_clone()
            .g_add_(&(lr.b.matmul(&lr.a) * lr.scale));
        true
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let extras = self.extras();
        let out = match &extras.quantized {
            Some(q) => xs.linear(&q.dequantize().to_kind(xs.kind()), self.inner.bs.as_ref()),
            None => self.inner.forward(xs),
        };
        let out = match &extras.low_rank {
            Some(lr) => out + xs.matmul(&lr.a.tr()).matmul(&lr.b.tr()) * lr.scale,
            None => out,
        };
        match &extras.bottleneck {
            Some(adapter) => adapter.apply(&out),
            None => out,
        }
    }

    pub fn device(&self) -> Device {
        self.inner.ws.device()
    }
}
