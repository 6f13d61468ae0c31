//! Memory Aware Synapses (MAS; Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, "Memory
//! Aware Synapses: Learning what (not) to forget", ECCV 2018).
//!
//! After each task, MAS measures how sensitive the network's function is to each parameter:
//! the magnitude of the gradient of the squared L2 norm of the output, averaged over the
//! task's samples. No labels are needed (the paper's point: importance can be estimated on
//! any unlabelled data). With `N = samples` of the finished task's training samples, taken in
//! batches `b` of `batch_size`:
//!
//! ```text
//! Ω_task,i = (1/N) Σ_b | ∂/∂θ_i Σ_{n ∈ b} ‖f_θ(x_n)‖²₂ |
//! Ω ← Ω + Ω_task          θ* ← θ
//! ```
//!
//! With `batch_size = 1` (the default) this is the paper's eq. 2 exactly, the mean over
//! samples of each sample's gradient magnitude; a larger batch takes the magnitude of the
//! batch's summed gradient, as the authors' code does (`MAS_utils/MAS_based_Training.py`,
//! `compute_importance_l2`: `MSELoss(size_average=False)(outputs, zeros)` per loader batch,
//! then `MAS_Omega_update`: `omega ← (omega · prev_size + |grad|) / cur_size`). Opposite
//! signs of different samples' gradients then cancel before the magnitude is taken, so the
//! per-batch estimate is at most the per-sample one. The network is in evaluation mode, as
//! in the authors' `compute_importance_l2` (`model.eval()`).
//!
//! While later tasks train, the loss is
//!
//! ```text
//! loss = CE(f_θ(x), y) + λ · Σ_i Ω_i (θ_i − θ*_i)²
//! ```
//!
//! without a ½: the authors' `Weight_Regularized_SGD` adds `2 · reg_lambda · omega ⊙ (θ − θ*)`
//! to the gradient, the gradient of `λ Σ Ω (θ − θ*)²`. `Ω` is a running **sum** over tasks, as
//! in the authors' code (`accumulate_MAS_weights`, which FACIL quotes as "just add prev and
//! new"), and `θ*` is the latest task's end point: one penalty, constant memory.
//!
//! As in EWC, the penalty's gradient `2λ Ω ⊙ (θ − θ*)` is computed in closed form on flat
//! tensors and added to the gradients after `backward`; its value enters the loss as a
//! constant. Ω and θ* live on the training device; the step launches the same kernels at
//! every step and reads nothing back: it is captured in a CUDA graph on CUDA.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `lambda` | `1.0` | penalty strength `λ` (≥ 0) |
//! | `samples` | all of the task's training samples | samples of the finished task `Ω` is estimated on (a seeded choice when fewer) |
//! | `batch_size` | `1` | samples per gradient in the estimate; 1 is the per-sample mean of eq. 2 |
//!
//! `λ = 1` is the authors' (`MAS.ipynb`: `reg_lambda = 1`) and FACIL's default (`--lamb 1`,
//! whose penalty has a ½, so FACIL's 1 is `lambda = 0.5` here). Like every quadratic
//! penalty's strength, `λ` depends on the set-up (the size of `Ω` grows with the output's
//! scale); on the reduced Split-MNIST of this crate's efficacy test `λ = 1` keeps task-IL
//! accuracy far above naive fine-tuning's (see `tests/efficacy.rs`).
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "mas"
//! lambda = 1.0
//! batch_size = 1
//! # samples = 1000   # all of the task's training samples when absent
//! ```
//!
//! # Peer conventions
//!
//! Sources: the authors' code (`rahafaljundi/MAS-Memory-Aware-Synapses`,
//! `MAS_to_be_published/MAS_utils/MAS_based_Training.py`); FACIL (`mmasana/FACIL`,
//! `src/approach/mas.py`); Avalanche (`ContinualAI/avalanche`,
//! `avalanche/training/plugins/mas.py`, `MASPlugin`, "based on FACIL").
//!
//! * **What is differentiated.** The authors: the squared L2 norm summed over a batch
//!   (`MSELoss(size_average=False)` against zeros), as here. FACIL and Avalanche: the
//!   batch's mean of the *unsquared* norm, `torch.norm(out, p=2, dim=1).mean()`, whose
//!   gradient per sample is `f/‖f‖ · ∂f/∂θ` instead of `2 f · ∂f/∂θ`; the magnitude of that
//!   batch gradient is multiplied by the batch size and divided by the sample count (FACIL:
//!   by the number of batches times the batch size; Avalanche: by the number of batches, so
//!   its Ω is a batch size larger). Nothing here reproduces the unsquared norm.
//! * **Batches.** The authors and FACIL/Avalanche take `|·|` of each loader batch's
//!   gradient: `batch_size` = their loader's batch size reproduces that grouping (FACIL and
//!   Avalanche use the training batch size); the default 1 is eq. 2 per sample.
//! * **Mode.** The authors estimate in `eval()` mode, as here; FACIL and Avalanche in
//!   `train()` mode (the same for a network without batch norm or dropout).
//! * **Accumulation over tasks.** The authors: a sum, as here. FACIL and Avalanche: a running
//!   blend `Ω ← α Ω + (1 − α) Ω_task` with `α = 0.5` by default; after one task their Ω is half
//!   of this crate's, and earlier tasks fade geometrically. Not reproduced.
//! * **Penalty.** The authors: `λ Σ Ω (θ − θ*)²`, as here. FACIL (`lamb`) and Avalanche
//!   (`lambda_reg`): `λ/2 Σ Ω (θ − θ*)²`, so their `λ` is `lambda = λ/2` here. FACIL
//!   regularises only the shared feature extractor, not the heads; here every parameter is.
//! * **Samples.** FACIL `--fi-num-samples -1` (default) and Avalanche use the whole task, as
//!   the default here; the authors' code every sample of the given loaders.

