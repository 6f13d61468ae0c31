use super::*;
use retain_config::OptimizerConfig;
use retain_models::Mlp;
use tch::Device;
use tch::nn;
use tch::nn::ModuleT as _;

/// A model, its store and an extra variable created later, seeded.
struct Net {
    vars: VarStore,
    mlp: Mlp,
    extra: Option<Tensor>,
}

/// Tests run in parallel threads that share torch's generator, so the values come from
/// a seeded network built under a lock and copied.
fn net(seed: i64) -> Net {
    static LOCK: Mutex<()> = Mutex::new(());
    let _lock = LOCK.lock().unwrap();
    tch::manual_seed(seed);
    let vars = VarStore::new(Device::Cpu);
    let mlp = Mlp::new(&vars.root(), 5, &[7, 6], 3);
    Net {
        vars,
        mlp,
        extra: None,
    }
}

fn inputs(step: i64) -> (Tensor, Tensor) {
    let x = (Tensor::arange(40, (Kind::Float, Device::Cpu)) * (0.7 + 0.1 * step as f64))
        .sin()
        .view([8, 5]);
    let y = (Tensor::arange(8, (Kind::Int64, Device::Cpu)) * (step + 1)).remainder(3);
    (x, y)
}

fn loss(net: &Net, step: i64) -> Tensor {
    let (x, y) = inputs(step);
    let logits = net.mlp.forward_t(&x, true);
    let logits = match &net.extra {
        Some(extra) => logits * extra,
        None => logits,
    };
    logits.cross_entropy_for_logits(&y)
}

enum Opt {
    Tch(nn::Optimizer),
    Flat(FlatOptimizer),
}

impl Opt {
    fn step(&mut self, net: &Net, step: i64) {
        let l = loss(net, step);
        match self {
            Opt::Tch(o) => o.zero_grad(),
            Opt::Flat(o) => o.zero_grad(),
        }
        l.backward();
        match self {
            Opt::Tch(o) => o.step(),
            Opt::Flat(o) => o.step(),
        }
    }
}

