use std::collections::BTreeMap;

use super::*;
use crate::testkit::{seeded_network, seeded_normal, synthetic_dataset, task_context};
use retain_config::{DatasetName, Experiment, MemoryFormat, OptimizerConfig, StreamConfig};
use retain_stream::{Batch, TaskStream};
use tch::{Device, Kind, Tensor, nn};

/// A two-layer MLP `inputs → hidden → outputs` (or a linear layer when `hidden` is empty),
/// initialised under `seed`.
fn network(inputs: usize, hidden: &[usize], outputs: usize, seed: u64) -> Network {
    let hidden = hidden.to_vec();
    seeded_network(seed, move |path| {
        Box::new(retain_models::Mlp::new(path, inputs, &hidden, outputs))
    })
}

fn snapshot(vars: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vars.variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

/// A split stream over [`synthetic_dataset`]: `tasks` tasks of two classes.
fn stream(tasks: usize, per_class: usize, features: usize) -> TaskStream {
    let config = StreamConfig::split(
        DatasetName::Mnist,
        tasks,
        2,
        vec![Readout::ClassIl, Readout::TaskIl],
    );
    let dataset = synthetic_dataset(2 * tasks, per_class, features);
    TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap()
}

#[test]
fn frozen_copy_is_an_independent_frozen_snapshot() {
    let live = network(4, &[3], 2, 7);
    let before = snapshot(&live.vars);
    let inputs = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25, 1.0, 1.5, -0.5, 0.0]).view([2, 4]);
    let labels = Tensor::from_slice(&[1i64, 0]);
    let old_outputs = live.model.forward_t(&inputs, false).detach();

    let copy = live.frozen_copy().unwrap();
    assert!(
        copy.parameters().is_empty(),
        "every copied parameter is frozen"
    );
    let copied = snapshot(&copy.vars);
    assert_eq!(
        copied.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, value) in &copied {
        assert!(value.equal(&before[name]), "{name} copied exactly");
        assert_ne!(
            copy.vars.variables()[name].data_ptr(),
            live.vars.variables()[name].data_ptr(),
            "{name} has its own storage"
        );
    }

    let mut optimizer = build_optimizer(
        &OptimizerConfig::Sgd {
            lr: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        &live.vars,
    )
    .unwrap();
    for _ in 0..5 {
        let loss = live
            .model
            .forward_t(&inputs, true)
            .cross_entropy_for_logits(&labels);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
    }

    let after = snapshot(&live.vars);
    for (name, value) in snapshot(&copy.vars) {
        assert!(value.equal(&before[&name]), "{name} of the copy unchanged");
    }
    assert!(
        after
            .iter()
            .any(|(name, value)| !value.equal(&before[name])),
        "training moved the live model"
    );
    let copy_outputs = copy.model.forward_t(&inputs, false);
    assert!(copy_outputs.equal(&old_outputs));
    assert!(!copy_outputs.requires_grad());
    assert!(!live.model.forward_t(&inputs, false).equal(&old_outputs));
}

#[test]
fn parameters_are_named_and_sorted_by_name() {
    let net = network(4, &[3], 2, 0);
    let names: Vec<String> = net.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "head.bias",
            "head.weight",
            "hidden.0.bias",
            "hidden.0.weight"
        ]
    );
    let shapes: Vec<Vec<i64>> = net.parameters().iter().map(|(_, t)| t.size()).collect();
    assert_eq!(shapes, vec![vec![2], vec![2, 3], vec![3], vec![3, 4]]);
}

#[test]
fn trainable_variables_come_named_in_creation_order() {
    let net = network(4, &[3, 3], 2, 0);
    let names: Vec<String> = trainable_variables(&net.vars)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // tch's `nn::linear` creates the bias before the weight.
    assert_eq!(
        names,
        [
            "hidden.0.bias",
            "hidden.0.weight",
            "hidden.1.bias",
            "hidden.1.weight",
            "head.bias",
            "head.weight"
        ]
    );
    for (name, tensor) in trainable_variables(&net.vars) {
        assert_eq!(
            tensor.data_ptr(),
            net.vars.variables()[&name].data_ptr(),
            "{name}"
        );
    }

    // Batch norms' running statistics are buffers, not trainable variables.
    let vars = nn::VarStore::new(Device::Cpu);
    let _resnet = retain_models::ResNet::resnet18(&vars.root(), 1, 4, 10);
    let names: Vec<String> = trainable_variables(&vars)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(!names.iter().any(|n| n.contains("running")), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    let parameters: Vec<String> = named_parameters(&vars)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(sorted, parameters);
    // ResNet builds its stages before its stem: creation order is not forward order.
    assert_eq!(names[0], "layer1.0.conv1.weight");
}

/// Freezing a variable that has trained (and so has a gradient, momentum and Adam moments)
/// keeps it bit-identical from the next step on: `zero_grad` leaves gradients undefined and
/// the optimisers skip parameters without one. Gradual unfreezing's restarts rely on this.
#[test]
fn a_refrozen_variable_stays_put_under_momentum_and_adam() {
    let optimizers = [
        OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        },
        OptimizerConfig::Adam {
            lr: 0.01,
            weight_decay: 0.01,
        },
    ];
    let inputs = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25, 1.0, 1.5, -0.5, 0.0]).view([2, 4]);
    let labels = Tensor::from_slice(&[1i64, 0]);
    for config in optimizers {
        let net = network(4, &[3], 2, 3);
        let mut optimizer = build_optimizer(&config, &net.vars).unwrap();
        let step = |optimizer: &mut FlatOptimizer| {
            let loss = net
                .model
                .forward_t(&inputs, true)
                .cross_entropy_for_logits(&labels);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        };
        for _ in 0..3 {
            step(&mut optimizer);
        }
        let variables = trainable_variables(&net.vars);
        set_trainable(&variables, |name| name.starts_with("head."));
        let frozen = snapshot(&net.vars);
        for _ in 0..3 {
            step(&mut optimizer);
        }
        let after = snapshot(&net.vars);
        for name in ["hidden.0.weight", "hidden.0.bias"] {
            assert!(after[name].equal(&frozen[name]), "{name} under {config:?}");
            assert!(!net.vars.variables()[name].grad().defined(), "{name}");
        }
        assert!(!after["head.weight"].equal(&frozen["head.weight"]));
    }
}

#[test]
fn gradients_match_hand_computation_and_leave_grad_untouched() {
    let net = network(3, &[], 2, 0);
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -4.0, 0.5, 2.0]).view([2, 3]);
    // loss = Σ_b Σ_k (W x_b + c)_k, so ∂/∂W_kj = Σ_b x_bj and ∂/∂c_k = batch size.
    let loss = net.model.forward_t(&x, true).sum(Kind::Float);
    let unused = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let params: Vec<Tensor> = net
        .parameters()
        .into_iter()
        .map(|(_, t)| t)
        .chain([unused])
        .collect();
    let grads = gradients(&loss, &params).unwrap();
    assert!(grads[0].equal(&Tensor::from_slice(&[2.0f32, 2.0])));
    assert!(grads[1].equal(&Tensor::from_slice(&[-3.0f32, 2.5, 5.0, -3.0, 2.5, 5.0]).view([2, 3])));
    assert!(grads[2].equal(&Tensor::zeros([4], (Kind::Float, Device::Cpu))));
    for p in &params[..2] {
        assert!(!p.grad().defined(), "p.grad() is not written");
    }

    let frozen = net.frozen_copy().unwrap();
    let weight = frozen.vars.variables()["head.weight"].shallow_clone();
    let loss = net.model.forward_t(&x, true).sum(Kind::Float);
    assert!(gradients(&loss, &[weight]).is_err());
}