use retain_train::flat_params::{Layout, add_to_grads, flatten, quadratic, read_pair, write_pair};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, StepContext, TaskContext, TrainError, gradients};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// Samples gathered on the device at once during the estimate.
const PASS_SAMPLES: usize = 1000;

/// The registry entry of `mas`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "mas",
    family: Family::Regularisation,
    summary: "Memory Aware Synapses: a quadratic penalty weighted by the output norm's sensitivity to each parameter",
    paper: "Aljundi et al., \"Memory Aware Synapses: Learning what (not) to forget\", ECCV 2018",
    params: &[
        Param {
            name: "lambda",
            kind: ParamKind::Float,
            default: ParamDefault::Value("1.0"),
            doc: "penalty strength λ (≥ 0)",
        },
        Param {
            name: "samples",
            kind: ParamKind::Count,
            default: ParamDefault::Derived("all of the task's training samples"),
            doc: "samples of the finished task the importance is estimated on (≥ 1)",
        },
        Param {
            name: "batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("1"),
            doc: "samples per gradient of the estimate (1: per-sample magnitudes, eq. 2)",
        },
    ],
    example: "lambda = 1.0\nsamples = 200\nbatch_size = 1",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters: the `[method]` table without `name`, defaults filled in from
/// [`DESCRIPTOR`]. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub lambda: f64,
    /// `None`: all of the task's training samples.
    #[serde(default)]
    pub samples: Option<usize>,
    pub batch_size: usize,
}

/// Memory Aware Synapses (see the crate docs).
pub struct Mas {
    lambda: f64,
    samples: Option<usize>,
    batch_size: usize,
    layout: Layout,
    /// `Ω` and `θ*`, flat; `None` before the first task ends.
    consolidated: Option<(Tensor, Tensor)>,
    /// Shallow handles on the live parameters (layout order), refreshed in `before_task`.
    params: Vec<Tensor>,
    /// `2λ Ω ⊙ (θ − θ*)`, flat, computed by `loss` and added by `after_backward`.
    pending_gradient: Option<Tensor>,
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Mas::new(DESCRIPTOR.parse(params)?)?))
}

impl Mas {
    /// Validates `params`.
    pub fn new(params: Params) -> Result<Self, TrainError> {
        let invalid = |message: String| TrainError::MethodParams {
            method: "mas".into(),
            message,
        };
        if !(params.lambda.is_finite() && params.lambda >= 0.0) {
            return Err(invalid(format!(
                "`lambda` must be finite and ≥ 0, got {}",
                params.lambda
            )));
        }
        if params.samples == Some(0) {
            return Err(invalid("`samples` must be at least 1".into()));
        }
        if params.batch_size == 0 {
            return Err(invalid("`batch_size` must be at least 1".into()));
        }
        Ok(Self {
            lambda: params.lambda,
            samples: params.samples,
            batch_size: params.batch_size,
            layout: Layout::default(),
            consolidated: None,
            params: Vec::new(),
            pending_gradient: None,
        })
    }

    /// `λ · Σ_i Ω_i (θ_i − θ*_i)²` for `params` (sorted by name, as
    /// [`retain_train::Network::parameters`] gives them), differentiable through autograd;
    /// `None` before the first task ends. The training step computes the same value and its
    /// gradient in fused form; this is the reference.
    pub fn penalty(&self, params: &[Tensor]) -> Option<Tensor> {
        let (omega, anchor) = self.consolidated.as_ref()?;
        let delta = flatten(params) - anchor;
        Some((omega * delta.square()).sum(Kind::Float) * self.lambda)
    }

