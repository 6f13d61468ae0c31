use super::*;
use retain_models::{VisionTransformer, VitShape};
use retain_train::testkit::{MethodFixture, seeded_network, seeded_normal, snapshot, task_context};

fn method(toml: &str) -> Result<Box<dyn Method>, TrainError> {
    from_params(&toml::from_str(toml).unwrap())
}

fn inflora(toml: &str) -> InfLora {
    InfLora::new(DESCRIPTOR.parse(&toml::from_str(toml).unwrap()).unwrap()).unwrap()
}

/// A vision transformer on the fixture's 2×2 images: 4 patches of one pixel, width 8.
fn small_vit() -> Network {
    seeded_network(0, |path| {
        let shape = VitShape {
            image: [1, 2, 2],
            patch: 1,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_dim: 16,
        };
        Box::new(VisionTransformer::new(path, shape, 10))
    })
}

fn double(values: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values).view(shape)
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn the_down_projection_is_orthogonal_to_the_old_subspace() {
    // Old subspace span{e1}; the new inputs have most of their energy along e1 + e2.
    let e1 = double(&[1.0, 0.0, 0.0, 0.0], &[4, 1]);
    let memory = Memory {
        basis: e1.shallow_clone(),
        retain: false,
    };
    let x =
        seeded_normal(&[50, 4], 3).to_kind(Kind::Double) + double(&[3.0, 3.0, 0.0, 0.0], &[1, 4]);
    let cov = x.tr().matmul(&x) / 50.0;
    let a = subspace::down_projection(&cov, Some(&memory), 2);
    assert_eq!(a.size(), [2, 4]);
    assert!(max_abs(&a.matmul(&e1)) < 1e-12, "{a}");
    // Orthonormal rows scaled by 1/√3.
    let gram = a.matmul(&a.tr()) * 3.0;
    assert!(max_abs(&(gram - Tensor::eye(2, (Kind::Double, Device::Cpu)))) < 1e-10);
    // The same with the memory in its complement form (basis of span{e2, e3, e4}).
    let complement = Memory {
        basis: Tensor::eye(4, (Kind::Double, Device::Cpu)).narrow(1, 1, 3),
        retain: true,
    };
    let b = subspace::down_projection(&cov, Some(&complement), 2);
    assert!(max_abs(&b.matmul(&e1)) < 1e-12, "{b}");
    // The new task's main direction outside e1 is e2: the first row is ±e2/√3.
    assert!(
        (b.double_value(&[0, 1]).abs() - 1.0 / 3f64.sqrt()).abs() < 1e-2,
        "{b}"
    );
}

#[test]
fn rows_beyond_the_free_rank_are_zero() {
    // Inputs only along e1 and e2, e1 old: one free direction, rank 3.
    let cov = double(&[4.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0], &[3, 3]);
    let memory = Memory {
        basis: double(&[1.0, 0.0, 0.0], &[3, 1]),
        retain: false,
    };
    let a = subspace::down_projection(&cov, Some(&memory), 3);
    assert!(max_abs(&a.narrow(0, 1, 2)) == 0.0, "{a}");
    assert!(max_abs(&a.narrow(1, 0, 1)) < 1e-12, "{a}");
}

#[test]
fn the_memory_grows_by_the_energy_threshold() {
    // σ = (3, 1, 0, 0): σ² shares 0.9 and 0.1. At 0.95 one direction is kept.
    let c0 = Tensor::diag_embed(&double(&[3.0, 1.0, 0.0, 0.0], &[4]), 0, -2, -1);
    let mut memory = subspace::first(&c0, 0.95);
    assert!(!memory.retain);
    assert_eq!(memory.basis.size(), [4, 1]);
    assert!((memory.basis.double_value(&[0, 0]).abs() - 1.0).abs() < 1e-12);
    // At 0.99 both (cumulative 0.9 < 0.99, 1.0 is not): r = 1 still, the reference's count.
    assert_eq!(subspace::first(&c0, 0.99).basis.size(), [4, 1]);
    // A second task along e3 (σ² share 0.8 outside the old subspace, 0.2 inside along e1):
    // the old subspace holds 0.2 < 0.95, so e3 joins.
    let c1 = Tensor::diag_embed(&double(&[1.0, 0.0, 2.0, 0.0], &[4]), 0, -2, -1);
    subspace::update(&mut memory, &c1, 0.95);
    assert_eq!(memory.basis.size(), [4, 2]);
    assert!((memory.basis.double_value(&[2, 1]).abs() - 1.0).abs() < 1e-12);
    assert!(!memory.retain);
    // Inputs already inside the old subspace add nothing.
    subspace::update(&mut memory, &c0.narrow(0, 0, 4), 0.95);
    let before = memory.basis.size();
    let c2 = Tensor::diag_embed(&double(&[2.0, 0.0, 1.0, 0.0], &[4]), 0, -2, -1);
    subspace::update(&mut memory, &c2, 0.95);
    assert_eq!(memory.basis.size(), before);
    // A third direction makes it more than D/2: stored as its complement, span{e4}.
    let c3 = Tensor::diag_embed(&double(&[0.0, 0.0, 0.0, 1.0], &[4]), 0, -2, -1);
    let mut grown = subspace::first(&c0, 0.95);
    subspace::update(&mut grown, &c1, 0.95);
    let c = Tensor::diag_embed(&double(&[0.0, 1.0, 0.0, 0.0], &[4]), 0, -2, -1);
    subspace::update(&mut grown, &c, 0.95);
    assert!(grown.retain);
    assert_eq!(grown.basis.size(), [4, 1]);
    assert!((grown.basis.double_value(&[3, 0]).abs() - 1.0).abs() < 1e-12);
    assert_eq!(grown.old_dim(), 3);
    // In the complement form, inputs along e4 remove it from the free space.
    subspace::update(&mut grown, &c3, 0.95);
    assert_eq!(grown.basis.size(), [4, 0]);
    assert_eq!(grown.old_dim(), 4);
    // The schedule.
    assert!((subspace::threshold(0.95, 1.0, 0, 10) - 0.95).abs() < 1e-15);
    assert!((subspace::threshold(0.95, 1.0, 5, 10) - 0.975).abs() < 1e-15);
}

