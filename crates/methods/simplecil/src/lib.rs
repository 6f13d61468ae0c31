//! SimpleCIL: class-incremental learning on a frozen pre-trained backbone by class prototypes
//! alone, with no training step.
//!
//! Zhou, Cai, Ye, Zhan & Liu, "Revisiting Class-Incremental Learning with Pre-Trained Models:
//! Generalizability and Adaptivity are All You Need", IJCV 2024 (arXiv 2303.07338, 2023). The
//! paper's point is that a pre-trained model's features are general enough that a
//! prototype classifier on them, never trained, is a strong class-incremental baseline.
//!
//! # The rule
//!
//! The backbone `φ` (the model's `features(x, false)`, in evaluation mode:
//! the final-normed class token of a transformer, the last hidden layer of an MLP, the pooled
//! features of a ResNet) is never changed. After each task `t`, every class `c` of its
//! training samples `D_t` gets the prototype
//!
//! ```text
//! p_c = (1 / |D_t,c|) · Σ_{x ∈ D_t,c} φ(x)        (un-augmented images, D_t,c = class c's samples)
//! ```
//!
//! and a test sample `x` is scored against every class with a prototype by
//!
//! ```text
//! cosine:     s_c(x) = ⟨φ(x), p_c⟩ / (‖φ(x)‖ · ‖p_c‖)
//! euclidean:  s_c(x) = −‖φ(x) − p_c‖
//! ```
//!
//! and `s_c(x) = −∞` for a class without a prototype (not seen yet). These scores are what
//! evaluation reads out ([`Method::eval_logits`]): `class_il` is `argmax_c s_c(x)` over every
//! class, `task_il` the same over the task's classes. Before the first task ends there is no
//! prototype and evaluation reads the network's own outputs (row 0 of the matrices). The
//! `ncm` read-out is also offered: the Euclidean scores whatever `similarity` says.
//!
//! The method trains nothing: [`Method::training_indices`] is empty for every task, so the
//! trainer takes no step (no forward or backward pass, no optimiser update) and the network's
//! variables stay bit-identical. `[training]` (epochs, optimiser) is then irrelevant. A class
//! that reappears in a later task (a domain-incremental stream) gets the mean of its newest
//! task's samples, as the reference's `replace_fc` does.
//!
//! Every backbone has features, so every model is accepted (`check_network` refuses none); the
//! method is meant for a pre-trained one (`[model] checkpoint` or a `[pretrain]` stage): on a
//! random network the prototypes are those of random features.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `similarity` | `"cosine"` | `"cosine"` (the paper's cosine classifier) or `"euclidean"` (negative distance to the prototypes) |
//! | `batch_size` | `128` | samples per forward pass when computing the prototypes (≥ 1; the reference's loader batch); the prototypes do not depend on it beyond float rounding |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! checkpoint = "results/pretrained/vit.safetensors"   # or a [pretrain] stage:
//!
//! [pretrain]
//! dataset = "mnist"
//! epochs = 3
//! batch_size = 128
//!
//! [method]
//! name = "simplecil"
//! similarity = "cosine"
//! batch_size = 128
//! ```
//!
//! # State
//!
//! [`Method::state`] holds `prototypes` (`[classes, F]` float, zero rows for classes without
//! one) and `present` (`[classes]` bool), once the first task has ended; nothing before.
//!
//! # Peer conventions
//!
//! * **The authors' code** (zhoudw-zdw/RevisitingCIL, `models/simplecil.py`) and
//!   **LAMDA-PILOT** (sun-hailong/LAMDA-PILOT, `models/simplecil.py`, the same learner):
//!   a ViT-B/16 pre-trained on ImageNet (`SimpleVitNet`), frozen; at each task `replace_fc`
//!   runs the task's training set through the backbone under the *test* transform (no
//!   augmentation; here `features(x, false)` on the stream's un-augmented training images),
//!   in batches of 128 (`batch_size`), takes each new class's mean embedding and writes it into
//!   the rows of a `CosineLinear` classifier (`fc.weight.data[class_index] = proto`), whose
//!   logits are `σ · cos(φ(x), w_c)` with `σ = 1` as initialised (never trained here). The
//!   classifier grows with the classes seen (`update_fc`); here the network's output count is
//!   fixed and the classes not seen yet score `−∞`, which predicts the same. There is no
//!   optimisation in either; the network's own head is left untouched here rather than
//!   overwritten (the scores live in the method, read out through `eval_logits`).
//! * **Mammoth** has no SimpleCIL model.
//! * The first-session adaptation of the same code base (an adapter, prompt or SSF tuned on
//!   the first task, then merged with the frozen model) is APER/ADAM, SimpleCIL's sibling, and
//!   not part of this method. The scale `σ` does not change an arg-max and is omitted.

