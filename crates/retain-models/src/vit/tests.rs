use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor, nn};

use super::*;
use crate::checkpoint::{load, read};
use crate::{Bottleneck, LowRank, QuantFormat};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn tiny(vs: &nn::VarStore) -> VisionTransformer {
    let shape = VitShape {
        image: [1, 8, 8],
        patch: 4,
        dim: 12,
        depth: 2,
        heads: 3,
        mlp_dim: 20,
    };
    VisionTransformer::new(&vs.root(), shape, 5)
}

fn worst(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn names_shapes_and_outputs_for_28_and_32_pixel_images() {
    let vs = nn::VarStore::new(Device::Cpu);
    let shape = VitShape {
        image: [1, 28, 28],
        patch: 4,
        dim: 64,
        depth: 4,
        heads: 4,
        mlp_dim: 128,
    };
    let model = VisionTransformer::new(&vs.root(), shape, 10);
    let variables = vs.variables();
    let size = |n: &str| variables[n].size();
    assert_eq!(size("patch_embed.proj.weight"), vec![64, 1, 4, 4]);
    assert_eq!(size("cls_token"), vec![1, 1, 64]);
    assert_eq!(size("pos_embed"), vec![1, 50, 64]);
    assert_eq!(size("blocks.3.attn.qkv.weight"), vec![192, 64]);
    assert_eq!(size("blocks.3.mlp.fc1.weight"), vec![128, 64]);
    assert_eq!(size("head.weight"), vec![10, 64]);
    // 2 + 2 tensors of embedding, 12 per block, 2 of final norm, 2 of head.
    assert_eq!(variables.len(), 4 + 4 * 12 + 2 + 2);
    // Parameter count by hand: embedding, blocks, final norm, head.
    let per_block =
        2 * 64 + (192 * 64 + 192) + (64 * 64 + 64) + 2 * 64 + (128 * 64 + 128) + (64 * 128 + 64);
    let expected = (64 * 16 + 64) + 64 + 50 * 64 + 4 * per_block + 2 * 64 + (10 * 64 + 10);
    let count: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    assert_eq!(count, expected as i64);
    let out = model.forward_t(
        &Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
        true,
    );
    assert_eq!(out.size(), vec![3, 10]);
    assert_eq!(
        model
            .features(
                &Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu)),
                false
            )
            .size(),
        vec![2, 64]
    );
    assert_eq!(model.transformer_shape(), Some((64, 4)));
    assert_eq!(model.adaptable_layers().len(), 4 * 4 + 1);

    let vs = nn::VarStore::new(Device::Cpu);
    let shape = VitShape {
        image: [3, 32, 32],
        ..shape
    };
    let model = VisionTransformer::new(&vs.root(), shape, 100);
    assert_eq!(vs.variables()["pos_embed"].size(), vec![1, 65, 64]);
    let out = model.forward_t(
        &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(out.size(), vec![2, 100]);
}

/// `fixtures/vit_reference.py` wrote a PyTorch ViT's `state_dict` (timm's names) and its
/// outputs: plain, with prompt tokens and with per-block prefixes. The file loads by name
/// and all three agree with PyTorch.
#[test]
fn a_pytorch_vit_loads_and_matches_pytorch_with_prompts_and_prefixes() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tiny(&vs);
    load(&vs, &fixture("vit_reference.safetensors")).unwrap();
    let io: HashMap<String, Tensor> = read(&fixture("vit_reference_io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let inputs = &io["inputs"];
    let plain = model.forward_t(inputs, false);
    assert!(
        worst(&plain, &io["plain"]) <= 1e-5,
        "plain: {}",
        worst(&plain, &io["plain"])
    );

    assert!(model.set_prompt(Some(io["prompt"].shallow_clone())));
    let prompted = model.forward_t(inputs, false);
    assert!(worst(&prompted, &io["prompted"]) <= 1e-5);
    assert!(
        worst(&prompted, &plain) > 1e-3,
        "the prompt changes the outputs"
    );
    assert!(model.set_prompt(None));

    for block in 0..2 {
        let key = io[&format!("prefix{block}.key")].shallow_clone();
        let value = io[&format!("prefix{block}.value")].shallow_clone();
        assert!(model.set_prefix(block, Some((key, value))));
    }
    assert!(!model.set_prefix(2, None), "there is no third block");
    let prefixed = model.forward_t(inputs, false);
    assert!(worst(&prefixed, &io["prefixed"]) <= 1e-5);
    for block in 0..2 {
        assert!(model.set_prefix(block, None));
    }
    assert!(model.forward_t(inputs, false).equal(&plain));
}

#[test]
fn low_rank_updates_merge_into_the_weight_with_the_same_outputs() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tiny(&vs);
    let xs = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let plain = model.forward_t(&xs, false);
    let opts = (Kind::Float, Device::Cpu);
    let fresh = LowRank {
        a: Tensor::randn([2, 12], opts),
        b: Tensor::zeros([36, 2], opts),
        scale: 2.0,
    };
    assert!(model.set_adapter("blocks.1.attn.qkv", Some(fresh)));
    assert!(
        model.forward_t(&xs, false).equal(&plain),
        "B = 0 changes nothing"
    );
    let trained = LowRank {
        a: Tensor::randn([2, 12], opts),
        b: Tensor::randn([36, 2], opts) * 0.3,
        scale: 2.0,
    };
    assert!(model.set_adapter("blocks.1.attn.qkv", Some(trained)));
    let unmerged = model.forward_t(&xs, false);
    assert!(worst(&unmerged, &plain) > 1e-3);
    let layer = model.linear("blocks.1.attn.qkv").unwrap();
    assert!(layer.merge_low_rank());
    assert!(!layer.has_extras(), "merging detaches the update");
    let merged = model.forward_t(&xs, false);
    assert!(
        worst(&merged, &unmerged) <= 1e-5,
        "{}",
        worst(&merged, &unmerged)
    );
    assert!(!layer.merge_low_rank(), "nothing left to merge");
}

