use super::*;
use retain_train::testkit::{
    MethodFixture, mnist, run_on, snapshot, split_mnist_vit, stream_and_network, task_context,
};

fn coda(toml: &str) -> Result<CodaPrompt, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    CodaPrompt::new(DESCRIPTOR.parse(&table)?)
}

fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
    (a - b).abs().max().double_value(&[]) < tol
}

#[test]
fn the_orthogonality_penalty_is_zero_on_orthonormal_rows_and_a_half_on_two_equal_unit_rows() {
    let orthonormal = Tensor::from_slice(&[0.6f32, 0.8, 0.0, -0.8, 0.6, 0.0]).view([2, 3]);
    assert!(ortho_penalty(&orthonormal).double_value(&[]).abs() < 1e-7);
    // t tᵀ − I = [[0, 1], [1, 0]]: mean of squares 2 / 4.
    let equal = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).view([2, 2]);
    assert!((ortho_penalty(&equal).double_value(&[]) - 0.5).abs() < 1e-7);
    // Rows of norm 2, orthogonal: t tᵀ − I = 3 I, mean of squares 9 · 2 / 4.
    let long = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 2.0]).view([2, 2]);
    assert!((ortho_penalty(&long).double_value(&[]) - 4.5).abs() < 1e-6);
}

#[test]
fn the_prompt_is_the_cosine_weighted_sum_of_the_components() {
    let q = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -1.0]).view([2, 2]);
    let attention = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0]).view([2, 2]);
    let key = Tensor::from_slice(&[1.0f32, 2.0, 1.0, 1.0]).view([2, 2]);
    // Sample 0: q ⊙ A_0 = [1, 2] ∥ K_0 → 1; q ⊙ A_1 = [0, 2], K_1 = [1, 1] → 1/√2.
    // Sample 1: q ⊙ A_0 = [3, −1], K_0 = [1, 2] → 1/(√10 √5); q ⊙ A_1 = [0, −1] → −1/√2.
    let r = std::f64::consts::FRAC_1_SQRT_2 as f32;
    let expected = Tensor::from_slice(&[1.0f32, r, 1.0 / 50f32.sqrt(), -r]).view([2, 2]);
    let alpha = component_weights(&q, &attention, &key);
    assert!(close(&alpha, &expected, 1e-6), "{alpha}");
    // P_0 = [[1, 0], [0, 1]], P_1 = [[2, 2], [0, −2]] (length 2, width 2).
    let prompt = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 2.0, 2.0, 0.0, -2.0]).view([2, 2, 2]);
    let p = weighted_prompt(&alpha, &prompt);
    assert_eq!(p.size(), [2, 2, 2]);
    let a = 1.0 / 50f32.sqrt();
    let expected = Tensor::from_slice(&[
        1.0 + 2.0 * r,
        2.0 * r,
        0.0,
        1.0 - 2.0 * r,
        a - 2.0 * r,
        -2.0 * r,
        0.0,
        a + 2.0 * r,
    ])
    .view([2, 2, 2]);
    assert!(close(&p, &expected, 1e-6), "{p}");
}

#[test]
fn gram_schmidt_rows_are_unit_and_orthogonal_to_the_old_and_each_other() {
    // Old rows deliberately not orthogonal to each other (as after training).
    let old =
        retain_models::init::sample(retain_models::init::Draw::Normal { std: 1.0 }, &[3, 8], 5)
            .to_kind(Kind::Float);
    let new = orthogonal_rows(&old, 4, 7).unwrap();
    assert_eq!(new.size(), [4, 8]);
    let gram = new.matmul(&new.tr());
    assert!(close(
        &gram,
        &Tensor::eye(4, (Kind::Double, Device::Cpu)),
        1e-10
    ));
    let cross = old.to_kind(Kind::Double).matmul(&new.tr());
    assert!(cross.abs().max().double_value(&[]) < 1e-10, "{cross}");
    // Seeded: the same rows again; and no room for more than the dimension.
    assert!(orthogonal_rows(&old, 4, 7).unwrap().equal(&new));
    assert!(orthogonal_rows(&old, 6, 7).is_none());
}

