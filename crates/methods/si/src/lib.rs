//! Synaptic Intelligence (SI; Zenke, Poole & Ganguli, "Continual Learning Through Synaptic
//! Intelligence", ICML 2017).
//!
//! While a task trains, SI measures how much each parameter contributed to the decrease of
//! the loss along the optimiser's actual path: the path integral
//!
//! ```text
//! ω_i += −g_i,k · Δθ_i,k          at every step k of the task
//! ```
//!
//! where `g_k` is the gradient of the task loss at step `k` (see "Which gradient" below) and
//! `Δθ_k = θ_k+1 − θ_k` the update the optimiser made from it. At the end of the task, the
//! importance and the anchor are updated, and `ω` is reset:
//!
//! ```text
//! Ω_i ← Ω_i + ω_i / ((θ_i,end − θ_i,start)² + ξ)
//! θ*  ← θ_end
//! ```
//!
//! While later tasks train, the loss is
//!
//! ```text
//! loss = CE(f_θ(x), y) + c · Σ_i Ω_i (θ_i − θ*_i)²
//! ```
//!
//! (no ½, as in the paper's eq. 4 and both reference codes below). `Ω` accumulates over
//! tasks (a sum), `θ*` is the latest task's end point: one penalty, constant memory.
//!
//! # Which gradient
//!
//! The paper leaves open whether `g` is the gradient of the task loss alone or of the
//! regularised total loss. This crate follows the authors' code (`ganguli-lab/pathint`,
//! `pathint/protocols.py`: `loss_accum ← loss_accum − unreg_grads · delta`, the gradients of
//! the *unregularised* loss), which is also what FACIL's `path_integral.py` does
//! (`unreg_grads` stored before the penalty is added): `gradient = "task"` (the default). The
//! other choice, `gradient = "total"`, takes the gradient of the whole loss, penalty included,
//! as van de Ven's `continual-learning` (`models/cl/continual_learner.py`,
//! `update_importance_estimates`: `W += −p.grad · (p − p_old)` after the optimiser step of
//! `loss_total`, which includes `reg_strength · surrogate_loss()`) and Mammoth do. The two
//! agree on the first task and differ after it: the penalty's own gradient pulls parameters
//! back to `θ*`, and under `"total"` that pull is counted as "contribution to the loss
//! decrease" too. The task-loss gradient measures what the paper describes (each
//! parameter's share of the task loss's decrease), hence the default.
//!
//! # How it is computed
//!
//! The trainer has no hook after the optimiser step, so the update of step `k` is measured at
//! step `k+1`: `after_backward` keeps the step's gradient (flat, on the device), the next
//! `loss` (and, for the last step, `after_task`) takes `Δθ` as the parameters now minus those
//! it saw last, adds `−g ⊙ Δθ` to `ω` and remembers the parameters. The measured `Δθ` is the
//! optimiser's real update (Adam, momentum and weight decay included), not an estimate from
//! the gradient. As in EWC, the penalty's gradient `2c Ω ⊙ (θ − θ*)` is computed in closed
//! form on flat tensors and added to the gradients after `backward`; the value enters the
//! loss as a constant. Every buffer lives on the training device and is updated in place, with
//! the same kernels at every step: the step is captured in a CUDA graph on CUDA.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `c` | `10.0` | penalty strength `c` (≥ 0) |
//! | `xi` | `0.1` | damping `ξ` (> 0) of the normalisation by the squared total change |
//! | `gradient` | `"task"` | the gradient in the path integral: `"task"` (unregularised loss) or `"total"` (loss with the penalty) |
//!
//! The defaults are van de Ven's for task-incremental Split-MNIST (`GMvandeVen/continual-learning`,
//! `params/param_values.py`: `si_c = 10` for `scenario == 'task'` and `splitMNIST`;
//! `models/cl/continual_learner.py`: `epsilon = 0.1`). The same file uses `si_c = 50000`
//! (domain-IL) and `5000` (class-IL) on Split-MNIST. `c` scales with the size of
//! `Ω`, which depends on the optimiser and learning rate (it integrates actual steps), so it
//! does not carry over between set-ups.
//!
//! With plain SGD at learning rate `lr`, the penalty moves parameter `i` by
//! `lr · 2c · Ω_i · (θ_i − θ*_i)` per step; if `2 · lr · c · max Ω` exceeds 2 it overshoots.
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "si"
//! c = 10.0
//! xi = 0.1
//! gradient = "task"
//! ```
//!
//! # Peer conventions
//!
//! Sources: the authors' code (`ganguli-lab/pathint`, `pathint/protocols.py`); van de Ven's
//! `GMvandeVen/continual-learning` (`models/cl/continual_learner.py`,
//! `train/train_task_based.py`, `params/param_values.py`); Mammoth (`aimagelab/mammoth`,
//! `models/si.py`); FACIL (`mmasana/FACIL`, `src/approach/path_integral.py`).
//!
//! * **Loss.** All of them add `c · Σ Ω (θ − θ*)²` with no ½ (van de Ven
//!   `reg_strength · surrogate_loss()`, Mammoth `args.c · penalty()`): `c` translates one to
//!   one. (FACIL's `lamb` multiplies the same sum.)
//! * **Ω update.** `Ω += ω / ((θ_end − θ_start)² + ξ)` with `θ_start` the parameters at the
//!   task's start, in all of them (van de Ven's `epsilon`, Mammoth's `xi`, FACIL's `damping`):
//!   `xi` translates one to one. The authors' code additionally clips the new `Ω` at zero
//!   (`tf.nn.relu`); van de Ven, Mammoth and this crate do not, so a parameter whose moves
//!   mostly increased the task loss gets a (small) negative importance.
//! * **Path integral.** van de Ven: exactly `−g ⊙ Δθ` per step from the measured update,
//!   with `g` the total loss's gradient: `gradient = "total"` here. Mammoth does not measure
//!   `Δθ`: it adds `lr · g²` per step, `g` being the total loss's gradient after
//!   `clip_grad_value_(…, 1)` — the path integral of plain SGD without momentum
//!   (`Δθ = −lr · g`), which is wrong for Adam or momentum (Adam's steps are about `lr · sign(g)`
//!   whatever `g`'s size). Mammoth's numbers correspond to `gradient = "total"` under plain SGD
//!   and gradients below the clip value; there is no setting here that reproduces the `lr · g²`
//!   approximation under another optimiser. FACIL: `−g_unreg ⊙ Δθ` as here.
//! * **Anchor at the first task.** Everyone takes `θ_start` of the first task as the
//!   parameters before training starts, as here.
//!
//! Translation: van de Ven's `--si --c 10 --epsilon 0.1` is `c = 10.0, xi = 0.1,
//! gradient = "total"`; Mammoth's `--c C --xi X` is `c = C, xi = X, gradient = "total"` with
//! plain SGD (its gradient clipping at 1 not reproduced).

