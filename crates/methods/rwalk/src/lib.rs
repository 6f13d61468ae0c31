//! Riemannian Walk (RWalk): Chaudhry, Dokania, Ajanthan & Torr, "Riemannian Walk for
//! Incremental Learning: Understanding Forgetting and Intransigence", ECCV 2018.
//!
//! RWalk is a quadratic penalty around the parameters `θ*` reached at the end of the previous
//! task, weighted per parameter by two importances computed while training:
//!
//! * **EWC++**, a running diagonal empirical Fisher, updated at every step from the squared
//!   gradient `g` of the step's unregularised minibatch loss (the mean cross-entropy of the
//!   batch at its true labels, exemplars included):
//!   `F ← α · g² + (1 − α) · F`. It starts at zero and runs on across tasks (it is never
//!   reset).
//! * **The path score**, how much each parameter's moves lowered the loss relative to how far
//!   they moved the model's output distribution (measured by the Fisher). Over every interval
//!   of `score_interval` steps from `θ_a` to `θ_b`, with `Δℓ = −Σ_steps g_k ⊙ (θ_k+1 − θ_k)`
//!   (the first-order loss decrease, accumulated from each step's unregularised gradient and
//!   actual update):
//!
//!   ```text
//!   s_task += Δℓ / (½ · F ⊙ (θ_b − θ_a)² + ε)
//!   ```
//!
//!   with `F` the running Fisher at the interval's last step. At the end of a task, the
//!   task's score is averaged with the previous one, `s ← ½ (s + s_task)` (the first task's
//!   score is `s_task`), so that the penalty does not grow ever more rigid.
//!
//! At the end of each task both are normalised into `[0, 1]` by their maximum over *all*
//! parameters (negative scores are set to zero), and the penalty weight
//!
//! ```text
//! W = F / max F + relu(s) / max relu(s)
//! ```
//!
//! is fixed, with `θ*` the parameters there. Every later step minimises
//!
//! ```text
//! loss = CE(f_θ(x), y) + λ · Σ_i W_i (θ_i − θ*_i)²
//! ```
//!
//! (no ½; during the first task, the cross-entropy alone). The penalty's gradient
//! `2λ W ⊙ (θ − θ*)` is computed in closed form on flat tensors and added to the gradients
//! after `backward`, after the unregularised gradient `g` has been read for the Fisher and the
//! score, as the reference reads it from a backward pass without the penalty.
//!
//! # Exemplars
//!
//! For class-incremental learning the paper keeps a small memory of exemplars per class and
//! compares four ways of choosing them (uniform random, plane distance, entropy, mean of
//! features). With `samples_per_class = m > 0`, at the end of each task `m` training samples
//! of each of its classes are drawn uniformly at random (FACIL's default
//! `--exemplar-selection random`) from a generator seeded by
//! `derive(seed, "rwalk/exemplars/task<t>")`, and they join the training set of every later
//! task (FACIL: `trn_loader.dataset + self.exemplars_dataset`, shuffled together), so they are
//! trained on with the task's samples and enter the Fisher and the score like them. A class
//! with fewer than `m` samples keeps all of them. The memory grows by `m` per class (FACIL's
//! `--num-exemplars-per-class`). The stored indices live on the training device and in the
//! state.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `lambda` | `0.1` | penalty strength `λ` (≥ 0) |
//! | `alpha` | `0.9` | EWC++ weight `α ∈ [0, 1]` of the newest squared gradient |
//! | `score_interval` | `10` | steps per path-score interval (≥ 1) |
//! | `epsilon` | `1.1920928955078125e-7` | damping `ε > 0` of the score's denominator (float32 epsilon) |
//! | `samples_per_class` | `0` | exemplars kept per class of each finished task (0: no memory) |
//!
//! The defaults are Avalanche's (`RWalkPlugin(ewc_lambda=0.1, ewc_alpha=0.9, delta_t=10)`,
//! `eps = torch.finfo(float32).eps`) for the regulariser and FACIL's for the memory
//! (`--num-exemplars-per-class 0`, random selection). With plain SGD a step pulls parameter
//! `i` towards its anchor by `lr · 2λ · W_i`, and `W_i ≤ 2`: `lr · λ` beyond ½ overshoots.
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "rwalk"
//! lambda = 10.0
//! alpha = 0.9
//! score_interval = 10
//! samples_per_class = 20   # class-IL: a small exemplar memory
//! ```
//!
//! # Peer conventions
//!
//! The algorithm here is the paper's (Sec. 4, Eqs. 6–10), as Avalanche implements it; the
//! memory is FACIL's. Sources: Avalanche (`ContinualAI/avalanche`,
//! `avalanche/training/plugins/rwalk.py`, `RWalkPlugin`); FACIL (`mmasana/FACIL`,
//! `src/approach/r_walk.py`, exemplars in `src/datasets/exemplars_dataset.py` and
//! `exemplars_selection.py`). Mammoth (`aimagelab/mammoth`) has no RWalk.
//!
//! * **Avalanche `RWalkPlugin`** computes the same EWC++ Fisher (every iteration, squared
//!   gradient of the unregularised minibatch loss, `ewc_alpha` on the new term), the same
//!   Δℓ, the same score every `delta_t` iterations with `eps` the float32 epsilon and the
//!   interval's parameters, the same ½ average of scores between experiences, the same
//!   normalisation by the maximum over all parameters and the same penalty
//!   `ewc_lambda · Σ W (θ − θ*)²`. `lambda = ewc_lambda`, `alpha = ewc_alpha`,
//!   `score_interval = delta_t` translate unchanged. Differences: Avalanche's Fisher starts at
//!   the first squared gradient (here at zero: after `k` steps the start weighs
//!   `(1 − α)^k`, `10⁻¹⁰` after ten steps at the default); its interval counter is global, so an
//!   interval can span two experiences and the steps after an experience's last full interval
//!   count towards the next experience's score, where here every task starts an interval and
//!   its last, partial one is added to its own score; Avalanche divides by the maximum score
//!   before the `relu` (the same unless every score is negative, where it divides by a
//!   negative number or zero); its gradient for the Fisher comes from a separate forward pass
//!   in `eval()` mode (the same for models without dropout or batch statistics). Avalanche
//!   keeps no exemplars itself: its docs pair the plugin with a replay plugin for class-IL.
//! * **FACIL `r_walk`** follows the paper's idea with other estimators; nothing here
//!   reproduces it exactly. Its Fisher is computed once per task after training (squared
//!   gradients of the batch-mean loss at the model's predicted labels, `max_pred`, over the
//!   training set) and fused as `F ← alpha · F_old + (1 − alpha) · F_new` with `alpha = 0.5`
//!   (its `alpha` weighs the *old* Fisher, the opposite of the `alpha` here); its score
//!   accumulates `−g ⊙ Δθ` over the whole task and divides once at the end by
//!   `F ⊙ (θ − θ*)² + damping` (no ½, `damping = 0.1`), before the same `relu` and ½ average;
//!   neither term is normalised, the heads are excluded, and its `lamb` defaults to 1. Its
//!   exemplar memory is what `samples_per_class` does here: `--num-exemplars-per-class m`
//!   with the default `--exemplar-selection random`, a uniform choice per class among the
//!   training data after each task, concatenated with the next task's data (FACIL's fixed
//!   total budget `--num-exemplars` has no equivalent here).
//! * **The paper** fixes what Avalanche implements; it normalises both importances into
//!   `[0, 1]` "for numerical stability" and uses an exemplar memory in its class-IL
//!   experiments (its uniform random sampling is the choice here; the others are not
//!   implemented).

