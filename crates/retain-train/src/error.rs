//! The crate's one error type, [`TrainError`].

use retain_config::Readout;
use retain_metrics::MetricsError;
use retain_models::checkpoint::CheckpointError;

use crate::Divergence;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "training diverged: mean loss {loss} in task {task}, epoch {epoch}, {reason} (lower the learning rate?)"
    )]
    Diverged {
        task: usize,
        epoch: usize,
        loss: f64,
        reason: Divergence,
    },
    #[error(
        "pretrain stage diverged: mean loss {loss} in epoch {epoch}, {reason} (lower pretrain.optimizer.lr?)"
    )]
    StageDiverged {
        epoch: usize,
        loss: f64,
        reason: Divergence,
    },
    #[error("pretrain stage: {message}")]
    Stage { message: String },
    #[error("invalid hyper-parameters for method `{method}`: {message}")]
    MethodParams { method: String, message: String },
    #[error("method `{method}` failed: {message}")]
    Method { method: String, message: String },
    #[error("training.{key} = \"{value}\" is not available in this build: {reason}")]
    Unavailable {
        key: &'static str,
        value: &'static str,
        reason: String,
    },
    #[error(
        "read-out `{}` is not available with method `{method}`: {}",
        readout.as_str(),
        needs(*readout)
    )]
    UnsupportedReadout { readout: Readout, method: String },
    /// A resume checkpoint that cannot continue this run (another configuration, malformed).
    #[error("cannot resume: {message}")]
    Resume { message: String },
    /// The checkpoint hook stopped the run after `tasks_done` tasks and `epochs_done` epochs
    /// of the next (a termination request): the run is unfinished, not failed, and continues
    /// from its resume checkpoint.
    #[error("stopped after task {tasks_done} (and {epochs_done} epochs of the next) on request")]
    Stopped {
        tasks_done: usize,
        epochs_done: usize,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// What `readout` needs from a method: the reason in [`TrainError::UnsupportedReadout`].
fn needs(readout: Readout) -> &'static str {
    match readout {
        Readout::TaskInferred | Readout::TaskInference => {
            "it needs a method that infers each test sample's task from its inputs"
        }
        Readout::Merged => "it needs a method with per-task weights that it can merge",
        Readout::Ncm => "it needs a method that keeps exemplars and their class means (iCaRL)",
        Readout::ClassIl | Readout::TaskIl | Readout::DomainIl => "every method provides it",
    }
}