#[test]
fn task_context_samples_are_seeded_subsets_of_the_task() {
    let stream = stream(2, 10, 3);
    let net = network(3, &[], 4, 0);
    let ctx = task_context(&net, &stream, 1);
    let all = &stream.tasks[1].train_indices;
    assert_eq!(all.len(), 20);

    let sample = ctx.sample_train_indices(5, "fisher");
    assert_eq!(sample.len(), 5);
    assert!(
        sample.windows(2).all(|w| w[0] < w[1]),
        "ascending, distinct"
    );
    assert!(sample.iter().all(|i| all.contains(i)));
    assert_eq!(sample, ctx.sample_train_indices(5, "fisher"));
    assert_ne!(sample, ctx.sample_train_indices(5, "other"));
    assert_eq!(&ctx.sample_train_indices(20, "fisher"), all);
    assert_eq!(&ctx.sample_train_indices(100, "fisher"), all);

    let batch = ctx.train_batch(&sample);
    let labels: Vec<i64> = Vec::try_from(&batch.labels).unwrap();
    let expected: Vec<i64> = sample
        .iter()
        .map(|&i| i64::from(stream.train.host_labels[i as usize]))
        .collect();
    assert_eq!(labels, expected);
    // Inputs are images, [B, C, H, W]: the synthetic dataset is 1×1×3.
    assert_eq!(batch.inputs.size(), vec![5, 1, 1, 3]);
}

/// Records every hook call, and what it saw, as a line of text.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    /// A step hook (`"loss"` or `"after_backward"`) that fails at (task, step).
    fail_at: Option<(&'static str, usize, usize)>,
}

impl Recorder {
    fn fails(&self, hook: &str, ctx: &StepContext<'_>) -> Result<(), TrainError> {
        match self.fail_at {
            Some((h, task, step)) if h == hook && (task, step) == (ctx.task.index, ctx.step) => {
                Err(TrainError::Method {
                    method: "recorder".into(),
                    message: format!("{hook} failed at task {task} step {step}"),
                })
            }
            _ => Ok(()),
        }
    }
}

impl Method for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.events.push(format!("before_task {}", ctx.task.index));
        Ok(())
    }
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        self.events
            .push(format!("training_indices {}", ctx.task.index));
        // Only the first 7 samples, to check the trainer uses what this hook returns.
        ctx.task.train_indices[..7].to_vec()
    }
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        self.events.push(format!(
            "loss {} epoch {} step {} batch {}",
            ctx.task.index,
            ctx.epoch,
            ctx.step,
            batch.labels.size()[0]
        ));
        self.fails("loss", ctx)?;
        Ok(ctx.cross_entropy(batch))
    }
    fn after_backward(&mut self, ctx: &StepContext<'_>) -> Result<(), TrainError> {
        let all_defined = ctx
            .network
            .parameters()
            .iter()
            .all(|(_, p)| p.grad().defined());
        self.events.push(format!(
            "after_backward {} step {} grads {all_defined}",
            ctx.task.index, ctx.step
        ));
        self.fails("after_backward", ctx)
    }
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.events.push(format!("after_task {}", ctx.task.index));
        Ok(())
    }
}

#[test]
fn run_calls_the_hooks_in_the_documented_order() {
    let stream = stream(2, 6, 3);
    let experiment = Experiment::from_source(
        r#"
name = "order"
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 2
classes_per_task = 2
[model]
kind = "mlp"
hidden = []
[training]
batch_size = 5
epochs = 2
[method]
name = "recorder"
"#,
        "order.toml",
        &[],
    )
    .unwrap();
    let net = Network::new(&experiment, &stream);
    let mut recorder = Recorder::default();
    let outcome = run(&experiment, &stream, &net, &mut recorder, &mut Silent).unwrap();
    let mut expected = Vec::new();
    for task in 0..2 {
        expected.push(format!("before_task {task}"));
        expected.push(format!("training_indices {task}"));
        for (epoch, step, len) in [(0, 0, 5), (0, 1, 2), (1, 2, 5), (1, 3, 2)] {
            expected.push(format!("loss {task} epoch {epoch} step {step} batch {len}"));
            expected.push(format!("after_backward {task} step {step} grads true"));
        }
        expected.push(format!("after_task {task}"));
    }
    assert_eq!(recorder.events, expected);
    assert_eq!(
        outcome
            .tasks
            .iter()
            .map(|t| (t.steps, t.samples))
            .collect::<Vec<_>>(),
        [(4, 7), (4, 7)]
    );
}

/// Records every observer call as a line of text, and the losses and counts it was given.
#[derive(Default)]
struct ObserverLog {
    calls: Vec<String>,
    losses: Vec<f64>,
    /// Per evaluation: the row it reported, of every read-out.
    rows: Vec<BTreeMap<Readout, Vec<(u64, u64)>>>,
}

impl Observer for ObserverLog {
    fn task_started(&mut self, task: usize, steps: usize) {
        self.calls.push(format!("task_started {task} {steps}"));
    }
    fn step(&mut self) {
        self.calls.push("step".into());
    }
    fn epoch_finished(&mut self, e: &EpochReport) {
        self.calls.push(format!(
            "epoch_finished {} {} {}",
            e.task, e.epoch, e.run_steps
        ));
        self.losses.push(e.mean_loss);
    }
    fn evaluated(
        &mut self,
        trained: usize,
        run_steps: usize,
        counts: &BTreeMap<Readout, CountMatrix>,
    ) {
        self.calls.push(format!("evaluated {trained} {run_steps}"));
        self.rows.push(
            counts
                .iter()
                .map(|(&r, m)| (r, (0..m.tasks).map(|t| m.cell(trained, t)).collect()))
                .collect(),
        );
    }
    fn task_finished(&mut self, task: usize, _report: &TaskReport) {
        self.calls.push(format!("task_finished {task}"));
    }
}