mod exemplars;

pub use exemplars::select_per_class;

use retain_stream::SplitKind;
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
// Every flat tensor the method keeps is detached from autograd.
use retain_train::flat_params::{add_to_grads, flat_grad, flatten_detached as flatten, quadratic};
use retain_train::{Batch, Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// The registry entry of `rwalk`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "rwalk",
    family: Family::Regularisation,
    summary: "Riemannian Walk: a quadratic penalty weighted by an EWC++ running Fisher plus an optimisation-path score, with optional per-class exemplars",
    paper: "Chaudhry et al., \"Riemannian Walk for Incremental Learning: Understanding Forgetting and Intransigence\", ECCV 2018",
    params: &[
        Param {
            name: "lambda",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.1"),
            doc: "penalty strength λ (≥ 0)",
        },
        Param {
            name: "alpha",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.9"),
            doc: "EWC++ weight α ∈ [0, 1] of the newest squared gradient",
        },
        Param {
            name: "score_interval",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "steps per path-score interval (≥ 1)",
        },
        Param {
            name: "epsilon",
            kind: ParamKind::Float,
            default: ParamDefault::Value("1.1920928955078125e-7"),
            doc: "damping ε > 0 of the path score's denominator",
        },
        Param {
            name: "samples_per_class",
            kind: ParamKind::Count,
            default: ParamDefault::Value("0"),
            doc: "exemplars kept per class of each finished task, trained on with later tasks (0: none)",
        },
    ],
    example: "lambda = 1.0\nalpha = 0.9\nscore_interval = 10\nsamples_per_class = 5",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
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
    pub alpha: f64,
    pub score_interval: usize,
    pub epsilon: f64,
    pub samples_per_class: usize,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Rwalk::new(DESCRIPTOR.parse(params)?)?))
}

