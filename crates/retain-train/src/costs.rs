//! What a method costs next to what it retains ([`Costs`]), measured at the end of a run.

use tch::Tensor;

use crate::{Method, Network};

/// What a method costs next to what it retains, measured at the end of a run (the manifest's
/// `costs`, columns of `metrics.parquet` and of a grid's `runs.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Costs {
    /// Σ numel of the variables that require gradients.
    pub trainable_parameters: u64,
    /// Σ bytes (numel × element size) of the tensors of [`Method::state`]: what the method
    /// keeps beside the model (stored adapters, Fisher matrices, anchors, replay indices).
    pub method_state_bytes: u64,
    /// `method_state_bytes` / number of tasks: how the state grows with the stream.
    pub state_bytes_per_task: f64,
    /// Bytes of the model's variables that do not require gradients (a frozen backbone),
    /// plus [`Backbone::quantized_bytes`](retain_models::Backbone::quantized_bytes).
    pub frozen_base_bytes: u64,
    /// Mean wall time of one training step, in seconds.
    pub seconds_per_step: f64,
}

impl Costs {
    /// The costs of `network` and `method` after a run of `tasks` tasks whose steps took
    /// `seconds_per_step` on average.
    pub fn measure(
        network: &Network,
        method: &dyn Method,
        tasks: usize,
        seconds_per_step: f64,
    ) -> Self {
        let variables = network.vars.variables();
        let trainable_parameters = variables
            .values()
            .filter(|t| t.requires_grad())
            .map(|t| t.numel() as u64)
            .sum();
        let frozen: u64 = variables
            .values()
            .filter(|t| !t.requires_grad())
            .map(tensor_bytes)
            .sum();
        let method_state_bytes: u64 = method.state().iter().map(|(_, t)| tensor_bytes(t)).sum();
        Self {
            trainable_parameters,
            method_state_bytes,
            state_bytes_per_task: method_state_bytes as f64 / tasks.max(1) as f64,
            frozen_base_bytes: frozen + network.model.quantized_bytes(),
            seconds_per_step,
        }
    }
}

/// Bytes a tensor's elements occupy: numel × element size.
pub fn tensor_bytes(tensor: &Tensor) -> u64 {
    tensor.numel() as u64 * tensor.kind().elt_size_in_bytes() as u64
}
