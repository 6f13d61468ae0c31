use super::*;
use retain_train::testkit::{
    MethodFixture, mnist, mnist_shaped_inputs, scalar, snapshot, split_mnist_with,
    stream_and_network, task_context,
};
use retain_train::{Silent, StepContext};
use tch::Device;

/// The small test transformer with 4 blocks, room for the published layers.
const VIT4: &str =
    "kind = \"vit\"\npatch = 7\ndim = 16\ndepth = 4\nheads = 2\nmlp_dim = 32\ninit = \"kaiming\"";

fn dualprompt(toml: &str) -> Result<DualPrompt, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    DualPrompt::new(DESCRIPTOR.parse(&table)?)
}

fn experiment(model: &str, train: usize) -> retain_config::Experiment {
    split_mnist_with(
        model,
        2,
        train,
        50,
        0,
        "name = \"dualprompt\"",
        &["training.optimizer.lr=0.01"],
    )
}

fn step<'a>(
    net: &'a Network,
    stream: &'a retain_stream::TaskStream,
    task: usize,
    indices: &'a Tensor,
    key: &'a Tensor,
) -> StepContext<'a> {
    StepContext {
        network: net,
        stream,
        task: &stream.tasks[task],
        device: Device::Cpu,
        step: 0,
        epoch: 0,
        key,
        indices,
        loss: Default::default(),
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn each_query_picks_the_key_nearest_it_by_cosine_not_by_dot_product() {
    let queries = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, -1.0, 0.1]).view([3, 2]);
    // Key 0 is long: it has the largest dot product with query 1 too, which points along
    // key 1.
    let keys = Tensor::from_slice(&[10.0f32, 1.0, 0.0, 0.5, -0.1, 0.0]).view([3, 2]);
    assert_eq!(
        Vec::<i64>::try_from(queries.matmul(&keys.tr()).argmax(1, false)).unwrap(),
        [0, 0, 2]
    );
    assert_eq!(
        Vec::<i64>::try_from(nearest_keys(&queries, &keys)).unwrap(),
        [0, 1, 2]
    );
    let cos = cosine_similarities(&queries, &keys);
    assert!((cos.double_value(&[1, 1]) - 1.0).abs() < 1e-6);
    assert!((cos.double_value(&[0, 1])).abs() < 1e-6);
}

#[test]
fn the_pull_loss_is_one_minus_the_mean_cosine_and_moves_only_the_key() {
    let queries = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 3.0]).view([2, 2]);
    let key = Tensor::from_slice(&[2.0f32, 0.0]).set_requires_grad(true);
    let loss = pull_loss(&queries, &key);
    // cos = 1 and 0: mean of (1 − cos) is 0.5.
    assert!((scalar(&loss) - 0.5).abs() < 1e-6);
    loss.backward();
    // d/dk of −cos(q2, k)/2 at k = (2, 0), q2 = (0, 1): −(q2/‖k‖)/2 = (0, −0.25).
    let grad = Vec::<f32>::try_from(key.grad()).unwrap();
    assert!(
        grad[0].abs() < 1e-6 && (grad[1] + 0.25).abs() < 1e-6,
        "{grad:?}"
    );
}

