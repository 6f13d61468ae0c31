use super::*;
use retain_config::{DatasetName, Readout, StreamConfig};
use retain_stream::{SplitKind, TaskStream};
use retain_train::Network;
use retain_train::testkit::{seeded_network, synthetic_dataset, task_context};
use tch::Device;

const FEATURES: usize = 3;
const CLASSES: usize = 4;

/// Two tasks of two classes, 4 samples per class: 8 training samples per task.
fn stream() -> TaskStream {
    let config = StreamConfig::split(DatasetName::Mnist, 2, 2, vec![Readout::ClassIl]);
    TaskStream::build(
        &synthetic_dataset(CLASSES, 4, FEATURES),
        &config,
        0,
        Device::Cpu,
    )
    .unwrap()
}

/// A linear model `3 → 4` (parameters `head.bias`, `head.weight`).
fn linear(seed: u64) -> Network {
    seeded_network(seed, |path| {
        Box::new(retain_models::Mlp::new(path, FEATURES, &[], CLASSES))
    })
}

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn ewc(toml: &str) -> Ewc {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Ewc::new("ewc", EWC.parse(&table).unwrap(), Mode::Separate).unwrap()
}

fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-7 + 1e-5 * e.abs(),
            "{what}[{i}]: {a} vs expected {e}"
        );
    }
}

/// Per-sample gradients of −log softmax(W x + b)_y for the linear model, computed by hand:
/// `∂/∂b_k = p_k − [k = y]`, `∂/∂W_kj = (p_k − [k = y]) x_j`. Returns `(g_b, g_W)` per
/// sample, `g_W` row-major.
fn hand_gradients(net: &Network, stream: &TaskStream, task: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    let vars = net.vars.variables();
    let w = host(&vars["head.weight"]);
    let b = host(&vars["head.bias"]);
    let indices = Tensor::from_slice(&stream.tasks[task].train_indices);
    let batch = stream.batch(SplitKind::Train, &indices);
    let x = host(&batch.inputs);
    let labels: Vec<i64> = Vec::try_from(&batch.labels).unwrap();
    labels
        .iter()
        .enumerate()
        .map(|(n, &y)| {
            let xn = &x[n * FEATURES..(n + 1) * FEATURES];
            let z: Vec<f64> = (0..CLASSES)
                .map(|k| {
                    b[k] + (0..FEATURES)
                        .map(|j| w[k * FEATURES + j] * xn[j])
                        .sum::<f64>()
                })
                .collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let norm: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let gb: Vec<f64> = (0..CLASSES)
                .map(|k| (z[k] - max).exp() / norm - if k as i64 == y { 1.0 } else { 0.0 })
                .collect();
            let gw = (0..CLASSES * FEATURES)
                .map(|i| gb[i / FEATURES] * xn[i % FEATURES])
                .collect();
            (gb, gw)
        })
        .collect()
}

/// `Σ_groups (|group| / N) · (mean of the group's gradients)²`, element-wise.
fn hand_fisher(grads: &[(Vec<f64>, Vec<f64>)], group: usize) -> (Vec<f64>, Vec<f64>) {
    let n = grads.len() as f64;
    let mut fb = vec![0.0; CLASSES];
    let mut fw = vec![0.0; CLASSES * FEATURES];
    for chunk in grads.chunks(group) {
        let weight = chunk.len() as f64 / n;
        let len = chunk.len() as f64;
        for (f, k) in fb.iter_mut().zip(0..) {
            let mean: f64 = chunk.iter().map(|g| g.0[k]).sum::<f64>() / len;
            *f += weight * mean * mean;
        }
        for (f, i) in fw.iter_mut().zip(0..) {
            let mean: f64 = chunk.iter().map(|g| g.1[i]).sum::<f64>() / len;
            *f += weight * mean * mean;
        }
    }
    (fb, fw)
}

