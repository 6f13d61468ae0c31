//! Learning without Forgetting (LwF, Li & Hoiem 2017).
//!
//! Before each task after the first, LwF keeps a frozen copy of the model (the model as it
//! left the previous task). While training the new task it asks the current model to keep
//! reproducing that copy's *temperature-softened* outputs on the new task's inputs, so no
//! data of old tasks is stored.
//!
//! # The loss
//!
//! For a batch `x` with labels `y`, current logits `z = f_θ(x)`, the copy's logits
//! `z° = f_θ°(x)` (no gradient), and `O` the classes of all earlier tasks:
//!
//! ```text
//! loss = CE(z, y) + α · T² · (1/B) Σ_b KL( softmax(z°_b,O / T) ‖ softmax(z_b,O / T) )
//! KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)
//! ```
//!
//! * The distillation covers the **old classes' logits only** (`O`), softmaxed among
//!   themselves: the single-head form of LwF used for class- and task-incremental read-out
//!   (as in van de Ven et al. 2019, "Three scenarios for continual learning"). The original
//!   multi-head LwF distils each old task's head, which this matches when a task's classes are
//!   its head.
//! * KL rather than the cross-entropy `−Σ p log q` of the paper: the two differ by the
//!   entropy of `p`, which does not depend on `θ`, so gradients are identical; KL is zero when
//!   the model agrees with its copy.
//! * Multiplying by `T²` keeps the distillation gradients' scale independent of `T`
//!   (Hinton et al. 2015), the usual convention.
//!
//! On the first task there is no copy and the loss is plain cross-entropy. LwF keeps no
//! checkpoint state ([`Method::state`] is empty): its copy is the model as a between-task
//! checkpoint stores it, rebuilt by `before_task`.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `alpha` | `1.0` | weight `α` of the distillation term (≥ 0; the paper's `λ_o`) |
//! | `temperature` | `2.0` | softening temperature `T` (> 0; the paper uses 2) |
//!
//! # Peer conventions
//!
//! Sources: Avalanche 0.6.0 (`ContinualAI/avalanche`, `avalanche/training/regularization.py`,
//! `LearningWithoutForgetting`, used by `avalanche/training/plugins/lwf.py` and the `LwF`
//! strategy); Mammoth (`aimagelab/mammoth` at `e75a491`, `models/lwf.py`). Both distil only
//! the old classes' logits, softmaxed among themselves at temperature `T`, as here. The
//! differences, each of which changes the numbers:
//!
//! * **No `T²`.** Avalanche's term is
//!   `alpha · kl_div(log_softmax(z_O / T), softmax(z°_O / T), "batchmean")`, the KL here
//!   without the factor `T²`; Mammoth's is `alpha · CE(p°, p)` with `p = softmax(z_O / T)`
//!   (its `smooth` of a softmax over the old classes is exactly that), the cross-entropy
//!   rather than the KL (the same gradient), also without `T²`. The same distillation here is
//!   `alpha = peer_alpha / T²`: Avalanche's defaults `alpha = 1, temperature = 2` are
//!   `alpha = 0.25` here, and the default `alpha = 1.0` here is Avalanche's or Mammoth's
//!   `alpha = 4` at `T = 2`; Mammoth's defaults `alpha = 0.5, softmax_temp = 2` are
//!   `alpha = 0.125`, and its `utils/best_args.py` values `alpha = 1` (seq-MNIST,
//!   seq-TinyImageNet) and `3.0` (seq-CIFAR-10), all at `softmax_temp = 2`, are `0.25` and
//!   `0.75`.
//! * **Avalanche's `alpha` may be a list**, `alpha[k]` weighing the term while experience `k`
//!   (0-based) trains, so `alpha[0]` is never used; here one `α` holds for every task, so only
//!   a list whose entries from the second on are equal translates (to that value divided by
//!   `T²`).
//! * **The teacher.** Avalanche's is a `deepcopy` of the model after the previous experience,
//!   run in **training mode** (batch norm normalises by the batch's statistics, dropout is
//!   active) on the same augmented minibatch as the student; the copy here runs in evaluation
//!   mode on that same minibatch. With a multi-head model Avalanche adds one such term per old
//!   head, each over the classes seen in that head. Mammoth records the teacher's logits once,
//!   before the task, in evaluation mode, on the **non-augmented** image (`__getitem__(j)[2]`,
//!   which for e.g. seq-CIFAR-10 is `ToTensor()` alone, without the normalisation the training
//!   inputs get: `datasets/seq_cifar10.py`), while the student sees the augmented, normalised
//!   image; a sample's target is therefore the same for every crop and flip of it.
//! * **Mammoth's warm-up.** Before each task after the first, Mammoth trains the classifier
//!   layer alone on the new task (`n_epochs` of SGD on frozen features, cross-entropy over the
//!   new classes' outputs), so the student starts the task with a fitted new head; here the
//!   task starts from the previous task's model.
//! * **Mammoth's cross-entropy** on the current batch covers only the classes seen so far
//!   (`outputs[:, :n_seen_classes]`); here it is the run's training loss, over every output by
//!   default. Avalanche applies its criterion to the model's whole output, as here with a
//!   fixed-size head.
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "lwf"
//! alpha = 1.0
//! temperature = 2.0
//! ```
//!
//! Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017.