#[test]
fn the_prompts_reach_exactly_the_named_blocks_in_training_and_per_sample_in_evaluation() {
    let experiment = experiment(VIT4, 20);
    let (stream, net) = stream_and_network(&experiment, &mnist());
    // A second network with the same weights, whose prefixes are set here by hand.
    let (_, twin) = stream_and_network(&experiment, &mnist());
    let xs = mnist_shaped_inputs();
    let mut method = dualprompt("g_length = 2\ne_length = 3").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert_eq!(
        method.bound_layout().unwrap(),
        &Layout {
            width: 16,
            g_layers: vec![0, 1],
            e_layers: vec![2, 3],
        }
    );
    let vars = net.vars.variables();
    let var = |name: &str| vars[name].detach();
    let set = |block: usize, key: Tensor, value: Tensor| {
        assert!(twin.model.set_prefix(block, Some((key, value))));
    };
    let g = |b: usize| {
        (
            var(&format!("dualprompt.g.{b}.key")),
            var(&format!("dualprompt.g.{b}.value")),
        )
    };
    let e = |t: usize, b: usize| {
        (
            var(&format!("dualprompt.e.{t}.{b}.key")),
            var(&format!("dualprompt.e.{t}.{b}.value")),
        )
    };
    assert_eq!(g(0).0.size(), [2, 16]);
    assert_eq!(e(1, 3).1.size(), [3, 16]);
    let plain = twin.model.forward_t(&xs, false);
    // Training: G at blocks 0-1, task 0's E-prompt at blocks 2-3, for every sample.
    for b in [0, 1] {
        let (k, v) = g(b);
        set(b, k, v);
    }
    for b in [2, 3] {
        let (k, v) = e(0, b);
        set(b, k, v);
    }
    let trained = net.model.forward_t(&xs, false);
    assert!(max_abs(&(&trained - &plain)) > 1e-4);
    assert!(trained.equal(&twin.model.forward_t(&xs, false)));
    // The E-prompt one block off gives other outputs.
    twin.model.set_prefix(2, None);
    let (k, v) = e(0, 2);
    set(1, k, v);
    assert!(!trained.equal(&twin.model.forward_t(&xs, false)));
    // Evaluation after task 1: each sample's E-prompt is that of its query's nearest key
    // among tasks 0 and 1, and the classes of neither task are masked.
    method.after_task(&task_context(&net, &stream, 0)).unwrap();
    method.before_task(&task_context(&net, &stream, 1)).unwrap();
    {
        let _no_grad = tch::no_grad_guard();
        // Two keys apart, so that both are chosen for some of the five inputs.
        let queries = {
            for b in 0..4 {
                twin.model.set_prefix(b, None);
            }
            twin.model.features(&xs, false)
        };
        vars["dualprompt.key.0"]
            .shallow_clone()
            .copy_(&queries.get(0));
        vars["dualprompt.key.1"]
            .shallow_clone()
            .copy_(&queries.get(1));
        let _ = vars["dualprompt.e.1.2.value"].shallow_clone().fill_(0.5);
    }
    let chosen = method.select_tasks(net.model.as_ref(), &xs).unwrap();
    let picks = Vec::<i64>::try_from(&chosen).unwrap();
    assert_eq!(picks[..2], [0, 1]);
    let logits = {
        let _no_grad = tch::no_grad_guard();
        method.eval_logits(&net, &xs).unwrap()
    };
    for b in [0, 1] {
        let (k, v) = g(b);
        set(b, k, v);
    }
    for b in [2, 3] {
        let pick = |leaf: &str| {
            let pool = Tensor::stack(
                &[e(0, b), e(1, b)].map(|p| if leaf == "key" { p.0 } else { p.1 }),
                0,
            );
            pool.index_select(0, &chosen)
        };
        set(b, pick("key"), pick("value"));
    }
    let expected = twin.model.forward_t(&xs, false);
    let seen = stream.tasks[0]
        .class_mask
        .logical_or(&stream.tasks[1].class_mask);
    assert!(logits.equal(&mask_logits(&expected, &seen)));
    assert_eq!(
        Vec::<bool>::try_from(logits.isinf().any_dim(0, false)).unwrap(),
        Vec::<bool>::try_from(seen.logical_not()).unwrap()
    );
    // Evaluation leaves the training prompts (task 1's, for every sample) attached.
    for b in [2, 3] {
        let (k, v) = e(1, b);
        set(b, k, v);
    }
    set(1, g(1).0, g(1).1);
    assert!(
        net.model
            .forward_t(&xs, false)
            .equal(&twin.model.forward_t(&xs, false))
    );
}

#[test]
fn the_training_loss_masks_other_tasks_classes_and_adds_the_weighted_pull() {
    let experiment = experiment(VIT4, 20);
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let mut plain = dualprompt("pull_weight = 0.0").unwrap();
    plain.before_task(&task_context(&net, &stream, 1)).unwrap();
    let indices = Tensor::from_slice(&stream.tasks[1].train_indices[..8]);
    let key = Tensor::from(0i64);
    let ctx = step(&net, &stream, 1, &indices, &key);
    let batch = stream.batch(retain_stream::SplitKind::Train, &indices);
    let loss = plain.loss(&ctx, &batch).unwrap();
    let logits = net.model.forward_t(&batch.inputs, true);
    let masked = mask_logits(&logits, &stream.tasks[1].class_mask);
    let expected = masked.cross_entropy_for_logits(&batch.labels);
    assert!((scalar(&loss) - scalar(&expected)).abs() < 1e-6);
    let unmasked = logits.cross_entropy_for_logits(&batch.labels);
    assert!((scalar(&loss) - scalar(&unmasked)).abs() > 1e-4);
    // The masked classes get no gradient.
    loss.backward();
    let head_grad = net.vars.variables()["head.bias"].grad();
    let grads = Vec::<f32>::try_from(&head_grad).unwrap();
    let own = Vec::<bool>::try_from(&stream.tasks[1].class_mask).unwrap();
    for (g, own) in grads.iter().zip(own) {
        assert_eq!(*g != 0.0, own, "{grads:?}");
    }
    // Without the mask: the plain cross-entropy.
    let mut unmasked_method = dualprompt("pull_weight = 0.0\ntrain_mask = false").unwrap();
    let (stream2, net2) = stream_and_network(&experiment, &mnist());
    unmasked_method
        .before_task(&task_context(&net2, &stream2, 1))
        .unwrap();
    let ctx2 = step(&net2, &stream2, 1, &indices, &key);
    let loss2 = unmasked_method.loss(&ctx2, &batch).unwrap();
    assert!((scalar(&loss2) - scalar(&unmasked)).abs() < 1e-6);
    // With λ = 2.5: the masked cross-entropy plus 2.5·(1 − cos(q, k_1)), q the prompt-free
    // features.
    let mut pulled = dualprompt("pull_weight = 2.5").unwrap();
    let (stream3, net3) = stream_and_network(&experiment, &mnist());
    pulled
        .before_task(&task_context(&net3, &stream3, 1))
        .unwrap();
    let ctx3 = step(&net3, &stream3, 1, &indices, &key);
    let loss3 = pulled.loss(&ctx3, &batch).unwrap();
    let queries = {
        let _no_grad = tch::no_grad_guard();
        for b in 0..4 {
            net3.model.set_prefix(b, None);
        }
        let q = net3.model.features(&batch.inputs, false);
        pulled.attach_training(net3.model.as_ref());
        q
    };
    let pull = pull_loss(&queries, &net3.vars.variables()["dualprompt.key.1"]);
    assert!(scalar(&pull) > 0.01);
    assert!((scalar(&loss3) - scalar(&loss) - 2.5 * scalar(&pull)).abs() < 1e-5);
}

