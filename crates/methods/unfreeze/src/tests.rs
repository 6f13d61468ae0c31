use super::*;
use retain_stream::TaskStream;
use retain_train::testkit::{
    MethodFixture, mnist, seeded_network, single_threaded, split_mnist, task_context,
};
use retain_train::{Network, Observer, Silent, TaskReport, run};
use std::collections::{BTreeMap, BTreeSet};
use tch::Device;

fn unfreeze(toml: &str) -> Result<Unfreeze, TrainError> {
    Unfreeze::new(DESCRIPTOR.parse(&toml::from_str(toml).unwrap())?)
}

/// Records, after every step and every task, which layers of the MLP (`head`, `hidden.1`,
/// `hidden.0`) differ from their initial values, and the variables' values at the end of
/// each task.
struct Watcher {
    variables: Vec<(String, Tensor)>,
    initial: BTreeMap<String, Tensor>,
    after_step: Vec<BTreeSet<String>>,
    after_task: Vec<BTreeSet<String>>,
    values_after_step: Vec<BTreeMap<String, Tensor>>,
}

impl Watcher {
    fn new(net: &Network) -> Self {
        let variables: Vec<(String, Tensor)> = net.vars.variables().into_iter().collect();
        let initial = variables
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().copy()))
            .collect();
        Self {
            variables,
            initial,
            after_step: Vec::new(),
            after_task: Vec::new(),
            values_after_step: Vec::new(),
        }
    }

    /// Layers (by [`layer_prefix`]) with a variable that differs from its initial value.
    fn changed(&self) -> BTreeSet<String> {
        self.variables
            .iter()
            .filter(|(name, tensor)| !tensor.equal(&self.initial[name]))
            .map(|(name, _)| layer_prefix(name).to_owned())
            .collect()
    }
}

impl Observer for Watcher {
    fn step(&mut self) {
        let changed = self.changed();
        self.after_step.push(changed);
        self.values_after_step.push(
            self.variables
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect(),
        );
    }
    fn task_finished(&mut self, _task: usize, _report: &TaskReport) {
        let changed = self.changed();
        self.after_task.push(changed);
    }
}