/// The rules compared, as the trainer's configuration spells them: both optimisers are
/// built by the functions the trainer uses.
fn rules() -> [OptimizerConfig; 4] {
    [
        OptimizerConfig::Sgd {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.01,
        },
        OptimizerConfig::Sgd {
            lr: 0.05,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        OptimizerConfig::Adam {
            lr: 0.01,
            weight_decay: 0.0,
        },
        OptimizerConfig::Adam {
            lr: 0.01,
            weight_decay: 0.02,
        },
    ]
}

fn assert_close(a: &VarStore, b: &VarStore, what: &str) {
    let (a, b) = (a.variables(), b.variables());
    assert_eq!(a.len(), b.len());
    for (name, x) in &a {
        let diff = (x - &b[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{what}: {name} differs by {diff}");
    }
}

/// Trains two copies of the MLP for 20 steps, one with tch's optimiser and one flat;
/// `event(step, net)` may create or freeze variables between steps.
fn compare(rule: OptimizerConfig, event: impl Fn(i64, &mut Net)) {
    let mut reference = net(3);
    let mut flat = net(3);
    let mut tch_opt = Opt::Tch(crate::build_per_tensor_optimizer(&rule, &reference.vars).unwrap());
    let mut flat_opt = Opt::Flat(crate::build_optimizer(&rule, &flat.vars).unwrap());
    for step in 0..20 {
        event(step, &mut reference);
        event(step, &mut flat);
        tch_opt.step(&reference, step);
        flat_opt.step(&flat, step);
        assert_close(
            &reference.vars,
            &flat.vars,
            &format!("{rule:?}, step {step}"),
        );
    }
}

#[test]
fn flat_sgd_and_adam_match_libtorch() {
    for rule in rules() {
        compare(rule, |_, _| {});
    }
}

#[test]
fn flat_optimizer_matches_libtorch_with_a_variable_created_later() {
    for rule in rules() {
        compare(rule, |step, net| {
            if step == 5 {
                let extra = net.vars.root().var("extra", &[3], nn::Init::Const(1.5));
                net.extra = Some(extra);
            }
        });
    }
}

#[test]
fn flat_optimizer_matches_libtorch_when_a_group_is_frozen_and_unfrozen() {
    for rule in rules() {
        compare(rule, |step, net| {
            let first = |name: &str| name.starts_with("hidden.0.");
            let variables = crate::trainable_variables(&net.vars);
            match step {
                4 | 14 => crate::set_trainable(&variables, |name| !first(name)),
                9 => crate::set_trainable(&variables, |_| true),
                // Everything but the first layer trains from step 16 on: a second
                // layout with different step counts per variable.
                16 => crate::set_trainable(&variables, first),
                _ => {}
            }
        });
    }
}

#[test]
fn backward_accumulates_into_the_flat_gradient_buffer() {
    let net = net(1);
    let mut opt = FlatOptimizer::new(Rule::adam(0.01, 0.0), &net.vars);
    opt.zero_grad();
    assert_eq!(opt.groups.len(), 1);
    let buffer = &opt.groups[0].grads;
    let start = buffer.data_ptr() as usize;
    let end = start + buffer.numel() * 4;
    loss(&net, 0).backward();
    loss(&net, 1).backward();
    let params: Vec<Tensor> = net.vars.trainable_variables();
    let total: usize = params.iter().map(Tensor::numel).sum();
    assert_eq!(buffer.numel(), total);
    let mut expected = Vec::new();
    for p in &params {
        let grad = p.grad();
        assert!((start..end).contains(&(grad.data_ptr() as usize)));
        expected.push(grad.reshape([-1]));
    }
    // The two backwards summed, computed separately on a fresh copy.
    let fresh = net_with_values(&net);
    let sum: Vec<Tensor> = {
        let g0 = crate::gradients(&loss(&fresh, 0), &fresh.vars.trainable_variables());
        let g1 = crate::gradients(&loss(&fresh, 1), &fresh.vars.trainable_variables());
        g0.unwrap()
            .iter()
            .zip(g1.unwrap())
            .map(|(a, b)| (a + b).reshape([-1]))
            .collect()
    };
    let diff = (Tensor::cat(&expected, 0) - Tensor::cat(&sum, 0))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
    assert!(buffer.equal(&Tensor::cat(&expected, 0)));
    // zero_grad: every gradient is zero, still in the buffer.
    opt.zero_grad();
    for p in &params {
        assert_eq!(p.grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!((start..end).contains(&(p.grad().data_ptr() as usize)));
    }
    // The parameters are views of one buffer, and the layers see them.
    let values = &opt.groups[0].params;
    let (pstart, pend) = (
        values.data_ptr() as usize,
        values.data_ptr() as usize + values.numel() * 4,
    );
    for p in &params {
        assert!((pstart..pend).contains(&(p.data_ptr() as usize)));
        assert!(p.requires_grad());
    }
    let before = net.mlp.forward_t(&inputs(0).0, false);
    let _ = tch::no_grad(|| values.shallow_clone().g_add_scalar_(1.0));
    assert!(!net.mlp.forward_t(&inputs(0).0, false).equal(&before));
}

/// A convolution weight laid out channels-last keeps that layout through the flat
/// optimiser's views, and training moves it exactly as the contiguous weight under
/// libtorch's own optimiser.
#[test]
fn channels_last_weights_keep_their_layout_and_train_as_contiguous_ones() {
    let build = || {
        let vars = VarStore::new(Device::Cpu);
        let root = vars.root();
        let conv = nn::conv2d(&root / "conv", 3, 4, 3, Default::default());
        let head = nn::linear(&root / "head", 4, 2, Default::default());
        (vars, conv, head)
    };
    let (reference_vars, reference_conv, reference_head) = build();
    let (mut vars, conv, head) = build();
    vars.copy(&reference_vars).unwrap();
    {
        let _no_grad = tch::no_grad_guard();
        let mut weight = conv.ws.shallow_clone();
        weight.set_data(&channels_last(&conv.ws));
    }
    assert!(is_channels_last(&conv.ws));
    let x = (Tensor::arange(2 * 3 * 6 * 6, (Kind::Float, Device::Cpu)) * 0.37)
        .sin()
        .view([2, 3, 6, 6]);
    let y = Tensor::from_slice(&[0i64, 1]);
    let forward = |conv: &nn::Conv2D, head: &nn::Linear| {
        x.apply(conv)
            .relu()
            .mean_dim(&[2i64, 3][..], false, Kind::Float)
            .apply(head)
            .cross_entropy_for_logits(&y)
    };
    let rule = OptimizerConfig::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    let mut reference_opt = crate::build_per_tensor_optimizer(&rule, &reference_vars).unwrap();
    let mut flat = crate::build_optimizer(&rule, &vars).unwrap();
    for step in 0..10 {
        reference_opt.zero_grad();
        forward(&reference_conv, &reference_head).backward();
        reference_opt.step();
        flat.zero_grad();
        forward(&conv, &head).backward();
        flat.step();
        assert!(
            is_channels_last(&conv.ws),
            "step {step}: the weight lost its layout ({:?})",
            conv.ws.stride()
        );
        assert!(
            is_channels_last(&conv.ws.grad()),
            "step {step}: gradient layout"
        );
        assert_close(
            &reference_vars,
            &vars,
            &format!("channels-last, step {step}"),
        );
    }
}

fn net_with_values(source: &Net) -> Net {
    let mut copy = net(1);
    copy.vars.copy(&source.vars).unwrap();
    copy
}

/// An optimiser rebuilt from another's [`FlatOptimizer::state`] (on a copy of its network)
/// takes exactly the same next steps, with a variable frozen (its state put aside) included.
#[test]
fn state_restores_into_a_fresh_optimizer_that_steps_identically() {
    for rule in [
        Rule::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-3,
        },
        Rule::adam(0.01, 1e-3),
    ] {
        let original = net(7);
        let mut a = FlatOptimizer::new(rule, &original.vars);
        let step = |o: &mut FlatOptimizer, n: &Net, s: i64| {
            let l = loss(n, s);
            o.zero_grad();
            l.backward();
            o.step();
        };
        for s in 0..3 {
            step(&mut a, &original, s);
        }
        // One variable leaves the trainable set: its state is put aside, and must survive.
        let frozen = original.vars.trainable_variables()[0].shallow_clone();
        let _ = frozen.shallow_clone().set_requires_grad(false);
        step(&mut a, &original, 3);

        let mut copy = net(8);
        copy.vars.copy(&original.vars).unwrap();
        let _ = copy.vars.trainable_variables()[0].set_requires_grad(false);
        let mut b = FlatOptimizer::new(rule, &copy.vars);
        b.load_state(a.state()).unwrap();
        for s in 4..7 {
            step(&mut a, &original, s);
            step(&mut b, &copy, s);
        }
        // Unfrozen again: it picks up its own moments in both.
        let _ = frozen.shallow_clone().set_requires_grad(true);
        let _ = copy.vars.trainable_variables()[0].set_requires_grad(true);
        for s in 7..9 {
            step(&mut a, &original, s);
            step(&mut b, &copy, s);
        }
        let (va, vb) = (original.vars.variables(), copy.vars.variables());
        for (name, t) in &va {
            assert!(t.equal(&vb[name]), "{rule:?}: {name} differs");
        }
    }
}

#[test]
fn malformed_optimizer_state_is_refused_naming_the_tensor() {
    let n = net(1);
    let mut o = FlatOptimizer::new(Rule::adam(0.01, 0.0), &n.vars);
    let err = o
        .load_state(vec![(
            "var0.moment0".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )])
        .unwrap_err()
        .to_string();
    assert!(err.contains("var0.steps is missing"), "{err}");
    let err = o
        .load_state(vec![(
            "var0.moment5".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`var0.moment5`"), "{err}");
}