use retain_train::flat_params::{
    Layout, add_to_grads, flat_grad, flatten, quadratic, read_pair, write_pair,
};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// The registry entry of `si`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "si",
    family: Family::Regularisation,
    summary: "Synaptic Intelligence: a quadratic penalty weighted by each parameter's path-integral contribution to the loss decrease",
    paper: "Zenke, Poole & Ganguli, \"Continual Learning Through Synaptic Intelligence\", ICML 2017",
    params: &[
        Param {
            name: "c",
            kind: ParamKind::Float,
            default: ParamDefault::Value("10.0"),
            doc: "penalty strength c (≥ 0)",
        },
        Param {
            name: "xi",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.1"),
            doc: "damping ξ (> 0) of Ω = ω / (Δθ² + ξ)",
        },
        Param {
            name: "gradient",
            kind: ParamKind::Choice(&["task", "total"]),
            default: ParamDefault::Value("\"task\""),
            doc: "gradient in the path integral: of the task loss, or of the loss with the penalty",
        },
    ],
    example: "c = 1.0\nxi = 0.1",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// Which gradient enters the path integral (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathGradient {
    /// The gradient of the task loss alone (the authors' `unreg_grads`).
    Task,
    /// The gradient of the task loss plus the penalty (van de Ven, Mammoth).
    Total,
}

/// The hyper-parameters: the `[method]` table without `name`, defaults filled in from
/// [`DESCRIPTOR`]. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub c: f64,
    pub xi: f64,
    pub gradient: PathGradient,
}

/// The running measurement of one task: flat tensors on the training device, updated in
/// place at every step.
struct Path {
    /// The parameters when the task began (`θ_start`).
    start: Tensor,
    /// The parameters the last `loss` saw.
    previous: Tensor,
    /// The gradient `after_backward` kept at those parameters (zero before the first step).
    gradient: Tensor,
    /// `ω`: `Σ_k −g_k ⊙ Δθ_k` so far.
    omega: Tensor,
}

/// Synaptic Intelligence (see the crate docs).
pub struct Si {
    c: f64,
    xi: f64,
    gradient: PathGradient,
    layout: Layout,
    /// `Ω` and `θ*`, flat; `None` before the first task ends.
    consolidated: Option<(Tensor, Tensor)>,
    path: Option<Path>,
    /// Shallow handles on the live parameters (layout order), refreshed in `before_task`.
    params: Vec<Tensor>,
    /// `2c Ω ⊙ (θ − θ*)`, flat, computed by `loss` and added by `after_backward`.
    pending_gradient: Option<Tensor>,
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Si::new(DESCRIPTOR.parse(params)?)?))
}

impl Si {
    /// Validates `params`.
    pub fn new(params: Params) -> Result<Self, TrainError> {
        let invalid = |message: String| TrainError::MethodParams {
            method: "si".into(),
            message,
        };
        if !(params.c.is_finite() && params.c >= 0.0) {
            return Err(invalid(format!(
                "`c` must be finite and ≥ 0, got {}",
                params.c
            )));
        }
        if !(params.xi.is_finite() && params.xi > 0.0) {
            return Err(invalid(format!(
                "`xi` must be finite and > 0 (it keeps Ω finite where a parameter did not move), got {}",
                params.xi
            )));
        }
        Ok(Self {
            c: params.c,
            xi: params.xi,
            gradient: params.gradient,
            layout: Layout::default(),
            consolidated: None,
            path: None,
            params: Vec::new(),
            pending_gradient: None,
        })
    }

