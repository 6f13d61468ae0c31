//! Training stages that run before the task stream: `[pretrain]`, plain or as distillation
//! from a frozen teacher.
//!
//! A stage trains the experiment's own [`Network`] on one set of classes, so that the stream
//! starts from its weights. Its data is an ordinary [`TaskStream`] of a single task (built from
//! [`stream_config`]): uploaded once, batches gathered and normalised on the device, the epoch
//! order shuffled by a seed of its own ([`seed`]). The loop follows the trainer's rules: losses
//! are summed on the device and read once per epoch (where divergence is caught), and the
//! evaluation counts correct predictions on the device with one copy to the host.
//!
//! Distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") trains the
//! student on the teacher's softened outputs; see [`distillation_loss`].

use std::time::Instant;

use retain_config::{ClassOrder, ModelConfig, PretrainPlan, Readout, StreamConfig, StreamKind};
use retain_stream::TaskStream;
use tch::{Device, Kind, Tensor};

use crate::{Network, Observer, TrainError, build_optimizer, evaluate};

/// Seed of a stage's shuffles, derived from the experiment seed so that the stage's epoch
/// order differs from that of the stream's first task.
pub fn seed(experiment_seed: u64) -> u64 {
    retain_stream::seed::derive(experiment_seed, "pretrain")
}

/// The stream of a stage: one split task holding `plan.classes` of `plan.dataset`, every
/// training and test sample of those classes, no augmentation.
pub fn stream_config(plan: &PretrainPlan) -> StreamConfig {
    let mut config =
        StreamConfig::split(plan.dataset, 1, plan.classes.len(), vec![Readout::ClassIl]);
    config.class_order = Some(ClassOrder::Explicit(plan.classes.clone()));
    debug_assert_eq!(config.kind, StreamKind::Split);
    config
}

/// A frozen teacher: `config` built for images of `image_shape` with `outputs` logits, its
/// weights read from `config`'s checkpoint, `requires_grad` off, on `device`.
pub fn load_teacher(
    config: &ModelConfig,
    image_shape: [usize; 3],
    outputs: usize,
    device: Device,
) -> Result<Network, TrainError> {
    let checkpoint = config.checkpoint().ok_or_else(|| TrainError::Stage {
        message: "the teacher has no checkpoint to load".into(),
    })?;
    let config = config.clone();
    let mut teacher = Network::from_builder(device, move |path| {
        retain_models::build(&config, path, image_shape, outputs)
    });
    teacher.load(checkpoint)?;
    teacher.vars.freeze();
    Ok(teacher)
}

/// Σ numel of every variable of `network`, trainable or not.
pub fn parameter_count(network: &Network) -> u64 {
    network
        .vars
        .variables()
        .values()
        .map(|t| t.numel() as u64)
        .sum()
}

/// What a stage did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageOutcome {
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    pub steps: usize,
    /// Accuracy of the trained network on the test samples of the stage's classes (arg-max
    /// over every output).
    pub accuracy: f64,
    /// The teacher's accuracy on the same samples, for distillation.
    pub teacher_accuracy: Option<f64>,
    pub train_seconds: f64,
}

/// `(1 − w) · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + w · CE(student, labels)`,
/// with `T = temperature`, `w = hard_weight`, the KL divergence summed over classes and averaged
/// over the batch ("batchmean"), and the cross-entropy at temperature 1. The `T²` factor keeps
/// the soft term's gradient magnitude independent of `T` (Hinton et al. 2015, section 2). The
/// teacher's logits carry no gradient.
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    hard_weight: f64,
) -> Tensor {
    let log_p_student = (student / temperature).log_softmax(-1, Kind::Float);
    let log_p_teacher = (teacher.detach() / temperature).log_softmax(-1, Kind::Float);
    let kl = (log_p_teacher.exp() * (&log_p_teacher - log_p_student))
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float);
    let soft = kl * (temperature * temperature);
    if hard_weight == 0.0 {
        soft
    } else {
        soft * (1.0 - hard_weight) + student.cross_entropy_for_logits(labels) * hard_weight
    }
}