/// The observer hears of every epoch's mean loss and every evaluation, in the documented
/// order, with the losses and counts the outcome holds; a diverging epoch is reported before
/// the run stops.
#[test]
fn the_observer_sees_every_epoch_and_evaluation_in_order() {
    let source = |lr: &str| {
        format!(
            "name = \"observed\"\ndevice = \"cpu\"\n[stream]\nkind = \"split\"\n\
             dataset = \"mnist\"\ntasks = 2\nclasses_per_task = 2\n[model]\nkind = \"mlp\"\n\
             hidden = []\n[training]\nbatch_size = 5\nepochs = 2\n\
             optimizer = {{ kind = \"sgd\", lr = {lr} }}\n[method]\nname = \"recorder\"\n"
        )
    };
    let stream = stream(2, 6, 3);
    let experiment = Experiment::from_source(&source("0.1"), "observed.toml", &[]).unwrap();
    let net = Network::new(&experiment, &stream);
    let mut observer = ObserverLog::default();
    let outcome = run(
        &experiment,
        &stream,
        &net,
        &mut Recorder::default(),
        &mut observer,
    )
    .unwrap();
    let mut expected = vec!["evaluated 0 0".to_owned()];
    for task in 0..2 {
        expected.push(format!("task_started {task} 4"));
        for epoch in 0..2 {
            expected.extend(["step".to_owned(), "step".to_owned()]);
            let run_steps = 4 * task + 2 * (epoch + 1);
            expected.push(format!("epoch_finished {task} {epoch} {run_steps}"));
        }
        expected.push(format!("evaluated {} {}", task + 1, 4 * (task + 1)));
        expected.push(format!("task_finished {task}"));
    }
    assert_eq!(observer.calls, expected);
    let losses: Vec<f64> = outcome
        .tasks
        .iter()
        .flat_map(|t| t.epoch_losses.clone())
        .collect();
    assert_eq!(observer.losses, losses);
    for (row, seen) in observer.rows.iter().enumerate() {
        for (readout, matrix) in &outcome.counts {
            let cells: Vec<(u64, u64)> = (0..2).map(|t| matrix.cell(row, t)).collect();
            assert!(cells.iter().all(|&(_, samples)| samples > 0));
            assert_eq!(seen[readout], cells, "row {row}, {readout:?}");
        }
    }

    let experiment = Experiment::from_source(&source("1e30"), "observed.toml", &[]).unwrap();
    let net = Network::new(&experiment, &stream);
    let mut observer = ObserverLog::default();
    let error = run(
        &experiment,
        &stream,
        &net,
        &mut Recorder::default(),
        &mut observer,
    )
    .expect_err("an lr of 1e30 diverges");
    assert!(error.to_string().contains("diverged"), "{error}");
    assert_eq!(
        observer.calls.last().map(String::as_str),
        Some("epoch_finished 0 0 2"),
        "{:?}",
        observer.calls
    );
    assert_eq!(observer.losses.len(), 1);
}

#[test]
fn a_failing_step_hook_stops_the_run_where_it_failed() {
    let stream = stream(2, 6, 3);
    let experiment = Experiment::from_source(
        "name = \"fail\"\ndevice = \"cpu\"\n[stream]\nkind = \"split\"\ndataset = \"mnist\"\n\
         tasks = 2\nclasses_per_task = 2\n[model]\nkind = \"mlp\"\nhidden = []\n\
         [training]\nbatch_size = 5\nepochs = 2\n[method]\nname = \"recorder\"\n",
        "fail.toml",
        &[],
    )
    .unwrap();
    for (hook, task, step) in [("loss", 1, 2), ("after_backward", 0, 1)] {
        let net = Network::new(&experiment, &stream);
        let mut recorder = Recorder {
            fail_at: Some((hook, task, step)),
            ..Recorder::default()
        };
        let error = run(&experiment, &stream, &net, &mut recorder, &mut Silent)
            .err()
            .unwrap_or_else(|| panic!("{hook} failed, yet the run completed"));
        assert_eq!(
            error.to_string(),
            format!("method `recorder` failed: {hook} failed at task {task} step {step}")
        );
        // Nothing ran after the failing hook.
        let last = recorder.events.last().unwrap();
        assert!(last.starts_with(&format!("{hook} {task} ")), "{last}");
        assert!(last.contains(&format!("step {step}")), "{last}");
    }
}

