use super::*;
use retain_config::{DatasetName, Readout, StreamConfig};
use retain_stream::{SplitKind, TaskStream};
use retain_train::testkit::{seeded_network, seeded_normal, synthetic_dataset, task_context};
use tch::Device;

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1e-3),
        "{what}: {actual} vs expected {expected}"
    );
}

fn lwf(toml: &str) -> Lwf {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Lwf::new(DESCRIPTOR.parse(&table).unwrap()).unwrap()
}

/// Softmax of `z / t` in f64.
fn softmax(z: &[f64], t: f64) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| ((v - max) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// `T² · mean_b KL(softmax(old_b/T) ‖ softmax(new_b/T))` in f64.
fn hand_distillation(new: &[Vec<f64>], old: &[Vec<f64>], t: f64) -> f64 {
    let kl: f64 = new
        .iter()
        .zip(old)
        .map(|(n, o)| {
            let (p, q) = (softmax(o, t), softmax(n, t));
            p.iter()
                .zip(&q)
                .map(|(p, q)| p * (p.ln() - q.ln()))
                .sum::<f64>()
        })
        .sum();
    t * t * kl / new.len() as f64
}

#[test]
fn distillation_loss_is_the_temperature_scaled_kl_of_fixed_logits() {
    let ln3 = 3f64.ln();
    // T = 2. Sample 1: p = softmax([0, 2 ln 3] / 2) = [1/4, 3/4], q = [1/2, 1/2].
    // Sample 2: p = [1/2, 1/2], q = [1/4, 3/4].
    let old = Tensor::from_slice(&[0.0, 2.0 * ln3, 0.0, 0.0]).view([2, 2]);
    let new = Tensor::from_slice(&[0.0, 0.0, 0.0, 2.0 * ln3])
        .view([2, 2])
        .set_requires_grad(true);
    let kl1 = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
    let kl2 = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
    let expected = 4.0 * (kl1 + kl2) / 2.0;
    let loss = distillation_loss(&new, &old, 2.0);
    assert_close(loss.double_value(&[]), expected, "distillation loss");

    // ∂/∂new_b = T · (q_b − p_b) / B.
    let grad = Tensor::run_backward(&[&loss], &[&new], false, false).remove(0);
    let expected_grad = [
        2.0 * (0.5 - 0.25) / 2.0,
        2.0 * (0.5 - 0.75) / 2.0,
        2.0 * (0.25 - 0.5) / 2.0,
        2.0 * (0.75 - 0.5) / 2.0,
    ];
    for (g, e) in host(&grad).iter().zip(expected_grad) {
        assert_close(*g, e, "gradient");
    }

    // Three classes, T = 3, against the f64 reference.
    let a = vec![vec![1.0, -2.0, 0.5], vec![0.0, 3.0, -1.0]];
    let b = vec![vec![0.2, 0.1, -0.7], vec![2.0, 2.5, 0.0]];
    let to_tensor = |v: &[Vec<f64>]| Tensor::from_slice(&v.concat()).view([2, 3]);
    assert_close(
        distillation_loss(&to_tensor(&a), &to_tensor(&b), 3.0).double_value(&[]),
        hand_distillation(&a, &b, 3.0),
        "three classes",
    );
    assert_eq!(
        distillation_loss(&to_tensor(&a), &to_tensor(&a), 3.0).double_value(&[]),
        0.0
    );
}

fn stream() -> TaskStream {
    let config = StreamConfig::split(DatasetName::Mnist, 2, 2, vec![Readout::ClassIl]);
    TaskStream::build(&synthetic_dataset(4, 3, 5), &config, 0, Device::Cpu).unwrap()
}

fn step_context<'a>(
    net: &'a Network,
    stream: &'a TaskStream,
    task: usize,
    indices: &'a Tensor,
) -> StepContext<'a> {
    StepContext {
        network: net,
        stream,
        task: &stream.tasks[task],
        device: Device::Cpu,
        step: 0,
        epoch: 0,
        // A zero augmentation key, alive for the test (the stream does not augment).
        key: Box::leak(Box::new(Tensor::zeros([], (Kind::Int64, Device::Cpu)))),
        indices,
        loss: Default::default(),
    }
}