/// Trains `network` on the single task of `stream` (built from [`stream_config`]`(plan)`) as
/// `plan` says: cross-entropy, or [`distillation_loss`] against `teacher` when
/// `plan.distillation` is set (a teacher must then be given). Then measures the test accuracy
/// of the network, and of the teacher, on the stage's classes. `observer` sees the stage as
/// task 0.
pub fn pretrain(
    plan: &PretrainPlan,
    experiment_seed: u64,
    stream: &TaskStream,
    network: &Network,
    teacher: Option<&Network>,
    observer: &mut dyn Observer,
) -> Result<StageOutcome, TrainError> {
    let distillation = match (&plan.distillation, teacher) {
        (Some(d), Some(t)) => Some((d, t)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(TrainError::Stage {
                message: "a distillation stage needs its teacher".into(),
            });
        }
        (None, Some(_)) => {
            return Err(TrainError::Stage {
                message: "a teacher was given to a stage without `[pretrain.teacher]`".into(),
            });
        }
    };
    let seed = seed(experiment_seed);
    let task = stream.tasks.first().ok_or_else(|| TrainError::Stage {
        message: "the stage's stream has no task".into(),
    })?;
    let indices = &task.train_indices;
    let steps_per_epoch = indices.len().div_ceil(plan.batch_size);
    observer.task_started(0, steps_per_epoch * plan.epochs);
    let mut optimizer = build_optimizer(&plan.optimizer, &network.vars)?;
    let clock = Instant::now();
    let mut epoch_losses = Vec::with_capacity(plan.epochs);
    let mut watch = crate::divergence::Watch::new(plan.divergence_factor);
    let mut step = 0;
    for epoch in 0..plan.epochs {
        let order = stream.epoch_order(indices, seed, 0, epoch);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, stream.device));
        for start in (0..indices.len()).step_by(plan.batch_size) {
            let len = plan.batch_size.min(indices.len() - start);
            let batch_indices = order.narrow(0, start as i64, len as i64);
            let batch = stream.training_batch(&batch_indices, TaskStream::draw(0, step));
            let logits = network.model.forward_t(&batch.inputs, true);
            let loss = match distillation {
                None => logits.cross_entropy_for_logits(&batch.labels),
                Some((d, teacher)) => {
                    let soft = tch::no_grad(|| teacher.model.forward_t(&batch.inputs, false));
                    distillation_loss(&logits, &soft, &batch.labels, d.temperature, d.hard_weight)
                }
            };
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            // In place, on the device: no host synchronisation per step.
            let _ = loss_sum.g_add_(&loss.detach());
            watch.after_step(&loss_sum);
            step += 1;
            observer.step();
        }
        // The one host read of the epoch.
        let (mean_loss, verdict) = watch.epoch_mean(&loss_sum, steps_per_epoch);
        if let Err(reason) = verdict {
            return Err(TrainError::StageDiverged {
                epoch,
                loss: mean_loss,
                reason,
            });
        }
        epoch_losses.push(mean_loss);
    }
    let train_seconds = clock.elapsed().as_secs_f64();
    let accuracy = accuracy(network, stream, plan.eval_batch_size);
    let teacher_accuracy = distillation.map(|(_, t)| accuracy_of(t, stream, plan.eval_batch_size));
    Ok(StageOutcome {
        epoch_losses,
        steps: step,
        accuracy,
        teacher_accuracy,
        train_seconds,
    })
}

/// Accuracy of `network` on the evaluation samples of every task of `stream` together (arg-max
/// over every output), batched on the device with one copy to the host.
pub fn accuracy(network: &Network, stream: &TaskStream, batch_size: usize) -> f64 {
    accuracy_of(network, stream, batch_size)
}

