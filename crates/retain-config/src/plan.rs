//! The validated plan, and the one place where the defaults of optional keys are resolved.
//!
//! Keys with a fixed default get it when the file is read (the serde `default`s of the
//! schema). The keys left `Option` in the raw structs are those that apply to one kind of
//! stream only (`stream.class_order`, `stream.angles`, …) or whose default is another key's
//! value (`pretrain.epochs` is `training.epochs`, …); this module resolves them, and
//! validation returns the result as an [`ExperimentPlan`]. Code that runs an experiment reads
//! the plan, so no default is derived anywhere else.

use serde::Serialize;

use crate::{
    Angles, AnglesName, AugmentConfig, ClassOrder, ClassOrderName, ClassesPerTask, DatasetName,
    EvaluateOn, Experiment, ModelConfig, OptimizerConfig, PretrainConfig, Readout, SplitLabels,
    StreamConfig, StreamKind,
};

/// Default distillation temperature; Hinton et al. used 2–20, 2 being a common choice for
/// small student networks.
pub const DEFAULT_TEMPERATURE: f64 = 2.0;

/// Default weight of the hard-label cross-entropy of a distillation stage: soft labels only.
pub const DEFAULT_HARD_WEIGHT: f64 = 0.0;

/// Default `[lo, hi]` degrees of a rotated stream's generated angles.
pub const DEFAULT_ANGLE_RANGE: [f64; 2] = [0.0, 180.0];

/// An experiment that passed validation, with every default resolved: what a run follows.
///
/// Only validation makes one ([`Experiment::validate`], [`ExperimentPlan::load`]), so holding
/// a plan means the values were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentPlan {
    experiment: Experiment,
    stream: StreamPlan,
    pretrain: Option<PretrainPlan>,
}

impl ExperimentPlan {
    /// The plan of `experiment`, validated, whose stream resolved to `stream`.
    pub(crate) fn new(mut experiment: Experiment, stream: StreamPlan) -> Self {
        // The raw experiment carries the resolved read-outs too: it is what the resolved TOML
        // next to the results is written from, and that file must name them.
        experiment.stream.readouts = stream.readouts.clone();
        let pretrain = experiment.pretrain_plan();
        Self {
            experiment,
            stream,
            pretrain,
        }
    }

    /// The validated experiment as the file gave it (fixed defaults filled in, read-outs
    /// resolved): name, seed, device, folders, model, training and method tables.
    pub fn experiment(&self) -> &Experiment {
        &self.experiment
    }

    pub fn into_experiment(self) -> Experiment {
        self.experiment
    }

    /// The task stream.
    pub fn stream(&self) -> &StreamPlan {
        &self.stream
    }

    /// The `[pretrain]` stage; `None` without a `[pretrain]` table.
    pub fn pretrain(&self) -> Option<&PretrainPlan> {
        self.pretrain.as_ref()
    }

    /// Outputs of the model's head: the size of the stream's label space
    /// ([`StreamPlan::outputs`]); a pretrain stage on another dataset trains the same head.
    pub fn outputs(&self) -> usize {
        self.stream.outputs()
    }

    /// `[C, H, W]` of the images the model is built for: the stream dataset's.
    pub fn image_shape(&self) -> [usize; 3] {
        self.stream.image_shape()
    }
}

/// A validated `[stream]` table with its defaults resolved.
///
/// Made by [`StreamConfig::plan`] or as part of an [`ExperimentPlan`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    dataset: DatasetName,
    tasks: usize,
    scenario: Scenario,
    blurry: Option<f64>,
    train_samples_per_task: Option<usize>,
    test_samples_per_task: Option<usize>,
    validation_fraction: Option<f64>,
    evaluate_on: EvaluateOn,
    augment: AugmentConfig,
    readouts: Vec<Readout>,
}

/// How a stream cuts its dataset into tasks: the keys that belong to one kind of stream,
/// resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// Disjoint groups of classes taken in `class_order`, task `t` the next `task_classes[t]`
    /// of them (every count at least 1, one per task, `stream.first_task_classes` and
    /// `stream.classes_per_task` resolved), labelled as `labels` says.
    Split {
        task_classes: Vec<usize>,
        class_order: ClassOrder,
        labels: SplitLabels,
    },
    /// The whole dataset under a seeded pixel permutation per task.
    Permuted { first_task_unpermuted: bool },
    /// The whole dataset rotated per task; `angle_range` bounds generated angles.
    Rotated {
        angles: Angles,
        angle_range: [f64; 2],
    },
}

impl Scenario {
    pub fn kind(&self) -> StreamKind {
        match self {
            Self::Split { .. } => StreamKind::Split,
            Self::Permuted { .. } => StreamKind::Permuted,
            Self::Rotated { .. } => StreamKind::Rotated,
        }
    }
}