#[test]
fn default_state_is_empty_and_only_empty_state_loads() {
    let mut recorder = Recorder::default();
    assert!(recorder.state().is_empty());
    recorder.load_state(Vec::new()).unwrap();
    let error = recorder
        .load_state(vec![("fisher.head.weight".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `recorder` failed: keeps no state but the checkpoint holds `fisher.head.weight`"
    );
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("retain-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_saved_network_loads_into_a_fresh_one_with_identical_outputs() {
    let trained = network(4, &[6], 3, 1);
    let fresh = network(4, &[6], 3, 2);
    let xs = seeded_normal(&[5, 1, 1, 4], 3);
    let expected = trained.model.forward_t(&xs, false);
    let path = temp_path("network.safetensors");
    trained.save(&path).unwrap();
    fresh.load(&path).unwrap();
    assert!(fresh.model.forward_t(&xs, false).equal(&expected));
    // A network of another shape refuses the file and says why.
    let other = network(4, &[7], 3, 3);
    let error = TrainError::from(other.load(&path).unwrap_err()).to_string();
    assert!(
        error.contains(
            "shape of hidden.0.bias: expected [7], file has [6]; shape of hidden.0.weight: expected [7, 4], file has [6, 4]"
        ),
        "{error}"
    );
}

/// A method whose state is one tensor, `seen`.
struct Stateful {
    seen: Tensor,
}

impl Method for Stateful {
    fn name(&self) -> &str {
        "stateful"
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("seen".into(), self.seen.shallow_clone())]
    }
    fn load_state(&mut self, mut state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let (name, seen) = state.pop().unwrap();
        assert_eq!(name, "seen");
        self.seen = seen;
        Ok(())
    }
}

#[test]
fn method_state_round_trips_through_a_file() {
    let saved = Stateful {
        seen: Tensor::from_slice(&[1.5f32, -2.0, 3.25]),
    };
    let path = temp_path("method.safetensors");
    save_method_state(&saved, &path).unwrap();
    let mut restored = Stateful {
        seen: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    };
    load_method_state(&mut restored, &path, Device::Cpu).unwrap();
    assert!(restored.seen.equal(&saved.seen));
    // A stateless method refuses that file, naming the tensor.
    let error = load_method_state(&mut Recorder::default(), &path, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `recorder` failed: keeps no state but the checkpoint holds `seen`"
    );
    // And a stateless method's file is empty and loads back.
    let empty = temp_path("empty.safetensors");
    save_method_state(&Recorder::default(), &empty).unwrap();
    load_method_state(&mut Recorder::default(), &empty, Device::Cpu).unwrap();
}

/// Records `select` calls; claims every read-out and infers the constant task `id`. With
/// `shared`, its weights do not depend on the task (no `select` calls).
#[derive(Default)]
struct Selector {
    events: Vec<Selection>,
    id: i64,
    inferences: usize,
    shared: bool,
}

impl Method for Selector {
    fn name(&self) -> &str {
        "selector"
    }
    fn uses_task_id(&self) -> bool {
        !self.shared
    }
    fn supports_readout(&self, _readout: Readout) -> bool {
        true
    }
    fn select(&mut self, _network: &Network, selection: Selection) -> Result<(), TrainError> {
        self.events.push(selection);
        Ok(())
    }
    fn infer_task(&mut self, _network: &Network, inputs: &Tensor) -> Option<Tensor> {
        self.inferences += 1;
        Some(Tensor::full(
            [inputs.size()[0]],
            self.id,
            (Kind::Int64, inputs.device()),
        ))
    }
}

#[test]
fn evaluation_selects_the_true_task_for_task_il_only() {
    use Selection::{Latest, Task};
    let stream = stream(2, 6, 3);
    let net = network(3, &[], 4, 0);
    let readouts = [Readout::ClassIl, Readout::TaskIl];
    let mut selector = Selector::default();
    let with = evaluate_with(&net, &stream, &readouts, 4, 0, &mut selector).unwrap();
    assert_eq!(
        selector.events,
        [Latest, Task(0), Latest, Task(1), Latest],
        "per task: no id for class-IL, the true id for task-IL; then back to no id"
    );
    // With hooks that change nothing, the counts equal those of plain evaluation.
    assert_eq!(with, evaluate(&net, &stream, &readouts, 4));
    // Only class-IL: no task is ever selected.
    let mut selector = Selector::default();
    evaluate_with(&net, &stream, &[Readout::ClassIl], 4, 0, &mut selector).unwrap();
    assert_eq!(selector.events, [Latest, Latest, Latest]);
    // A method that does not use the task id is never asked.
    let mut recorder = Recorder::default();
    evaluate_with(&net, &stream, &readouts, 4, 0, &mut recorder).unwrap();
    assert!(recorder.events.is_empty());
}

const ALL_READOUTS: [Readout; 5] = [
    Readout::ClassIl,
    Readout::TaskIl,
    Readout::Merged,
    Readout::TaskInferred,
    Readout::TaskInference,
];

#[test]
fn evaluation_selects_merged_and_every_trained_task_for_inferred_ids() {
    use Selection::{Latest, Merged, Task};
    let stream = stream(3, 6, 3);
    let net = network(3, &[], 6, 1);
    let mut selector = Selector::default();
    evaluate_with(&net, &stream, &ALL_READOUTS, 4, 2, &mut selector).unwrap();
    // Per task: latest (class-IL, inference), the true task (task-IL), merged, then every
    // trained task (task-inferred); latest again at the end.
    let mut expected = Vec::new();
    for task in 0..3 {
        expected.extend([Latest, Task(task), Merged, Task(0), Task(1)]);
    }
    expected.push(Latest);
    assert_eq!(selector.events, expected);
    // Ids are inferred once per batch (12 samples per task: three batches of 4), under
    // `Latest`.
    assert_eq!(selector.inferences, 3 * 3);
}

#[test]
fn inferred_ids_choose_the_task_whose_mask_and_weights_read_each_sample_out() {
    let stream = stream(3, 6, 3);
    let net = network(3, &[], 6, 2);
    let plain = evaluate(&net, &stream, &[Readout::ClassIl, Readout::TaskIl], 4);
    let (class_il, task_il) = (&plain[&Readout::ClassIl], &plain[&Readout::TaskIl]);
    let samples = |task: usize| task_il[task].1;
    // Every sample inferred to be of task 1, after two tasks: task 1 is read out as task-IL,
    // the others' samples get task 1's classes and are all wrong.
    let mut selector = Selector {
        id: 1,
        ..Selector::default()
    };
    let got = evaluate_with(&net, &stream, &ALL_READOUTS, 4, 2, &mut selector).unwrap();
    // A method whose weights do not depend on the task gets the same from one pass per batch.
    let mut shared = Selector {
        id: 1,
        shared: true,
        ..Selector::default()
    };
    let once = evaluate_with(&net, &stream, &ALL_READOUTS, 4, 2, &mut shared).unwrap();
    assert_eq!(once, got);
    assert!(shared.events.is_empty());
    assert_eq!(
        got[&Readout::TaskInference],
        [(0, samples(0)), (samples(1), samples(1)), (0, samples(2))]
    );
    assert_eq!(
        got[&Readout::TaskInferred],
        [(0, samples(0)), task_il[1], (0, samples(2))]
    );
    // Select changes nothing here, so merged is the class-IL read-out.
    assert_eq!(&got[&Readout::Merged], class_il);
    // An id naming no trained task (task 2 after two tasks) is a miss everywhere.
    let mut selector = Selector {
        id: 2,
        ..Selector::default()
    };
    let got = evaluate_with(&net, &stream, &ALL_READOUTS, 4, 2, &mut selector).unwrap();
    assert!(got[&Readout::TaskInferred].iter().all(|&(c, _)| c == 0));
    // Before training: nothing is inferred; task-inferred is the class-IL arg-max.
    let mut selector = Selector::default();
    let got = evaluate_with(&net, &stream, &ALL_READOUTS, 4, 0, &mut selector).unwrap();
    assert_eq!(selector.inferences, 0);
    assert_eq!(&got[&Readout::TaskInferred], class_il);
    assert!(got[&Readout::TaskInference].iter().all(|&(c, _)| c == 0));
}

#[test]
fn an_unsupported_readout_is_refused_before_training() {
    let stream = stream(2, 6, 3);
    let net = network(3, &[], 4, 3);
    let error = evaluate_with(
        &net,
        &stream,
        &[Readout::Merged],
        4,
        0,
        &mut Recorder::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        "read-out `merged` is not available with method `recorder`: it needs a method with per-task weights that it can merge"
    );
    let experiment = Experiment::from_source(
        r#"
name = "unsupported"
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 2
classes_per_task = 2
readouts = ["class_il", "task_inferred"]
[model]
kind = "mlp"
hidden = []
[method]
name = "recorder"
"#,
        "unsupported.toml",
        &[],
    )
    .unwrap();
    let mut recorder = Recorder::default();
    let error = run(&experiment, &stream, &net, &mut recorder, &mut Silent)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "read-out `task_inferred` is not available with method `recorder`: it needs a method that infers each test sample's task from its inputs"
    );
    assert!(
        recorder.events.is_empty(),
        "no hook ran: {:?}",
        recorder.events
    );
}

/// Records, in the second task, the parameters before training, the first step's gradient
/// and the parameters after that step.
struct FirstStepProbe {
    fresh: bool,
    before: Option<Tensor>,
    gradient: Option<Tensor>,
    after: Option<Tensor>,
}

fn flat(network: &Network, gradients: bool) -> Tensor {
    let parts: Vec<Tensor> = network
        .parameters()
        .iter()
        .map(|(_, p)| {
            let t = if gradients {
                p.grad()
            } else {
                p.shallow_clone()
            };
            t.detach().flatten(0, -1)
        })
        .collect();
    Tensor::cat(&parts, 0).copy()
}

impl Method for FirstStepProbe {
    fn name(&self) -> &str {
        "probe"
    }
    fn fresh_optimizer_each_task(&self) -> bool {
        self.fresh
    }
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        if ctx.task.index == 1 && ctx.step == 0 {
            self.before = Some(flat(ctx.network, false));
        }
        if ctx.task.index == 1 && ctx.step == 1 {
            self.after = Some(flat(ctx.network, false));
        }
        Ok(ctx.cross_entropy(batch))
    }
    fn after_backward(&mut self, ctx: &StepContext<'_>) -> Result<(), TrainError> {
        if ctx.task.index == 1 && ctx.step == 0 {
            self.gradient = Some(flat(ctx.network, true));
        }
        Ok(())
    }
}

