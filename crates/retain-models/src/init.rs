//! Initial weights drawn as the reference implementations draw them, from the experiment seed.
//!
//! tch's layer constructors initialise from libtorch's global generator with their own
//! defaults (Kaiming-uniform with the ReLU gain for linear and convolution weights,
//! `U(±√6/√fan_in)`, 2.45× wider than PyTorch's `nn.Linear`/`nn.Conv2d` default
//! `U(±1/√fan_in)`), so the same seed gave other weights than PyTorch, and other weights on
//! CPU and CUDA. [`initialize`] overwrites every variable of a freshly built backbone:
//!
//! * **what** is drawn follows [`InitScheme`] and the backbone's [`Reference`] (see
//!   [`rule`]): PyTorch's module defaults for the MLP and the small-image ResNet-18 (the DER
//!   paper's Mammoth code and GEM's code keep them), timm's `VisionTransformer.init_weights`
//!   for the transformer;
//! * **how**: on the host, by a [`SplitMix64`] seeded from the experiment seed and the
//!   variable's name (`init/<name>`), then copied to the variable's device. So one seed gives
//!   bit-identical initial weights on every device, a variable's values do not depend on
//!   which other variables exist, and nothing reads libtorch's global generator.
//!
//! [`fill`] is the same draw for any tensor: methods initialise their own variables (LoRA's
//! `A`, prompts, adapters) through it, under a purpose of their own.

use retain_config::InitScheme;
use retain_seed::{SplitMix64, derive};
use tch::{Kind, Tensor, nn};

/// Whose initialisation a backbone reproduces under [`InitScheme::Reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// PyTorch's `torch.nn` module defaults (`nn.Linear`, `nn.Conv2d`, batch and layer norm).
    TorchModules,
    /// timm's `VisionTransformer.init_weights` (mode `""`): `trunc_normal_(std=.02)` for
    /// linear weights and the position embedding, zero biases, `normal_(std=1e-6)` for the
    /// class token; the patch embedding's convolution keeps PyTorch's default.
    Timm,
}

/// One variable's initial distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Draw {
    /// Every element `value`.
    Constant(f64),
    /// `U(−bound, bound)`.
    Uniform { bound: f64 },
    /// `N(0, std²)`.
    Normal { std: f64 },
    /// `N(0, std²)` redrawn until within `[lo, hi]` (absolute bounds, as PyTorch's and timm's
    /// `trunc_normal_`).
    TruncatedNormal { std: f64, lo: f64, hi: f64 },
}

impl Draw {
    /// `count` values from a generator seeded with `seed`.
    fn values(self, count: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..count)
            .map(|_| match self {
                Draw::Constant(v) => v,
                Draw::Uniform { bound } => rng.uniform(-bound, bound),
                Draw::Normal { std } => std * rng.standard_normal(),
                Draw::TruncatedNormal { std, lo, hi } => rng.truncated_normal(0.0, std, lo, hi),
            } as f32)
            .collect()
    }
}

/// A CPU `float32` tensor of `shape` drawn from `draw` with a generator seeded by `seed`.
pub fn sample(draw: Draw, shape: &[i64], seed: u64) -> Tensor {
    let count: i64 = shape.iter().product();
    Tensor::from_slice(&draw.values(count.max(0) as usize, seed)).view(shape)
}

/// Overwrites `variable` (any device and floating dtype) in place with a draw from `draw`
/// seeded by `seed`, made on the host: the same `seed` gives the same values on every
/// device.
pub fn fill(variable: &Tensor, draw: Draw, seed: u64) {
    let values = sample(draw, &variable.size(), seed)
        .to_kind(variable.kind())
        .to_device(variable.device());
    let _no_grad = tch::no_grad_guard();
    variable.shallow_clone().copy_(&values);
}

/// The seed of variable `name` under the experiment seed `seed`.
pub fn variable_seed(seed: u64, name: &str) -> u64 {
    derive(seed, &format!("init/{name}"))
}