#[test]
fn a_task_draws_orthogonal_components_and_only_they_and_the_head_train() {
    let experiment = split_mnist_vit(2, 20, 20, 0, "name = \"coda-prompt\"", &[]);
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let mut method = coda("pool_size = 8\nlength = 4").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert_eq!(method.layers(), [0, 1]);
    let trained: Vec<(String, Vec<i64>)> = net
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    assert_eq!(
        trained,
        [
            ("coda-prompt.0.attention".to_owned(), vec![4, 16]),
            ("coda-prompt.0.key".to_owned(), vec![4, 16]),
            ("coda-prompt.0.prompt".to_owned(), vec![4, 4, 16]),
            ("coda-prompt.1.attention".to_owned(), vec![4, 16]),
            ("coda-prompt.1.key".to_owned(), vec![4, 16]),
            ("coda-prompt.1.prompt".to_owned(), vec![4, 4, 16]),
            ("head.bias".to_owned(), vec![10]),
            ("head.weight".to_owned(), vec![10, 16]),
        ]
    );
    let vars = net.vars.variables();
    let key0 = vars["coda-prompt.0.key"].copy();
    let eye = Tensor::eye(4, (Kind::Float, Device::Cpu));
    assert!(close(&key0.matmul(&key0.tr()), &eye, 1e-5));
    method.after_task(&task_context(&net, &stream, 0)).unwrap();
    assert_eq!(method.tasks_done(), 1);
    method.before_task(&task_context(&net, &stream, 1)).unwrap();
    let key1 = vars["coda-prompt.0.key"].copy();
    assert!(key0.matmul(&key1.tr()).abs().max().double_value(&[]) < 1e-5);
    let prompt0 = method.frozen()[1].prompt.reshape([4, -1]);
    let prompt1 = vars["coda-prompt.1.prompt"].reshape([4, -1]);
    assert!(prompt0.matmul(&prompt1.tr()).abs().max().double_value(&[]) < 1e-5);
    // A later task's start is refused out of order.
    let error = method
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("task 0 starts, but the components of 1 tasks"),
        "{error}"
    );
}

/// Delegates to CODA-Prompt and keeps its state after every task.
struct Recording {
    method: CodaPrompt,
    states: Vec<Vec<(String, Tensor)>>,
}

impl Method for Recording {
    fn name(&self) -> &str {
        self.method.name()
    }
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.method.before_task(ctx)
    }
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        self.method.loss(ctx, batch)
    }
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.method.after_task(ctx)?;
        self.states.push(self.method.state());
        Ok(())
    }
    fn fresh_optimizer_each_task(&self) -> bool {
        self.method.fresh_optimizer_each_task()
    }
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        self.method.eval_logits(network, inputs)
    }
}