/// Moves every parameter by a known, element-specific amount.
fn shift(net: &Network) {
    let _no_grad = tch::no_grad_guard();
    for (i, p) in params_of(net).iter().enumerate() {
        let numel = p.numel() as i64;
        let delta = (Tensor::arange(numel, (Kind::Float, Device::Cpu)) * 0.01 + 0.1 * i as f64)
            .view(p.size().as_slice());
        let _ = p.shallow_clone().g_add_(&delta);
    }
}

fn params_of(net: &Network) -> Vec<Tensor> {
    net.parameters().into_iter().map(|(_, t)| t).collect()
}

/// `method`'s Fisher of task 0 twice: through the model's batched squared gradients (the
/// plain linear model computes them), and through the serial loop of one backward pass per
/// group, forced by a zero low-rank adapter on the head (the same function, which the
/// batched pass declines).
fn fisher_both_ways(method: &Ewc, net: &Network, stream: &TaskStream) -> [Vec<Tensor>; 2] {
    let ctx = task_context(net, stream, 0);
    let params = params_of(net);
    let probe = stream.batch(SplitKind::Train, &Tensor::from_slice(&[0i64, 1]));
    let batched = |net: &Network| {
        net.model
            .squared_group_gradients(&probe.inputs, &probe.labels, 1, &params, None)
            .is_some()
    };
    assert!(batched(net));
    let fast = method.estimate_fisher(&ctx, &params).unwrap();
    let adapter = retain_models::LowRank {
        a: Tensor::ones([1, FEATURES as i64], (Kind::Float, Device::Cpu)),
        b: Tensor::zeros([CLASSES as i64, 1], (Kind::Float, Device::Cpu)),
        scale: 1.0,
    };
    assert!(net.model.set_adapter("head", Some(adapter)));
    assert!(!batched(net));
    let serial = method.estimate_fisher(&ctx, &params).unwrap();
    assert!(net.model.set_adapter("head", None));
    [fast, serial]
}

#[test]
fn per_sample_fisher_is_the_mean_squared_per_sample_gradient() {
    let stream = stream();
    let net = linear(3);
    let method = ewc("fisher = \"per_sample\"");
    let grads = hand_gradients(&net, &stream, 0);
    assert_eq!(grads.len(), 8);
    let (fb, fw) = hand_fisher(&grads, 1);
    for (fisher, path) in fisher_both_ways(&method, &net, &stream)
        .iter()
        .zip(["batched", "serial"])
    {
        assert_close(&host(&fisher[0]), &fb, &format!("F(head.bias), {path}"));
        assert_close(&host(&fisher[1]), &fw, &format!("F(head.weight), {path}"));
    }
}

#[test]
fn per_batch_fisher_squares_batch_mean_gradients_weighted_by_batch_size() {
    let stream = stream();
    let net = linear(3);
    let method = ewc("fisher = \"per_batch\"\nfisher_batch_size = 3");
    // Batches of 3, 3 and 2 samples.
    let (fb, fw) = hand_fisher(&hand_gradients(&net, &stream, 0), 3);
    for (fisher, path) in fisher_both_ways(&method, &net, &stream)
        .iter()
        .zip(["batched", "serial"])
    {
        assert_close(&host(&fisher[0]), &fb, &format!("F(head.bias), {path}"));
        assert_close(&host(&fisher[1]), &fw, &format!("F(head.weight), {path}"));
    }
    // Biased low against the per-sample estimate.
    let exact = hand_fisher(&hand_gradients(&net, &stream, 0), 1);
    assert!(fb.iter().sum::<f64>() < exact.0.iter().sum::<f64>());

    let one = ewc("fisher = \"per_batch\"\nfisher_batch_size = 1")
        .estimate_fisher(&task_context(&net, &stream, 0), &params_of(&net))
        .unwrap();
    assert_close(&host(&one[1]), &exact.1, "per_batch at batch size 1");
}