/// The initial distribution of the backbone variable `name` of `shape`, whose layer's weight
/// has `weight_shape` (for a bias: its sibling `<layer>.weight`), or `None` for a variable
/// that keeps the value its constructor gave it (batch-norm running statistics: 0 and 1).
///
/// | variable | `reference`, [`Reference::TorchModules`] / `pytorch` | `reference`, [`Reference::Timm`] | `kaiming` |
/// |---|---|---|---|
/// | linear weight `[out, in]` | `U(±1/√in)` | trunc. normal, std 0.02, ±2 | `U(±√6/√in)` |
/// | linear bias | `U(±1/√in)` | 0 | `U(±1/√in)` |
/// | convolution weight `[out, in, k, k]` | `U(±1/√(in·k²))` | as PyTorch | `U(±√6/√(in·k²))` |
/// | convolution bias | `U(±1/√(in·k²))` | as PyTorch | `U(±1/√(in·k²))` |
/// | norm weight / bias (rank 1) | 1 / 0 | 1 / 0 | 1 / 0 |
/// | `cls_token` | normal, std 10⁻⁶ | normal, std 10⁻⁶ | normal, std 10⁻⁶ |
/// | `pos_embed` | trunc. normal, std 0.02, ±2 | the same | the same |
///
/// PyTorch's `kaiming_uniform_(a = √5)` of `nn.Linear`/`nn.Conv2d` is `U(±1/√fan_in)`: gain
/// `√(2/(1+5))` times `√(3/fan_in)`.
///
/// # Panics
/// For a name no backbone of this crate uses (a new layer kind must add its rule here).
pub fn rule(
    name: &str,
    shape: &[i64],
    weight_shape: Option<&[i64]>,
    reference: Reference,
    scheme: InitScheme,
) -> Option<Draw> {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let timm_tokens = |std: f64, truncated: bool| {
        Some(if truncated {
            Draw::TruncatedNormal {
                std,
                lo: -2.0,
                hi: 2.0,
            }
        } else {
            Draw::Normal { std }
        })
    };
    match leaf {
        "running_mean" | "running_var" | "num_batches_tracked" => return None,
        "cls_token" => return timm_tokens(1e-6, false),
        "pos_embed" => return timm_tokens(0.02, true),
        _ => {}
    }
    let weight = match leaf {
        "weight" => shape,
        "bias" => weight_shape.unwrap_or_else(|| panic!("bias `{name}` has no weight beside it")),
        _ => panic!("no initialisation rule for the variable `{name}` {shape:?}"),
    };
    if weight.len() == 1 {
        // Batch or layer norm: the identity affine map.
        return Some(Draw::Constant(if leaf == "weight" { 1.0 } else { 0.0 }));
    }
    let fan_in: i64 = weight[1..].iter().product();
    let torch_bound = 1.0 / (fan_in as f64).sqrt();
    let linear = weight.len() == 2;
    let is_weight = leaf == "weight";
    Some(match scheme {
        InitScheme::Reference if reference == Reference::Timm && linear => {
            if is_weight {
                Draw::TruncatedNormal {
                    std: 0.02,
                    lo: -2.0,
                    hi: 2.0,
                }
            } else {
                Draw::Constant(0.0)
            }
        }
        InitScheme::Kaiming if is_weight => Draw::Uniform {
            bound: 6f64.sqrt() * torch_bound,
        },
        _ => Draw::Uniform { bound: torch_bound },
    })
}

