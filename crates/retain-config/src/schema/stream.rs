//! `[stream]`: the task sequence, and the enums its keys take (kinds, read-outs, class
//! orders, angles).

use serde::{Deserialize, Serialize};

use crate::DatasetName;

/// How the dataset is cut into tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// Disjoint groups of classes, one group per task (Split-MNIST and kin): class- and
    /// task-incremental.
    Split,
    /// Every task is the whole dataset under its own seeded pixel permutation
    /// (Permuted-MNIST): domain-incremental, one label space.
    Permuted,
    /// Every task is the whole dataset rotated by its own angle (Rotated-MNIST):
    /// domain-incremental, one label space.
    Rotated,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Permuted => "permuted",
            Self::Rotated => "rotated",
        }
    }

    /// Whether every task shares the dataset's whole label space.
    pub fn is_domain_incremental(self) -> bool {
        matches!(self, Self::Permuted | Self::Rotated)
    }

    /// The read-outs evaluated when none are listed, in their default order.
    pub fn readouts(self) -> &'static [Readout] {
        match self {
            Self::Split => &[Readout::ClassIl, Readout::TaskIl],
            Self::Permuted | Self::Rotated => &[Readout::DomainIl],
        }
    }

    /// Whether `readout` means something for this kind of stream: the kind's defaults and
    /// the opt-in read-outs ([`Readout::is_opt_in`]), which need a method's hooks rather than
    /// a kind of label space.
    pub fn accepts(self, readout: Readout) -> bool {
        self.readouts().contains(&readout) || readout.is_opt_in()
    }
}

/// How a trained model is read out at evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    /// One head over every class seen; no task identity at test time.
    ClassIl,
    /// The task identity is given: logits outside the task's classes are masked.
    TaskIl,
    /// Every task has the same label space (permuted, rotated): one head over all classes,
    /// no task identity.
    DomainIl,
    /// The method infers each test sample's task from the sample itself, then reads it out
    /// as task-IL with the inferred task's weights and class mask: task-IL without the oracle.
    /// Opt-in; needs a method that infers task ids.
    TaskInferred,
    /// Not a classification accuracy: cell (i, j) of its matrix is the fraction of task j's
    /// test samples whose task the method infers correctly after training i tasks (the
    /// inference chooses among the tasks trained so far, so cells with j ≥ i, untrained
    /// tasks, and row 0 are 0). ACC is then the mean task-inference accuracy at the end,
    /// BWT how much adding tasks confuses inference. Opt-in; needs a method that infers task
    /// ids.
    TaskInference,
    /// Every task's weights merged into one network (e.g. the sum of all tasks' low-rank
    /// updates, and each class's head row from the task that learned it), read out with the
    /// arg-max over all classes, no task identity. Opt-in; needs a method with per-task
    /// weights that can merge them.
    Merged,
    /// Nearest mean of exemplars (iCaRL): each test sample is given the class whose mean
    /// feature over the method's stored exemplars is nearest to its own feature, among the
    /// classes seen so far, beside the network's own read-out (`class_il`). No task identity.
    /// Opt-in; needs a method that keeps exemplars and their class means.
    Ncm,
}

impl Readout {
    /// Every read-out, in the order of the enum (and of result files).
    pub const ALL: [Readout; 7] = [
        Self::ClassIl,
        Self::TaskIl,
        Self::DomainIl,
        Self::TaskInferred,
        Self::TaskInference,
        Self::Merged,
        Self::Ncm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClassIl => "class_il",
            Self::TaskIl => "task_il",
            Self::DomainIl => "domain_il",
            Self::TaskInferred => "task_inferred",
            Self::TaskInference => "task_inference",
            Self::Merged => "merged",
            Self::Ncm => "ncm",
        }
    }

    /// Read-outs that no kind of stream evaluates by default: they need hooks only some
    /// methods implement, so a run lists them in `stream.readouts` to get them.
    pub fn is_opt_in(self) -> bool {
        matches!(
            self,
            Self::TaskInferred | Self::TaskInference | Self::Merged | Self::Ncm
        )
    }
}

