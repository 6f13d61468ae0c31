//! The training step captured in a CUDA graph and replayed (`[training] cuda_graph`).
//!
//! A small continual-learning step is bound by kernel launches: the gather, forward, loss,
//! backward, a method's `after_backward` and the optimiser's update are a few hundred kernels,
//! each a host launch. Captured once per task and replayed, the whole step is one launch.
//!
//! What a captured step may change from one replay to the next lives in static device tensors
//! updated by an in-place copy before the replay: the batch's stream indices and the
//! augmentation key. Everything else the step reads is fixed for the task (the method says so
//! by [`Method::capturable`](crate::Method::capturable)), which is why a new graph is captured
//! at every task start. The loss accumulates on the device into a tensor that lives as long as
//! the graph. Partial last batches, and every step of a method that is not capturable, run
//! eagerly. The first [`WARM_UP_STEPS`] full steps of a task run eagerly on the graph's side
//! stream, as PyTorch's recipe asks, so that libraries set up their workspaces outside the
//! graph; they are real training steps.
//!
//! The optimiser's Adam step count moves onto the device for capture
//! ([`FlatOptimizer::prepare_capture`]), since a host scalar would be frozen into the graph.

use retain_graph::{Graph, GraphError};
use tch::{Device, Kind, Tensor};

/// Eager steps of a task before its graph is captured.
pub const WARM_UP_STEPS: usize = 2;

/// How a run's steps were executed, for the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepExecution {
    /// Steps replayed from a graph (the capture step included).
    pub graphed_steps: usize,
    /// Steps run eagerly (warm-up, partial batches, methods that cannot be captured).
    pub eager_steps: usize,
    /// Why graphs were not used, when they were not (off on the CPU, disabled, a method
    /// that cannot be captured, a failed capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eager_reason: Option<String>,
}

/// One task's captured step and its static inputs.
pub struct GraphedStep {
    graph: Graph,
    /// `[batch]` `int64`: the stream indices of the step's batch.
    pub indices: Tensor,
    /// `[]` `int64`: the augmentation key of the step's batch.
    pub key: Tensor,
    /// `[]` `float32`: the epoch's loss sum, added to by every step.
    pub loss_sum: Tensor,
    batch: usize,
    warm_up_left: usize,
}

impl GraphedStep {
    /// Static buffers for full batches of `batch` samples on `device`.
    pub fn new(device: Device, batch: usize) -> Result<Self, GraphError> {
        Ok(GraphedStep {
            graph: Graph::new(device)?,
            indices: Tensor::zeros([batch as i64], (Kind::Int64, device)),
            key: Tensor::zeros([], (Kind::Int64, device)),
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            batch,
            warm_up_left: WARM_UP_STEPS,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// One step on `indices` (`[batch]`, on the device) with augmentation key `key`: copies
    /// them into the static inputs, then runs `body` (which reads only the static inputs and
    /// adds its loss to [`GraphedStep::loss_sum`]) eagerly on the side stream while warming
    /// up or while the method is not `ready` ([`Method::capture_ready`]), captures it and
    /// replays it on the first step after that, and replays it from then on.
    ///
    /// [`Method::capture_ready`]: crate::Method::capture_ready
    #[allow(clippy::type_complexity)]
    pub fn step(
        &mut self,
        indices: &Tensor,
        key: u32,
        ready: bool,
        mut body: impl FnMut(&Tensor, &Tensor, &Tensor),
    ) -> Result<Ran, GraphError> {
        self.indices.copy_(indices);
        let _ = self.key.fill_(i64::from(key));
        let (static_indices, static_key, loss_sum) = (&self.indices, &self.key, &self.loss_sum);
        if self.warm_up_left > 0 || (!ready && !self.graph.is_captured()) {
            self.warm_up_left = self.warm_up_left.saturating_sub(1);
            self.graph
                .on_side_stream(|| body(static_indices, static_key, loss_sum))?;
            return Ok(Ran::WarmUp);
        }
        let ran = if self.graph.is_captured() {
            Ran::Replayed
        } else {
            self.graph
                .capture(|| body(static_indices, static_key, loss_sum))?;
            Ran::Captured
        };
        self.graph.replay()?;
        Ok(ran)
    }
}

/// How [`GraphedStep::step`] ran a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// Eagerly, on the side stream, before the capture.
    WarmUp,
    /// Captured (its host code ran once), then replayed.
    Captured,
    /// Replayed only: none of its host code ran.
    Replayed,
}

/// Why a run's steps run eagerly from the start, or `None` when they are captured: graphs
/// disabled, not on CUDA, per-tensor optimiser, a method that is not capturable, or no shim.
pub fn eager_reason(
    training: &retain_config::TrainingConfig,
    device: Device,
    method: &dyn crate::Method,
) -> Option<String> {
    if !training.cuda_graph {
        return Some("[training] cuda_graph = false".into());
    }
    if !device.is_cuda() {
        return Some(format!("{device:?} is not a CUDA device"));
    }
    if !training.flat_optimizer {
        return Some("[training] flat_optimizer = false (graphs need the flat optimiser)".into());
    }
    if !method.capturable() {
        return Some("the method's step is not capturable".into());
    }
    retain_graph::availability(device)
        .err()
        .map(|e| e.to_string())
}