/// Overwrites every variable of `vars` (a freshly built backbone, on any device) with its
/// [`rule`]'s draw, each seeded by [`variable_seed`].
pub fn initialize(vars: &nn::VarStore, reference: Reference, scheme: InitScheme, seed: u64) {
    let variables = vars.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in names {
        let variable = &variables[name];
        if !matches!(
            variable.kind(),
            Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
        ) {
            continue;
        }
        let weight_shape = name
            .strip_suffix("bias")
            .and_then(|layer| variables.get(&format!("{layer}weight")))
            .map(Tensor::size);
        if let Some(draw) = rule(
            name,
            &variable.size(),
            weight_shape.as_deref(),
            reference,
            scheme,
        ) {
            fill(variable, draw, variable_seed(seed, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retain_config::ModelConfig;
    use std::collections::BTreeMap;
    use tch::Device;

    /// `[model]` tables of the three backbones `fixtures/init_reference.py` builds in PyTorch.
    fn reference_models() -> Vec<(&'static str, ModelConfig, [usize; 3])> {
        let parse = |toml: &str| -> ModelConfig { toml::from_str(toml).unwrap() };
        vec![
            (
                "mlp",
                parse("kind = \"mlp\"\nhidden = [100, 100]"),
                [1, 28, 28],
            ),
            (
                "resnet18",
                parse("kind = \"resnet18\"\nnf = 8"),
                [3, 32, 32],
            ),
            ("vit", parse("kind = \"vit\""), [1, 28, 28]),
        ]
    }

    /// Every variable of `config`'s backbone, initialised under `seed` on `device`, on the CPU.
    fn initialised(
        config: &ModelConfig,
        image: [usize; 3],
        seed: u64,
        device: Device,
    ) -> BTreeMap<String, Tensor> {
        let vars = nn::VarStore::new(device);
        let model = crate::build(config, &vars.root(), image, 10);
        initialize(&vars, model.init_reference(), config.init(), seed);
        vars.variables()
            .into_iter()
            .map(|(name, t)| (name, t.to_device(Device::Cpu)))
            .collect()
    }

    /// Pooled over the fixture's seeds, each variable's moments and range must match
    /// PyTorch's (timm's for the transformer): means and standard deviations within six
    /// standard errors of the pooled sample, ranges within 5 % for uniform draws (which reach
    /// their bound) and 30 % for normal ones, constants exactly.
    #[test]
    fn initial_weights_match_the_pytorch_references_moments_and_bounds() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/init_reference.json")).unwrap();
        let seeds = fixture["seeds"].as_u64().unwrap();
        for (model, config, image) in reference_models() {
            let reference = fixture["models"][model].as_object().unwrap();
            let mut pooled: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for seed in 0..seeds {
                for (name, t) in initialised(&config, image, seed, Device::Cpu) {
                    let values =
                        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
                    pooled.entry(name).or_default().extend(values);
                }
            }
            let names: Vec<&String> = pooled.keys().collect();
            let expected: Vec<&String> = reference.keys().collect();
            assert_eq!(names, expected, "{model}: the same state_dict entries");
            for (name, values) in &pooled {
                let r = &reference[name.as_str()];
                let get = |k: &str| r[k].as_f64().unwrap();
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                let (lo, hi) = values
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let what = format!(
                    "{model} `{name}`: retain mean {mean} std {std} range [{lo}, {hi}] vs PyTorch {r}"
                );
                if get("std") == 0.0 {
                    assert_eq!((std, mean), (0.0, get("mean")), "{what}");
                    continue;
                }
                let se = get("std") / n.sqrt();
                assert!(
                    (mean - get("mean")).abs() <= 6.0 * se * 2f64.sqrt(),
                    "{what}"
                );
                assert!((std - get("std")).abs() <= 6.0 * se * 2f64.sqrt(), "{what}");
                // A uniform draw's range is √3 standard deviations either side.
                let uniform = (get("max") / get("std") - 3f64.sqrt()).abs() < 0.05;
                let slack = if uniform { 0.05 } else { 0.3 };
                for (ours, theirs) in [(hi, get("max")), (lo, get("min"))] {
                    assert!((ours - theirs).abs() <= slack * theirs.abs(), "{what}");
                }
            }
        }
    }

    /// One seed gives bit-identical initial weights on every run and on every device: the
    /// CPU twice, and CUDA where it exists (the CUDA half runs on a GPU machine; it was run
    /// there, see BENCHMARKS.md). Also: torch's global generator does not matter.
    #[test]
    fn one_seed_gives_identical_weights_on_cpu_and_cuda() {
        for (model, config, image) in reference_models() {
            tch::manual_seed(1);
            let cpu = initialised(&config, image, 3, Device::Cpu);
            tch::manual_seed(2);
            let mut others = vec![("CPU", initialised(&config, image, 3, Device::Cpu))];
            if tch::Cuda::is_available() {
                others.push(("CUDA", initialised(&config, image, 3, Device::Cuda(0))));
            }
            for (device, other) in others {
                for (name, value) in &cpu {
                    assert!(
                        value.equal(&other[name]),
                        "{model} `{name}` differs on {device}"
                    );
                }
            }
            let another_seed = initialised(&config, image, 4, Device::Cpu);
            let weight = cpu
                .keys()
                .find(|n| n.ends_with("weight") && cpu[*n].dim() > 1)
                .unwrap();
            assert!(
                !cpu[weight].equal(&another_seed[weight]),
                "{model}: seeds differ"
            );
        }
    }

    #[test]
    fn pytorch_linear_bounds_and_kaiming_width() {
        let torch = rule(
            "hidden.0.weight",
            &[100, 784],
            None,
            Reference::TorchModules,
            InitScheme::Reference,
        );
        assert_eq!(torch, Some(Draw::Uniform { bound: 1.0 / 28.0 }));
        let bias = rule(
            "hidden.0.bias",
            &[100],
            Some(&[100, 784]),
            Reference::TorchModules,
            InitScheme::Pytorch,
        );
        assert_eq!(bias, Some(Draw::Uniform { bound: 1.0 / 28.0 }));
        let Some(Draw::Uniform { bound }) = rule(
            "hidden.0.weight",
            &[100, 784],
            None,
            Reference::TorchModules,
            InitScheme::Kaiming,
        ) else {
            panic!("kaiming is uniform")
        };
        assert!((bound * 28.0 - 6f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn convolution_fan_in_counts_the_kernel() {
        let draw = rule(
            "conv1.weight",
            &[64, 3, 3, 3],
            None,
            Reference::TorchModules,
            InitScheme::Reference,
        );
        assert_eq!(
            draw,
            Some(Draw::Uniform {
                bound: 1.0 / 27f64.sqrt()
            })
        );
        assert_eq!(
            rule(
                "bn1.weight",
                &[64],
                None,
                Reference::TorchModules,
                InitScheme::Kaiming
            ),
            Some(Draw::Constant(1.0))
        );
        assert_eq!(
            rule(
                "bn1.running_var",
                &[64],
                None,
                Reference::TorchModules,
                InitScheme::Reference
            ),
            None
        );
    }

    #[test]
    fn same_seed_same_values_and_names_are_independent() {
        let a = sample(Draw::Uniform { bound: 1.0 }, &[3, 4], variable_seed(0, "x"));
        let b = sample(Draw::Uniform { bound: 1.0 }, &[3, 4], variable_seed(0, "x"));
        let c = sample(Draw::Uniform { bound: 1.0 }, &[3, 4], variable_seed(0, "y"));
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
    }
}