#[test]
fn a_fresh_bottleneck_adapter_is_the_identity() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tiny(&vs);
    let xs = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let plain = model.forward_t(&xs, false);
    let opts = (Kind::Float, Device::Cpu);
    let adapter = |up: f64| Bottleneck {
        down_weight: Tensor::randn([3, 12], opts),
        down_bias: Tensor::randn([3], opts),
        up_weight: Tensor::randn([12, 3], opts) * up,
        up_bias: Tensor::zeros([12], opts),
    };
    assert!(model.set_bottleneck("blocks.0.mlp.fc2", Some(adapter(0.0))));
    assert!(model.forward_t(&xs, false).equal(&plain));
    assert!(model.set_bottleneck("blocks.0.mlp.fc2", Some(adapter(0.5))));
    assert!(worst(&model.forward_t(&xs, false), &plain) > 1e-3);
    assert!(model.set_bottleneck("blocks.0.mlp.fc2", None));
    assert!(model.forward_t(&xs, false).equal(&plain));
    assert!(!model.set_bottleneck("blocks.0.attn.nothing", None));
}

#[test]
fn quantised_layers_free_their_floats_and_stay_close() {
    tch::manual_seed(8);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tiny(&vs);
    let xs = Tensor::randn([16, 1, 8, 8], (Kind::Float, Device::Cpu));
    let plain = model.forward_t(&xs, false);
    let original = vs.variables()["blocks.0.mlp.fc1.weight"].copy();
    let names: Vec<String> = model
        .adaptable_layers()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != "head")
        .collect();
    let mut errors = Vec::new();
    for format in [QuantFormat::Int8, QuantFormat::Nf4 { block: 16 }] {
        let mut total = 0;
        for name in &names {
            total += model.quantize(name, Some(format)).unwrap();
        }
        assert_eq!(model.quantized_bytes(), total);
        // The float variable is released; the layer still reports its shape.
        assert_eq!(vs.variables()["blocks.0.mlp.fc1.weight"].numel(), 0);
        assert_eq!(model.linear("blocks.0.mlp.fc1").unwrap().shape(), [20, 12]);
        let out = model.forward_t(&xs, false);
        errors.push(worst(&out, &plain) / plain.abs().max().double_value(&[]));
        for name in &names {
            assert_eq!(model.quantize(name, None), Some(0));
        }
        // Dequantising on the fly computes exactly what the dequantised floats compute.
        let restored_out = model.forward_t(&xs, false);
        assert!(
            worst(&out, &restored_out) <= 1e-5,
            "{}",
            worst(&out, &restored_out)
        );
        // Back to floats: the dequantised matrix, within the quantisation error.
        let restored = vs.variables()["blocks.0.mlp.fc1.weight"].copy();
        assert_eq!(restored.size(), vec![20, 12]);
        assert!(worst(&restored, &original) < 0.2 * original.abs().max().double_value(&[]));
        vs.variables()["blocks.0.mlp.fc1.weight"]
            .shallow_clone()
            .set_data(&original);
    }
    assert_eq!(model.quantized_bytes(), 0);
    // int8 (255 levels per channel) is close and much closer than NF4 (16 levels per block,
    // on a tiny, uniformly initialised model far from the normal weights NF4 is made for;
    // how far depends on the draw, which parallel tests share).
    assert!(
        errors[0] < 0.05 && 4.0 * errors[0] < errors[1],
        "{errors:?}"
    );
    assert_eq!(
        model.quantize("blocks.9.mlp.fc1", Some(QuantFormat::Int8)),
        None
    );
}