fn accuracy_of(network: &Network, stream: &TaskStream, batch_size: usize) -> f64 {
    let evaluation = evaluate(network, stream, &[Readout::ClassIl], batch_size);
    let (correct, samples) = evaluation[&Readout::ClassIl]
        .iter()
        .fold((0, 0), |(c, s), &(tc, ts)| (c + tc, s + ts));
    correct as f64 / samples.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss on hand-made logits against numbers computed independently, in `f64` with
    /// the formula written out per sample (Python: `sum(p * log(p / q))` over softmaxes at
    /// `T = 2`, averaged over the two rows, times `T²`; cross-entropy at `T = 1`):
    /// soft loss 1.1393868602239463, with `hard_weight = 0.25` 0.9208217311511315.
    #[test]
    fn distillation_loss_matches_an_independent_computation() {
        let tensor = |v: [f32; 6]| Tensor::from_slice(&v).view([2, 3]);
        let student = tensor([1.0, 2.0, 0.5, 0.0, -1.0, 3.0]);
        let teacher = tensor([2.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        let labels = Tensor::from_slice(&[1i64, 2]);
        let soft = distillation_loss(&student, &teacher, &labels, 2.0, 0.0).double_value(&[]);
        assert!((soft - 1.139_386_860_223_946_3).abs() < 1e-6, "{soft}");
        let mixed = distillation_loss(&student, &teacher, &labels, 2.0, 0.25).double_value(&[]);
        assert!((mixed - 0.920_821_731_151_131_5).abs() < 1e-6, "{mixed}");
        // Identical logits: no soft loss.
        let same = distillation_loss(&student, &student, &labels, 2.0, 0.0).double_value(&[]);
        assert!(same.abs() < 1e-7, "{same}");
    }

    /// The gradient of the soft term with respect to the student's logits is
    /// `T · (softmax(s/T) − softmax(t/T)) / B` (the `T²` and the `1/T` of the chain rule).
    #[test]
    fn distillation_gradient_is_the_scaled_probability_gap() {
        let student = Tensor::from_slice(&[0.3f32, -0.2, 1.1, 0.0])
            .view([1, 4])
            .set_requires_grad(true);
        let teacher = Tensor::from_slice(&[1.0f32, 0.5, -0.5, 0.2]).view([1, 4]);
        let t = 3.0;
        let labels = Tensor::from_slice(&[0i64]);
        distillation_loss(&student, &teacher, &labels, t, 0.0).backward();
        let expected =
            ((&student / t).softmax(-1, Kind::Float) - (&teacher / t).softmax(-1, Kind::Float)) * t;
        let diff = (student.grad() - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }

    /// The stage of the testkit's reduced Split-MNIST experiment with `overrides` (keys
    /// under `pretrain.`), its stream on the CPU, and a fresh network of `[model]`.
    fn mnist_stage(
        dataset: &retain_data::ImageDataset,
        overrides: &[&str],
    ) -> (retain_config::Experiment, PretrainPlan, TaskStream, Network) {
        crate::testkit::single_threaded();
        let experiment = crate::testkit::split_mnist(5, 100, 100, 0, "name = \"naive\"", overrides);
        let plan = experiment
            .pretrain_plan()
            .expect("the overrides add [pretrain]");
        let stream =
            TaskStream::build(dataset, &stream_config(&plan), seed(0), Device::Cpu).unwrap();
        let experiment_stream =
            TaskStream::build(dataset, &experiment.stream, experiment.seed, Device::Cpu).unwrap();
        let network = Network::new(&experiment, &experiment_stream);
        (experiment, plan, stream, network)
    }

    #[test]
    fn pretraining_on_two_mnist_classes_learns_them() {
        let mnist = crate::testkit::mnist();
        let (experiment, plan, stream, network) = mnist_stage(
            &mnist,
            &["pretrain.classes=[3, 7]", "pretrain.batch_size=32"],
        );
        assert_eq!(stream.tasks[0].classes, vec![3, 7]);
        let before = accuracy(&network, &stream, 1000);
        let outcome = pretrain(
            &plan,
            experiment.seed,
            &stream,
            &network,
            None,
            &mut crate::Silent,
        )
        .unwrap();
        assert!(outcome.accuracy > 0.95, "{outcome:?}");
        assert!(before < 0.7, "untrained: {before}");
        assert_eq!(
            outcome.steps,
            stream.tasks[0].train_indices.len().div_ceil(32)
        );
        assert_eq!(outcome.teacher_accuracy, None);
        assert!(outcome.epoch_losses[0] > 0.0 && outcome.epoch_losses[0] < 0.5);
    }

    /// A 784-32-10 student distilled from a trained 784-200-10 teacher on MNIST classes 0–4
    /// comes within a few points of the teacher on the test split, far above chance.
    #[test]
    fn a_distilled_student_approaches_its_teacher() {
        let mnist = crate::testkit::mnist();
        let classes = "pretrain.classes=[0, 1, 2, 3, 4]";
        let (_, plan, stream, teacher) = mnist_stage(
            &mnist,
            &[classes, "pretrain.batch_size=64", "model.hidden=[200]"],
        );
        pretrain(&plan, 0, &stream, &teacher, None, &mut crate::Silent).unwrap();
        let dir = std::env::temp_dir().join(format!("retain-stage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let checkpoint = dir.join("teacher.safetensors");
        teacher.save(&checkpoint).unwrap();

        let teacher_table = format!(
            "pretrain.teacher={{ kind = \"mlp\", hidden = [200], checkpoint = {:?} }}",
            checkpoint.to_str().unwrap()
        );
        let (_, plan, stream, student) = mnist_stage(
            &mnist,
            &[
                classes,
                "pretrain.batch_size=64",
                "model.hidden=[32]",
                "pretrain.temperature=4.0",
                &teacher_table,
            ],
        );
        let untrained = accuracy(&student, &stream, 1000);
        let frozen = load_teacher(
            &plan.distillation.as_ref().unwrap().teacher,
            stream.image_shape,
            10,
            Device::Cpu,
        )
        .unwrap();
        assert!(named_trainable(&frozen) == 0, "the teacher is frozen");
        let outcome = pretrain(
            &plan,
            0,
            &stream,
            &student,
            Some(&frozen),
            &mut crate::Silent,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let teacher_accuracy = outcome.teacher_accuracy.unwrap();
        assert!(teacher_accuracy > 0.95, "{outcome:?}");
        assert!(outcome.accuracy > teacher_accuracy - 0.04, "{outcome:?}");
        assert!(
            outcome.accuracy > untrained + 0.5,
            "{untrained} → {outcome:?}"
        );
        assert_eq!(parameter_count(&frozen), 784 * 200 + 200 + 200 * 10 + 10);
        assert_eq!(parameter_count(&student), 784 * 32 + 32 + 32 * 10 + 10);
    }

    fn named_trainable(network: &Network) -> usize {
        network.parameters().len()
    }

    #[test]
    fn a_distillation_stage_without_its_teacher_is_an_error() {
        let dataset = crate::testkit::synthetic_dataset(10, 4, 784);
        let table =
            "pretrain.teacher={ kind = \"mlp\", hidden = [8], checkpoint = \"t.safetensors\" }";
        let (_, plan, stream, network) = mnist_stage(&dataset, &[table]);
        let err = pretrain(&plan, 0, &stream, &network, None, &mut crate::Silent).unwrap_err();
        assert!(err.to_string().contains("needs its teacher"), "{err}");
        let missing = load_teacher(
            &plan.distillation.unwrap().teacher,
            [1, 28, 28],
            10,
            Device::Cpu,
        );
        let err = missing.err().expect("no such file").to_string();
        assert!(err.contains("t.safetensors"), "{err}");
    }

    #[test]
    fn a_diverging_stage_is_reported() {
        let dataset = crate::testkit::synthetic_dataset(10, 20, 784);
        let (_, plan, stream, network) = mnist_stage(
            &dataset,
            &[
                "pretrain.optimizer={ kind = \"sgd\", lr = 1e30 }",
                "pretrain.epochs=3",
            ],
        );
        let err = pretrain(&plan, 0, &stream, &network, None, &mut crate::Silent).unwrap_err();
        assert!(matches!(err, TrainError::StageDiverged { .. }), "{err}");
        assert!(err.to_string().contains("pretrain stage diverged"), "{err}");
    }
}