/// With SGD momentum, a fresh optimiser makes the second task's first update exactly
/// `−lr · g` (PyTorch starts the momentum buffer at the first gradient); the run's single
/// optimiser adds the previous task's momentum.
#[test]
fn a_fresh_optimiser_per_task_forgets_the_previous_momentum() {
    let stream = stream(2, 6, 3);
    let experiment = Experiment::from_source(
        r#"
name = "fresh"
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 2
classes_per_task = 2
[model]
kind = "mlp"
hidden = [4]
[training]
batch_size = 4
epochs = 1
[training.optimizer]
kind = "sgd"
lr = 0.1
momentum = 0.9
[method]
name = "probe"
"#,
        "fresh.toml",
        &[],
    )
    .unwrap();
    for fresh in [true, false] {
        let net = Network::new(&experiment, &stream);
        let mut probe = FirstStepProbe {
            fresh,
            before: None,
            gradient: None,
            after: None,
        };
        run(&experiment, &stream, &net, &mut probe, &mut Silent).unwrap();
        let expected = probe.before.unwrap() - probe.gradient.unwrap() * 0.1;
        let step_matches = probe.after.unwrap().allclose(&expected, 1e-6, 1e-7, false);
        assert_eq!(step_matches, fresh, "fresh optimiser: {fresh}");
    }
}

/// `[training] flat_optimizer = false` trains with libtorch's per-tensor optimiser; both give
/// the same weights (same arithmetic, different kernels), for SGD with momentum and for Adam.
#[test]
fn flat_and_per_tensor_optimisers_train_the_same_weights() {
    let stream = stream(2, 6, 3);
    for optimizer in [
        "{ kind = \"sgd\", lr = 0.1, momentum = 0.9, weight_decay = 0.01 }",
        "{ kind = \"adam\", lr = 0.01, weight_decay = 0.01 }",
    ] {
        let finals: Vec<BTreeMap<String, Tensor>> = [true, false]
            .iter()
            .map(|flat| {
                let experiment = Experiment::from_source(
                    "name = \"flat\"\ndevice = \"cpu\"\n[stream]\nkind = \"split\"\n\
                     dataset = \"mnist\"\ntasks = 2\nclasses_per_task = 2\n[model]\n\
                     kind = \"mlp\"\nhidden = [5]\n[training]\nbatch_size = 3\nepochs = 2\n\
                     [method]\nname = \"naive\"\n",
                    "flat.toml",
                    &[
                        format!("training.optimizer={optimizer}"),
                        format!("training.flat_optimizer={flat}"),
                    ],
                )
                .unwrap();
                assert_eq!(experiment.training.flat_optimizer, *flat);
                let net = Network::new(&experiment, &stream);
                let initial = snapshot(&net.vars);
                let mut method = Recorder::default();
                run(&experiment, &stream, &net, &mut method, &mut Silent).unwrap();
                let trained = snapshot(&net.vars);
                assert!(!trained["head.weight"].equal(&initial["head.weight"]));
                trained
            })
            .collect();
        for (name, flat) in &finals[0] {
            let per_tensor = &finals[1][name];
            let worst = (flat - per_tensor).abs().max().double_value(&[]);
            assert!(worst < 1e-5, "{optimizer}: {name} differs by {worst}");
        }
        assert!(
            !finals[0]["head.weight"]
                .equal(&network(3, &[5], 4, 0).vars.variables()["head.weight"])
        );
    }
}