impl StreamPlan {
    /// The plan of a validated `config` whose kind-specific keys resolved to `scenario`.
    pub(crate) fn new(config: &StreamConfig, scenario: Scenario) -> Self {
        debug_assert_eq!(scenario.kind(), config.kind);
        Self {
            dataset: config.dataset,
            tasks: config.tasks,
            scenario,
            blurry: config.blurry,
            train_samples_per_task: config.train_samples_per_task,
            test_samples_per_task: config.test_samples_per_task,
            validation_fraction: config.validation_fraction,
            evaluate_on: config.evaluate_on,
            augment: config.augment(),
            readouts: config.resolved_readouts(),
        }
    }

    pub fn kind(&self) -> StreamKind {
        self.scenario.kind()
    }

    pub fn dataset(&self) -> DatasetName {
        self.dataset
    }

    /// Classes of the dataset (from `retain-data`'s table).
    pub fn classes(&self) -> usize {
        self.dataset.classes()
    }

    /// How a split stream labels its samples; [`SplitLabels::Global`] for permuted and
    /// rotated streams, whose labels are the dataset's classes.
    pub fn labels(&self) -> SplitLabels {
        match self.scenario {
            Scenario::Split { labels, .. } => labels,
            Scenario::Permuted { .. } | Scenario::Rotated { .. } => SplitLabels::Global,
        }
    }

    /// Size of the label space, the width of the output head: every class of the dataset,
    /// or `classes_per_task` for a split stream with `labels = "within_task"` (whose tasks
    /// all have the same number of classes).
    pub fn outputs(&self) -> usize {
        match &self.scenario {
            Scenario::Split {
                task_classes,
                labels: SplitLabels::WithinTask,
                ..
            } => task_classes[0],
            _ => self.classes(),
        }
    }

    /// `[C, H, W]` of the dataset's images (from `retain-data`'s table).
    pub fn image_shape(&self) -> [usize; 3] {
        self.dataset.image_shape()
    }

    /// Number of tasks, at least 1.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// The kind of stream with its own settings.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The number of classes of each task of a split stream, one entry per task (from
    /// `stream.classes_per_task` and `stream.first_task_classes`); `None` for permuted and
    /// rotated streams, whose tasks all have every class.
    pub fn classes_per_task(&self) -> Option<&[usize]> {
        match &self.scenario {
            Scenario::Split { task_classes, .. } => Some(task_classes),
            Scenario::Permuted { .. } | Scenario::Rotated { .. } => None,
        }
    }

    /// The classes a split stream uses, the sum of [`StreamPlan::classes_per_task`]; `None`
    /// for permuted and rotated streams.
    pub fn stream_classes(&self) -> Option<usize> {
        self.classes_per_task().map(|counts| counts.iter().sum())
    }

    /// Split streams with blurry boundaries: the percentage of each class's training samples
    /// moved to the other tasks (`stream.blurry`, in [0, 100]); `None`: none moved.
    pub fn blurry(&self) -> Option<f64> {
        self.blurry
    }

    /// At most this many training samples per task (a seeded choice); `None`: all of them.
    pub fn train_samples_per_task(&self) -> Option<usize> {
        self.train_samples_per_task
    }

    /// At most this many evaluation (test or validation) samples per task; `None`: all.
    pub fn test_samples_per_task(&self) -> Option<usize> {
        self.test_samples_per_task
    }

    /// Share of the training split held out as validation data, in (0, 1); `None`: none.
    pub fn validation_fraction(&self) -> Option<f64> {
        self.validation_fraction
    }

    pub fn evaluate_on(&self) -> EvaluateOn {
        self.evaluate_on
    }

    /// Training-batch augmentation; [`AugmentConfig::is_active`] is false without one.
    pub fn augment(&self) -> AugmentConfig {
        self.augment
    }

    /// Read-outs evaluated after every task, never empty.
    pub fn readouts(&self) -> &[Readout] {
        &self.readouts
    }
}

/// The defaults of the optional `[stream]` keys. The plan is built from these; they stay
/// public for code that reads a raw [`StreamConfig`].
impl StreamConfig {
    /// The class order of a split stream, `"natural"` when not given.
    pub fn class_order(&self) -> ClassOrder {
        self.class_order
            .clone()
            .unwrap_or(ClassOrder::Named(ClassOrderName::Natural))
    }

    /// The angle specification of a rotated stream, `"even"` when not given.
    pub fn angles(&self) -> Angles {
        self.angles
            .clone()
            .unwrap_or(Angles::Named(AnglesName::Even))
    }