/// One EWC++ update: `α · g² + (1 − α) · F`.
pub fn ewc_plus_plus(fisher: &Tensor, gradient: &Tensor, alpha: f64) -> Tensor {
    gradient.square() * alpha + fisher * (1.0 - alpha)
}

/// The path score of one interval: `Δℓ / (½ · F ⊙ Δθ² + ε)`, where `Δℓ` is the interval's
/// accumulated `−Σ g ⊙ Δθ_step` and `Δθ` its total parameter change.
pub fn path_score(loss_decrease: &Tensor, fisher: &Tensor, moved: &Tensor, epsilon: f64) -> Tensor {
    loss_decrease / ((fisher * moved.square()) * 0.5 + epsilon)
}

/// The penalty weights `F / max F + relu(s) / max relu(s)`, maxima over every element (a
/// zero maximum leaves its term zero).
pub fn penalty_weights(fisher: &Tensor, score: &Tensor) -> Tensor {
    let positive = score.relu();
    let tiny = f64::from(f32::MIN_POSITIVE);
    fisher / fisher.max().clamp_min(tiny) + &positive / positive.max().clamp_min(tiny)
}

/// The running quantities of the task being trained, flat over the parameters (sorted by
/// name, flattened, concatenated). Reset at every task's start.
struct Walk {
    /// Parameters at the last `after_backward` (before that step's update).
    previous: Tensor,
    /// The unregularised gradient of that step.
    gradient: Tensor,
    /// `−Σ g ⊙ Δθ` since the last interval boundary.
    loss_decrease: Tensor,
    /// Parameters at the last interval boundary.
    boundary: Tensor,
    /// The task's score so far.
    score: Tensor,
    /// Steps whose update has been accounted (`[]` int64, −1 before the first step).
    steps: Tensor,
}

/// What the penalty is made of after a task.
struct Consolidation {
    /// `s`, averaged over tasks (before the `relu`).
    score: Tensor,
    anchor: Tensor,
    /// `W`, derived from the Fisher and `score`.
    weights: Tensor,
}

/// RWalk (see the crate docs).
pub struct Rwalk {
    params: Params,
    /// The EWC++ running Fisher, flat; created at the first task.
    fisher: Option<Tensor>,
    walk: Option<Walk>,
    consolidation: Option<Consolidation>,
    /// Exemplar indices into the training split: host copy for `training_indices`, device
    /// copy for the state.
    memory: Vec<i64>,
    memory_device: Option<Tensor>,
    /// Live parameter handles (sorted by name), bound at `before_task`.
    handles: Vec<Tensor>,
    /// `2λ W ⊙ (θ − θ*)`, computed by `loss`, added by `after_backward`.
    pending_gradient: Option<Tensor>,
}

impl std::fmt::Debug for Rwalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rwalk")
            .field("params", &self.params)
            .field("memory", &self.memory.len())
            .finish_non_exhaustive()
    }
}

fn invalid(message: String) -> TrainError {
    TrainError::MethodParams {
        method: "rwalk".into(),
        message,
    }
}