#[test]
fn task_il_loss_keeps_only_the_samples_own_task_in_the_softmax() {
    // 5 tasks of classes (0,1), (2,3), …; logits 0 except class 1 (ln 3) and class 4 (ln 5).
    let stream = stream(5, 3, 4);
    let mut row = vec![0f32; 10];
    row[1] = 3f32.ln();
    row[4] = 5f32.ln();
    let logits = Tensor::from_slice(&[row.clone(), row].concat()).view([2, 10]);
    let labels = Tensor::from_slice(&[1i64, 4]);
    let ce = |loss| training_loss(loss, &stream, &logits, &labels).double_value(&[]);
    // All classes: p(1) = 3/16, p(4) = 5/16.
    let class_il = ((16f64 / 3.0).ln() + (16f64 / 5.0).ln()) / 2.0;
    assert!((ce(TrainingLoss::ClassIl) - class_il).abs() < 1e-6);
    // Own task only: p(1) = 3/(1 + 3) among {0, 1}, p(4) = 5/(5 + 1) among {4, 5}.
    let task_il = ((4f64 / 3.0).ln() + (6f64 / 5.0).ln()) / 2.0;
    assert!((ce(TrainingLoss::TaskIl) - task_il).abs() < 1e-6);
    // The other tasks' outputs get no gradient.
    let logits = logits.set_requires_grad(true);
    training_loss(TrainingLoss::TaskIl, &stream, &logits, &labels).backward();
    let grad = logits.grad();
    let outside = Tensor::from_slice(&[2i64, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        grad.get(0)
            .index_select(0, &outside)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    assert!(grad.get(0).get(1).double_value(&[]) < 0.0);
}

/// Cross-entropy only, declared capturable: the trainer's own step under a CUDA graph.
struct CapturablePlain;

impl Method for CapturablePlain {
    fn name(&self) -> &str {
        "capturable-plain"
    }
    fn capturable(&self) -> bool {
        true
    }
}

/// Trains two tasks (18 steps each, Adam, one partial batch per epoch) with
/// `[training] cuda_graph` on or off on `device`; the outcome and the trained parameters.
fn train_with_graphs(
    device: Device,
    cuda_graph: bool,
) -> (RunOutcome, std::collections::BTreeMap<String, Tensor>) {
    let experiment = crate::testkit::split_mnist_with(
        "kind = \"mlp\"\nhidden = [32]",
        2,
        55,
        20,
        3,
        "name = \"naive\"",
        &[
            "training.epochs=3",
            &format!("training.cuda_graph={cuda_graph}"),
        ],
    );
    let dataset = crate::testkit::synthetic_dataset(10, 30, 16);
    let stream = TaskStream::build(&dataset, &experiment.stream, experiment.seed, device).unwrap();
    let network = Network::new(&experiment, &stream);
    let outcome = crate::run(
        &experiment,
        &stream,
        &network,
        &mut CapturablePlain,
        &mut Silent,
    )
    .unwrap();
    (outcome, crate::testkit::snapshot(&network))
}

/// On the CPU every step is eager and the manifest's reason says why; on CUDA the graphed
/// run takes the same steps as the eager one and ends with the same parameters and losses
/// (to float tolerance: Adam's bias corrections move to the device). The CUDA half runs where
/// CUDA exists; `RETAIN_REQUIRE_CUDA=1` makes its absence a failure.
#[test]
fn graphed_steps_train_as_eager_steps_do() {
    let (cpu, _) = train_with_graphs(Device::Cpu, true);
    assert_eq!(cpu.execution.graphed_steps, 0);
    assert_eq!(cpu.execution.eager_steps, 36);
    assert!(
        cpu.execution
            .eager_reason
            .as_deref()
            .is_some_and(|r| r.contains("not a CUDA device")),
        "{:?}",
        cpu.execution
    );
    if !tch::Cuda::is_available() {
        assert!(
            std::env::var_os("RETAIN_REQUIRE_CUDA").is_none(),
            "RETAIN_REQUIRE_CUDA is set but no CUDA device is visible"
        );
        eprintln!("CUDA half skipped: no CUDA device");
        return;
    }
    let device = Device::Cuda(0);
    let (eager, eager_params) = train_with_graphs(device, false);
    let (graphed, graphed_params) = train_with_graphs(device, true);
    assert_eq!(eager.execution.graphed_steps, 0);
    assert_eq!(
        graphed.execution.eager_reason, None,
        "{:?}",
        graphed.execution
    );
    // Per task and epoch 6 batches, the last partial (55 = 5·10 + 5): 5 full, 1 eager; the
    // first two full batches of a task warm up eagerly.
    assert_eq!(graphed.execution.graphed_steps, 2 * (15 - 2));
    assert_eq!(graphed.execution.eager_steps, 2 * (3 + 2));
    for (a, b) in eager.tasks.iter().zip(&graphed.tasks) {
        assert_eq!(a.steps, b.steps);
        for (x, y) in a.epoch_losses.iter().zip(&b.epoch_losses) {
            assert!((x - y).abs() < 1e-5, "eager {x} vs graphed {y}");
        }
    }
    for (name, eager) in &eager_params {
        let diff = (eager - &graphed_params[name])
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{name}: eager and graphed differ by {diff}");
    }
}

/// `[training] precision = "bf16"` runs the training forward pass under autocast: the run
/// learns real MNIST as the float32 run does (task-IL accuracy well above chance and within a
/// few points of float32), its weights differ from float32's (the autocast region took
/// effect), and weights and gradients stay float32 (the master copy the optimiser updates).
#[test]
fn bf16_training_learns_and_keeps_float32_master_weights() {
    crate::testkit::single_threaded();
    let dataset = crate::testkit::mnist();
    let train = |precision: &str| {
        let experiment = crate::testkit::split_mnist(
            2,
            1000,
            500,
            0,
            "name = \"naive\"",
            &[&format!("training.precision=\"{precision}\"")],
        );
        assert_eq!(experiment.training.precision.as_str(), precision);
        let (stream, network) = crate::testkit::stream_and_network(&experiment, &dataset);
        let outcome = crate::run(
            &experiment,
            &stream,
            &network,
            &mut CapturablePlain,
            &mut Silent,
        )
        .unwrap();
        let task_il = outcome.counts[&Readout::TaskIl].accuracy().unwrap();
        (task_il, network)
    };
    let (fp32_acc, fp32) = train("fp32");
    let (bf16_acc, bf16) = train("bf16");
    // Each task just learned, and the whole final row, as float32 has them.
    for (task, (b, f)) in bf16_acc
        .diagonal()
        .iter()
        .zip(fp32_acc.diagonal())
        .enumerate()
    {
        assert!(*b > 0.95, "bf16 learned task {task} to {b} only (fp32 {f})");
        assert!((b - f).abs() < 0.02, "task {task}: bf16 {b} vs fp32 {f}");
    }
    assert!(
        (bf16_acc.acc() - fp32_acc.acc()).abs() < 0.05,
        "final ACC: bf16 {} vs fp32 {}",
        bf16_acc.acc(),
        fp32_acc.acc()
    );
    let fp32_vars = fp32.vars.variables();
    let mut largest_difference = 0f64;
    for (name, weight) in bf16.vars.variables() {
        assert_eq!(weight.kind(), Kind::Float, "{name}");
        let grad = weight.grad();
        assert!(grad.defined(), "{name} has no gradient");
        assert_eq!(grad.kind(), Kind::Float, "{name}'s gradient");
        let difference = (&weight - &fp32_vars[&name]).abs().max().double_value(&[]);
        largest_difference = largest_difference.max(difference);
    }
    assert!(
        largest_difference > 1e-4,
        "bf16 training moved no weight differently from fp32 ({largest_difference})"
    );
}

/// `[training] memory_format = "channels_last"` lays out the ResNet's convolution weights
/// channels-last for the whole run (the flat optimiser's views keep the layout), and the
/// gradients of the channels-last network are the contiguous network's to float tolerance
/// (the convolutions run other kernels). Whole runs are compared by their losses only: batch
/// norms over a few channels at batch 10 amplify the kernels' rounding differences step by
/// step (measured: libtorch's per-tensor optimiser drifts as much as the flat one), and at
/// `nf = 2` plain PyTorch's own channels-last and contiguous gradients of one set of weights
/// differ by up to 15%.
#[test]
fn channels_last_training_keeps_the_layout_and_matches_contiguous_gradients() {
    let dataset = crate::testkit::mnist();
    let experiment = |format: &str| {
        crate::testkit::split_mnist_with(
            "kind = \"resnet18\"\nnf = 4",
            2,
            40,
            20,
            0,
            "name = \"naive\"",
            &[
                &format!("training.memory_format=\"{format}\""),
                "training.optimizer={ kind = \"sgd\", lr = 0.01, momentum = 0.5 }",
            ],
        )
    };
    // One backward pass from the same weights.
    let (stream, contiguous) =
        crate::testkit::stream_and_network(&experiment("contiguous"), &dataset);
    let channels_last = Network::new(&experiment("channels_last"), &stream);
    channels_last.set_memory_format(MemoryFormat::ChannelsLast);
    let inputs = crate::testkit::seeded_normal(&[10, 1, 28, 28], 3);
    let labels = Tensor::arange(10, (Kind::Int64, Device::Cpu));
    for network in [&contiguous, &channels_last] {
        network
            .model
            .forward_t(&inputs, true)
            .cross_entropy_for_logits(&labels)
            .backward();
    }
    let reference = contiguous.vars.variables();
    for (name, weight) in channels_last.vars.variables() {
        let (grad, expected) = (weight.grad(), reference[&name].grad());
        if !weight.requires_grad() {
            continue; // batch-norm running statistics
        }
        let scale = expected.abs().max().double_value(&[]);
        let worst = (&grad - &expected).abs().max().double_value(&[]);
        assert!(
            worst < 1e-4 * scale,
            "{name}'s gradient differs by {worst} (of {scale})"
        );
    }
    // Whole runs: the layout stays, the losses agree.
    let train = |format: &str| {
        let experiment = experiment(format);
        let (stream, network) = crate::testkit::stream_and_network(&experiment, &dataset);
        let outcome = crate::run(
            &experiment,
            &stream,
            &network,
            &mut CapturablePlain,
            &mut Silent,
        )
        .unwrap();
        (outcome, network)
    };
    let (contiguous_run, contiguous) = train("contiguous");
    let (channels_last_run, channels_last) = train("channels_last");
    let reference = contiguous.vars.variables();
    let mut convolutions = 0;
    for (name, weight) in channels_last.vars.variables() {
        if weight.dim() != 4 {
            continue;
        }
        convolutions += 1;
        assert!(
            crate::optim::is_channels_last(&weight),
            "{name} is {:?}-strided",
            weight.stride()
        );
        let size = weight.size();
        if size[1] > 1 && size[2] * size[3] > 1 {
            assert!(!crate::optim::is_channels_last(&reference[&name]), "{name}");
        }
    }
    assert!(convolutions >= 20, "{convolutions} convolutions");
    for (a, b) in contiguous_run.tasks.iter().zip(&channels_last_run.tasks) {
        for (x, y) in a.epoch_losses.iter().zip(&b.epoch_losses) {
            assert!(
                (x - y).abs() < 0.01 * x.abs(),
                "contiguous loss {x}, channels-last {y}"
            );
        }
    }
}

/// Scores every sample as class `eval_class` in the network read-outs and as `ncm_class` in
/// the nearest-mean read-out (when it has one).
struct Scorer {
    eval_class: i64,
    ncm_class: Option<i64>,
}

impl Scorer {
    fn one_hot(inputs: &Tensor, class: i64, classes: i64) -> Tensor {
        Tensor::zeros([inputs.size()[0], classes], (Kind::Float, inputs.device())).index_fill(
            1,
            &Tensor::from_slice(&[class]),
            1.0,
        )
    }
}

impl Method for Scorer {
    fn name(&self) -> &str {
        "scorer"
    }
    fn supports_readout(&self, readout: Readout) -> bool {
        matches!(readout, Readout::ClassIl | Readout::TaskIl | Readout::Ncm)
    }
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let classes = network.model.outputs() as i64;
        Some(Self::one_hot(inputs, self.eval_class, classes))
    }
    fn ncm_scores(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let classes = network.model.outputs() as i64;
        self.ncm_class
            .map(|class| Self::one_hot(inputs, class, classes))
    }
}

/// How many of each task's evaluation samples have label `class`.
fn label_counts(stream: &TaskStream, class: i64) -> Vec<u64> {
    stream
        .tasks
        .iter()
        .map(|task| {
            let (split, indices, _) = stream.evaluation_set(task);
            let labels = stream.task_batch(split, task.index, indices).labels;
            labels.eq(class).sum(Kind::Int64).int64_value(&[]) as u64
        })
        .collect()
}

#[test]
fn a_method_with_its_own_scores_is_read_out_from_them_and_from_its_class_means() {
    let stream = stream(2, 6, 3);
    let net = network(3, &[], 4, 4);
    let readouts = [Readout::ClassIl, Readout::TaskIl, Readout::Ncm];
    let mut scorer = Scorer {
        eval_class: 2,
        ncm_class: Some(1),
    };
    let got = evaluate_with(&net, &stream, &readouts, 4, 1, &mut scorer).unwrap();
    let hits = |readout: Readout| got[&readout].iter().map(|&(c, _)| c).collect::<Vec<_>>();
    // Class-IL: every sample predicted as class 2, which only task 1 holds.
    assert_eq!(hits(Readout::ClassIl), label_counts(&stream, 2));
    assert_eq!(hits(Readout::ClassIl)[0], 0);
    // Task-IL masks the same scores to the task's classes: class 2 in task 1; in task 0 every
    // remaining score ties at 0 and the first of its classes (0) is predicted.
    let task_il = [label_counts(&stream, 0)[0], label_counts(&stream, 2)[1]];
    assert_eq!(hits(Readout::TaskIl), task_il);
    // The nearest-mean read-out from its own scores: class 1, in task 0 only.
    assert_eq!(hits(Readout::Ncm), label_counts(&stream, 1));
    assert!(hits(Readout::Ncm)[0] > 0);
    // Before any task is trained there are no class means: the read-out is the arg-max of
    // the method's scores.
    let before = evaluate_with(&net, &stream, &readouts, 4, 0, &mut scorer).unwrap();
    assert_eq!(before[&Readout::Ncm], before[&Readout::ClassIl]);
    // A method that claims the read-out but gives no scores fails the evaluation.
    let mut silent = Scorer {
        eval_class: 2,
        ncm_class: None,
    };
    let error = evaluate_with(&net, &stream, &readouts, 4, 1, &mut silent)
        .unwrap_err()
        .to_string();
    assert!(error.contains("gave no nearest-mean scores"), "{error}");
    // And a method without it is refused the read-out.
    let error = evaluate_with(
        &net,
        &stream,
        &[Readout::Ncm],
        4,
        1,
        &mut Recorder::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("keeps exemplars and their class means"),
        "{error}"
    );
}

/// The testkit's pre-trained runs: the network learns the stage's classes first, then the
/// stream's; the stage's own accuracy says it learned them.
#[test]
fn a_testkit_run_after_its_pretrain_stage_starts_from_the_stage_weights() {
    let experiment = crate::testkit::split_mnist_with(
        "kind = \"mlp\"\nhidden = [100]",
        2,
        300,
        200,
        0,
        "name = \"plain\"",
        &[
            "stream.class_order=[5, 6, 7, 8, 9, 0, 1, 2, 3, 4]",
            "pretrain={classes=[0, 1, 2, 3, 4], epochs=1, batch_size=32, optimizer={kind=\"adam\", lr=0.001}}",
        ],
    );
    let (stage, matrices) = crate::testkit::run_on_pretrained(
        &experiment,
        &crate::testkit::mnist(),
        &mut CapturablePlain,
    )
    .unwrap();
    assert!(stage > 0.9, "the stage learned digits 0-4: {stage}");
    // Row 0 (before the stream's training) reads classes 5-8 out of a network that knows
    // only 0-4: near nothing right.
    let class_il = &matrices[&Readout::ClassIl];
    assert!(class_il.untrained(1) < 0.1, "{class_il:?}");
    assert!(class_il.r(1, 1) > 0.8, "{class_il:?}");
}

/// Cross-entropy training that records every training index it was fed.
#[derive(Default)]
struct IndexRecorder {
    /// Per task: the indices of every batch, in order.
    fed: BTreeMap<usize, Vec<i64>>,
}

impl Method for IndexRecorder {
    fn name(&self) -> &str {
        "index-recorder"
    }
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let indices = Vec::<i64>::try_from(ctx.indices).unwrap();
        self.fed.entry(ctx.task.index).or_default().extend(indices);
        Ok(ctx.cross_entropy(batch))
    }
}