fn layers(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Trains `method_toml` on `tasks` reduced Split-MNIST tasks of `train` samples (batch 10,
/// MLP 784-100-100-10, Adam with weight decay unless `overrides` say otherwise) and returns
/// what the watcher saw and the method.
fn train_on_mnist(
    tasks: usize,
    train: usize,
    method_toml: &str,
    overrides: &[&str],
) -> (Watcher, Box<dyn Method>) {
    single_threaded();
    let mut all = vec!["training.optimizer.weight_decay=0.01"];
    all.extend_from_slice(overrides);
    let experiment = split_mnist(tasks, train, 50, 0, method_toml, &all);
    let stream =
        TaskStream::build(&mnist(), &experiment.stream, experiment.seed, Device::Cpu).unwrap();
    let net = Network::new(&experiment, &stream);
    let mut watcher = Watcher::new(&net);
    let mut method = from_params(&experiment.method.params).unwrap();
    run(&experiment, &stream, &net, method.as_mut(), &mut watcher).unwrap();
    (watcher, method)
}

#[test]
fn step_schedule_unfreezes_one_layer_every_k_steps_across_tasks() {
    // Two tasks of 3 steps each, `every = 2`: the schedule runs over the stream, so hidden.1
    // joins at global step 2 (in task 0) and hidden.0 at step 4 (in task 1).
    let (watcher, _) = train_on_mnist(
        2,
        30,
        "name = \"unfreeze\"\nunit = \"step\"\nevery = 2",
        &[],
    );
    let head = layers(&["head"]);
    let top = layers(&["head", "hidden.1"]);
    let all = layers(&["head", "hidden.1", "hidden.0"]);
    assert_eq!(
        watcher.after_step,
        [&head, &head, &top, &top, &all, &all].map(Clone::clone)
    );
}

#[test]
fn layers_still_frozen_at_the_end_are_bit_identical() {
    // `every = 4` over 2 × 3 steps: hidden.0 never unfreezes.
    let (watcher, method) = train_on_mnist(
        2,
        30,
        "name = \"unfreeze\"\nunit = \"step\"\nevery = 4",
        &[],
    );
    let last = watcher.values_after_step.last().unwrap();
    for name in ["hidden.0.weight", "hidden.0.bias"] {
        assert!(
            last[name].equal(&watcher.initial[name]),
            "{name} is bit-identical"
        );
    }
    for name in [
        "hidden.1.weight",
        "hidden.1.bias",
        "head.weight",
        "head.bias",
    ] {
        assert!(!last[name].equal(&watcher.initial[name]), "{name} trained");
    }
    assert_eq!(
        watcher.after_task,
        [layers(&["head"]), layers(&["head", "hidden.1"])]
    );
    let state = method.state();
    assert_eq!(state[0].0, "elapsed");
    assert_eq!(state[0].1.int64_value(&[0]), 6);
}

#[test]
fn epoch_schedule_counts_epochs_over_the_stream() {
    // Two tasks of two epochs of 3 steps: the second layer joins at the start of epoch 1 of
    // task 0, the first at the start of task 1.
    let (watcher, _) = train_on_mnist(2, 30, "name = \"unfreeze\"", &["training.epochs=2"]);
    let head = layers(&["head"]);
    let top = layers(&["head", "hidden.1"]);
    let all = layers(&["head", "hidden.1", "hidden.0"]);
    let expected: Vec<BTreeSet<String>> = [
        &head, &head, &head, &top, &top, &top, &all, &all, &all, &all, &all, &all,
    ]
    .map(Clone::clone)
    .to_vec();
    assert_eq!(watcher.after_step, expected);
}

#[test]
fn task_schedule_unfreezes_at_task_starts() {
    let (watcher, _) = train_on_mnist(3, 20, "name = \"unfreeze\"\nunit = \"task\"", &[]);
    assert_eq!(
        watcher.after_task,
        [
            layers(&["head"]),
            layers(&["head", "hidden.1"]),
            layers(&["head", "hidden.1", "hidden.0"])
        ]
    );
}

/// With restarts, the second layer trains in steps 2–3 of task 0, is frozen again for steps
/// 0–1 of task 1 and trains again from step 2. Under SGD with momentum and weight decay, and
/// under Adam, it must not move while frozen: its gradient is left undefined and the
/// optimiser leaves it out of its flat buffers (a zero gradient in them would let momentum
/// carry it on).
#[test]
fn a_refrozen_layer_stays_bit_identical_until_it_unfreezes_again() {
    let sgd: &[&str] = &[
        "training.optimizer.kind=\"sgd\"",
        "training.optimizer.lr=0.05",
        "training.optimizer.momentum=0.9",
    ];
    for overrides in [sgd, &[]] {
        let (watcher, _) = train_on_mnist(
            2,
            40,
            "name = \"unfreeze\"\nunit = \"step\"\nevery = 2\nrestart_each_task = true",
            overrides,
        );
        let values = &watcher.values_after_step;
        assert_eq!(values.len(), 8);
        for name in ["hidden.1.weight", "hidden.1.bias"] {
            // Steps 0, 1 of task 0: still initial; steps 2, 3: trains.
            assert!(values[1][name].equal(&watcher.initial[name]), "{name}");
            assert!(!values[3][name].equal(&values[1][name]), "{name} trained");
            // Steps 0, 1 of task 1 (global 4, 5): frozen again, bit-identical.
            assert!(
                values[4][name].equal(&values[3][name]),
                "{name} {overrides:?}"
            );
            assert!(
                values[5][name].equal(&values[3][name]),
                "{name} {overrides:?}"
            );
            // Step 2 of task 1: unfrozen again.
            assert!(
                !values[6][name].equal(&values[5][name]),
                "{name} trains again"
            );
        }
        for name in ["hidden.0.weight", "hidden.0.bias"] {
            assert!(
                values[7][name].equal(&watcher.initial[name]),
                "{name} never trains"
            );
        }
        assert!(!values[5]["head.weight"].equal(&values[4]["head.weight"]));
    }
}

#[test]
fn default_groups_of_the_mlp_run_from_the_head_down() {
    let fixture = MethodFixture::new();
    let net = seeded_network(0, |path| {
        Box::new(retain_models::Mlp::new(path, 4, &[6, 5, 3], 10))
    });
    let mut method = unfreeze("").unwrap();
    method
        .before_task(&task_context(&net, &fixture.stream, 0))
        .unwrap();
    let groups = method.groups();
    let expected = ["head", "hidden.2", "hidden.1", "hidden.0"];
    assert_eq!(
        groups.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
        expected
    );
    for (group, members) in &groups {
        assert_eq!(
            members,
            &[format!("{group}.bias"), format!("{group}.weight")]
        );
    }
    // Only the top group trains at the start.
    let trained: Vec<String> = net.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(trained, ["head.bias", "head.weight"]);
    assert_eq!(method.unfrozen(), 1);
}

#[test]
fn default_groups_of_resnet18_are_blocks_from_the_head_down() {
    let fixture = MethodFixture::new();
    let net = seeded_network(0, |path| {
        Box::new(retain_models::ResNet::resnet18(path, 1, 2, 10))
    });
    let mut method = unfreeze("").unwrap();
    method
        .before_task(&task_context(&net, &fixture.stream, 0))
        .unwrap();
    let groups = method.groups();
    assert_eq!(
        groups.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
        [
            "linear", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0",
            "layer1.1", "layer1.0", "conv1", "bn1"
        ]
    );
    let members = |group: &str| groups.iter().find(|(g, _)| g == group).unwrap().1.clone();
    assert_eq!(members("linear"), ["linear.bias", "linear.weight"]);
    assert_eq!(members("conv1"), ["conv1.weight"]);
    assert_eq!(members("bn1"), ["bn1.bias", "bn1.weight"]);
    assert_eq!(
        members("layer2.0"),
        [
            "layer2.0.bn1.bias",
            "layer2.0.bn1.weight",
            "layer2.0.bn2.bias",
            "layer2.0.bn2.weight",
            "layer2.0.conv1.weight",
            "layer2.0.conv2.weight",
            "layer2.0.shortcut.0.weight",
            "layer2.0.shortcut.1.bias",
            "layer2.0.shortcut.1.weight",
        ]
    );
    // Every trainable variable is in exactly one group; running statistics in none.
    let grouped: usize = groups.iter().map(|(_, m)| m.len()).sum();
    assert_eq!(grouped, net.vars.trainable_variables().len());
    assert!(
        !groups
            .iter()
            .flat_map(|(_, m)| m)
            .any(|n| n.contains("running"))
    );
}

#[test]
fn layer_prefixes_and_natural_order() {
    for (name, prefix) in [
        ("hidden.0.weight", "hidden.0"),
        ("hidden.12.bias", "hidden.12"),
        ("head.weight", "head"),
        ("conv1.weight", "conv1"),
        ("bn1.running_mean", "bn1"),
        ("layer3.1.conv2.weight", "layer3.1"),
        ("layer2.0.shortcut.1.bias", "layer2.0"),
        ("blocks.3.attn.qkv.weight", "blocks.3"),
        ("cls_token", "cls_token"),
    ] {
        assert_eq!(layer_prefix(name), prefix, "{name}");
    }
    assert_eq!(natural_cmp("layer10", "layer9"), Ordering::Greater);
    assert_eq!(natural_cmp("hidden.2", "hidden.10"), Ordering::Less);
    assert_eq!(natural_cmp("bn1", "conv1"), Ordering::Less);
    assert_eq!(natural_cmp("layer4.1", "layer4.1"), Ordering::Equal);
    let groups = default_groups(
        [
            "blocks.10.mlp.weight",
            "blocks.9.mlp.weight",
            "blocks.2.mlp.weight",
            "head.weight",
        ],
        "head",
    );
    let names: Vec<&str> = groups.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(names, ["head", "blocks.10", "blocks.9", "blocks.2"]);
}

/// A transformer's names: head, final norm, blocks from the top, then the input embeddings
/// as one group, whatever their alphabetical order.
#[test]
fn default_groups_of_a_vision_transformer_end_with_its_embeddings() {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let shape = retain_models::VitShape {
        image: [1, 4, 4],
        patch: 2,
        dim: 4,
        depth: 3,
        heads: 2,
        mlp_dim: 8,
    };
    let _model = retain_models::VisionTransformer::new(&vs.root(), shape, 10);
    let variables = vs.variables();
    let groups = default_groups(variables.keys().map(String::as_str), "head");
    let names: Vec<&str> = groups.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(
        names,
        [
            "head",
            "norm",
            "blocks.2",
            "blocks.1",
            "blocks.0",
            "embeddings"
        ]
    );
    assert_eq!(
        groups.last().unwrap().1,
        [
            "cls_token",
            "patch_embed.proj.bias",
            "patch_embed.proj.weight",
            "pos_embed"
        ]
    );
}

#[test]
fn explicit_groups_take_what_earlier_groups_left() {
    let fixture = MethodFixture::new();
    let net = seeded_network(0, |path| {
        Box::new(retain_models::Mlp::new(path, 4, &[6, 5], 10))
    });
    let mut method = unfreeze("groups = [\"head.*\", \"*.bias\", \"hidden.1.*\"]").unwrap();
    method
        .before_task(&task_context(&net, &fixture.stream, 0))
        .unwrap();
    let groups = method.groups();
    assert_eq!(
        groups,
        [
            (
                "head.*".to_owned(),
                vec!["head.bias".to_owned(), "head.weight".to_owned()]
            ),
            (
                "*.bias".to_owned(),
                vec!["hidden.0.bias".to_owned(), "hidden.1.bias".to_owned()]
            ),
            ("hidden.1.*".to_owned(), vec!["hidden.1.weight".to_owned()]),
        ]
    );
    // hidden.0.weight is in no group: it never trains.
    let trained: Vec<String> = net.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(trained, ["head.bias", "head.weight"]);
}

fn bind_error(toml: &str) -> String {
    let fixture = MethodFixture::new();
    unfreeze(toml)
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    let message = |toml: &str| unfreeze(toml).err().unwrap().to_string();
    assert_eq!(
        message("every = 0"),
        "invalid hyper-parameters for method `unfreeze`: `every` must be at least 1"
    );
    let error = message("unit = \"batch\"");
    assert!(
        error.contains("`unit` must be \"step\" | \"epoch\" | \"task\" (found string `\"batch\"`)"),
        "{error}"
    );
    assert!(message("groups = []").contains("`groups` must list at least one name pattern"));
    assert!(
        message("unit = \"task\"\nrestart_each_task = true")
            .contains("would never unfreeze more than the top group")
    );
    assert!(message("every = -1").contains("`every` must be integer ≥ 0 (found integer `-1`)"));
    assert!(message("evry = 2").contains("unknown key `evry`"));
    assert_eq!(
        bind_error("groups = [\"head.*\", \"hidden.1.*\"]"),
        "method `unfreeze` failed: `method.groups` pattern `hidden.1.*` matches no trainable variable (the model has: head.bias, head.weight, hidden.0.bias, hidden.0.weight)"
    );
    assert_eq!(
        bind_error("groups = [\"*\", \"head.*\"]"),
        "method `unfreeze` failed: `groups` pattern `head.*` matches only variables of earlier groups"
    );
}

#[test]
fn state_round_trips_and_malformed_state_is_refused() {
    let mut method = unfreeze("unit = \"step\"").unwrap();
    method
        .load_state(vec![("elapsed".into(), Tensor::from_slice(&[7i64]))])
        .unwrap();
    assert_eq!(method.state()[0].1.int64_value(&[0]), 7);
    let error = method
        .load_state(vec![("position".into(), Tensor::from_slice(&[7i64]))])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("state must hold exactly `elapsed`"),
        "{error}"
    );
    assert!(method.load_state(Vec::new()).is_err());
}

#[test]
fn the_run_loop_sees_the_unfrozen_groups_as_its_trainable_parameters() {
    // The manifest counts `Network::parameters` after the run: here all three layers.
    single_threaded();
    let experiment = split_mnist(2, 30, 50, 0, "name = \"unfreeze\"\nunit = \"task\"", &[]);
    let stream =
        TaskStream::build(&mnist(), &experiment.stream, experiment.seed, Device::Cpu).unwrap();
    let net = Network::new(&experiment, &stream);
    let mut method = from_params(&experiment.method.params).unwrap();
    run(&experiment, &stream, &net, method.as_mut(), &mut Silent).unwrap();
    let count: i64 = net.parameters().iter().map(|(_, t)| t.numel() as i64).sum();
    // head 10·100 + 10 and hidden.1 100·100 + 100; hidden.0 never unfroze (2 tasks).
    assert_eq!(count, 1010 + 10100);
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: UnfreezeParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        UnfreezeParams {
            groups: None,
            unit: Unit::Epoch,
            every: 1,
            restart_each_task: false,
        }
    );
}
