use super::*;
use retain_train::gradients;
use retain_train::testkit::{MethodFixture, scalar, seeded_network, task_context};

fn si(toml: &str) -> Si {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Si::new(DESCRIPTOR.parse(&table).unwrap()).unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn params_of(fixture: &MethodFixture) -> Vec<Tensor> {
    fixture
        .network
        .parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

fn flat_host(tensors: &[Tensor]) -> Vec<f64> {
    tensors.iter().flat_map(host).collect()
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

fn zero_grads(params: &[Tensor]) {
    for p in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// Plain SGD: `θ ← θ − lr · p.grad()`.
fn sgd(params: &[Tensor], lr: f64) {
    let _no_grad = tch::no_grad_guard();
    for p in params {
        let _ = p.shallow_clone().g_sub_(&(p.grad() * lr));
    }
}

/// Drives task `task` through the hooks for `steps` steps of plain SGD at `lr` on the loss
/// `½ a Σ θ²` (the method's own loss is computed, which measures the path, but not
/// minimised), then ends the task.
fn quadratic_task(
    method: &mut Si,
    fixture: &MethodFixture,
    task: usize,
    a: f64,
    lr: f64,
    steps: usize,
) {
    method.before_task(&fixture.task(task)).unwrap();
    let (indices, batch) = fixture.batch(task, 4);
    let step = fixture.step(task, &indices);
    let params = params_of(fixture);
    for _ in 0..steps {
        let _ = method.loss(&step, &batch).unwrap();
        zero_grads(&params);
        let quadratic = params
            .iter()
            .map(|p| p.square().sum(Kind::Float))
            .reduce(|x, y| x + y)
            .unwrap()
            * (a / 2.0);
        quadratic.backward();
        method.after_backward(&step).unwrap();
        sgd(&params, lr);
    }
    method.after_task(&fixture.task(task)).unwrap();
}

#[test]
fn path_integral_of_sgd_on_a_quadratic_matches_the_closed_form() {
    // SGD on ½ a θ² from θ₀: θ_k = r^k θ₀ with r = 1 − lr·a, g_k = a θ_k,
    // Δθ_k = −lr a θ_k, so ω = Σ_k lr a² θ_k² = lr a² θ₀² Σ_{k<K} r^{2k}, and
    // Ω = ω / ((r^K − 1)² θ₀² + ξ).
    let fixture = MethodFixture::new();
    let (a, lr, steps, xi) = (0.5, 0.1, 5, 0.1);
    let theta0 = flat_host(&params_of(&fixture));
    let mut method = si("xi = 0.1");
    quadratic_task(&mut method, &fixture, 0, a, lr, steps);
    let r: f64 = 1.0 - lr * a;
    let series: f64 = (0..steps).map(|k| r.powi(2 * k as i32)).sum();
    let expected: Vec<f64> = theta0
        .iter()
        .map(|t| lr * a * a * t * t * series / ((r.powi(steps as i32) - 1.0).powi(2) * t * t + xi))
        .collect();
    assert_close(&flat_host(&method.importance().unwrap()), &expected, "Ω");
    let anchors: Vec<f64> = theta0.iter().map(|t| t * r.powi(steps as i32)).collect();
    let state = method.state();
    let anchor_state: Vec<Tensor> = state
        .iter()
        .filter(|(n, _)| n.starts_with("anchor."))
        .map(|(_, t)| t.shallow_clone())
        .collect();
    assert_close(&flat_host(&anchor_state), &anchors, "θ* = θ_end");
    assert!(
        method.path_integral().is_none(),
        "ω is reset at the task's end"
    );

    // A second task adds its own ω / (Δθ² + ξ) to Ω.
    let theta1 = flat_host(&params_of(&fixture));
    let before = flat_host(&method.importance().unwrap());
    let mut second = si("xi = 0.1\nc = 0.0");
    second.load_state(method.state()).unwrap();
    quadratic_task(&mut second, &fixture, 1, a, lr, 2);
    let series2: f64 = (0..2).map(|k| r.powi(2 * k)).sum();
    let expected: Vec<f64> = theta1
        .iter()
        .zip(&before)
        .map(|(t, o)| o + lr * a * a * t * t * series2 / ((r.powi(2) - 1.0).powi(2) * t * t + xi))
        .collect();
    assert_close(
        &flat_host(&second.importance().unwrap()),
        &expected,
        "Ω after two tasks",
    );
}

/// Ω of one quadratic task, then the parameters moved off the anchor and task 1 begun.
fn consolidated(toml: &str) -> (MethodFixture, Si, Vec<f64>) {
    let fixture = MethodFixture::new();
    let mut method = si(toml);
    quadratic_task(&mut method, &fixture, 0, 0.5, 0.1, 3);
    let anchor = flat_host(&params_of(&fixture));
    {
        let _no_grad = tch::no_grad_guard();
        for (i, p) in params_of(&fixture).iter().enumerate() {
            let shift = Tensor::arange(p.numel() as i64, (Kind::Float, tch::Device::Cpu)) * 0.01
                + 0.05 * i as f64;
            let _ = p.shallow_clone().g_add_(&shift.view(p.size().as_slice()));
        }
    }
    method.before_task(&fixture.task(1)).unwrap();
    (fixture, method, anchor)
}

#[test]
fn training_step_adds_c_omega_delta_squared_and_its_gradient() {
    let (fixture, mut method, anchor) = consolidated("c = 3.0");
    let omega = flat_host(&method.importance().unwrap());
    let params = params_of(&fixture);
    let delta: Vec<f64> = flat_host(&params)
        .iter()
        .zip(&anchor)
        .map(|(t, a)| t - a)
        .collect();
    let expected_penalty: f64 = 3.0
        * omega
            .iter()
            .zip(&delta)
            .map(|(o, d)| o * d * d)
            .sum::<f64>();
    let reference = method.penalty(&params).unwrap();
    assert_close(&[scalar(&reference)], &[expected_penalty], "penalty()");

    let (indices, batch) = fixture.batch(1, 4);
    let step = fixture.step(1, &indices);
    let ce = step.cross_entropy(&batch);
    let ce_grad = flat_host(&gradients(&ce, &params).unwrap());
    zero_grads(&params);
    let loss = method.loss(&step, &batch).unwrap();
    assert_close(&[scalar(&loss)], &[scalar(&ce) + expected_penalty], "loss");
    loss.backward();
    method.after_backward(&step).unwrap();
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let expected: Vec<f64> = ce_grad
        .iter()
        .zip(omega.iter().zip(&delta))
        .map(|(g, (o, d))| g + 2.0 * 3.0 * o * d)
        .collect();
    assert_close(&flat_host(&grads), &expected, "p.grad() after the step");
}

/// One SGD step of task 1 on the method's loss; returns `(g_ce, p.grad(), ω)` flat, `ω` as
/// measured by the next `loss`.
fn one_step(toml: &str, lr: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (fixture, mut method, _) = consolidated(toml);
    let params = params_of(&fixture);
    let (indices, batch) = fixture.batch(1, 4);
    let step = fixture.step(1, &indices);
    let ce_grad = flat_host(&gradients(&step.cross_entropy(&batch), &params).unwrap());
    zero_grads(&params);
    method.loss(&step, &batch).unwrap().backward();
    method.after_backward(&step).unwrap();
    let applied = flat_host(&params.iter().map(Tensor::grad).collect::<Vec<_>>());
    sgd(&params, lr);
    let _ = method.loss(&step, &batch).unwrap();
    let omega = flat_host(&method.path_integral().unwrap());
    (ce_grad, applied, omega)
}

#[test]
fn path_integral_uses_the_task_gradient_or_the_total_one() {
    let lr = 0.05;
    // Δθ = −lr · (g_ce + g_penalty); ω = −g · Δθ.
    let (g_ce, applied, omega) = one_step("c = 3.0", lr);
    let expected: Vec<f64> = g_ce.iter().zip(&applied).map(|(g, t)| lr * g * t).collect();
    assert_close(&omega, &expected, "ω with gradient = \"task\"");
    assert!(g_ce.iter().zip(&applied).any(|(g, t)| (g - t).abs() > 1e-3));

    let (_, applied, omega) = one_step("c = 3.0\ngradient = \"total\"", lr);
    let expected: Vec<f64> = applied.iter().map(|t| lr * t * t).collect();
    assert_close(&omega, &expected, "ω with gradient = \"total\"");
}

#[test]
fn state_round_trips_and_a_restored_instance_continues_identically() {
    let (fixture, mut method, _) = consolidated("c = 2.0");
    let params = params_of(&fixture);
    let (indices, batch) = fixture.batch(1, 4);
    let step = fixture.step(1, &indices);
    let mut restored = si("c = 2.0");
    restored.load_state(method.state()).unwrap();
    restored.before_task(&fixture.task(1)).unwrap();
    assert!(
        restored
            .penalty(&params)
            .unwrap()
            .equal(&method.penalty(&params).unwrap())
    );
    let original = method.loss(&step, &batch).unwrap();
    let again = restored.loss(&step, &batch).unwrap();
    assert_eq!(scalar(&original), scalar(&again), "same next loss");
    assert_eq!(
        method
            .state()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "omega.head.bias",
            "omega.head.weight",
            "omega.hidden.0.bias",
            "omega.hidden.0.weight",
            "anchor.head.bias",
            "anchor.head.weight",
            "anchor.hidden.0.bias",
            "anchor.hidden.0.weight",
        ]
    );

    let mut fresh = si("");
    fresh.load_state(Vec::new()).unwrap();
    assert!(fresh.state().is_empty());
    let error = fresh
        .load_state(vec![("fisher.head.bias".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `si` failed: state key `fisher.head.bias` is not `omega.<param>` or `anchor.<param>`"
    );
    let error = fresh
        .load_state(vec![("omega.head.bias".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `si` failed: parameter `head.bias` needs both an omega and an anchor tensor"
    );
}

#[test]
fn a_network_with_other_parameters_is_rejected() {
    let fixture = MethodFixture::new();
    let mut method = si("");
    quadratic_task(&mut method, &fixture, 0, 0.5, 0.1, 1);
    let other = seeded_network(0, |path| {
        Box::new(retain_models::Mlp::new(path, 4, &[], 10))
    });
    let error = method
        .before_task(&task_context(&other, &fixture.stream, 1))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "method `si` failed: the network's parameters [head.bias [10], head.weight [10, 4]] differ"
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
        error("c = -1.0"),
        "invalid hyper-parameters for method `si`: `c` must be finite and ≥ 0, got -1"
    );
    assert_eq!(
        error("xi = 0.0"),
        "invalid hyper-parameters for method `si`: `xi` must be finite and > 0 (it keeps Ω finite where a parameter did not move), got 0"
    );
    assert!(
        error("lambda = 1.0").contains("unknown key `lambda`"),
        "{}",
        error("lambda = 1.0")
    );
    assert!(error("gradient = \"both\"").contains("`gradient` must be \"task\" | \"total\""));
    assert!(from_params(&toml::from_str(DESCRIPTOR.example).unwrap()).is_ok());
}