/// Also records the anytime evaluations it hears of.
#[derive(Default)]
struct AnytimeLog {
    calls: Vec<String>,
    heard: Vec<AnytimeEvaluation>,
}

impl Observer for AnytimeLog {
    fn step(&mut self) {
        self.calls.push("step".into());
    }
    fn anytime_evaluated(&mut self, evaluation: &AnytimeEvaluation) {
        self.calls.push(format!(
            "anytime {} {}",
            evaluation.run_step, evaluation.task
        ));
        self.heard.push(evaluation.clone());
    }
    fn evaluated(&mut self, trained: usize, run_steps: usize, _: &BTreeMap<Readout, CountMatrix>) {
        self.calls.push(format!("evaluated {trained} {run_steps}"));
    }
}

fn online_experiment(extra: &str) -> Experiment {
    Experiment::from_source(
        &format!(
            "name = \"online\"\ndevice = \"cpu\"\n[stream]\nkind = \"split\"\n\
             dataset = \"mnist\"\ntasks = 3\nclasses_per_task = 2\n[model]\nkind = \"mlp\"\n\
             hidden = []\n[training]\nbatch_size = 5\nepochs = 1\n{extra}\n\
             [method]\nname = \"index-recorder\"\n"
        ),
        "online.toml",
        &[],
    )
    .unwrap()
}

