use super::*;
use retain_train::Silent;
use retain_train::testkit::{
    MethodFixture, mnist, mnist_shaped_inputs, scalar, small_vit_split_mnist, snapshot,
    stream_and_network, task_context,
};

fn l2p(toml: &str) -> Result<L2p, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    L2p::new(DESCRIPTOR.parse(&table)?)
}

fn matrix(rows: &[&[f64]]) -> Tensor {
    let cols = rows[0].len() as i64;
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&v| v as f32))
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, cols])
}

fn indices(t: &Tensor) -> Vec<Vec<i64>> {
    Vec::<Vec<i64>>::try_from(t).unwrap()
}

#[test]
fn selection_takes_the_top_n_keys_by_cosine_with_ties_to_the_lower_index() {
    // Keys: +x, +y, −x, the diagonal (scaled: cosine ignores norms), −y.
    let keys = matrix(&[
        &[1.0, 0.0],
        &[0.0, 1.0],
        &[-1.0, 0.0],
        &[2.0, 2.0],
        &[0.0, -1.0],
    ]);
    let queries = matrix(&[&[3.0, 0.0], &[1.0, 1.0], &[0.0, -0.5]]);
    let (top, cosine) = select(&queries, &keys, 3);
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let expected = matrix(&[
        &[1.0, 0.0, -1.0, h, 0.0],
        &[h, h, -h, 1.0, -h],
        &[0.0, -1.0, 0.0, -h, 1.0],
    ]);
    assert!(cosine.allclose(&expected, 1e-6, 1e-6, false), "{cosine}");
    assert_eq!(
        indices(&top),
        // Row 0: 1 (key 0), 0.71 (key 3), then 0 for keys 1 and 4: key 1 first.
        // Row 1: 1 (key 3), then 0.71 for keys 0 and 1: key 0 first.
        // Row 2: 1 (key 4), then 0 for keys 0 and 2: key 0 first.
        [vec![0, 3, 1], vec![3, 0, 1], vec![4, 0, 2]]
    );
    // A zero query is clamped, not divided by zero: every cosine 0, the first keys selected.
    let (top, cosine) = select(&matrix(&[&[0.0, 0.0]]), &keys, 2);
    assert_eq!(scalar(&cosine.abs().max()), 0.0);
    assert_eq!(indices(&top), [vec![0, 1]]);
}

#[test]
fn batchwise_selection_takes_the_most_frequent_prompts_for_every_sample() {
    let per_sample = Tensor::from_slice(&[3i64, 0, 3, 1, 2, 1]).view([3, 2]);
    // Counts over the pool of 5: [1, 2, 1, 2, 0]; 1 and 3 tie at 2: 1 first.
    assert_eq!(
        indices(&batchwise(&per_sample, 5, 2)),
        [vec![1, 3], vec![1, 3], vec![1, 3]]
    );
    // Fewer distinct prompts than top_n: unselected ones fill in, lowest index first.
    let same = Tensor::from_slice(&[4i64, 4]).view([2, 1]);
    assert_eq!(
        indices(&batchwise(&same, 5, 3)),
        [vec![4, 0, 1], vec![4, 0, 1]]
    );
}

#[test]
fn the_pull_loss_sums_one_minus_cosine_over_the_selected_keys_and_averages_the_batch() {
    let cosine = matrix(&[&[1.0, 0.5, 0.0], &[0.2, 0.4, -1.0]]);
    let top = Tensor::from_slice(&[0i64, 1, 2, 1]).view([2, 2]);
    // ((1 − 1) + (1 − 0.5) + (1 + 1) + (1 − 0.4)) / 2.
    assert!((scalar(&pull_loss(&cosine, &top)) - 1.55).abs() < 1e-6);
    // Its gradient reaches the keys through the cosine; the queries take none.
    let keys = matrix(&[&[1.0, 0.0], &[0.0, 1.0]]).set_requires_grad(true);
    let queries = matrix(&[&[1.0, 1.0]]);
    let (top, cosine) = select(&queries, &keys, 1);
    let loss = pull_loss(&cosine, &top);
    assert!((scalar(&loss) - (1.0 - std::f64::consts::FRAC_1_SQRT_2)).abs() < 1e-6);
    loss.backward();
    let grad = keys.grad();
    // Only the selected key (0, the lower of two equals) moves, towards the query (+y).
    assert!(scalar(&grad.get(0).get(1)) < 0.0);
    assert_eq!(scalar(&grad.get(1).abs().sum(Kind::Float)), 0.0);
}