#[test]
fn outputs_on_old_inputs_are_unaffected() {
    // W + B A x = W x for x in the old subspace, whatever B.
    let memory = Memory {
        basis: double(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], &[4, 2]),
        retain: false,
    };
    let cov = seeded_normal(&[4, 4], 5).to_kind(Kind::Double);
    let cov = cov.matmul(&cov.tr());
    let a = subspace::down_projection(&cov, Some(&memory), 2);
    let w = seeded_normal(&[6, 4], 6).to_kind(Kind::Double);
    let b = seeded_normal(&[6, 2], 7).to_kind(Kind::Double) * 10.0;
    let old = seeded_normal(&[20, 2], 8)
        .to_kind(Kind::Double)
        .matmul(&memory.basis.tr());
    let before = old.matmul(&w.tr());
    let after = old.matmul(&(&w + b.matmul(&a)).tr());
    assert!(max_abs(&(after - before)) < 1e-10);
    // …and it changes them on new inputs.
    let new = seeded_normal(&[20, 4], 9).to_kind(Kind::Double);
    assert!(max_abs(&(new.matmul(&(&w + b.matmul(&a)).tr()) - new.matmul(&w.tr()))) > 1e-2);
}

#[test]
fn the_replica_reproduces_the_transformer_and_finds_its_heads() {
    let network = small_vit();
    let pieces = Pieces::new(network.model.as_ref(), &network.vars).unwrap();
    let xs = seeded_normal(&[3, 1, 2, 2], 1);
    assert_eq!(probe_heads(&pieces, network.model.as_ref(), &xs), Some(2));
}

/// One InfLoRA task on the small transformer with `b` set by hand: returns the method, the
/// variables before and after, and `(a, b)` of `blocks.0.attn.qkv`.
fn one_task(
    toml: &str,
) -> (
    InfLora,
    Network,
    BTreeMap<String, Tensor>,
    BTreeMap<String, Tensor>,
    Tensor,
    Tensor,
) {
    let fixture = MethodFixture::new();
    let network = small_vit();
    let before = snapshot(&network);
    let mut m = inflora(toml);
    let ctx = task_context(&network, &fixture.stream, 0);
    m.before_task(&ctx).unwrap();
    let layer = &m.layers[0];
    assert_eq!(layer.name, "blocks.0.attn.qkv");
    let a = layer.a.copy();
    let b = seeded_normal(&layer.b.size(), 4);
    // The query rows stay zero under the gradient surgery; set the trained rows only.
    let _ = b.narrow(0, 0, 8).zero_();
    {
        let _no_grad = tch::no_grad_guard();
        layer.b.shallow_clone().copy_(&b);
    }
    m.after_task(&ctx).unwrap();
    let after = snapshot(&network);
    (m, network, before, after, a, b)
}

#[test]
fn the_merged_weight_is_w_plus_b_a_and_nothing_else_moves() {
    let (m, _network, before, after, a, b) = one_task("rank = 3");
    let w0 = &before["blocks.0.attn.qkv.weight"];
    let w1 = &after["blocks.0.attn.qkv.weight"];
    assert!(max_abs(&(w1 - (w0 + b.matmul(&a)))) < 1e-6);
    // The query rows of qkv are untouched.
    assert!(w1.narrow(0, 0, 8).equal(&w0.narrow(0, 0, 8)));
    // Every variable outside the adapted layers is bit-identical (the head: no step ran).
    for (name, value) in &before {
        if name == "blocks.0.attn.qkv.weight" || name == "blocks.1.attn.qkv.weight" {
            continue;
        }
        assert!(value.equal(&after[name]), "{name} moved");
    }
    // The branch variables are zero again and the memory has one entry per layer.
    assert!(max_abs(&after["inflora.blocks.0.attn.qkv.b"]) == 0.0);
    assert_eq!(m.memory().len(), 2);
    // The designed down-projection has orthogonal rows (first task: no old subspace).
    let gram = a.matmul(&a.tr()) * 3.0;
    assert!(max_abs(&(gram - Tensor::eye(3, (Kind::Float, Device::Cpu)))) < 1e-4);
}

