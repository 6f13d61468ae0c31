//! Backbones with stable parameter names.
//!
//! Parameter names are part of the public interface: checkpoints, name-pattern selection of
//! trainable parameters ([`names::matches()`]) and PyTorch interchange all key on them.
//!
//! * The MLP names its layers `hidden.<i>` and `head`, so `hidden.0.weight` is the first
//!   layer's weight matrix.
//! * ResNet-18 uses the names of the PyTorch code of the DER paper (Mammoth) and of the GEM
//!   paper, whose `state_dict`s therefore map one to one: `conv1.weight`, `bn1.{weight,bias,
//!   running_mean,running_var}`, `layer<s>.<b>.{conv1,bn1,conv2,bn2}.*`,
//!   `layer<s>.<b>.shortcut.{0,1}.*` (1×1 convolution and batch norm, where a block changes
//!   shape) and the head `linear.{weight,bias}`. (PyTorch's `num_batches_tracked` has no
//!   counterpart: tch uses a fixed momentum.)
//!
//! Every model takes images `[B, C, H, W]`; the MLP flattens them itself.

pub mod checkpoint;
pub mod init;
mod linear;
pub mod names;
mod per_sample;
pub mod quant;
mod vit;

pub use linear::{AdaptableLinear, Bottleneck, LowRank};
pub use quant::{QuantFormat, QuantizedWeight};
pub use vit::{VisionTransformer, VitShape};

use retain_config::ModelConfig;
use tch::Tensor;
use tch::nn::{self, ModuleT};

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
    /// them with `None`. False when the model is not a transformer.
    fn set_prompt(&self, _prompt: Option<Tensor>) -> bool {
        false
    }

    /// Prepends learned keys and values `([P, width], [P, width])` to the attention of block
    /// `block` (prefix tuning, Li & Liang 2021), or removes them with `None`. False when the
    /// model is not a transformer or has no such block.
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

/// Builds the network described by `config` under `path`, for images of `image_shape`
/// (`[C, H, W]`) and `outputs` classes.
pub fn build(
    config: &ModelConfig,
    path: &nn::Path,
    image_shape: [usize; 3],
    outputs: usize,
) -> Box<dyn Backbone> {
    match config {
        ModelConfig::Mlp { hidden, .. } => Box::new(Mlp::new(
            path,
            image_shape.iter().product(),
            hidden,
            outputs,
        )),
        ModelConfig::Resnet18 { nf, .. } => {
            Box::new(ResNet::resnet18(path, image_shape[0], *nf, outputs))
        }
        &ModelConfig::Vit {
            patch,
            dim,
            depth,
            heads,
            mlp_dim,
            ..
        } => Box::new(VisionTransformer::new(
            path,
            VitShape {
                image: image_shape,
                patch,
                dim,
                depth,
                heads,
                mlp_dim,
            },
            outputs,
        )),
    }
}

/// Fully connected network: `inputs → hidden[0] → … → outputs`, ReLU between layers.
#[derive(Debug)]
pub struct Mlp {
    hidden: Vec<AdaptableLinear>,
    head: AdaptableLinear,
}

impl Mlp {
    pub fn new(path: &nn::Path, inputs: usize, hidden: &[usize], outputs: usize) -> Self {
        let mut width = inputs as i64;
        let hidden = hidden
            .iter()
            .enumerate()
            .map(|(i, &next)| {
                let layer = AdaptableLinear::new(path / "hidden" / i, width, next as i64);
                width = next as i64;
                layer
            })
            .collect();
        let head = AdaptableLinear::new(path / "head", width, outputs as i64);
        Self { hidden, head }
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.features(xs, train))
    }
}

impl Backbone for Mlp {
    fn outputs(&self) -> usize {
        self.head.shape()[0] as usize
    }

    /// Linear layers and ReLUs only.
    fn samples_independent(&self) -> bool {
        true
    }

    /// The last hidden layer's activations (the flattened input when there is none).
    fn features(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.hidden
            .iter()
            .fold(xs.flatten(1, -1), |x, layer| layer.forward(&x).relu())
    }