fn failed(message: String) -> TrainError {
    TrainError::Method {
        method: "rwalk".into(),
        message,
    }
}

impl Rwalk {
    /// Validates `params`, naming the offending key.
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if !(params.lambda.is_finite() && params.lambda >= 0.0) {
            return Err(invalid(format!(
                "`lambda` must be finite and ≥ 0, got {}",
                params.lambda
            )));
        }
        if !(0.0..=1.0).contains(&params.alpha) {
            return Err(invalid(format!(
                "`alpha` must be in [0, 1], got {}",
                params.alpha
            )));
        }
        if params.score_interval == 0 {
            return Err(invalid("`score_interval` must be at least 1".into()));
        }
        if !(params.epsilon.is_finite() && params.epsilon > 0.0) {
            return Err(invalid(format!(
                "`epsilon` must be finite and > 0, got {}",
                params.epsilon
            )));
        }
        retain_train::method::check_param_memory(
            "rwalk",
            "samples_per_class",
            params.samples_per_class,
            8,
            "8 bytes (a dataset index) per exemplar of each class",
        )?;
        Ok(Self {
            params,
            fisher: None,
            walk: None,
            consolidation: None,
            memory: Vec::new(),
            memory_device: None,
            handles: Vec::new(),
            pending_gradient: None,
        })
    }

    /// The EWC++ running Fisher, flat over the parameters sorted by name (after the first
    /// `before_task`).
    pub fn fisher(&self) -> Option<&Tensor> {
        self.fisher.as_ref()
    }

    /// The current task's path score so far (before `after_task` folds it in).
    pub fn task_score(&self) -> Option<&Tensor> {
        self.walk.as_ref().map(|w| &w.score)
    }

    /// The averaged score `s` (after the first task).
    pub fn score(&self) -> Option<&Tensor> {
        self.consolidation.as_ref().map(|c| &c.score)
    }

    /// The penalty weights `W` (after the first task).
    pub fn weights(&self) -> Option<&Tensor> {
        self.consolidation.as_ref().map(|c| &c.weights)
    }

    /// The exemplar memory's indices into the training split.
    pub fn memory(&self) -> &[i64] {
        &self.memory
    }

    /// `λ · Σ W (θ − θ*)²` at `params` (sorted by name), through autograd; `None` before the
    /// first task ends. The step computes the same value and gradient in closed form.
    pub fn penalty(&self, params: &[Tensor]) -> Option<Tensor> {
        let c = self.consolidation.as_ref()?;
        let delta = retain_train::flat_params::flatten(params) - &c.anchor;
        Some((&c.weights * delta.square()).sum(Kind::Float) * self.params.lambda)
    }

    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.handles = ctx.parameters().into_iter().map(|(_, p)| p).collect();
        let size: i64 = self.handles.iter().map(Tensor::numel).sum::<usize>() as i64;
        let theta = flatten(&self.handles);
        let checked = [
            ("fisher", self.fisher.as_ref()),
            ("score", self.consolidation.as_ref().map(|c| &c.score)),
            ("anchor", self.consolidation.as_ref().map(|c| &c.anchor)),
        ];
        for (name, tensor) in checked {
            if let Some(t) = tensor
                && t.size() != [size]
            {
                return Err(failed(format!(
                    "state tensor `{name}` has shape {:?}, but the network has {size} parameters",
                    t.size()
                )));
            }
        }
        let device = theta.device();
        let fisher = self.fisher.get_or_insert_with(|| theta.zeros_like());
        *fisher = fisher.to_device(device);
        if let Some(c) = &mut self.consolidation {
            c.score = c.score.to_device(device);
            c.anchor = c.anchor.to_device(device);
            c.weights = penalty_weights(fisher, &c.score);
        }
        if let Some(memory) = &mut self.memory_device {
            *memory = memory.to_device(device);
        }
        Ok(())
    }

    fn start_walk(&mut self, device: Device) {
        let theta = flatten(&self.handles);
        self.walk = Some(Walk {
            previous: theta.copy(),
            gradient: theta.zeros_like(),
            loss_decrease: theta.zeros_like(),
            boundary: theta.copy(),
            score: theta.zeros_like(),
            steps: Tensor::full([], -1, (Kind::Int64, device)),
        });
    }
}