#[test]
fn fisher_samples_limits_the_estimate_to_a_seeded_subset() {
    let stream = stream();
    let net = linear(3);
    let ctx = task_context(&net, &stream, 0);
    let method = ewc("fisher_samples = 3");
    let fisher = method.estimate_fisher(&ctx, &params_of(&net)).unwrap();
    let chosen = ctx.sample_train_indices(3, "ewc/fisher");
    let all = &stream.tasks[0].train_indices;
    let grads: Vec<_> = hand_gradients(&net, &stream, 0)
        .into_iter()
        .zip(all)
        .filter(|(_, i)| chosen.contains(i))
        .map(|(g, _)| g)
        .collect();
    assert_eq!(grads.len(), 3);
    let (fb, _) = hand_fisher(&grads, 1);
    assert_close(&host(&fisher[0]), &fb, "F(head.bias) on 3 samples");
}

#[test]
fn penalty_is_zero_at_the_anchor_and_its_gradient_is_lambda_f_delta() {
    let stream = stream();
    let net = linear(5);
    let mut method = ewc("lambda = 7.5");
    let ctx = task_context(&net, &stream, 0);
    method.before_task(&ctx).unwrap();
    assert!(
        method.penalty(&params_of(&net)).is_none(),
        "no penalty before a task ends"
    );
    method.after_task(&ctx).unwrap();
    let (fb, fw) = hand_fisher(&hand_gradients(&net, &stream, 0), 1);
    let anchors: Vec<Vec<f64>> = params_of(&net).iter().map(host).collect();

    let at_anchor = method.penalty(&params_of(&net)).unwrap();
    assert_eq!(at_anchor.double_value(&[]), 0.0);

    shift(&net);
    let params = params_of(&net);
    let deltas: Vec<Vec<f64>> = params
        .iter()
        .zip(&anchors)
        .map(|(p, a)| host(p).iter().zip(a).map(|(x, y)| x - y).collect())
        .collect();
    let fisher = [fb, fw];
    let expected_penalty: f64 = 7.5 / 2.0
        * fisher
            .iter()
            .zip(&deltas)
            .flat_map(|(f, d)| f.iter().zip(d).map(|(f, d)| f * d * d))
            .sum::<f64>();
    let penalty = method.penalty(&params).unwrap();
    assert_close(&[penalty.double_value(&[])], &[expected_penalty], "penalty");

    let grads = gradients(&penalty, &params).unwrap();
    for ((g, f), d) in grads.iter().zip(&fisher).zip(&deltas) {
        let expected: Vec<f64> = f.iter().zip(d).map(|(f, d)| 7.5 * f * d).collect();
        assert_close(&host(g), &expected, "∂penalty/∂θ");
    }
}

#[test]
fn training_step_adds_lambda_f_delta_to_the_gradients_and_the_penalty_to_the_loss() {
    let stream = stream();
    let net = linear(5);
    let mut method = ewc("lambda = 7.5");
    let ctx = task_context(&net, &stream, 0);
    method.before_task(&ctx).unwrap();
    method.after_task(&ctx).unwrap();
    let (fb, fw) = hand_fisher(&hand_gradients(&net, &stream, 0), 1);
    let anchors: Vec<Vec<f64>> = params_of(&net).iter().map(host).collect();
    shift(&net);
    method.before_task(&task_context(&net, &stream, 1)).unwrap();

    let indices = Tensor::from_slice(&stream.tasks[1].train_indices);
    let key = Tensor::zeros([], (Kind::Int64, Device::Cpu));
    let step = StepContext {
        network: &net,
        stream: &stream,
        task: &stream.tasks[1],
        device: Device::Cpu,
        step: 0,
        epoch: 0,
        key: &key,
        indices: &indices,
        loss: Default::default(),
    };
    let batch = stream.batch(SplitKind::Train, &indices);
    let ce = step.cross_entropy(&batch).double_value(&[]);
    let loss = method.loss(&step, &batch).unwrap();
    loss.backward();
    method.after_backward(&step).unwrap();

    let params = params_of(&net);
    let deltas: Vec<Vec<f64>> = params
        .iter()
        .zip(&anchors)
        .map(|(p, a)| host(p).iter().zip(a).map(|(x, y)| x - y).collect())
        .collect();
    let fisher = [fb, fw];
    let penalty: f64 = 7.5 / 2.0
        * fisher
            .iter()
            .zip(&deltas)
            .flat_map(|(f, d)| f.iter().zip(d).map(|(f, d)| f * d * d))
            .sum::<f64>();
    assert_close(&[loss.double_value(&[])], &[ce + penalty], "loss");

    // Cross-entropy gradient: the mean of the per-sample gradients (by hand, at the moved
    // parameters).
    let per_sample = hand_gradients(&net, &stream, 1);
    let n = per_sample.len() as f64;
    let ce_grad = [
        (0..CLASSES)
            .map(|k| per_sample.iter().map(|g| g.0[k]).sum::<f64>() / n)
            .collect::<Vec<_>>(),
        (0..CLASSES * FEATURES)
            .map(|i| per_sample.iter().map(|g| g.1[i]).sum::<f64>() / n)
            .collect(),
    ];
    for (i, p) in params.iter().enumerate() {
        let expected: Vec<f64> = (0..ce_grad[i].len())
            .map(|j| ce_grad[i][j] + 7.5 * fisher[i][j] * deltas[i][j])
            .collect();
        assert_close(&host(&p.grad()), &expected, "p.grad() after the step");
    }
}