    /// `c · Σ_i Ω_i (θ_i − θ*_i)²` for `params` (sorted by name, as
    /// [`retain_train::Network::parameters`] gives them), differentiable through autograd;
    /// `None` before the first task ends. The training step computes the same value and its
    /// gradient in fused form; this is the reference.
    pub fn penalty(&self, params: &[Tensor]) -> Option<Tensor> {
        let (omega, anchor) = self.consolidated.as_ref()?;
        let delta = flatten(params) - anchor;
        Some((omega * delta.square()).sum(Kind::Float) * self.c)
    }

    /// The accumulated importance `Ω`, one tensor per parameter (layout order); `None` before
    /// the first task ends.
    pub fn importance(&self) -> Option<Vec<Tensor>> {
        let (omega, _) = self.consolidated.as_ref()?;
        Some(self.layout.split(omega))
    }

    /// The current task's path integral `ω` up to the last update the method has measured
    /// (the update of a step is measured by the next `loss`, or by `after_task`), one tensor
    /// per parameter; `None` outside a task.
    pub fn path_integral(&self) -> Option<Vec<Tensor>> {
        let path = self.path.as_ref()?;
        Some(self.layout.split(&path.omega))
    }

    fn error(message: String) -> TrainError {
        TrainError::Method {
            method: "si".into(),
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

    /// The live parameters as one detached flat tensor.
    fn theta(&self) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        flatten(&self.params).detach()
    }

    /// Adds `−g ⊙ (θ − θ_previous)` to `ω` and remembers `θ`: the update of the last step.
    fn measure(path: &mut Path, theta: &Tensor) {
        let _no_grad = tch::no_grad_guard();
        let _ = path
            .omega
            .g_sub_(&(&path.gradient * (theta - &path.previous)));
        path.previous.copy_(theta);
    }
}

impl Method for Si {
    fn name(&self) -> &str {
        "si"
    }

    /// The step launches the same kernels on buffers fixed for the task and reads nothing
    /// back to the host: captured in a CUDA graph on CUDA.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.bind(ctx)?;
        let theta = self.theta();
        self.path = Some(Path {
            start: theta.copy(),
            previous: theta.copy(),
            gradient: theta.zeros_like(),
            omega: theta.zeros_like(),
        });
        self.pending_gradient = None;
        Ok(())
    }

    /// Measures the previous step's update, then returns cross-entropy plus the penalty's
    /// value (a constant; its gradient is added by `after_backward`).
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let theta = self.theta();
        let Some(path) = self.path.as_mut() else {
            return Err(Self::error(
                "a training step ran before `before_task`".into(),
            ));
        };
        Self::measure(path, &theta);
        let ce = ctx.cross_entropy(batch);
        let Some((omega, anchor)) = &self.consolidated else {
            return Ok(ce);
        };
        let (value, weighted) = quadratic(omega, &theta, anchor);
        let value = value * self.c;
        self.pending_gradient = Some(weighted * (2.0 * self.c));
        Ok(ce + value)
    }

    /// Keeps the step's gradient for the path integral (before or after adding the penalty's
    /// gradient, per `gradient`) and adds the penalty's gradient. A parameter whose `grad()`
    /// is undefined got no gradient from the loss: it counts as zero, and the optimiser does
    /// not move it.
    fn after_backward(&mut self, _ctx: &StepContext<'_>) -> Result<(), TrainError> {
        let Some(path) = self.path.as_mut() else {
            return Err(Self::error(
                "a training step ran before `before_task`".into(),
            ));
        };
        let _no_grad = tch::no_grad_guard();
        let task = flat_grad(&self.params);
        let pending = self.pending_gradient.take();
        match (&pending, self.gradient) {
            (Some(penalty), PathGradient::Total) => {
                path.gradient.copy_(&(task + penalty));
            }
            _ => {
                path.gradient.copy_(&task);
            }
        }
        if let Some(penalty) = pending {
            add_to_grads(&self.params, &penalty);
        }
        Ok(())
    }

    /// Measures the last step's update, then `Ω += ω / ((θ − θ_start)² + ξ)`, `θ* ← θ`.
    fn after_task(&mut self, _ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let theta = self.theta();
        let Some(mut path) = self.path.take() else {
            return Err(Self::error("`after_task` ran before `before_task`".into()));
        };
        Self::measure(&mut path, &theta);
        let _no_grad = tch::no_grad_guard();
        let added = &path.omega / ((&theta - &path.start).square() + self.xi);
        let omega = match self.consolidated.take() {
            Some((omega, _)) => omega + added,
            None => added,
        };
        self.consolidated = Some((omega, theta.copy()));
        self.pending_gradient = None;
        Ok(())
    }

    /// `omega.<param>` (`Ω`) and `anchor.<param>` (`θ*`); empty before the first task ends.
    /// The path integral is reset at every task boundary and is not part of the state.
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
        self.path = None;
        self.params.clear();
        self.pending_gradient = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