#[test]
fn masked_classes_get_no_probability_and_no_gradient() {
    let logits = matrix(&[&[1.0, 2.0, 3.0, 4.0]]).set_requires_grad(true);
    let masked = Tensor::from_slice(&[false, false, true, true]);
    let loss =
        mask_classes(&logits, &masked).cross_entropy_for_logits(&Tensor::from_slice(&[0i64]));
    let expected = -(1f64.exp() / (1f64.exp() + 2f64.exp())).ln();
    assert!((scalar(&loss) - expected).abs() < 1e-6);
    loss.backward();
    let grad = Vec::<f32>::try_from(logits.grad().view([-1])).unwrap();
    assert_eq!(&grad[2..], [0.0, 0.0]);
    assert!(grad[0] < 0.0 && grad[1] > 0.0);
}

/// The head's gradient after one L2P loss on task 0's first 10 samples.
fn head_gradient(method_toml: &str) -> Tensor {
    let experiment = small_vit_split_mnist(2, 20, 1, "name = \"l2p\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let mut method = l2p(method_toml).unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    let idx = Tensor::from_slice(&stream.tasks[0].train_indices[..10]);
    let batch = stream.batch(retain_stream::SplitKind::Train, &idx);
    let key = Tensor::from(0i64);
    let ctx = StepContext {
        network: &net,
        stream: &stream,
        task: &stream.tasks[0],
        device: stream.device,
        step: 0,
        epoch: 0,
        key: &key,
        indices: &idx,
        loss: Default::default(),
    };
    let loss = method.loss(&ctx, &batch).unwrap();
    loss.backward();
    let grads: Vec<Tensor> = net
        .parameters()
        .into_iter()
        .filter(|(n, _)| n == "head.weight")
        .map(|(_, t)| t.grad())
        .collect();
    grads[0]
        .abs()
        .sum_dim_intlist(&[1i64][..], false, Kind::Float)
}

#[test]
fn the_train_mask_keeps_the_other_tasks_classes_out_of_the_loss() {
    // Task 0 holds classes 0 and 1.
    let rows = Vec::<f32>::try_from(head_gradient("")).unwrap();
    assert!(rows[0] > 0.0 && rows[1] > 0.0, "{rows:?}");
    assert!(rows[2..].iter().all(|&g| g == 0.0), "{rows:?}");
    let rows = Vec::<f32>::try_from(head_gradient("train_mask = false")).unwrap();
    assert!(rows.iter().all(|&g| g > 0.0), "{rows:?}");
}

#[test]
fn only_the_pool_and_the_head_train_and_evaluation_selects_per_sample() {
    let experiment = small_vit_split_mnist(2, 40, 1, "name = \"l2p\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let before = snapshot(&net);
    let xs = mnist_shaped_inputs();
    let plain = net.model.forward_t(&xs, false);
    let mut method = l2p("pool_size = 4\nlength = 2\ntop_n = 2").unwrap();
    // Before the pool exists, evaluation reads the network itself.
    assert!(method.eval_logits(&net, &xs).is_none());
    retain_train::run(&experiment, &stream, &net, &mut method, &mut Silent).unwrap();
    let trained: Vec<(String, Vec<i64>)> = net
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    assert_eq!(
        trained,
        [
            ("head.bias".to_owned(), vec![10]),
            ("head.weight".to_owned(), vec![10, 16]),
            ("l2p.keys".to_owned(), vec![4, 16]),
            ("l2p.prompts".to_owned(), vec![4, 2, 16]),
        ]
    );
    let after = snapshot(&net);
    for (name, value) in &before {
        let changed = !value.equal(&after[name]);
        assert_eq!(changed, name.starts_with("head."), "{name}");
    }
    // Drawn from U(−1, 1) and trained a little: no longer the draw, still near its scale.
    let (prompts, keys) = method.pool().unwrap();
    assert!(scalar(&prompts.abs().max()) < 2.0 * INIT_BOUND);
    assert!(scalar(&keys.abs().max()) < 2.0 * INIT_BOUND);
    // No prompt is left attached: the network alone is the backbone with the trained head.
    let head_only = net.model.forward_t(&xs, false);
    assert!(!head_only.equal(&plain));
    assert_eq!(net.model.features(&xs, false).size(), [5, 16]);
    // Evaluation: per sample, the same as one sample at a time.
    let _no_grad = tch::no_grad_guard();
    let all = method.eval_logits(&net, &xs).unwrap();
    let one = method.eval_logits(&net, &xs.narrow(0, 2, 1)).unwrap();
    assert!(all.narrow(0, 2, 1).allclose(&one, 1e-5, 1e-5, false));
    assert!(!all.equal(&head_only));
}

#[test]
fn the_draw_follows_the_seed_and_state_round_trips() {
    let experiment = small_vit_split_mnist(2, 40, 1, "name = \"l2p\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let mut method = l2p("pool_size = 4\nlength = 2\ntop_n = 2").unwrap();
    assert!(method.state().is_empty());
    retain_train::run(&experiment, &stream, &net, &mut method, &mut Silent).unwrap();
    let state = method.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prompts", "keys"]);

    // A fresh network of the same experiment with the trained head (a network checkpoint
    // holds it) and a fresh method given the state: the same pool and the same outputs.
    let (_, copy) = stream_and_network(&experiment, &mnist());
    {
        let _no_grad = tch::no_grad_guard();
        let trained = net.vars.variables();
        for (name, variable) in copy.vars.variables() {
            variable.shallow_clone().copy_(&trained[&name]);
        }
    }
    let mut restored = l2p("pool_size = 4\nlength = 2\ntop_n = 2").unwrap();
    restored.load_state(state).unwrap();
    restored
        .before_task(&task_context(&copy, &stream, 1))
        .unwrap();
    let (p, k) = restored.pool().unwrap();
    let (p0, k0) = method.pool().unwrap();
    assert!(p.equal(p0) && k.equal(k0));
    let xs = mnist_shaped_inputs();
    let _no_grad = tch::no_grad_guard();
    assert!(
        restored
            .eval_logits(&copy, &xs)
            .unwrap()
            .equal(&method.eval_logits(&net, &xs).unwrap())
    );

    // The draw depends on the seed alone.
    let draw = |seed: u64| {
        let (_, fresh) = stream_and_network(&experiment, &mnist());
        let mut m = l2p("pool_size = 4\nlength = 2\ntop_n = 2").unwrap();
        let mut ctx = task_context(&fresh, &stream, 0);
        ctx.seed = seed;
        m.before_task(&ctx).unwrap();
        // A fresh head: zero biases, weights of the classifier's small scale.
        let variables = fresh.vars.variables();
        assert_eq!(scalar(&variables["head.bias"].abs().sum(Kind::Float)), 0.0);
        let weight = &variables["head.weight"];
        assert!(scalar(&weight.abs().max()) < 6.0 * HEAD_INIT_STD);
        assert!(scalar(&weight.abs().sum(Kind::Float)) > 0.0);
        m.state()
    };
    let (a, b, c) = (draw(0), draw(0), draw(1));
    assert!(a[0].1.equal(&b[0].1) && a[1].1.equal(&b[1].1));
    assert!(!a[0].1.equal(&c[0].1) && !a[1].1.equal(&c[1].1));

    // Bad states are refused.
    let mut m = l2p("").unwrap();
    let err = m
        .load_state(vec![(
            "pool".into(),
            Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)),
        )])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "method `l2p` failed: unexpected state tensor `pool`"
    );
    let mut m = l2p("pool_size = 3\nlength = 2\ntop_n = 2").unwrap();
    m.load_state(a).unwrap();
    let (_, fresh) = stream_and_network(&experiment, &mnist());
    let err = m
        .before_task(&task_context(&fresh, &stream, 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("but this pool's are [3, 2, 16]"), "{err}");
}

#[test]
fn bad_hyper_parameters_and_models_are_refused() {
    let message = |r: Result<L2p, TrainError>| r.err().unwrap().to_string();
    let prefix = "invalid hyper-parameters for method `l2p`: ";
    assert_eq!(
        message(l2p("pool_size = 0")),
        format!("{prefix}`pool_size` must be at least 1")
    );
    assert_eq!(
        message(l2p("length = 0")),
        format!("{prefix}`length` must be at least 1")
    );
    assert_eq!(
        message(l2p("top_n = 11")),
        format!("{prefix}`top_n` must be between 1 and `pool_size` (10), got 11")
    );
    assert_eq!(
        message(l2p("top_n = 0")),
        format!("{prefix}`top_n` must be between 1 and `pool_size` (10), got 0")
    );
    assert_eq!(
        message(l2p("pull_weight = -1.0")),
        format!("{prefix}`pull_weight` must be finite and ≥ 0, got -1")
    );
    assert!(message(l2p("pool = 4")).contains("unknown key `pool`"));
    let fixture = MethodFixture::new();
    let expected = "method `l2p` failed: L2P needs a transformer, whose input sequence takes the selected prompts: set `model.kind = \"vit\"`";
    let method = l2p("").unwrap();
    assert_eq!(
        method
            .check_network(&fixture.network)
            .unwrap_err()
            .to_string(),
        expected
    );
    let mut method = l2p("").unwrap();
    assert_eq!(
        method
            .before_task(&fixture.task(0))
            .unwrap_err()
            .to_string(),
        expected
    );
    // Nothing was frozen or created.
    assert_eq!(fixture.network.parameters().len(), 4);
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: L2pParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        L2pParams {
            pool_size: 10,
            length: 5,
            top_n: 5,
            pull_weight: 0.1,
            train_mask: true,
            batchwise: true,
            fresh_head: true,
        }
    );
    let example: toml::Table = toml::from_str(DESCRIPTOR.example).unwrap();
    assert!(L2p::new(DESCRIPTOR.parse(&example).unwrap()).is_ok());
}