#[test]
fn separate_mode_sums_one_penalty_per_task() {
    let stream = stream();
    let net = linear(5);
    let mut method = ewc("lambda = 2.0");
    for task in 0..2 {
        let ctx = task_context(&net, &stream, task);
        method.before_task(&ctx).unwrap();
        method.after_task(&ctx).unwrap();
    }
    let state = method.state();
    assert_eq!(
        state.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "task0.fisher.head.bias",
            "task0.fisher.head.weight",
            "task0.anchor.head.bias",
            "task0.anchor.head.weight",
            "task1.fisher.head.bias",
            "task1.fisher.head.weight",
            "task1.anchor.head.bias",
            "task1.anchor.head.weight",
        ]
    );
    let (f0, _) = hand_fisher(&hand_gradients(&net, &stream, 0), 1);
    let (f1, _) = hand_fisher(&hand_gradients(&net, &stream, 1), 1);
    assert_close(&host(&state[0].1), &f0, "task 0 Fisher");
    assert_close(&host(&state[4].1), &f1, "task 1 Fisher");

    // Shift the bias only: penalty = λ/2 Σ_t Σ_k F_t,k δ².
    let params = params_of(&net);
    let shifted = [&params[0] + 0.5, params[1].shallow_clone()];
    let expected = 2.0 / 2.0 * f0.iter().chain(&f1).map(|f| f * 0.25).sum::<f64>();
    let penalty = method.penalty(&shifted).unwrap().double_value(&[]);
    assert_close(&[penalty], &[expected], "two-task penalty");
}

#[test]
fn online_fisher_update_is_gamma_times_old_plus_new() {
    let stream = stream();
    let net = linear(5);
    let table: toml::Table = toml::from_str("gamma = 0.5\nlambda = 3.0").unwrap();
    let mut online = from_params_online(&table).unwrap();
    assert_eq!(online.name(), "online-ewc");

    let ctx0 = task_context(&net, &stream, 0);
    online.before_task(&ctx0).unwrap();
    online.after_task(&ctx0).unwrap();
    let first: Vec<Tensor> = online.state().iter().map(|(_, t)| t.copy()).collect();

    // Change the model, as training task 1 would.
    {
        let _no_grad = tch::no_grad_guard();
        for p in params_of(&net) {
            let _ = p.shallow_clone().g_mul_scalar_(-1.5);
        }
    }
    let ctx1 = task_context(&net, &stream, 1);
    online.before_task(&ctx1).unwrap();
    online.after_task(&ctx1).unwrap();
    let second = online.state();
    assert_eq!(
        second.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "fisher.head.bias",
            "fisher.head.weight",
            "anchor.head.bias",
            "anchor.head.weight"
        ]
    );
    let fresh = ewc("").estimate_fisher(&ctx1, &params_of(&net)).unwrap();
    for i in 0..2 {
        let expected = &first[i] * 0.5 + &fresh[i];
        assert!(
            second[i].1.equal(&expected),
            "F ← γF + F_new for {}",
            second[i].0
        );
        assert!(
            second[i + 2].1.equal(&params_of(&net)[i]),
            "anchor is the latest parameters"
        );
    }
}