#[test]
fn training_leaves_the_backbone_and_earlier_components_bit_identical_and_state_round_trips() {
    let experiment = split_mnist_vit(
        2,
        40,
        20,
        0,
        "name = \"coda-prompt\"",
        &["training.optimizer.weight_decay=0.1"],
    );
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let before = snapshot(&net);
    let mut method = Recording {
        method: coda("pool_size = 8\nlength = 4\northo_weight = 0.1").unwrap(),
        states: Vec::new(),
    };
    retain_train::run(
        &experiment,
        &stream,
        &net,
        &mut method,
        &mut retain_train::Silent,
    )
    .unwrap();
    let after = snapshot(&net);
    for (name, value) in &before {
        if !name.starts_with("head.") {
            assert!(after[name].equal(value), "{name} changed");
        }
    }
    assert!(!after["head.weight"].equal(&before["head.weight"]));
    // Task 0's rows after task 1 are what task 0 left, bit for bit; task 1 added its own.
    let [first, second] = &method.states[..] else {
        panic!("two tasks")
    };
    for ((name, a), (other, b)) in first.iter().zip(second) {
        assert_eq!(name, other);
        assert_eq!(b.size()[0], 2 * a.size()[0], "{name}");
        assert!(b.narrow(0, 0, a.size()[0]).equal(a), "{name} changed");
    }
    // The state restores into a fresh method, which continues from it.
    let mut restored = coda("pool_size = 8\nlength = 4\northo_weight = 0.1").unwrap();
    restored
        .load_state(first.iter().map(|(n, t)| (n.clone(), t.copy())).collect())
        .unwrap();
    let (stream, net3) = stream_and_network(&experiment, &mnist());
    restored
        .before_task(&task_context(&net3, &stream, 1))
        .unwrap();
    let state: Vec<(String, Tensor)> = restored.state();
    assert_eq!(state.len(), first.len());
    for ((name, a), (other, b)) in state.iter().zip(first) {
        assert_eq!(name, other);
        assert!(a.equal(b), "{name}");
    }
    // The freshly drawn rows are the ones the original run drew for task 1 before training:
    // orthogonal to the restored task-0 rows.
    let key = net3.vars.variables()["coda-prompt.0.key"].copy();
    assert!(key.matmul(&state[1].1.tr()).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn bad_hyper_parameters_layers_and_models_are_refused() {
    let message = |r: Result<CodaPrompt, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(coda("pool_size = 0")),
        "invalid hyper-parameters for method `coda-prompt`: `pool_size` must be at least 1"
    );
    assert!(message(coda("length = 3")).contains("`length` must be even and at least 2"));
    assert!(message(coda("length = 0")).contains("`length` must be even"));
    assert!(message(coda("ortho_weight = -1.0")).contains("`ortho_weight` must be finite"));
    assert!(message(coda("layers = []")).contains("`layers` must name at least one block"));
    assert!(message(coda("layers = [1, 0, 1]")).contains("`layers` names block 1 twice"));
    assert!(message(coda("pool = 4")).contains("unknown key `pool`"));

    let experiment = split_mnist_vit(2, 20, 20, 0, "name = \"coda-prompt\"", &[]);
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let refused = |m: &str| {
        coda(m)
            .unwrap()
            .check_network(&net)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused("layers = [0, 2]"),
        "method `coda-prompt` failed: `method.layers` names block 2, but the model has 2 (0 to 1)"
    );
    // The default pool of 100 does not fit the width-16 test model.
    assert!(refused("").contains("`method.pool_size` is 100, but at most the model's width (16)"));
    let error = coda("pool_size = 1")
        .unwrap()
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert!(error.contains("fewer than the stream's 2 tasks"), "{error}");
    let fixture = MethodFixture::new();
    let error = coda("")
        .unwrap()
        .check_network(&fixture.network)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `coda-prompt` failed: CODA-Prompt needs a transformer, whose attention takes \
         the prompt: set `model.kind = \"vit\"`"
    );
    // Nothing was frozen or created by the refusals.
    assert!(
        net.vars
            .variables()
            .keys()
            .all(|n| !n.starts_with("coda-prompt."))
    );
    assert!(net.vars.variables().values().all(|v| v.requires_grad()));
}

#[test]
fn the_schema_fills_in_the_documented_defaults_and_the_example_runs() {
    let params: CodaParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        CodaParams {
            pool_size: 100,
            length: 8,
            layers: None,
            ortho_weight: 0.0,
        }
    );
    let example: toml::Table = toml::from_str(DESCRIPTOR.example).unwrap();
    let mut method = CodaPrompt::new(DESCRIPTOR.parse(&example).unwrap()).unwrap();
    // The step bench's default transformer: width 64, 4 blocks.
    let experiment = retain_train::testkit::split_mnist_with(
        "kind = \"vit\"\nimage_size = 28\nchannels = 1",
        2,
        20,
        20,
        0,
        "name = \"coda-prompt\"",
        &[],
    );
    let (stream, net) = stream_and_network(&experiment, &mnist());
    method.check_network(&net).unwrap();
    let matrices = run_on(&experiment, &mnist(), &mut method).unwrap();
    assert!(!matrices.is_empty());
    assert_eq!(method.layers(), [0, 1, 2, 3]);
    drop((stream, net));
}
