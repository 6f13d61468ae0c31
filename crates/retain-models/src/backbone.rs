//! The interface every model implements ([`Backbone`]): logits, features, and the hooks
//! methods use to adapt, quantise, prompt and differentiate it.

use tch::Tensor;
use tch::nn::ModuleT;

use crate::{AdaptableLinear, Bottleneck, LowRank, QuantFormat, init};

/// A network mapping images `[B, C, H, W]` to class logits `[B, outputs]`.
pub trait Backbone: ModuleT {
    /// Number of output logits.
    fn outputs(&self) -> usize;

    /// The representation the head reads, `[B, F]`: the last hidden layer's activations of
    /// the MLP, the pooled features of a ResNet, the normalised class token of a transformer.
    /// Methods compare samples in this space (class prototypes, task-id inference).
    fn features(&self, xs: &Tensor, train: bool) -> Tensor;

    /// Whose initialisation [`init::initialize`] reproduces for this model under
    /// `init = "reference"`. Default: PyTorch's module defaults.
    fn init_reference(&self) -> init::Reference {
        init::Reference::TorchModules
    }

    /// Name prefix of the output layer's parameters (`"head"` → `head.weight`, `head.bias`),
    /// for methods that treat the classifier apart from the feature extractor.
    fn head_name(&self) -> &'static str {
        "head"
    }

    /// The linear layers that accept adapters and quantisation, as `(name, [outputs,
    /// inputs])` sorted by name (`("hidden.0", [100, 784])`). Default: none.
    fn adaptable_layers(&self) -> Vec<(String, [i64; 2])> {
        Vec::new()
    }

    /// The adaptable linear layer `name` (one of [`Backbone::adaptable_layers`]). The
    /// adapter and quantisation hooks below go through it.
    fn linear(&self, _name: &str) -> Option<&AdaptableLinear> {
        None
    }

    /// Attaches the low-rank `adapter` to the linear layer `name` (replacing any earlier
    /// one), or detaches it with `None`. Returns false, changing nothing, when the model has
    /// no adaptable layer of that name.
    fn set_adapter(&self, name: &str, adapter: Option<LowRank>) -> bool {
        self.linear(name).map(|l| l.set_low_rank(adapter)).is_some()
    }

    /// Attaches a bottleneck adapter to the output of the linear layer `name`, or detaches it
    /// with `None`; false when there is no such layer.
    fn set_bottleneck(&self, name: &str, adapter: Option<Bottleneck>) -> bool {
        self.linear(name)
            .map(|l| l.set_bottleneck(adapter))
            .is_some()
    }

    /// Stores the weight of the linear layer `name` quantised (`Some(format)`), releasing the
    /// float variable, or back as floats (`None`). Returns the quantised bytes, `None` when
    /// there is no such layer.
    fn quantize(&self, name: &str, format: Option<QuantFormat>) -> Option<u64> {
        self.linear(name).map(|l| l.set_quantized(format))
    }

    /// Bytes of weights the model keeps in quantised form instead of as variables; a
    /// quantising method frees the float variable, so those bytes are counted here. A run's
    /// `frozen_base_bytes` adds them to the bytes of its variables that do not train, so a
    /// quantised base is charged what it actually occupies.
    fn quantized_bytes(&self) -> u64 {
        self.adaptable_layers()
            .iter()
            .filter_map(|(name, _)| self.linear(name))
            .map(AdaptableLinear::quantized_bytes)
            .sum()
    }

    /// Whether every sample's training-mode output depends on that sample alone (no batch
    /// norm, no dropout), so that one forward pass over concatenated batches gives each
    /// batch's outputs as separate passes would (to float rounding). Default: false, the safe
    /// answer for a model with batch statistics.
    fn samples_independent(&self) -> bool {
        false
    }

    /// `(token width, blocks)` of a transformer, whose input sequence takes prompts and whose
    /// attention takes prefixes; `None` for other models.
    fn transformer_shape(&self) -> Option<(i64, usize)> {
        None
    }

    /// Prepends learned prompt tokens `[P, width]` to the input sequence after the class
    /// token (prompt tuning, Lester et al. 2021; VPT-shallow, Jia et al. 2022), or removes
    /// them with `None`. `[B, P, width]` gives each sample of the next batches of `B` its own
    /// prompts (prompts chosen per sample, as L2P's pool). False when the model is not a
    /// transformer.
    fn set_prompt(&self, _prompt: Option<Tensor>) -> bool {
        false
    }

    /// Prepends learned keys and values `([P, width], [P, width])` to the attention of block
    /// `block` (prefix tuning, Li & Liang 2021), or removes them with `None`; with
    /// `([B, P, width], [B, P, width])` each sample of the next batches of `B` gets its own
    /// (prefixes chosen per sample, as DualPrompt's). False when the model is not a
    /// transformer or has no such block.
    fn set_prefix(&self, _block: usize, _prefix: Option<(Tensor, Tensor)>) -> bool {
        false
    }

    /// The gradients of the mean cross-entropy of each group of samples, in one batched
    /// forward/backward pass instead of one pass per group: `[groups, P]`, row `k` being the
    /// gradient of `mean_{i ∈ group k} ℓ_i` with respect to `params`, each parameter's
    /// gradient flattened row-major and concatenated in the order of `params` (the
    /// flat-gradient layout of gradient projection methods, with `params` from
    /// `VarStore::trainable_variables`). The samples of `inputs`/`labels` are the groups one
    /// after another, `group_sizes[k]` samples for group `k` (each ≥ 1). `ℓ_i` is the
    /// cross-entropy over the outputs `allowed` marks for sample `i` (`[B, outputs]` bool; the
    /// others get −∞ before the softmax, as the task-IL training loss does), over every output
    /// when `None`. Nothing is written to `p.grad()`.
    ///
    /// A model can do this when every sample's output depends on that sample alone (no batch
    /// norm, no dropout: training and evaluation mode agree) and it knows the per-sample form
    /// of its layers' gradients. It returns `None` (the caller then computes one gradient per
    /// group itself) when it cannot: by default, when some tensor of `params` is not one of
    /// its parameters, or when an adapter is attached.
    fn per_group_gradients(
        &self,
        _inputs: &Tensor,
        _labels: &Tensor,
        _group_sizes: &[i64],
        _params: &[Tensor],
        _allowed: Option<&Tensor>,
    ) -> Option<Tensor> {
        None
    }

    /// `Σ_k |k| · g_k ⊙ g_k`, one tensor per parameter of `params` and shaped like it, where
    /// `g_k` is the gradient of the mean loss of the `k`-th run of `group_size` consecutive
    /// samples (the last run may be shorter; `ℓ_i` and `allowed` as in
    /// [`Backbone::per_group_gradients`]): divided by the sample count, the diagonal
    /// empirical Fisher (per sample with `group_size = 1`, per batch otherwise), in one
    /// forward/backward pass. `None` when the model cannot batch it (the caller loops).
    fn squared_group_gradients(
        &self,
        _inputs: &Tensor,
        _labels: &Tensor,
        _group_size: i64,
        _params: &[Tensor],
        _allowed: Option<&Tensor>,
    ) -> Option<Vec<Tensor>> {
        None
    }
}