#[test]
fn training_moves_only_the_prompts_current_key_and_head_and_keeps_finished_tasks_prompts() {
    let experiment = experiment(VIT4, 60);
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let before = snapshot(&net);
    /// Records the method's variables when task 1 starts.
    struct Watch {
        inner: DualPrompt,
        at_task1: Option<Vec<(String, Tensor)>>,
    }
    impl Method for Watch {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
            self.inner.before_task(ctx)?;
            if ctx.task.index == 1 {
                self.at_task1 = Some(self.inner.state());
                let trained: Vec<String> = ctx.parameters().into_iter().map(|(n, _)| n).collect();
                assert_eq!(
                    trained,
                    [
                        "dualprompt.e.1.2.key",
                        "dualprompt.e.1.2.value",
                        "dualprompt.e.1.3.key",
                        "dualprompt.e.1.3.value",
                        "dualprompt.g.0.key",
                        "dualprompt.g.0.value",
                        "dualprompt.g.1.key",
                        "dualprompt.g.1.value",
                        "dualprompt.key.1",
                        "head.bias",
                        "head.weight",
                    ]
                );
            }
            Ok(())
        }
        fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
            self.inner.loss(ctx, batch)
        }
        fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
            self.inner.eval_logits(network, inputs)
        }
        fn fresh_optimizer_each_task(&self) -> bool {
            true
        }
    }
    let mut watch = Watch {
        inner: dualprompt("").unwrap(),
        at_task1: None,
    };
    retain_train::run(&experiment, &stream, &net, &mut watch, &mut Silent).unwrap();
    let after = snapshot(&net);
    for (name, value) in &before {
        if name.starts_with("head.") {
            assert!(!value.equal(&after[name]), "{name} trained");
        } else {
            assert!(value.equal(&after[name]), "{name} changed");
        }
    }
    let at_task1 = watch.at_task1.unwrap();
    let vars = net.vars.variables();
    for (name, value) in &at_task1 {
        let unchanged = vars[name].equal(value);
        let finished = name.starts_with("dualprompt.e.0.") || name == "dualprompt.key.0";
        if finished {
            assert!(unchanged, "{name} of the finished task changed");
        } else {
            assert!(!unchanged, "{name} did not train in task 1");
        }
    }
    // E_1 started as the trained E_0.
    let e1_start = &at_task1
        .iter()
        .find(|(n, _)| n == "dualprompt.e.1.2.key")
        .unwrap()
        .1;
    assert!(e1_start.equal(&vars["dualprompt.e.0.2.key"]));
}

