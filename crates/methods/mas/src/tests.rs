use super::*;
use retain_stream::SplitKind;
use retain_train::Network;
use retain_train::testkit::{MethodFixture, scalar, seeded_network, task_context};

const FEATURES: usize = 4;
const CLASSES: usize = 10;

fn mas(toml: &str) -> Mas {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Mas::new(DESCRIPTOR.parse(&table).unwrap()).unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn flat_host(tensors: &[Tensor]) -> Vec<f64> {
    tensors.iter().flat_map(host).collect()
}

fn params_of(net: &Network) -> Vec<Tensor> {
    net.parameters().into_iter().map(|(_, t)| t).collect()
}

/// The fixture's stream (2×2 images, 10 classes) with a linear model `4 → 10` (parameters
/// `head.bias`, `head.weight`).
fn linear() -> (MethodFixture, Network) {
    let fixture = MethodFixture::new();
    let net = seeded_network(7, |path| {
        Box::new(retain_models::Mlp::new(path, FEATURES, &[], CLASSES))
    });
    (fixture, net)
}

fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-6 + 1e-4 * e.abs(),
            "{what}[{i}]: {a} vs expected {e}"
        );
    }
}

/// `(1/N) Σ_batches |∂/∂θ Σ_{n ∈ batch} ‖W x_n + b‖²|` by hand: `∂/∂b = Σ 2 f_n`,
/// `∂/∂W_kj = Σ 2 f_n,k x_n,j`. Returns `[Ω_b, Ω_W]` (row-major).
fn hand_importance(
    net: &Network,
    fixture: &MethodFixture,
    indices: &[i64],
    batch: usize,
) -> [Vec<f64>; 2] {
    let vars = net.vars.variables();
    let w = host(&vars["head.weight"]);
    let b = host(&vars["head.bias"]);
    let x = host(
        &fixture
            .stream
            .batch(SplitKind::Train, &Tensor::from_slice(indices))
            .inputs,
    );
    let n = indices.len();
    let mut ob = vec![0.0; CLASSES];
    let mut ow = vec![0.0; CLASSES * FEATURES];
    for group in (0..n).collect::<Vec<_>>().chunks(batch) {
        let mut gb = vec![0.0; CLASSES];
        let mut gw = vec![0.0; CLASSES * FEATURES];
        for &s in group {
            let xs = &x[s * FEATURES..(s + 1) * FEATURES];
            for k in 0..CLASSES {
                let f = b[k]
                    + (0..FEATURES)
                        .map(|j| w[k * FEATURES + j] * xs[j])
                        .sum::<f64>();
                gb[k] += 2.0 * f;
                for j in 0..FEATURES {
                    gw[k * FEATURES + j] += 2.0 * f * xs[j];
                }
            }
        }
        for (o, g) in ob.iter_mut().zip(&gb) {
            *o += g.abs() / n as f64;
        }
        for (o, g) in ow.iter_mut().zip(&gw) {
            *o += g.abs() / n as f64;
        }
    }
    [ob, ow]
}

#[test]
fn importance_is_the_mean_magnitude_of_the_squared_output_norm_gradient() {
    let (fixture, net) = linear();
    let ctx = task_context(&net, &fixture.stream, 0);
    let params = params_of(&net);
    let chosen = ctx.sample_train_indices(7, "mas/importance");
    assert_eq!(chosen.len(), 7);
    for batch in [1, 3] {
        let method = mas(&format!("samples = 7\nbatch_size = {batch}"));
        let omega = method.estimate_importance(&ctx, &params).unwrap();
        let [ob, ow] = hand_importance(&net, &fixture, &chosen, batch);
        assert_close(
            &host(&omega[0]),
            &ob,
            &format!("Ω(head.bias), batch {batch}"),
        );
        assert_close(
            &host(&omega[1]),
            &ow,
            &format!("Ω(head.weight), batch {batch}"),
        );
    }
    // Per-batch magnitudes are at most the per-sample ones (cancellation inside a batch).
    let per_sample = hand_importance(&net, &fixture, &chosen, 1);
    let per_batch = hand_importance(&net, &fixture, &chosen, 3);
    assert!(
        per_batch[1]
            .iter()
            .zip(&per_sample[1])
            .all(|(b, s)| *b <= s + 1e-9)
    );

    // All of the task's samples by default.
    let all = &fixture.stream.tasks[0].train_indices;
    let omega = mas("").estimate_importance(&ctx, &params).unwrap();
    let [ob, _] = hand_importance(&net, &fixture, all, 1);
    assert_close(&host(&omega[0]), &ob, "Ω(head.bias) over the whole task");
}

#[test]
fn importance_sums_over_tasks_and_the_anchor_is_the_latest_parameters() {
    let (fixture, net) = linear();
    let mut method = mas("samples = 5");
    let mut expected = vec![0.0; CLASSES + CLASSES * FEATURES];
    for task in 0..2 {
        let ctx = task_context(&net, &fixture.stream, task);
        method.before_task(&ctx).unwrap();
        {
            // Training moves the parameters between tasks.
            let _no_grad = tch::no_grad_guard();
            for p in params_of(&net) {
                let _ = p.shallow_clone().g_mul_scalar_(0.5 + task as f64);
            }
        }
        let chosen = ctx.sample_train_indices(5, "mas/importance");
        let [ob, ow] = hand_importance(&net, &fixture, &chosen, 1);
        for (e, o) in expected.iter_mut().zip(ob.iter().chain(&ow)) {
            *e += o;
        }
        method.after_task(&ctx).unwrap();
    }
    assert_close(
        &flat_host(&method.importance().unwrap()),
        &expected,
        "Ω₀ + Ω₁",
    );
    let state = method.state();
    let anchors: Vec<Tensor> = state
        .iter()
        .filter(|(n, _)| n.starts_with("anchor."))
        .map(|(_, t)| t.shallow_clone())
        .collect();
    assert_eq!(flat_host(&anchors), flat_host(&params_of(&net)));
}