/// An online run feeds every training sample exactly once, evaluates every task in every
/// read-out after every `eval_every` steps of the run (⌊steps / eval_every⌋ times), and
/// trains exactly as the offline run of one epoch does.
#[test]
fn an_online_run_sees_every_sample_once_and_evaluates_every_eval_every_steps() {
    let stream = stream(3, 6, 3);
    let online = online_experiment("online = true\neval_every = 2");
    let net = Network::new(&online, &stream);
    let mut method = IndexRecorder::default();
    let mut observer = AnytimeLog::default();
    let outcome = run(&online, &stream, &net, &mut method, &mut observer).unwrap();

    // Every training index of each task, exactly once.
    for task in &stream.tasks {
        let mut fed = method.fed[&task.index].clone();
        fed.sort_unstable();
        let mut expected = task.train_indices.clone();
        expected.sort_unstable();
        assert_eq!(fed, expected, "task {}", task.index);
    }
    assert_eq!(method.fed.len(), 3);

    // 12 samples per task in batches of 5: 3 steps each, 9 in the run; evaluations after
    // run steps 2, 4, 6, 8, while tasks 0, 1, 1, 2 train.
    let steps: Vec<usize> = outcome.tasks.iter().map(|t| t.steps).collect();
    assert_eq!(steps, [3, 3, 3]);
    let at: Vec<(usize, usize)> = outcome
        .anytime
        .iter()
        .map(|e| (e.run_step, e.task))
        .collect();
    assert_eq!(at, [(2, 0), (4, 1), (6, 1), (8, 2)]);
    assert_eq!(outcome.anytime.len(), outcome.steps() / 2);
    for evaluation in &outcome.anytime {
        assert_eq!(
            evaluation.counts.keys().copied().collect::<Vec<_>>(),
            [Readout::ClassIl, Readout::TaskIl]
        );
        for per_task in evaluation.counts.values() {
            assert_eq!(per_task.len(), 3);
            for (task, &(correct, samples)) in per_task.iter().enumerate() {
                let (_, _, expected) = stream.evaluation_set(&stream.tasks[task]);
                assert_eq!(samples, expected as u64);
                assert!(correct <= samples);
            }
        }
    }
    // The observer heard each, between the steps, in order.
    assert_eq!(observer.heard, outcome.anytime);
    let mut expected = vec!["evaluated 0 0".to_owned()];
    for run_step in 1..=9 {
        expected.push("step".into());
        if run_step % 2 == 0 {
            let e = &outcome.anytime[run_step / 2 - 1];
            expected.push(format!("anytime {run_step} {}", e.task));
        }
        if run_step % 3 == 0 {
            expected.push(format!("evaluated {} {run_step}", run_step / 3));
        }
    }
    assert_eq!(observer.calls, expected);

    // Evaluating between steps changes no weight: the offline run of one epoch ends alike.
    let offline = online_experiment("");
    let offline_net = Network::new(&offline, &stream);
    let offline_outcome = run(
        &offline,
        &stream,
        &offline_net,
        &mut IndexRecorder::default(),
        &mut Silent,
    )
    .unwrap();
    assert!(offline_outcome.anytime.is_empty());
    assert_eq!(offline_outcome.counts, outcome.counts);
    for (name, value) in snapshot(&net.vars) {
        assert!(value.equal(&snapshot(&offline_net.vars)[&name]), "{name}");
    }
}

/// An anytime evaluation at a task's last step sees the weights the task's own evaluation
/// sees (the method has no `after_task`), and the online metrics follow from the records.
#[test]
fn an_anytime_evaluation_at_a_task_end_matches_the_tasks_evaluation() {
    let stream = stream(3, 6, 3);
    let online = online_experiment("online = true\neval_every = 3");
    let net = Network::new(&online, &stream);
    let outcome = run(
        &online,
        &stream,
        &net,
        &mut IndexRecorder::default(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(outcome.anytime.len(), 3);
    for (k, evaluation) in outcome.anytime.iter().enumerate() {
        assert_eq!((evaluation.run_step, evaluation.task), (3 * (k + 1), k));
        for (readout, matrix) in &outcome.counts {
            let row: Vec<(u64, u64)> = (0..3).map(|t| matrix.cell(k + 1, t)).collect();
            assert_eq!(
                evaluation.counts[readout], row,
                "{readout:?} after task {k}"
            );
        }
    }
    // AAA: mean over points of the mean accuracy on tasks 0..=k, here the rows R[k+1].
    let matrix = outcome.counts[&Readout::ClassIl].accuracy().unwrap();
    let aaa = (0..3)
        .map(|k| matrix.row(k + 1)[..=k].iter().sum::<f64>() / (k + 1) as f64)
        .sum::<f64>()
        / 3.0;
    // LCA_1: b = 0 and 1 hold the accuracy before each task (row k, column k).
    let lca1 = (0..3).map(|k| matrix.row(k)[k]).sum::<f64>() / 3.0;
    let (got_aaa, got_lca) = outcome.anytime_metrics(Readout::ClassIl, 1);
    assert!((got_aaa.unwrap() - aaa).abs() < 1e-12);
    assert!((got_lca.unwrap() - lca1).abs() < 1e-12);
    // LCA_3: b = 3 is the task's end, where the after-task accuracy comes last.
    let lca3 = (0..3)
        .map(|k| 3.0 * matrix.row(k)[k] + matrix.row(k + 1)[k])
        .sum::<f64>()
        / 12.0;
    let (_, got_lca) = outcome.anytime_metrics(Readout::ClassIl, 3);
    assert!((got_lca.unwrap() - lca3).abs() < 1e-12);
}

/// A checkpoint's progress keeps an online run's anytime evaluations.
#[test]
fn anytime_evaluations_round_trip_through_a_checkpoints_progress() {
    let progress = resume::Progress {
        config_hash: "h".into(),
        tasks_done: 1,
        run_steps: 4,
        graphed_steps: 0,
        eager_steps: 4,
        first_loss: Some(1.0),
        initial_eval_seconds: 0.0,
        elapsed_seconds: 1.0,
        counts: BTreeMap::new(),
        reports: Vec::new(),
        within_task: None,
        anytime: vec![AnytimeEvaluation {
            run_step: 2,
            task: 0,
            counts: BTreeMap::from([
                (Readout::ClassIl, vec![(3, 10), (0, 10)]),
                (Readout::TaskIl, vec![(7, 10), (5, 10)]),
            ]),
        }],
    };
    let text = toml::to_string(&progress).unwrap();
    let back: resume::Progress = toml::from_str(&text).unwrap();
    assert_eq!(back.anytime, progress.anytime);
}