    /// `[lo, hi]` of generated angles, [`DEFAULT_ANGLE_RANGE`] when not given.
    pub fn angle_range(&self) -> [f64; 2] {
        self.angle_range.unwrap_or(DEFAULT_ANGLE_RANGE)
    }

    /// The augmentation, the inactive one when not given.
    pub fn augment(&self) -> AugmentConfig {
        self.augment.unwrap_or_default()
    }

    /// The label space of a split stream, `"global"` when not given.
    pub fn labels(&self) -> SplitLabels {
        self.labels.unwrap_or_default()
    }

    /// Whether every task shares one label space: a permuted or rotated stream, or a split
    /// stream with `labels = "within_task"`.
    pub fn is_domain_incremental(&self) -> bool {
        self.kind.is_domain_incremental() || self.within_task_labels()
    }

    /// Size of the label space, the width of the output head: every class of the dataset,
    /// or `classes_per_task` for a split stream with `labels = "within_task"`.
    pub fn outputs(&self) -> usize {
        match &self.classes_per_task {
            Some(ClassesPerTask::Each(each)) if self.within_task_labels() => {
                self.first_task_classes.unwrap_or(*each)
            }
            Some(ClassesPerTask::PerTask(counts)) if self.within_task_labels() => {
                counts.first().copied().unwrap_or_default()
            }
            _ => self.dataset.classes(),
        }
    }

    /// The read-outs evaluated when none are listed: the kind's ([`StreamKind::readouts`]),
    /// or `domain_il` for a split stream with `labels = "within_task"`.
    pub fn default_readouts(&self) -> &'static [Readout] {
        if self.within_task_labels() {
            &[Readout::DomainIl]
        } else {
            self.kind.readouts()
        }
    }

    /// Whether `readout` means something for this stream: its default read-outs and the
    /// opt-in ones ([`Readout::is_opt_in`]).
    pub fn accepts(&self, readout: Readout) -> bool {
        self.default_readouts().contains(&readout) || readout.is_opt_in()
    }

    fn within_task_labels(&self) -> bool {
        self.kind == StreamKind::Split && self.labels() == SplitLabels::WithinTask
    }

    /// The read-outs listed, or the stream's defaults ([`StreamConfig::default_readouts`])
    /// when none are.
    fn resolved_readouts(&self) -> Vec<Readout> {
        if self.readouts.is_empty() {
            self.default_readouts().to_vec()
        } else {
            self.readouts.clone()
        }
    }
}

/// A `[pretrain]` stage with every default resolved: what the trainer runs and what its cache
/// key is computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainPlan {
    pub dataset: DatasetName,
    /// Sorted, without duplicates.
    pub classes: Vec<u32>,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub distillation: Option<Distillation>,
    /// `[training] divergence_factor`, applied to the stage's own first epoch. Not part of
    /// the cache key: it decides only whether the stage fails, never its weights.
    #[serde(skip)]
    pub divergence_factor: f64,
}

/// The teacher half of a distillation stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distillation {
    pub teacher: ModelConfig,
    pub temperature: f64,
    pub hard_weight: f64,
}

impl PretrainConfig {
    /// The stage's dataset: the stream's when not given.
    pub(crate) fn dataset_for(&self, stream: DatasetName) -> DatasetName {
        self.dataset.unwrap_or(stream)
    }
}

impl Experiment {
    /// The `[pretrain]` stage with its defaults resolved from `[training]` and `[stream]`;
    /// `None` without a `[pretrain]` table. Call on a validated experiment; a plan holds it
    /// as [`ExperimentPlan::pretrain`].
    pub fn pretrain_plan(&self) -> Option<PretrainPlan> {
        let p = self.pretrain.as_ref()?;
        let dataset = p.dataset_for(self.stream.dataset);
        let mut classes = p
            .classes
            .clone()
            .unwrap_or_else(|| (0..dataset.classes() as u32).collect());
        classes.sort_unstable();
        classes.dedup();
        Some(PretrainPlan {
            dataset,
            classes,
            epochs: p.epochs.unwrap_or(self.training.epochs),
            batch_size: p.batch_size.unwrap_or(self.training.batch_size),
            eval_batch_size: self.training.eval_batch_size,
            optimizer: p
                .optimizer
                .clone()
                .unwrap_or_else(|| self.training.optimizer.clone()),
            distillation: p.teacher.clone().map(|teacher| Distillation {
                teacher,
                temperature: p.temperature.unwrap_or(DEFAULT_TEMPERATURE),
                hard_weight: p.hard_weight.unwrap_or(DEFAULT_HARD_WEIGHT),
            }),
            divergence_factor: self.training.divergence_factor,
        })
    }
}