use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind, TaskContext,
};
use retain_train::{Method, Network, Readout, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// The registry entry of `simplecil`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "simplecil",
    family: Family::Baseline,
    summary: "SimpleCIL: frozen backbone, class-mean prototypes of its features, cosine read-out; no training step",
    paper: "Zhou, Cai, Ye, Zhan & Liu, \"Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability and Adaptivity are All You Need\", IJCV 2024",
    params: &[
        Param {
            name: "similarity",
            kind: ParamKind::Choice(&["cosine", "euclidean"]),
            default: ParamDefault::Value("\"cosine\""),
            doc: "score of a sample against a prototype: cosine similarity or negative Euclidean distance",
        },
        Param {
            name: "batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("128"),
            doc: "samples per forward pass of the prototype computation (≥ 1)",
        },
    ],
    example: "similarity = \"cosine\"\nbatch_size = 128",
    capabilities: Capabilities {
        capturable: false,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// State names.
const PROTOTYPES: &str = "prototypes";
const PRESENT: &str = "present";

/// How a sample is scored against a prototype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    Cosine,
    Euclidean,
}

/// The hyper-parameters: the `[method]` table without `name`, defaults filled in from
/// [`DESCRIPTOR`]. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub similarity: Similarity,
    pub batch_size: usize,
}

/// The method and its state: the prototypes once a task has ended.
#[derive(Debug)]
pub struct SimpleCil {
    params: Params,
    /// `[classes, F]` float prototypes and `[classes]` bool "has a prototype".
    prototypes: Option<(Tensor, Tensor)>,
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "simplecil".into(),
        message: message.into(),
    }
}

fn state_error(message: impl Into<String>) -> TrainError {
    TrainError::Method {
        method: "simplecil".into(),
        message: format!("method state: {}", message.into()),
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(SimpleCil::new(DESCRIPTOR.parse(params)?)?))
}

/// Rows of `x` (`[N, F]`) scaled to unit length (zero rows stay zero).
pub fn normalize_rows(x: &Tensor) -> Tensor {
    let norm = x
        .square()
        .sum_dim_intlist([1].as_slice(), true, Kind::Float)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

/// The scores `[B, C]` of `features` (`[B, F]`) against `prototypes` (`[C, F]`) under
/// `similarity`, `−∞` where `present` (`[C]` bool) is false.
pub fn scores(
    features: &Tensor,
    prototypes: &Tensor,
    present: &Tensor,
    similarity: Similarity,
) -> Tensor {
    let features = features.to_kind(Kind::Float);
    let s = match similarity {
        Similarity::Cosine => normalize_rows(&features).matmul(&normalize_rows(prototypes).tr()),
        Similarity::Euclidean => -(features.unsqueeze(1) - prototypes.unsqueeze(0))
            .square()
            .sum_dim_intlist([2].as_slice(), false, Kind::Float)
            .sqrt(),
    };
    s.masked_fill(&present.logical_not(), f64::NEG_INFINITY)
}

/// Per-class sums `[classes, F]` and counts `[classes]` of `features` (`[N, F]`) by
/// `labels` (`[N]` int64).
pub fn class_sums(features: &Tensor, labels: &Tensor, classes: i64) -> (Tensor, Tensor) {
    let features = features.to_kind(Kind::Float);
    let (device, width) = (features.device(), features.size()[1]);
    let sums =
        Tensor::zeros([classes, width], (Kind::Float, device)).index_add(0, labels, &features);
    let counts = Tensor::zeros([classes], (Kind::Float, device)).index_add(
        0,
        labels,
        &Tensor::ones([labels.size()[0]], (Kind::Float, device)),
    );
    (sums, counts)
}

impl SimpleCil {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.batch_size == 0 {
            return Err(invalid("`batch_size` must be ≥ 1, got 0"));
        }
        Ok(Self {
            params,
            prototypes: None,
        })
    }

    /// The prototypes (`[classes, F]`) and which classes have one (`[classes]` bool); `None`
    /// before the first task ends.
    pub fn prototypes(&self) -> Option<(&Tensor, &Tensor)> {
        self.prototypes.as_ref().map(|(p, m)| (p, m))
    }

    /// Sets the prototypes of the classes of `ctx.task`'s training samples to the means of
    /// their features (evaluation mode, un-augmented images).
    fn update_prototypes(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let indices = &ctx.task.train_indices;
        if indices.is_empty() {
            return Ok(());
        }
        let _no_grad = tch::no_grad_guard();
        let classes = ctx.network.model.outputs() as i64;
        let mut total: Option<(Tensor, Tensor)> = None;
        for chunk in indices.chunks(self.params.batch_size) {
            let batch = ctx.train_batch(chunk);
            let features = ctx.model().features(&batch.inputs, false);
            let (sums, counts) = class_sums(&features, &batch.labels, classes);
            total = Some(match total {
                None => (sums, counts),
                Some((s, c)) => (s + sums, c + counts),
            });
        }
        let (sums, counts) = total.expect("at least one chunk");
        let seen = counts.gt(0.0);
        let means = &sums / counts.clamp_min(1.0).unsqueeze(1);
        let (prototypes, present) = match self.prototypes.take() {
            Some((p, _)) if p.size() != means.size() => {
                return Err(state_error(format!(
                    "`{PROTOTYPES}` is {:?} but the network's features of its {classes} classes are {:?}",
                    p.size(),
                    means.size()
                )));
            }
            Some((p, m)) => (p.to_device(ctx.device), m.to_device(ctx.device)),
            None => (
                means.zeros_like(),
                Tensor::zeros([classes], (Kind::Bool, ctx.device)),
            ),
        };
        let prototypes = means.where_self(&seen.unsqueeze(1), &prototypes);
        let present = present.logical_or(&seen);
        self.prototypes = Some((prototypes, present));
        Ok(())
    }

    fn scores_with(
        &self,
        network: &Network,
        inputs: &Tensor,
        similarity: Similarity,
    ) -> Option<Tensor> {
        let (prototypes, present) = self.prototypes.as_ref()?;
        let features = network.model.features(inputs, false);
        let device: Device = features.device();
        Some(scores(
            &features,
            &prototypes.to_device(device),
            &present.to_device(device),
            similarity,
        ))
    }
}