#[test]
fn the_second_task_s_branch_is_orthogonal_to_the_first_task_s_memory() {
    let fixture = MethodFixture::new();
    let network = small_vit();
    let mut m = inflora("rank = 2\nlamb = 0.5\nlame = 0.5");
    let ctx = task_context(&network, &fixture.stream, 0);
    m.before_task(&ctx).unwrap();
    m.after_task(&ctx).unwrap();
    let ctx = task_context(&network, &fixture.stream, 1);
    m.before_task(&ctx).unwrap();
    for layer in &m.layers {
        let old = m.memory()[&layer.name].old_projector().to_kind(Kind::Float);
        assert!(
            max_abs(&layer.a.matmul(&old)) < 1e-5,
            "{}: {}",
            layer.name,
            layer.a
        );
    }
}

#[test]
fn the_state_round_trips() {
    let (m, _, _, _, _, _) = one_task("rank = 3");
    let state = m.state();
    let mut fresh = inflora("rank = 3");
    fresh
        .load_state(state.iter().map(|(n, t)| (n.clone(), t.copy())).collect())
        .unwrap();
    assert_eq!(fresh.seen, m.seen);
    assert_eq!(fresh.memory().len(), m.memory().len());
    for (name, memory) in m.memory() {
        let loaded = &fresh.memory()[name];
        assert_eq!(loaded.retain, memory.retain);
        assert!(loaded.basis.equal(&memory.basis), "{name}");
    }
    let names: Vec<String> = fresh.state().into_iter().map(|(n, _)| n).collect();
    let expected: Vec<String> = state.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected);
    let bad = fresh.load_state(vec![("stray".into(), Tensor::from(1i64))]);
    assert!(bad.unwrap_err().to_string().contains("stray"));
}

#[test]
fn the_read_out_masks_classes_not_seen() {
    let fixture = MethodFixture::new();
    let (mut m, network, ..) = one_task("rank = 3");
    let _ = &fixture;
    let xs = seeded_normal(&[4, 1, 2, 2], 2);
    let _no_grad = tch::no_grad_guard();
    let logits = m.eval_logits(&network, &xs).unwrap();
    let seen = fixture.stream.tasks[0].classes.clone();
    for c in 0..10 {
        let finite = logits.select(1, c).isfinite().all().int64_value(&[]) == 1;
        assert_eq!(finite, seen.contains(&c), "class {c}");
    }
}

#[test]
fn bad_hyper_parameters_are_refused_naming_the_key() {
    for (toml, key) in [
        ("rank = 0", "`rank`"),
        ("lamb = 0.0", "`lamb`"),
        ("lamb = 0.9\nlame = 0.8", "`lame`"),
        ("layers = []", "`layers`"),
        ("qkv_parts = [\"x\"]", "`qkv_parts`"),
        ("samples = 0", "`samples`"),
    ] {
        let error = method(toml).err().unwrap().to_string();
        assert!(error.contains(key), "{toml}: {error}");
    }
    let error = method("rnak = 1").err().unwrap().to_string();
    assert!(error.contains("unknown key `rnak`"), "{error}");
}

#[test]
fn a_non_transformer_and_bad_layers_are_refused_in_check_network() {
    let fixture = MethodFixture::new();
    let error = method("")
        .unwrap()
        .check_network(&fixture.network)
        .unwrap_err()
        .to_string();
    assert!(error.contains("model.kind"), "{error}");
    let vit = small_vit();
    method("").unwrap().check_network(&vit).unwrap_err();
    method("rank = 8").unwrap().check_network(&vit).unwrap();
    let error = method("rank = 9")
        .unwrap()
        .check_network(&vit)
        .unwrap_err()
        .to_string();
    assert!(error.contains("method.rank"), "{error}");
    let error = method("rank = 2\nlayers = [\"head\"]")
        .unwrap()
        .check_network(&vit)
        .unwrap_err()
        .to_string();
    assert!(error.contains("method.layers"), "{error}");
    method("rank = 2\nlayers = [\"blocks.*\"]")
        .unwrap()
        .check_network(&vit)
        .unwrap();
}

#[test]
fn the_example_parses() {
    method(DESCRIPTOR.example).unwrap();
}