    /// The accumulated importance `Ω`, one tensor per parameter (layout order); `None` before
    /// the first task ends.
    pub fn importance(&self) -> Option<Vec<Tensor>> {
        let (omega, _) = self.consolidated.as_ref()?;
        Some(self.layout.split(omega))
    }

    /// `Ω_task` of the task in `ctx` (see the crate docs), one tensor per parameter of
    /// `params`. Runs on the device, without host reads.
    pub fn estimate_importance(
        &self,
        ctx: &TaskContext<'_>,
        params: &[Tensor],
    ) -> Result<Vec<Tensor>, TrainError> {
        let indices =
            ctx.sample_train_indices(self.samples.unwrap_or(usize::MAX), "mas/importance");
        let total = indices.len() as f64;
        let mut omega: Vec<Tensor> = params.iter().map(Tensor::zeros_like).collect();
        // A whole number of batches per pass, so that the batches are those of one loop.
        let pass = (PASS_SAMPLES / self.batch_size).max(1) * self.batch_size;
        for part in indices.chunks(pass) {
            let inputs = ctx.train_batch(part).inputs;
            for start in (0..part.len()).step_by(self.batch_size) {
                let len = self.batch_size.min(part.len() - start);
                let x = inputs.narrow(0, start as i64, len as i64);
                let squared_norm = ctx.model().forward_t(&x, false).square().sum(Kind::Float);
                for (o, g) in omega.iter_mut().zip(gradients(&squared_norm, params)?) {
                    let _ = o.g_add_(&(g.abs() / total));
                }
            }
        }
        Ok(omega)
    }

    fn error(message: String) -> TrainError {
        TrainError::Method {
            method: "mas".into(),
            message,
        }
    }

    /// Checks the network's parameters against the consolidated layout and caches handles on
    /// them.
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let (current, params) = Layout::bind(ctx.parameters());
        let stored = self.consolidated.is_some();
        if let Err(mismatch) = self.layout.adopt(current, stored) {
            return Err(Self::error(mismatch.to_string()));
        }
        if let Some((omega, anchor)) = &mut self.consolidated {
            *omega = omega.to_device(ctx.device);
            *anchor = anchor.to_device(ctx.device);
        }
        self.params = params;
        Ok(())
    }
}

impl Method for Mas {
    fn name(&self) -> &str {
        "mas"
    }

    /// The step reads only device tensors fixed for the task: captured in a CUDA graph on
    /// CUDA.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.bind(ctx)
    }

    /// Cross-entropy plus the penalty's value (a constant; its gradient is added by
    /// `after_backward`).
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let ce = ctx.cross_entropy(batch);
        let Some((omega, anchor)) = &self.consolidated else {
            return Ok(ce);
        };
        let value = {
            let _no_grad = tch::no_grad_guard();
            let theta = flatten(&self.params).detach();
            let (value, weighted) = quadratic(omega, &theta, anchor);
            self.pending_gradient = Some(weighted * (2.0 * self.lambda));
            value * self.lambda
        };
        // Outside the guard: the cross-entropy keeps its graph.
        Ok(ce + value)
    }

    /// Adds the penalty's gradient computed by `loss`. A parameter whose `grad()` is still
    /// undefined got no gradient from the model's loss, so its importance, estimated through
    /// the same forward pass, is zero, and so is its penalty gradient.
    fn after_backward(&mut self, _ctx: &StepContext<'_>) -> Result<(), TrainError> {
        let Some(penalty) = self.pending_gradient.take() else {
            return Ok(());
        };
        add_to_grads(&self.params, &penalty);
        Ok(())
    }

    /// `Ω ← Ω + Ω_task`, `θ* ← θ`.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.bind(ctx)?;
        let params = std::mem::take(&mut self.params);
        let added = flatten(&self.estimate_importance(ctx, &params)?);
        let anchor = flatten(&params).detach().copy();
        let omega = match self.consolidated.take() {
            Some((omega, _)) => omega + added,
            None => added,
        };
        self.consolidated = Some((omega, anchor));
        self.params = params;
        self.pending_gradient = None;
        Ok(())
    }

    /// `omega.<param>` (`Ω`) and `anchor.<param>` (`θ*`); empty before the first task ends.
    fn state(&self) -> Vec<(String, Tensor)> {
        let Some((omega, anchor)) = &self.consolidated else {
            return Vec::new();
        };
        write_pair(&self.layout, ("omega", omega), ("anchor", anchor))
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let read = read_pair(state, "omega", "anchor").map_err(Self::error)?;
        let (layout, consolidated) = match read {
            Some((layout, omega, anchor)) => (layout, Some((omega, anchor))),
            None => (Layout::default(), None),
        };
        self.consolidated = consolidated;
        self.layout = layout;
        self.params.clear();
        self.pending_gradient = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