#[test]
fn state_round_trips_into_a_fresh_method_and_network() {
    let experiment = experiment(VIT4, 20);
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let mut method = dualprompt("e_length = 2").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    {
        let _no_grad = tch::no_grad_guard();
        for (i, (_, v)) in net.parameters().into_iter().enumerate() {
            let _ = v.shallow_clone().fill_(0.01 * i as f64 - 0.3);
        }
    }
    method.after_task(&task_context(&net, &stream, 0)).unwrap();
    let state = method.state();
    assert_eq!(state.len(), 4 + 2 * 4 + 2);
    let xs = mnist_shaped_inputs();
    let logits = method.eval_logits(&net, &xs).unwrap();

    let (stream2, net2) = stream_and_network(&experiment, &mnist());
    {
        // The head is the network's own, restored with it.
        let _no_grad = tch::no_grad_guard();
        let vars = net.vars.variables();
        for (name, v) in net2.vars.variables() {
            if name.starts_with("head.") {
                v.shallow_clone().copy_(&vars[&name]);
            }
        }
    }
    let mut restored = dualprompt("e_length = 2").unwrap();
    restored.load_state(method.state()).unwrap();
    assert_eq!(restored.state().len(), state.len());
    restored
        .before_task(&task_context(&net2, &stream2, 0))
        .unwrap();
    for ((n1, v1), (n2, v2)) in state.iter().zip(restored.state()) {
        assert_eq!(n1, &n2);
        assert!(v1.equal(&v2), "{n1}");
    }
    assert!(logits.equal(&restored.eval_logits(&net2, &xs).unwrap()));

    // A state of another shape or name is refused.
    let (stream3, net3) = stream_and_network(&experiment, &mnist());
    let mut other = dualprompt("e_length = 3").unwrap();
    other.load_state(method.state()).unwrap();
    let error = other
        .before_task(&task_context(&net3, &stream3, 0))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is [2, 16] but the network's is [3, 16]"),
        "{error}"
    );
    let error = dualprompt("")
        .unwrap()
        .load_state(vec![(
            "task0.x".into(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        )])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`task0.x` is not one of the prompts"),
        "{error}"
    );
}

#[test]
fn bad_hyper_parameters_layers_and_models_are_refused_naming_the_key() {
    let message = |r: Result<DualPrompt, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(dualprompt("g_length = 0")),
        "invalid hyper-parameters for method `dualprompt`: `g_length` must be at least 1"
    );
    assert!(message(dualprompt("e_length = 0")).contains("`e_length` must be at least 1"));
    assert!(message(dualprompt("pull_weight = -1.0")).contains("`pull_weight` must be finite"));
    assert!(message(dualprompt("pull_weight = nan")).contains("`pull_weight` must be finite"));
    assert!(message(dualprompt("e_layers = []")).contains("`e_layers` must name at least one"));
    assert!(message(dualprompt("g_layers = [1, 1]")).contains("`g_layers` names block 1 twice"));
    assert!(
        message(dualprompt("g_layers = [0, 2]\ne_layers = [2]"))
            .contains("`g_layers` and `e_layers` both name block 2")
    );
    assert!(message(dualprompt("length = 4")).contains("unknown key `length`"));

    let vit4 = experiment(VIT4, 20);
    let (_, net) = stream_and_network(&vit4, &mnist());
    let error = dualprompt("e_layers = [2, 4]")
        .unwrap()
        .check_network(&net)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `dualprompt` failed: `method.e_layers` names block 4, but the model has 4 (0 to 3)"
    );
    let error = dualprompt("g_layers = [7]")
        .unwrap()
        .check_network(&net)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`method.g_layers` names block 7"), "{error}");
    assert!(
        dualprompt("g_layers = [2]")
            .unwrap()
            .check_network(&net)
            .unwrap_err()
            .to_string()
            .contains("both name block 2")
    );
    dualprompt("").unwrap().check_network(&net).unwrap();
    // Two blocks: no published E-prompt block fits.
    let vit2 = experiment(retain_train::testkit::SMALL_VIT, 20);
    let (_, net2) = stream_and_network(&vit2, &mnist());
    let error = dualprompt("")
        .unwrap()
        .check_network(&net2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("set `method.e_layers`"), "{error}");
    dualprompt("g_layers = [0]\ne_layers = [1]")
        .unwrap()
        .check_network(&net2)
        .unwrap();
    let fixture = MethodFixture::new();
    let error = dualprompt("")
        .unwrap()
        .check_network(&fixture.network)
        .unwrap_err()
        .to_string();
    assert!(error.contains("set `model.kind = \"vit\"`"), "{error}");
    let error = dualprompt("")
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`model.kind"), "{error}");
    assert_eq!(fixture.network.parameters().len(), 4);
}

#[test]
fn the_schema_fills_in_the_documented_defaults_and_the_example_parses() {
    let params: DualPromptParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        DualPromptParams {
            g_layers: None,
            e_layers: None,
            g_length: 5,
            e_length: 5,
            pull_weight: 1.0,
            train_mask: true,
        }
    );
    let example: toml::Table = toml::from_str(DESCRIPTOR.example).unwrap();
    let method = DualPrompt::new(DESCRIPTOR.parse(&example).unwrap()).unwrap();
    // The step bench's default transformer (4 blocks).
    let bench = split_mnist_with("kind = \"vit\"", 2, 20, 10, 0, "name = \"dualprompt\"", &[]);
    let (_, net) = stream_and_network(&bench, &mnist());
    method.check_network(&net).unwrap();
}