#[test]
fn state_round_trips_and_rejects_malformed_keys() {
    let stream = stream();
    let net = linear(5);
    let mut method = ewc("lambda = 4.0");
    for task in 0..2 {
        let ctx = task_context(&net, &stream, task);
        method.before_task(&ctx).unwrap();
        method.after_task(&ctx).unwrap();
    }
    let shifted: Vec<Tensor> = params_of(&net).iter().map(|p| p + 0.25).collect();
    let expected = method.penalty(&shifted).unwrap();

    let mut restored = ewc("lambda = 4.0");
    restored.load_state(method.state()).unwrap();
    assert!(restored.penalty(&shifted).unwrap().equal(&expected));
    // Bound to the same network, it trains on.
    restored
        .before_task(&task_context(&net, &stream, 1))
        .unwrap();

    let mut bad = ewc("");
    let error = bad
        .load_state(vec![("fisher.head.bias".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `ewc` failed: state key `fisher.head.bias` is not `task<N>.fisher.<param>` or `task<N>.anchor.<param>`"
    );
    let error = bad
        .load_state(vec![(
            "task0.fisher.head.bias".into(),
            Tensor::from(1.0f32),
        )])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `ewc` failed: consolidation 0: parameter `head.bias` needs both a fisher and an anchor tensor"
    );
}

#[test]
fn a_network_with_other_parameters_is_rejected() {
    let stream = stream();
    let net = linear(5);
    let mut method = ewc("");
    let ctx = task_context(&net, &stream, 0);
    method.before_task(&ctx).unwrap();
    method.after_task(&ctx).unwrap();
    let other = seeded_network(0, |path| {
        Box::new(retain_models::Mlp::new(path, FEATURES, &[2], CLASSES))
    });
    let error = method
        .before_task(&task_context(&other, &stream, 1))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "method `ewc` failed: the network's parameters [head.bias [4], head.weight [4, 2], \
             hidden.0.bias [2], hidden.0.weight [2, 3]] differ from the consolidated ones \
             [head.bias [4], head.weight [4, 3]]"
        ),
        "{error}"
    );
}

#[test]
fn invalid_hyper_parameters_are_rejected_with_the_reason() {
    let error = |name: &str, toml: &str| {
        let table: toml::Table = toml::from_str(toml).unwrap();
        let result = if name == "ewc" {
            from_params(&table)
        } else {
            from_params_online(&table)
        };
        match result {
            Ok(_) => panic!("{toml} was accepted"),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        error("ewc", "gamma = 0.9"),
        "invalid hyper-parameters for method `ewc`: `gamma` only applies to mode = \"online\" (separate penalties do not decay)"
    );
    assert_eq!(
        error("ewc", "mode = \"online\"\ngamma = 1.5"),
        "invalid hyper-parameters for method `ewc`: `gamma` must be in [0, 1], got 1.5"
    );
    assert_eq!(
        error("ewc", "lambda = -1.0"),
        "invalid hyper-parameters for method `ewc`: `lambda` must be finite and ≥ 0, got -1"
    );
    assert_eq!(
        error("ewc", "fisher_samples = 0"),
        "invalid hyper-parameters for method `ewc`: `fisher_samples` must be at least 1"
    );
    assert_eq!(
        error("online-ewc", "mode = \"separate\""),
        "invalid hyper-parameters for method `online-ewc`: `mode` must be \"online\" under the name `online-ewc` (use `ewc` for separate penalties)"
    );
    assert!(error("ewc", "lamda = 1.0").contains("unknown key `lamda`"));
    assert!(
        error("ewc", "fisher = \"full\"")
            .contains("`fisher` must be \"per_sample\" | \"per_batch\" (found string `\"full\"`)")
    );
}