impl Method for SimpleCil {
    fn name(&self) -> &str {
        "simplecil"
    }

    /// Freezes every variable: the backbone is read, never trained, so a run's cost columns
    /// count no trainable parameter.
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        retain_train::set_trainable(&retain_train::trainable_variables(ctx.vars()), |_| false);
        Ok(())
    }

    /// None: SimpleCIL takes no training step.
    fn training_indices(&mut self, _ctx: &TaskContext<'_>) -> Vec<i64> {
        Vec::new()
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.update_prototypes(ctx)
    }

    fn supports_readout(&self, readout: Readout) -> bool {
        matches!(
            readout,
            Readout::ClassIl | Readout::TaskIl | Readout::DomainIl | Readout::Ncm
        )
    }

    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        self.scores_with(network, inputs, self.params.similarity)
    }

    fn ncm_scores(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        self.scores_with(network, inputs, Similarity::Euclidean)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        match &self.prototypes {
            None => Vec::new(),
            Some((p, m)) => vec![
                (PROTOTYPES.to_owned(), p.shallow_clone()),
                (PRESENT.to_owned(), m.shallow_clone()),
            ],
        }
    }

    /// Expects both `prototypes` (`[C, F]` float) and `present` (`[C]` bool), or nothing.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.prototypes = None;
        if state.is_empty() {
            return Ok(());
        }
        let (mut prototypes, mut present) = (None, None);
        for (name, tensor) in state {
            match name.as_str() {
                PROTOTYPES => prototypes = Some(tensor),
                PRESENT => present = Some(tensor),
                other => return Err(state_error(format!("unexpected tensor `{other}`"))),
            }
        }
        let prototypes = prototypes.ok_or_else(|| state_error(format!("no `{PROTOTYPES}`")))?;
        let present = present.ok_or_else(|| state_error(format!("no `{PRESENT}`")))?;
        if prototypes.dim() != 2 || prototypes.kind() != Kind::Float {
            return Err(state_error(format!(
                "`{PROTOTYPES}` must be a [classes, F] float tensor, got {:?} {:?}",
                prototypes.size(),
                prototypes.kind()
            )));
        }
        if present.kind() != Kind::Bool || present.size() != [prototypes.size()[0]] {
            return Err(state_error(format!(
                "`{PRESENT}` must be a [{}] bool tensor, got {:?} {:?}",
                prototypes.size()[0],
                present.size(),
                present.kind()
            )));
        }
        self.prototypes = Some((prototypes, present));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