use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// The registry entry of `lwf`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "lwf",
    family: Family::Distillation,
    summary: "Learning without Forgetting: distils the previous model's outputs on the current data",
    paper: "Li & Hoiem, \"Learning without Forgetting\", ECCV 2016 / TPAMI 2017",
    params: &[
        Param {
            name: "alpha",
            kind: ParamKind::Float,
            default: ParamDefault::Value("1.0"),
            doc: "weight α of the distillation term (≥ 0; the paper's λ_o)",
        },
        Param {
            name: "temperature",
            kind: ParamKind::Float,
            default: ParamDefault::Value("2.0"),
            doc: "softening temperature T (> 0)",
        },
    ],
    example: "alpha = 1.0\ntemperature = 2.0",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// LwF's hyper-parameters (see the crate docs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LwfParams {
    pub alpha: f64,
    pub temperature: f64,
}

/// Learning without Forgetting (see the crate docs).
///
/// Its state ([`Method::state`]) is the teacher it distils from, from the second task on:
/// `old_classes` (the earlier tasks' classes, int64) and `teacher.<name>` for every variable
/// of the model after the previous task. A fresh `Lwf` given that state distils from the same
/// teacher until the next task begins (when, as in the original, the teacher becomes the
/// model trained so far).
pub struct Lwf {
    alpha: f64,
    temperature: f64,
    /// The model after the previous task, and the classes of all earlier tasks (on the
    /// device); `None` during the first task.
    teacher: Option<(Network, Tensor)>,
    /// A loaded teacher (its variables by name, the earlier classes), put into a frozen copy
    /// of the network at the next step, where the network is known; a task boundary rebuilds
    /// the teacher instead.
    restored: Option<(Vec<(String, Tensor)>, Tensor)>,
}

/// The state's name of the earlier tasks' classes.
const OLD_CLASSES: &str = "old_classes";
/// The prefix of the teacher's variables in the state.
const TEACHER: &str = "teacher.";

fn state_error(message: String) -> TrainError {
    TrainError::Method {
        method: "lwf".into(),
        message: format!("malformed state: {message}"),
    }
}

/// A frozen copy of `network` holding the teacher's `variables`, which must be exactly the
/// network's names and shapes.
fn restore_teacher(
    network: &Network,
    variables: &[(String, Tensor)],
) -> Result<Network, TrainError> {
    network.frozen_copy_holding(variables, |differences| {
        state_error(format!(
            "the teacher does not match the network: {differences}"
        ))
    })
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Lwf::new(DESCRIPTOR.parse(params)?)?))
}

impl Lwf {
    pub fn new(params: LwfParams) -> Result<Self, TrainError> {
        let invalid = |message: String| TrainError::MethodParams {
            method: "lwf".into(),
            message,
        };
        if !(params.alpha.is_finite() && params.alpha >= 0.0) {
            return Err(invalid(format!(
                "`alpha` must be finite and ≥ 0, got {}",
                params.alpha
            )));
        }
        if !(params.temperature.is_finite() && params.temperature > 0.0) {
            return Err(invalid(format!(
                "`temperature` must be finite and > 0, got {}",
                params.temperature
            )));
        }
        Ok(Self {
            alpha: params.alpha,
            temperature: params.temperature,
            teacher: None,
            restored: None,
        })
    }