/// The label space of a split stream (`stream.labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitLabels {
    /// A sample keeps its dataset class: one output per class of the dataset, read out
    /// class-incrementally (`class_il`) and task-incrementally (`task_il`).
    #[default]
    Global,
    /// A sample's label is its class's position within its task (Split-MNIST in its natural
    /// order: even digit → 0, odd digit → 1), so every task shares one label space of
    /// `classes_per_task` labels: the network has `classes_per_task` outputs, no task id is
    /// given, and the read-out is the arg-max over them (`domain_il`): the
    /// domain-incremental scenario of a split stream.
    WithinTask,
}

impl SplitLabels {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::WithinTask => "within_task",
        }
    }
}

/// Class order of a split stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ClassOrder {
    /// `"natural"` (0, 1, 2, …) or `"seeded"` (a permutation derived from the seed).
    Named(ClassOrderName),
    /// An explicit order, e.g. `[3, 1, 4, 0, 2, 9, 8, 7, 6, 5]`.
    Explicit(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassOrderName {
    Natural,
    Seeded,
    /// CIFAR-100 only: the class order of iCaRL's and PyCIL's CIFAR-100 experiments
    /// ([`ICARL_CIFAR100_ORDER`]), the one LUCIR, PODNet and most B50-Inc10 results use.
    Icarl,
}

/// The CIFAR-100 class order of iCaRL (Rebuffi et al. 2017) and PyCIL: the permutation that
/// numpy's legacy generator draws after `np.random.seed(1993)`. Produced once with
/// `python3 -c "import numpy as np; np.random.seed(1993); print(list(np.random.permutation(100)))"`
/// (numpy 2) and copied here, so building a stream needs no numpy. `class_order = "icarl"`.
pub const ICARL_CIFAR100_ORDER: [u32; 100] = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85,
    19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31,
    54, 37, 95, 14, 71, 96, 98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18,
    94, 11, 12, 47, 25, 30, 46, 62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29,
    49, 57, 33,
];

impl ClassOrderName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Natural => "natural",
            Self::Seeded => "seeded",
            Self::Icarl => "icarl",
        }
    }
}

/// `stream.classes_per_task`: one count for every task, or one count per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ClassesPerTask {
    /// Every task has this many classes (after `first_task_classes`, when given).
    Each(usize),
    /// Task `t` has entry `t` classes, e.g. `[50, 10, 10, 10, 10, 10]`; as many entries as
    /// `stream.tasks`.
    PerTask(Vec<usize>),
}

impl From<usize> for ClassesPerTask {
    fn from(each: usize) -> Self {
        Self::Each(each)
    }
}

impl<'de> Deserialize<'de> for ClassesPerTask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, value};

        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = ClassesPerTask;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a number of classes for every task, or a list with one per task such as [50, 10, 10]",
                )
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                usize::try_from(n)
                    .map(ClassesPerTask::Each)
                    .map_err(|_| E::custom(format!("{n} classes is too many")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is negative; a task needs classes")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<usize>::deserialize(value::SeqAccessDeserializer::new(seq))
                    .map(ClassesPerTask::PerTask)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Angles of a rotated stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Angles {
    /// `"even"`: task `t` of `T` is rotated by `lo + t·(hi − lo)/T` degrees (the GEM paper's
    /// Rotated-MNIST); `"seeded"`: uniform in `[lo, hi)`, drawn from the seed.
    Named(AnglesName),
    /// One angle in degrees (counter-clockwise) per task, e.g. `[0, 45, 90, 135, 180]`.
    Explicit(Vec<f64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnglesName {
    Even,
    Seeded,
}

impl<'de> Deserialize<'de> for ClassOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected =
            "\"natural\", \"seeded\", \"icarl\" or a list of classes such as [3, 1, 4, 0, 2]";
        Ok(match name_or_list(d, "class order", expected)? {
            NameOrList::Name(name) => ClassOrder::Named(name),
            NameOrList::List(classes) => ClassOrder::Explicit(classes),
        })
    }
}

impl<'de> Deserialize<'de> for Angles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "\"even\", \"seeded\" or a list of angles in degrees such as [0, 45, 90]";
        Ok(match name_or_list(d, "angles", expected)? {
            NameOrList::Name(name) => Angles::Named(name),
            NameOrList::List(angles) => Angles::Explicit(angles),
        })
    }
}