    /// Every layer: `hidden.<i>` and `head`.
    fn adaptable_layers(&self) -> Vec<(String, [i64; 2])> {
        let mut layers: Vec<(String, [i64; 2])> = self
            .hidden
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("hidden.{i}"), l.shape()))
            .chain([("head".to_owned(), self.head.shape())])
            .collect();
        layers.sort();
        layers
    }

    fn linear(&self, name: &str) -> Option<&AdaptableLinear> {
        match name.strip_prefix("hidden.") {
            Some(i) => i.parse::<usize>().ok().and_then(|i| self.hidden.get(i)),
            None => (name == "head").then_some(&self.head),
        }
    }

    /// One batched pass ([`per_sample::SampleDeltas`]); `None` while an adapter or a
    /// quantised weight is attached.
    fn per_group_gradients(
        &self,
        inputs: &Tensor,
        labels: &Tensor,
        group_sizes: &[i64],
        params: &[Tensor],
        allowed: Option<&Tensor>,
    ) -> Option<Tensor> {
        per_sample::SampleDeltas::of_mlp(self, inputs, labels, params, allowed)?
            .group_gradients(group_sizes)
    }

    /// One batched pass ([`per_sample::SampleDeltas`]); `None` while an adapter or a
    /// quantised weight is attached.
    fn squared_group_gradients(
        &self,
        inputs: &Tensor,
        labels: &Tensor,
        group_size: i64,
        params: &[Tensor],
        allowed: Option<&Tensor>,
    ) -> Option<Vec<Tensor>> {
        per_sample::SampleDeltas::of_mlp(self, inputs, labels, params, allowed)?
            .squared_group_gradients(group_size)
    }
}

fn conv(path: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding: kernel / 2,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(path, inputs, outputs, kernel, config)
}

/// Batch norm initialised as PyTorch's (weight 1, bias 0; tch's default weight is uniform).
fn batch_norm(path: nn::Path, channels: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    nn::batch_norm2d(path, channels, config)
}

/// The two-convolution residual block of ResNet-18/34 (He et al. 2016).
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    /// 1×1 convolution + batch norm where the block changes stride or width.
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(path: nn::Path, inputs: i64, outputs: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || inputs != outputs).then(|| {
            let p = &path / "shortcut";
            (
                conv(&p / 0, inputs, outputs, 1, stride),
                batch_norm(&p / 1, outputs),
            )
        });
        Self {
            conv1: conv(&path / "conv1", inputs, outputs, 3, stride),
            bn1: batch_norm(&path / "bn1", outputs),
            conv2: conv(&path / "conv2", outputs, outputs, 3, 1),
            bn2: batch_norm(&path / "bn2", outputs),
            shortcut,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let residual = match &self.shortcut {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (out + residual).relu()
    }
}

/// ResNet for small (e.g. 32×32) images: a 3×3 stride-1 stem without max-pool, four stages
/// of BasicBlocks with `nf`, `2nf`, `4nf`, `8nf` filters (stride 2 from the second stage on),
/// global average pooling and a linear head: the ResNet-18 of the DER paper (`nf = 64`) and
/// the reduced ResNet-18 of the GEM paper (`nf = 20`), both after Lopez-Paz & Ranzato's
/// `ResNet18` in GEM's `model/common.py`.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<BasicBlock>>,
    linear: AdaptableLinear,
}

impl ResNet {
    /// ResNet-18: BasicBlocks `[2, 2, 2, 2]`.
    pub fn resnet18(path: &nn::Path, channels: usize, nf: usize, outputs: usize) -> Self {
        Self::new(path, channels, nf, &[2, 2, 2, 2], outputs)
    }

    pub fn new(
        path: &nn::Path,
        channels: usize,
        nf: usize,
        blocks: &[usize],
        outputs: usize,
    ) -> Self {
        let nf = nf as i64;
        let mut width = nf;
        let layers = blocks
            .iter()
            .enumerate()
            .map(|(stage, &count)| {
                let planes = nf << stage;
                let stage_path = path / format!("layer{}", stage + 1);
                (0..count)
                    .map(|b| {
                        let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                        let block = BasicBlock::new(&stage_path / b, width, planes, stride);
                        width = planes;
                        block
                    })
                    .collect()
            })
            .collect();
        Self {
            conv1: conv(path / "conv1", channels as i64, nf, 3, 1),
            bn1: batch_norm(path / "bn1", nf),
            layers,
            linear: AdaptableLinear::new(path / "linear", width, outputs as i64),
        }
    }

    /// The pooled features before the head, `[B, 8·nf]`.
    fn pooled_features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        for stage in &self.layers {
            for block in stage {
                out = block.forward_t(&out, train);
            }
        }
        out.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.linear.forward(&self.pooled_features(xs, train))
    }
}

impl Backbone for ResNet {
    fn outputs(&self) -> usize {
        self.linear.shape()[0] as usize
    }