/// Prompts and prefixes given per sample (`[B, P, D]`) read each sample out exactly as the
/// same prompt or prefix shared (`[P, D]`) by a batch of that sample alone.
#[test]
fn per_sample_prompts_and_prefixes_equal_each_sample_run_alone_with_its_own() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tiny(&vs);
    let inputs = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    let prompts = Tensor::randn([3, 2, 12], (Kind::Float, Device::Cpu));
    let keys = Tensor::randn([3, 4, 12], (Kind::Float, Device::Cpu));
    let values = Tensor::randn([3, 4, 12], (Kind::Float, Device::Cpu));
    assert!(model.set_prompt(Some(prompts.shallow_clone())));
    assert!(model.set_prefix(1, Some((keys.shallow_clone(), values.shallow_clone()))));
    let together = model.forward_t(&inputs, false);
    for b in 0..3 {
        model.set_prompt(Some(prompts.get(b)));
        model.set_prefix(1, Some((keys.get(b), values.get(b))));
        let alone = model.forward_t(&inputs.narrow(0, b, 1), false);
        assert!(
            worst(&alone, &together.narrow(0, b, 1)) < 1e-5,
            "sample {b}"
        );
    }
    // Different prompts give different outputs: the per-sample ones are used.
    model.set_prompt(Some(prompts.get(0)));
    model.set_prefix(1, Some((keys.get(0), values.get(0))));
    let shared = model.forward_t(&inputs, false);
    assert!(worst(&shared.narrow(0, 1, 2), &together.narrow(0, 1, 2)) > 1e-3);
}

/// timm's own `VisionTransformer` (`fixtures/timm_vit_reference.py`, timm 1.0.22): 3×32×32
/// images, patch 8, width 24, 2 blocks of 3 heads, MLP 96, 7 classes.
fn timm_reference(input: Option<&VitInput>) -> (nn::VarStore, VisionTransformer) {
    let vs = nn::VarStore::new(Device::Cpu);
    let shape = VitShape {
        image: [3, 32, 32],
        patch: 8,
        dim: 24,
        depth: 2,
        heads: 3,
        mlp_dim: 96,
    };
    let model = VisionTransformer::with_input(&vs.root(), shape, 7, input);
    load(&vs, &fixture("timm_vit_reference.safetensors")).unwrap();
    (vs, model)
}

fn timm_io() -> HashMap<String, Tensor> {
    read(&fixture("timm_vit_reference_io.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn timm_state_dicts_load_by_name_and_reproduce_timm_outputs() {
    let io = timm_io();
    let (_vs, model) = timm_reference(None);
    let logits = tch::no_grad(|| model.forward_t(&io["rgb"], false));
    let features = tch::no_grad(|| model.features(&io["rgb"], false));
    let (l, f) = (
        worst(&logits, &io["rgb_logits"]),
        worst(&features, &io["rgb_features"]),
    );
    println!("max |retain − timm|: logits {l:e}, features {f:e}");
    assert!(l <= 1e-5 && f <= 1e-5, "logits {l}, features {f}");
    // The outputs are not trivially small: the tolerance is a real constraint.
    assert!(io["rgb_logits"].abs().max().double_value(&[]) > 0.5);
}

#[test]
fn grey_images_are_resized_repeated_and_renormalised_as_in_pytorch() {
    let io = timm_io();
    let input = VitInput {
        source: [1, 28, 28],
        // The stream's MNIST normalisation, which the preparation undoes.
        given: Some((vec![0.1307], vec![0.3081])),
        normalize: Some((vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])),
    };
    let (_vs, model) = timm_reference(Some(&input));
    let prepared = model.prepare(&io["grey"]);
    assert_eq!(prepared.size(), vec![3, 3, 32, 32]);
    let p = worst(&prepared, &io["grey_prepared"]);
    let logits = tch::no_grad(|| model.forward_t(&io["grey"], false));
    let l = worst(&logits, &io["grey_logits"]);
    println!("max |retain − PyTorch|: prepared {p:e}, logits {l:e}");
    assert!(p <= 1e-5 && l <= 1e-5, "prepared {p}, logits {l}");
    // Without a preparation of its own the model takes the images as they are.
    let (_vs, plain) = timm_reference(Some(&VitInput {
        source: [3, 32, 32],
        given: Some((vec![0.5; 3], vec![0.5; 3])),
        normalize: None,
    }));
    assert!(plain.preparation.is_none());
}

#[test]
fn presets_have_timms_parameter_counts() {
    // As timm reports them with a 1000-class head (`fixtures/timm_vit_reference.py`).
    for (preset, count, dim) in [
        ("vit_tiny_patch16_224", 5_717_416, 192),
        ("vit_small_patch16_224", 22_050_664, 384),
        ("vit_base_patch16_224", 86_567_656, 768),
    ] {
        let table: retain_config::ModelConfig =
            toml::from_str(&format!("kind = \"vit\"\npreset = \"{preset}\"")).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = crate::build_for_stream(
            &table,
            &vs.root(),
            [1, 28, 28],
            Some((&[0.1307], &[0.3081])),
            1000,
        );
        let total: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(total, count, "{preset}");
        let size = |n: &str| vs.variables()[n].size();
        assert_eq!(size("patch_embed.proj.weight"), vec![dim, 3, 16, 16]);
        assert_eq!(size("pos_embed"), vec![1, 197, dim]);
        assert_eq!(model.transformer_shape(), Some((dim, 12)));
        if preset == "vit_tiny_patch16_224" {
            // MNIST-shaped images go in, resized and repeated on the way.
            let out = tch::no_grad(|| {
                model.forward_t(
                    &Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu)),
                    false,
                )
            });
            assert_eq!(out.size(), vec![2, 1000]);
        }
    }
}