/// A key that takes a name or a list ([`ClassOrder`], [`Angles`]).
enum NameOrList<N, T> {
    Name(N),
    List(Vec<T>),
}

/// Reads a name `N` or a list of `T`: serde's untagged enums would say only that the value
/// "did not match any variant"; this names what is accepted (`expected`), and a wrong list
/// element keeps its position in the key's path.
fn name_or_list<'de, D, N, T>(
    d: D,
    what: &'static str,
    expected: &'static str,
) -> Result<NameOrList<N, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    N: Deserialize<'de>,
    T: Deserialize<'de>,
{
    use serde::de::{self, value};
    use std::marker::PhantomData;

    struct Visit<N, T> {
        what: &'static str,
        expected: &'static str,
        types: PhantomData<(N, T)>,
    }
    impl<'de, N: Deserialize<'de>, T: Deserialize<'de>> de::Visitor<'de> for Visit<N, T> {
        type Value = NameOrList<N, T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expected)
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
            N::deserialize(value::StrDeserializer::<E>::new(name))
                .map(NameOrList::Name)
                .map_err(|_| {
                    E::custom(format!(
                        "unknown {} `{name}`, expected {}",
                        self.what, self.expected
                    ))
                })
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<T>::deserialize(value::SeqAccessDeserializer::new(seq)).map(NameOrList::List)
        }
    }
    d.deserialize_any(Visit {
        what,
        expected,
        types: PhantomData,
    })
}

/// Which samples the after-task evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvaluateOn {
    /// The dataset's test split.
    #[default]
    Test,
    /// The validation samples carved from the training split (`validation_fraction`), so
    /// hyper-parameters can be tuned without touching the test set.
    Validation,
}

/// `[stream.augment]`: training-batch augmentation, applied on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random crop of the original size after zero padding by this many pixels on every
    /// side (4 for CIFAR in the DER paper); 0 = no crop.
    #[serde(default)]
    pub crop_padding: usize,
    /// Horizontal flip with probability ½.
    #[serde(default)]
    pub flip: bool,
}

impl AugmentConfig {
    /// Whether the augmentation changes anything.
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.flip
    }
}