#[test]
fn training_step_adds_lambda_omega_delta_squared_and_its_gradient() {
    let (fixture, net) = linear();
    let mut method = mas("lambda = 2.5\nsamples = 6");
    let ctx = task_context(&net, &fixture.stream, 0);
    method.before_task(&ctx).unwrap();
    method.after_task(&ctx).unwrap();
    let omega = flat_host(&method.importance().unwrap());
    let anchor = flat_host(&params_of(&net));
    {
        let _no_grad = tch::no_grad_guard();
        for (i, p) in params_of(&net).iter().enumerate() {
            let shift = Tensor::arange(p.numel() as i64, (Kind::Float, tch::Device::Cpu)) * 0.01
                + 0.1 * i as f64;
            let _ = p.shallow_clone().g_add_(&shift.view(p.size().as_slice()));
        }
    }
    method
        .before_task(&task_context(&net, &fixture.stream, 1))
        .unwrap();
    let params = params_of(&net);
    let delta: Vec<f64> = flat_host(&params)
        .iter()
        .zip(&anchor)
        .map(|(t, a)| t - a)
        .collect();
    let expected_penalty = 2.5
        * omega
            .iter()
            .zip(&delta)
            .map(|(o, d)| o * d * d)
            .sum::<f64>();
    assert_close(
        &[scalar(&method.penalty(&params).unwrap())],
        &[expected_penalty],
        "penalty()",
    );

    let indices = Tensor::from_slice(&fixture.stream.tasks[1].train_indices[..4]);
    let batch = fixture.stream.batch(SplitKind::Train, &indices);
    let key = Tensor::zeros([], (Kind::Int64, tch::Device::Cpu));
    let step = StepContext {
        network: &net,
        stream: &fixture.stream,
        task: &fixture.stream.tasks[1],
        device: tch::Device::Cpu,
        step: 0,
        epoch: 0,
        key: &key,
        indices: &indices,
        loss: Default::default(),
    };
    let ce = step.cross_entropy(&batch);
    let ce_grad = flat_host(&gradients(&ce, &params).unwrap());
    let loss = method.loss(&step, &batch).unwrap();
    assert_close(&[scalar(&loss)], &[scalar(&ce) + expected_penalty], "loss");
    loss.backward();
    method.after_backward(&step).unwrap();
    let expected: Vec<f64> = ce_grad
        .iter()
        .zip(omega.iter().zip(&delta))
        .map(|(g, (o, d))| g + 2.0 * 2.5 * o * d)
        .collect();
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    assert_close(&flat_host(&grads), &expected, "p.grad() after the step");

    // A fresh instance given the state continues identically.
    let mut restored = mas("lambda = 2.5\nsamples = 6");
    restored.load_state(method.state()).unwrap();
    restored
        .before_task(&task_context(&net, &fixture.stream, 1))
        .unwrap();
    let again = method.loss(&step, &batch).unwrap();
    let from_state = restored.loss(&step, &batch).unwrap();
    assert_eq!(scalar(&again), scalar(&from_state), "same next loss");
    assert!(
        restored
            .penalty(&params)
            .unwrap()
            .equal(&method.penalty(&params).unwrap())
    );
}

#[test]
fn state_keys_and_malformed_states() {
    let (fixture, net) = linear();
    let mut method = mas("samples = 3");
    assert!(method.state().is_empty());
    let ctx = task_context(&net, &fixture.stream, 0);
    method.before_task(&ctx).unwrap();
    method.after_task(&ctx).unwrap();
    assert_eq!(
        method
            .state()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "omega.head.bias",
            "omega.head.weight",
            "anchor.head.bias",
            "anchor.head.weight"
        ]
    );
    let mut fresh = mas("");
    let error = fresh
        .load_state(vec![("fisher.head.bias".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `mas` failed: state key `fisher.head.bias` is not `omega.<param>` or `anchor.<param>`"
    );
    let error = fresh
        .load_state(vec![("anchor.head.bias".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `mas` failed: parameter `head.bias` needs both an omega and an anchor tensor"
    );
    // Bound to another network, the consolidated one is refused.
    let other = MethodFixture::new();
    let error = method.before_task(&other.task(1)).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "method `mas` failed: the network's parameters [head.bias [10], head.weight [10, 6]"
        ),
        "{error}"
    );
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
        error("lambda = -0.5"),
        "invalid hyper-parameters for method `mas`: `lambda` must be finite and ≥ 0, got -0.5"
    );
    assert_eq!(
        error("samples = 0"),
        "invalid hyper-parameters for method `mas`: `samples` must be at least 1"
    );
    assert_eq!(
        error("batch_size = 0"),
        "invalid hyper-parameters for method `mas`: `batch_size` must be at least 1"
    );
    assert!(error("alpha = 0.5").contains("unknown key `alpha`"));
    assert!(from_params(&toml::from_str(DESCRIPTOR.example).unwrap()).is_ok());
}