impl Walk {
    /// Accounts the update of the previous step, now that the parameters `theta` after it are
    /// known, and closes the score interval when it is complete (`force`: at the task's end).
    fn account(
        &mut self,
        theta: &Tensor,
        fisher: &Tensor,
        interval: usize,
        epsilon: f64,
        force: bool,
    ) {
        let _ = self
            .loss_decrease
            .g_sub_(&(&self.gradient * (theta - &self.previous)));
        let _ = self.steps.g_add_scalar_(1);
        let increment = path_score(
            &self.loss_decrease,
            fisher,
            &(theta - &self.boundary),
            epsilon,
        );
        if force {
            let _ = self.score.g_add_(&increment);
            return;
        }
        // Device-side condition: the step stays free of host reads.
        let close = self
            .steps
            .remainder(interval as i64)
            .eq(0)
            .logical_and(&self.steps.gt(0));
        let _ = self
            .score
            .g_add_(&increment.where_self(&close, &increment.zeros_like()));
        let _ = self.loss_decrease.masked_fill_(&close, 0.0);
        let boundary = theta.where_self(&close, &self.boundary);
        self.boundary.copy_(&boundary);
    }
}

impl Method for Rwalk {
    fn name(&self) -> &str {
        "rwalk"
    }

    /// The step launches the same kernels every time, on tensors updated in place; the
    /// score interval's boundary is a device-side condition on a device step counter.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.bind(ctx)?;
        self.start_walk(ctx.device);
        self.pending_gradient = None;
        Ok(())
    }

    /// The task's samples, then the exemplars of earlier tasks (FACIL concatenates the two
    /// datasets and shuffles them together, as the trainer does).
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        let mut indices = ctx.task.train_indices.clone();
        indices.extend_from_slice(&self.memory);
        indices
    }

    /// Cross-entropy plus the penalty's value, as a constant: its gradient is added by
    /// `after_backward`, after the unregularised gradient has been read.
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let ce = ctx.cross_entropy(batch);
        let Some(c) = &self.consolidation else {
            return Ok(ce);
        };
        let (value, weighted) = quadratic(&c.weights, &flatten(&self.handles), &c.anchor);
        let value = value * self.params.lambda;
        self.pending_gradient = Some(weighted * (2.0 * self.params.lambda));
        Ok(ce + value)
    }

    /// Reads the unregularised gradient: accounts the previous step's update for the path
    /// score, updates the EWC++ Fisher, then adds the penalty's gradient.
    fn after_backward(&mut self, _ctx: &StepContext<'_>) -> Result<(), TrainError> {
        let (Some(walk), Some(fisher)) = (&mut self.walk, &mut self.fisher) else {
            return Err(failed("a step ran before `before_task`".into()));
        };
        let theta = flatten(&self.handles);
        let gradient = flat_grad(&self.handles);
        walk.account(
            &theta,
            fisher,
            self.params.score_interval,
            self.params.epsilon,
            false,
        );
        let updated = ewc_plus_plus(fisher, &gradient, self.params.alpha);
        fisher.copy_(&updated);
        walk.gradient.copy_(&gradient);
        walk.previous.copy_(&theta);
        if let Some(pending) = self.pending_gradient.take() {
            add_to_grads(&self.handles, &pending);
        }
        Ok(())
    }

    /// Accounts the last step and interval, folds the task's score into `s`, fixes the
    /// penalty weights and anchor, and draws the task's exemplars.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.handles = ctx.parameters().into_iter().map(|(_, p)| p).collect();
        let (Some(mut walk), Some(fisher)) = (self.walk.take(), self.fisher.as_ref()) else {
            return Err(failed("`after_task` ran before `before_task`".into()));
        };
        let theta = flatten(&self.handles);
        walk.account(
            &theta,
            fisher,
            self.params.score_interval,
            self.params.epsilon,
            true,
        );
        let score = match self.consolidation.take() {
            None => walk.score,
            Some(c) => (c.score + walk.score) * 0.5,
        };
        self.consolidation = Some(Consolidation {
            weights: penalty_weights(fisher, &score),
            score,
            anchor: theta,
        });
        self.pending_gradient = None;
        let per_class = self.params.samples_per_class;
        if per_class > 0 {
            let indices = &ctx.task.train_indices;
            let labels: Vec<i64> = indices
                .iter()
                .map(|&i| i64::from(ctx.stream.label(SplitKind::Train, i)))
                .collect();
            let seed = derive(ctx.seed, &format!("rwalk/exemplars/task{}", ctx.task.index));
            let chosen = select_per_class(indices, &labels, &ctx.task.classes, per_class, seed);
            self.memory.extend(chosen);
            self.memory_device = Some(Tensor::from_slice(&self.memory).to_device(ctx.device));
        }
        // The next task rebinds and restarts the walk; the bench and resumed runs may call
        // `after_task` without steps in between, which the fresh walk below keeps valid.
        self.start_walk(ctx.device);
        Ok(())
    }

    /// `fisher` (the running Fisher), `score` (`s`) and `anchor` (`θ*`), flat over the
    /// parameters sorted by name, after the first task; `memory.indices` (int64) once the
    /// memory holds exemplars. The penalty weights are derived from `fisher` and `score`.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = Vec::new();
        if let (Some(fisher), Some(c)) = (&self.fisher, &self.consolidation) {
            state.push(("fisher".to_owned(), fisher.shallow_clone()));
            state.push(("score".to_owned(), c.score.shallow_clone()));
            state.push(("anchor".to_owned(), c.anchor.shallow_clone()));
        }
        if let Some(memory) = &self.memory_device
            && !self.memory.is_empty()
        {
            state.push(("memory.indices".to_owned(), memory.shallow_clone()));
        }
        state
    }

    /// Restores [`Method::state`]'s tensors; their sizes are checked against the network at
    /// the next `before_task`.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let mut fisher = None;
        let mut score = None;
        let mut anchor = None;
        let mut memory = None;
        for (name, tensor) in state {
            let slot = match name.as_str() {
                "fisher" => &mut fisher,
                "score" => &mut score,
                "anchor" => &mut anchor,
                "memory.indices" => &mut memory,
                _ => return Err(failed(format!("unexpected state tensor `{name}`"))),
            };
            if tensor.dim() != 1 {
                return Err(failed(format!(
                    "state tensor `{name}` must be one-dimensional, got shape {:?}",
                    tensor.size()
                )));
            }
            *slot = Some(tensor);
        }
        let consolidation = match (fisher, score, anchor) {
            (None, None, None) => None,
            (Some(fisher), Some(score), Some(anchor)) => {
                if score.size() != fisher.size() || anchor.size() != fisher.size() {
                    return Err(failed(format!(
                        "state tensors `fisher`, `score`, `anchor` differ in size: {:?}, {:?}, {:?}",
                        fisher.size(),
                        score.size(),
                        anchor.size()
                    )));
                }
                let fisher = fisher.to_kind(Kind::Float);
                let score = score.to_kind(Kind::Float);
                Some((
                    fisher.shallow_clone(),
                    Consolidation {
                        weights: penalty_weights(&fisher, &score),
                        score,
                        anchor: anchor.to_kind(Kind::Float),
                    },
                ))
            }
            _ => {
                return Err(failed(
                    "the state needs all of `fisher`, `score` and `anchor`, or none".into(),
                ));
            }
        };
        self.memory = match &memory {
            Some(m) => Vec::<i64>::try_from(&m.to_kind(Kind::Int64)).map_err(|e| {
                failed(format!("state tensor `memory.indices` cannot be read: {e}"))
            })?,
            None => Vec::new(),
        };
        if !self.memory.is_empty() && self.params.samples_per_class == 0 {
            return Err(failed(
                "the state holds exemplars but `samples_per_class` is 0".into(),
            ));
        }
        self.memory_device = memory.map(|m| m.to_kind(Kind::Int64));
        let (fisher, consolidation) = consolidation.unzip();
        self.fisher = fisher;
        self.consolidation = consolidation;
        self.walk = None;
        self.handles.clear();
        self.pending_gradient = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