/// `[stream]`: the task sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub kind: StreamKind,
    pub dataset: DatasetName,
    pub tasks: usize,
    /// Classes per task of a split stream (required there; not allowed for other kinds,
    /// whose tasks all use every class): one number for every task, or a list with one
    /// number per task (`[50, 10, 10, 10, 10, 10]`, as many as `tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes_per_task: Option<ClassesPerTask>,
    /// Split streams: the first task's classes when they differ from the later tasks'
    /// (`first_task_classes = 50` with `classes_per_task = 10` is B50-Inc10). Needs a single
    /// number in `classes_per_task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_task_classes: Option<usize>,
    /// Class order of a split stream; `"natural"` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_order: Option<ClassOrder>,
    /// Label space of a split stream: `"global"` (the default) keeps each sample's dataset
    /// class (class- and task-incremental read-outs over one output per class);
    /// `"within_task"` labels each sample with its class's position within its task, so all
    /// tasks share `classes_per_task` labels and outputs, read out domain-incrementally
    /// (`domain_il`, the default read-out there; `class_il` and `task_il` are refused). Not
    /// allowed for other kinds, whose tasks already share every class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<SplitLabels>,
    /// Split streams: blurry task boundaries (Blurry-M of Bang et al. 2021, the blurry
    /// classes of Koh et al. 2022's i-Blurry), a percentage M in [0, 100]. M % of each
    /// class's training samples (rounded to the nearest sample) leave their own task and are
    /// dealt out, in a seeded order, as evenly as possible over the stream's other tasks, so
    /// each task trains mostly on its own classes plus a few samples of every other task's.
    /// Test and validation sets, class masks (a task's own classes) and read-outs are those
    /// of the stream without it; `train_samples_per_task` subsamples each task's blurry
    /// training set. Task boundaries stay visible: methods are still told where each task
    /// begins and ends (task-aware blurry, the papers' protocol), a task-free protocol that
    /// hides them is another matter. Needs at least two tasks when above 0; absent: every
    /// task trains on its own classes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blurry: Option<f64>,
    /// Permuted streams: leave the first task's pixels in place (as in van de Ven et al.'s
    /// and some Avalanche set-ups); every task is permuted when false (the GEM paper).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_task_unpermuted: bool,
    /// Rotated streams: the angle of each task; `"even"` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angles: Option<Angles>,
    /// Rotated streams: `[lo, hi]` degrees for `"even"` and `"seeded"` angles; `[0, 180]`
    /// when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "angle_range"
    )]
    pub angle_range: Option<[f64; 2]>,
    /// Keep at most this many training samples per task (seeded choice); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_samples_per_task: Option<usize>,
    /// Keep at most this many evaluation (test or validation) samples per task (seeded
    /// choice); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_samples_per_task: Option<usize>,
    /// Fraction of the training split held out as validation data (seeded, the same samples
    /// for every task and method); none when absent. Held-out samples are never trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Evaluate on the test split or on the validation samples.
    #[serde(default)]
    pub evaluate_on: EvaluateOn,
    /// Augmentation of training batches; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentConfig>,
    /// Read-outs evaluated after every task; when absent or empty, those of the stream's
    /// kind ([`StreamKind::readouts`]), or `domain_il` for a split stream with
    /// `labels = "within_task"` ([`StreamConfig::default_readouts`]). The opt-in read-outs (`task_inferred`,
    /// `task_inference`, `merged`) apply to every kind, given a method that provides them.
    #[serde(default)]
    pub readouts: Vec<Readout>,
}

/// `[lo, hi]`, exactly two numbers: serde's fixed-size arrays would read the first two of a
/// longer list and drop the rest.
fn angle_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<[f64; 2]>, D::Error> {
    let values = Vec::<f64>::deserialize(d).map_err(|e| {
        serde::de::Error::custom(format!(
            "`stream.angle_range` must be a list of two numbers [lo, hi] ({e})"
        ))
    })?;
    <[f64; 2]>::try_from(values.as_slice())
        .map(Some)
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "`stream.angle_range` must list exactly two numbers [lo, hi], not {}: {values:?}",
                values.len()
            ))
        })
}

impl StreamConfig {
    /// A split stream (`tasks` × `classes_per_task`, natural class order, every sample) with
    /// the given read-outs and every other setting at its default: what tests and library
    /// users start from before adjusting fields.
    pub fn split(
        dataset: DatasetName,
        tasks: usize,
        classes_per_task: usize,
        readouts: Vec<Readout>,
    ) -> Self {
        Self {
            kind: StreamKind::Split,
            dataset,
            tasks,
            classes_per_task: Some(ClassesPerTask::Each(classes_per_task)),
            first_task_classes: None,
            class_order: None,
            labels: None,
            blurry: None,
            first_task_unpermuted: false,
            angles: None,
            angle_range: None,
            train_samples_per_task: None,
            test_samples_per_task: None,
            validation_fraction: None,
            evaluate_on: EvaluateOn::default(),
            augment: None,
            readouts,
        }
    }
}