#[test]
fn loss_adds_alpha_times_distillation_on_old_classes_to_cross_entropy() {
    let stream = stream();
    let net = seeded_network(11, |path| {
        Box::new(retain_models::Mlp::new(path, 5, &[6], 4))
    });
    let mut method = lwf("alpha = 0.7\ntemperature = 2.5");
    let indices = Tensor::from_slice(&stream.tasks[1].train_indices);
    let batch = stream.batch(SplitKind::Train, &indices);

    // First task: no teacher, plain cross-entropy.
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert!(method.teacher().is_none());
    let ctx = step_context(&net, &stream, 0, &indices);
    assert!(
        method
            .loss(&ctx, &batch)
            .unwrap()
            .equal(&ctx.cross_entropy(&batch))
    );

    // Second task: the teacher is the model as it is now, so the distillation term is 0.
    method.before_task(&task_context(&net, &stream, 1)).unwrap();
    let ctx = step_context(&net, &stream, 1, &indices);
    assert!(
        method
            .loss(&ctx, &batch)
            .unwrap()
            .equal(&ctx.cross_entropy(&batch))
    );

    // Move the live model; the teacher stays, and the term is α·T²·KL over classes 0 and 1.
    let old_logits = host(&net.model.forward_t(&batch.inputs, false));
    {
        let _no_grad = tch::no_grad_guard();
        for (seed, (_, p)) in net.parameters().into_iter().enumerate() {
            let _ = p
                .shallow_clone()
                .g_add_(&(seeded_normal(&p.size(), seed as u64) * 0.3));
        }
    }
    let new_logits = host(&net.model.forward_t(&batch.inputs, false));
    let teacher_logits = host(
        &method
            .teacher()
            .unwrap()
            .model
            .forward_t(&batch.inputs, false),
    );
    assert_eq!(teacher_logits, old_logits, "the teacher did not move");
    let rows = |v: &[f64]| -> Vec<Vec<f64>> { v.chunks(4).map(|r| r[..2].to_vec()).collect() };
    let expected_kd = hand_distillation(&rows(&new_logits), &rows(&old_logits), 2.5);
    assert!(expected_kd > 1e-4, "the models differ: {expected_kd}");
    let ce = ctx.cross_entropy(&batch).double_value(&[]);
    let loss = method.loss(&ctx, &batch).unwrap().double_value(&[]);
    assert_close(loss, ce + 0.7 * expected_kd, "LwF loss");
    // The teacher is the method's state: the earlier classes and every variable.
    let state = method.state();
    assert_eq!(state.len(), 1 + net.vars.variables().len());
    assert_eq!(state[0].0, "old_classes");
}

#[test]
fn invalid_hyper_parameters_are_rejected_with_the_reason() {
    let error = |toml: &str| {
        let table: toml::Table = toml::from_str(toml).unwrap();
        match from_params(&table) {
            Ok(_) => panic!("{toml} was accepted"),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        error("temperature = 0.0"),
        "invalid hyper-parameters for method `lwf`: `temperature` must be finite and > 0, got 0"
    );
    assert_eq!(
        error("alpha = -0.5"),
        "invalid hyper-parameters for method `lwf`: `alpha` must be finite and ≥ 0, got -0.5"
    );
    assert!(error("beta = 1.0").contains("unknown key `beta`"));
}

fn copied(state: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    state.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
}

#[test]
fn state_round_trips_into_a_fresh_method() {
    let fx = retain_train::testkit::MethodFixture::new();
    let mut original = lwf("");
    original.before_task(&fx.task(0)).unwrap();
    assert!(original.state().is_empty(), "no teacher in the first task");
    original.before_task(&fx.task(1)).unwrap();
    // The network moves on from its copy, as training would move it.
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.network.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_(&(Tensor::arange(10, tch::kind::FLOAT_CPU) * 0.3));
    }
    let state = original.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "old_classes",
            "teacher.head.bias",
            "teacher.head.weight",
            "teacher.hidden.0.bias",
            "teacher.hidden.0.weight"
        ]
    );
    assert_eq!(Vec::<i64>::try_from(&state[0].1).unwrap(), vec![0, 1]);
    let bytes: u64 = state
        .iter()
        .map(|(_, t)| retain_train::tensor_bytes(t))
        .sum();
    assert_eq!(bytes, 2 * 8 + (10 + 10 * 6 + 6 + 6 * 4) * 4);

    let mut restored = lwf("");
    restored.load_state(copied(&state)).unwrap();
    let (indices, batch) = fx.batch(1, 10);
    let expected = original.loss(&fx.step(1, &indices), &batch).unwrap();
    let plain = fx
        .network
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels);
    assert!(expected.double_value(&[]) > plain.double_value(&[]));
    let got = restored.loss(&fx.step(1, &indices), &batch).unwrap();
    assert_eq!(got.double_value(&[]), expected.double_value(&[]));
    let again = restored.state();
    for ((n, a), (_, b)) in state.iter().zip(&again) {
        assert!(a.equal(b), "`{n}` differs");
    }
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let error = |state: Vec<(String, Tensor)>| lwf("").load_state(state).unwrap_err().to_string();
    assert_eq!(
        error(vec![(
            "teacher.head.bias".into(),
            Tensor::zeros([10], tch::kind::FLOAT_CPU)
        )]),
        "method `lwf` failed: malformed state: no tensor `old_classes`"
    );
    assert_eq!(
        error(vec![("old_classes".into(), Tensor::from(1.0f32))]),
        "method `lwf` failed: malformed state: `old_classes` must be Int64 with 1 dimension, \
         found Float of shape []"
    );
    assert_eq!(
        error(vec![("fisher.head.bias".into(), Tensor::from(1.0f32))]),
        "method `lwf` failed: malformed state: unexpected tensor `fisher.head.bias`"
    );
    // A teacher of another architecture is refused at the next step, where the network is
    // known, listing every difference.
    let fx = retain_train::testkit::MethodFixture::new();
    let mut method = lwf("");
    method
        .load_state(vec![
            ("old_classes".into(), Tensor::from_slice(&[0i64, 1])),
            (
                "teacher.head.bias".into(),
                Tensor::zeros([3], tch::kind::FLOAT_CPU),
            ),
        ])
        .unwrap();
    let (indices, batch) = fx.batch(1, 10);
    let error = method
        .loss(&fx.step(1, &indices), &batch)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `lwf` failed: malformed state: the teacher does not match the network: missing \
         [head.weight, hidden.0.bias, hidden.0.weight]; shape of head.bias: expected [10], file \
         has [3]"
    );
}