    /// The frozen copy distilled from, if a task has finished.
    pub fn teacher(&self) -> Option<&Network> {
        self.teacher.as_ref().map(|(network, _)| network)
    }
}

/// `T² · (1/B) Σ_b KL(softmax(old_b / T) ‖ softmax(new_b / T))` over `[B, K]` logits (see the
/// crate docs); gradients flow into `new` only through the caller's graph.
pub fn distillation_loss(new: &Tensor, old: &Tensor, temperature: f64) -> Tensor {
    let log_p = (old / temperature).log_softmax(-1, Kind::Float);
    let log_q = (new / temperature).log_softmax(-1, Kind::Float);
    let per_sample = (log_p.exp() * (&log_p - log_q)).sum_dim_intlist(-1, false, Kind::Float);
    per_sample.mean(Kind::Float) * (temperature * temperature)
}

impl Method for Lwf {
    /// The step reads only device tensors fixed for the task: captured in a CUDA graph on CUDA.
    fn capturable(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "lwf"
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.restored = None;
        let index = ctx.task.index;
        self.teacher = if index == 0 {
            None
        } else {
            let old: Vec<i64> = ctx.stream.tasks[..index]
                .iter()
                .flat_map(|t| t.classes.iter().copied())
                .collect();
            Some((
                ctx.network.frozen_copy()?,
                Tensor::from_slice(&old).to_device(ctx.device),
            ))
        };
        Ok(())
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        if self.teacher.is_none()
            && let Some((variables, classes)) = self.restored.take()
        {
            let teacher = restore_teacher(ctx.network, &variables)?;
            self.teacher = Some((teacher, classes.to_device(ctx.device)));
        }
        let logits = ctx.model().forward_t(&batch.inputs, true);
        let ce = ctx.training_loss(&logits, &batch.labels);
        let Some((teacher, old_classes)) = &self.teacher else {
            return Ok(ce);
        };
        let old = {
            let _no_grad = tch::no_grad_guard();
            teacher
                .model
                .forward_t(&batch.inputs, false)
                .index_select(1, old_classes)
        };
        let new = logits.index_select(1, old_classes);
        Ok(ce + distillation_loss(&new, &old, self.temperature) * self.alpha)
    }

    /// The teacher (see [`Lwf`]); none during the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        let (variables, classes) = match (&self.teacher, &self.restored) {
            (Some((teacher, classes)), _) => (
                retain_models::checkpoint::named_variables(&teacher.vars),
                classes,
            ),
            (None, Some((variables, classes))) => (
                variables
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
                classes,
            ),
            (None, None) => return Vec::new(),
        };
        std::iter::once((OLD_CLASSES.to_owned(), classes.shallow_clone()))
            .chain(
                variables
                    .into_iter()
                    .map(|(name, t)| (format!("{TEACHER}{name}"), t)),
            )
            .collect()
    }

    /// Checks that the state holds `old_classes` (int64, one dimension) and the teacher's
    /// variables and nothing else; the variables are checked against the network (names and
    /// shapes) at the next step. An empty state is a method during its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.teacher = None;
        self.restored = None;
        if state.is_empty() {
            return Ok(());
        }
        let mut classes = None;
        let mut variables = Vec::new();
        for (name, tensor) in state {
            if name == OLD_CLASSES {
                if tensor.kind() != Kind::Int64 || tensor.dim() != 1 {
                    return Err(state_error(format!(
                        "`{OLD_CLASSES}` must be Int64 with 1 dimension, found {:?} of shape {:?}",
                        tensor.kind(),
                        tensor.size()
                    )));
                }
                classes = Some(tensor);
            } else if let Some(variable) = name.strip_prefix(TEACHER) {
                variables.push((variable.to_owned(), tensor));
            } else {
                return Err(state_error(format!("unexpected tensor `{name}`")));
            }
        }
        let classes = classes.ok_or_else(|| state_error(format!("no tensor `{OLD_CLASSES}`")))?;
        if variables.is_empty() {
            return Err(state_error(format!(
                "no teacher variables (`{TEACHER}<name>`)"
            )));
        }
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        self.restored = Some((variables, classes));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