    /// The globally average-pooled output of the last stage, `[B, 8·nf]`.
    fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.pooled_features(xs, train)
    }

    fn head_name(&self) -> &'static str {
        "linear"
    }

    /// The head `linear` (convolutions take no adapter).
    fn adaptable_layers(&self) -> Vec<(String, [i64; 2])> {
        vec![("linear".to_owned(), self.linear.shape())]
    }

    fn linear(&self, name: &str) -> Option<&AdaptableLinear> {
        (name == "linear").then_some(&self.linear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn shapes(vs: &nn::VarStore) -> Vec<(String, Vec<i64>)> {
        let mut names: Vec<(String, Vec<i64>)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn mlp_has_stable_names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(
            &ModelConfig::Mlp {
                hidden: vec![100, 100],
                checkpoint: None,
                init: retain_config::InitScheme::Reference,
            },
            &vs.root(),
            [1, 28, 28],
            10,
        );
        assert_eq!(
            shapes(&vs),
            vec![
                ("head.bias".to_owned(), vec![10]),
                ("head.weight".to_owned(), vec![10, 100]),
                ("hidden.0.bias".to_owned(), vec![100]),
                ("hidden.0.weight".to_owned(), vec![100, 784]),
                ("hidden.1.bias".to_owned(), vec![100]),
                ("hidden.1.weight".to_owned(), vec![100, 100]),
            ]
        );
        let out = model.forward_t(
            &Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), vec![3, 10]);
        assert_eq!(model.outputs(), 10);
        assert_eq!(model.head_name(), "head");
    }

    /// The names and shapes of PyTorch's `state_dict` for Mammoth's / GEM's `ResNet18`
    /// (less `num_batches_tracked`), written out from the architecture.
    fn expected_resnet18(channels: i64, nf: i64, classes: i64) -> Vec<(String, Vec<i64>)> {
        let mut expected = Vec::new();
        let mut bn = |prefix: &str, c: i64| {
            for leaf in ["weight", "bias", "running_mean", "running_var"] {
                expected.push((format!("{prefix}.{leaf}"), vec![c]));
            }
        };
        bn("bn1", nf);
        let mut convs = vec![("conv1.weight".to_owned(), vec![nf, channels, 3, 3])];
        let mut width = nf;
        for stage in 0..4 {
            let planes = nf << stage;
            for block in 0..2 {
                let p = format!("layer{}.{block}", stage + 1);
                convs.push((format!("{p}.conv1.weight"), vec![planes, width, 3, 3]));
                convs.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
                bn(&format!("{p}.bn1"), planes);
                bn(&format!("{p}.bn2"), planes);
                if width != planes {
                    convs.push((format!("{p}.shortcut.0.weight"), vec![planes, width, 1, 1]));
                    bn(&format!("{p}.shortcut.1"), planes);
                }
                width = planes;
            }
        }
        expected.extend(convs);
        expected.push(("linear.weight".to_owned(), vec![classes, 8 * nf]));
        expected.push(("linear.bias".to_owned(), vec![classes]));
        expected.sort();
        expected
    }

    #[test]
    fn resnet18_has_pytorch_names_shapes_and_size() {
        for (nf, classes, parameters) in [(64, 10, 11_173_962), (20, 100, 1_109_240)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = build(
                &ModelConfig::Resnet18 {
                    nf,
                    checkpoint: None,
                    init: retain_config::InitScheme::Reference,
                },
                &vs.root(),
                [3, 32, 32],
                classes,
            );
            let expected = expected_resnet18(3, nf as i64, classes as i64);
            assert_eq!(shapes(&vs), expected);
            // As PyTorch counts them for the same architecture (fixtures/resnet_reference.py):
            // 102 state_dict entries besides `num_batches_tracked`, and these many parameters.
            assert_eq!(expected.len(), 102);
            let count: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            assert_eq!(count, parameters, "nf = {nf}");
            assert_eq!(model.outputs(), classes);
            assert_eq!(model.head_name(), "linear");
            let out = model.forward_t(
                &Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
                true,
            );
            assert_eq!(out.size(), vec![2, classes as i64]);
        }
        // One-channel 28×28 images (MNIST) go through the same network.
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(
            &ModelConfig::Resnet18 {
                nf: 4,
                checkpoint: None,
                init: retain_config::InitScheme::Reference,
            },
            &vs.root(),
            [1, 28, 28],
            10,
        );
        let out = model.forward_t(
            &Tensor::ones([5, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), vec![5, 10]);
    }

    #[test]
    fn a_low_rank_adapter_adds_scale_b_a_to_the_weight() {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mlp::new(&vs.root(), 6, &[5], 3);
        assert_eq!(
            model.adaptable_layers(),
            vec![("head".to_owned(), [3, 5]), ("hidden.0".to_owned(), [5, 6])]
        );
        let xs = Tensor::randn([4, 1, 2, 3], (Kind::Float, Device::Cpu));
        let plain = model.forward_t(&xs, false);
        let opts = (Kind::Float, Device::Cpu);
        // B = 0: the output does not change at all.
        let zero = LowRank {
            a: Tensor::randn([2, 6], opts),
            b: Tensor::zeros([5, 2], opts),
            scale: 4.0,
        };
        assert!(model.set_adapter("hidden.0", Some(zero)));
        assert!(model.forward_t(&xs, false).equal(&plain));
        // Non-zero B: the same as the merged weight W + scale · B A.
        let (a, b) = (Tensor::randn([2, 6], opts), Tensor::randn([5, 2], opts));
        let merged_weight = vs.variables()["hidden.0.weight"].detach() + b.matmul(&a) * 0.5;
        let adapter = LowRank { a, b, scale: 0.5 };
        assert!(model.set_adapter("hidden.0", Some(adapter)));
        let unmerged = model.forward_t(&xs, false);
        assert!(!unmerged.allclose(&plain, 1e-3, 1e-3, false));
        let by_hand = xs
            .flatten(1, -1)
            .linear(&merged_weight, Some(&vs.variables()["hidden.0.bias"]))
            .relu()
            .linear(
                &vs.variables()["head.weight"],
                Some(&vs.variables()["head.bias"]),
            );
        assert!(unmerged.allclose(&by_hand, 1e-5, 1e-6, false));
        // Detaching restores the plain layer; unknown names are refused.
        assert!(model.set_adapter("hidden.0", None));
        assert!(model.forward_t(&xs, false).equal(&plain));
        assert!(!model.set_adapter("hidden.1", None));
        assert!(!model.set_adapter("conv1", None));
    }

    /// A model that declares its samples independent gives, in training mode, each batch the
    /// outputs of its own pass when batches share one pass; the ResNet, whose batch norm
    /// mixes the samples of a batch, does not declare it, and indeed does not.
    #[test]
    fn samples_independent_models_give_shared_passes_each_batch_own_outputs() {
        let configs = [
            ("kind = \"mlp\"\nhidden = [32, 16]", [1, 28, 28], true),
            (
                "kind = \"vit\"\npatch = 7\ndim = 16\ndepth = 2\nheads = 2\nmlp_dim = 32",
                [1, 28, 28],
                true,
            ),
            ("kind = \"resnet18\"\nnf = 4", [3, 8, 8], false),
        ];
        for (source, [c, h, w], independent) in configs {
            let config: ModelConfig = toml::from_str(source).unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let model = build(&config, &vs.root(), [c, h, w], 10);
            assert_eq!(model.samples_independent(), independent, "{source}");
            let shape = [10, c as i64, h as i64, w as i64];
            let a = Tensor::linspace(
                -2.0,
                2.0,
                shape.iter().product(),
                (Kind::Float, Device::Cpu),
            )
            .view(shape);
            let b = a.flip([0]).sin() * 3.0;
            let shared = model.forward_t(&Tensor::cat(&[&a, &b], 0), true);
            let separate = Tensor::cat(&[model.forward_t(&a, true), model.forward_t(&b, true)], 0);
            assert_eq!(
                shared.allclose(&separate, 1e-5, 1e-5, false),
                independent,
                "{source}"
            );
        }
    }

    #[test]
    fn batch_norm_follows_the_train_flag() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(
            &ModelConfig::Resnet18 {
                nf: 4,
                checkpoint: None,
                init: retain_config::InitScheme::Reference,
            },
            &vs.root(),
            [3, 8, 8],
            10,
        );
        let running_mean = || vs.variables()["bn1.running_mean"].copy();
        let xs = Tensor::randn([6, 3, 8, 8], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let before = running_mean();
        let eval_a = model.forward_t(&xs, false);
        // Evaluation mode neither updates running statistics nor depends on the batch.
        assert!(running_mean().equal(&before));
        let single = model.forward_t(&xs.narrow(0, 0, 1), false);
        assert!(single.allclose(&eval_a.narrow(0, 0, 1), 1e-5, 1e-5, false));
        // Training mode normalises with batch statistics and updates the running mean.
        let train = model.forward_t(&xs, true);
        assert!(!running_mean().equal(&before));
        assert!(!train.allclose(&eval_a, 1e-3, 1e-3, false));
        let train_single = model.forward_t(&xs.narrow(0, 0, 2), true);
        assert!(!train_single.allclose(&train.narrow(0, 0, 2), 1e-3, 1e-3, false));
    }
}
