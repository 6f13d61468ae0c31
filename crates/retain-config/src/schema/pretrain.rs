//! `[pretrain]`: a stage that trains the model before the stream, as the file gives it.

use serde::{Deserialize, Serialize};

use crate::{DatasetName, ModelConfig, OptimizerConfig};

/// `[pretrain]`: train the experiment's `[model]` before the task stream starts, so the stream
/// begins from those weights instead of a random initialisation (or `[model] checkpoint`).
///
/// With a `[pretrain.teacher]` table the stage is knowledge distillation (Hinton et al. 2015):
/// the teacher, a frozen model loaded from its checkpoint, provides soft labels and the
/// student (`[model]`, usually smaller) minimises
/// `(1 − hard_weight) · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + hard_weight · CE`.
/// The `T²` keeps the soft term's gradients on the scale of the hard term's as `T` grows.
///
/// Every key is optional; [`Experiment::pretrain_plan`](crate::Experiment::pretrain_plan)
/// resolves the defaults.
///
/// ```toml
/// [pretrain]
/// classes = [0, 1, 2, 3, 4]
/// epochs = 2
/// temperature = 4.0
///
/// [pretrain.teacher]
/// kind = "mlp"
/// hidden = [400, 400]
/// checkpoint = "teacher.safetensors"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The stream's dataset when absent. Must have the stream dataset's image shape (the model
    /// is built for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetName>,
    /// Classes to train on; every class of the dataset when absent. Each must be below the
    /// stream dataset's class count, the size of the model's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
    /// `[training] epochs` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// `[training] batch_size` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// `[training.optimizer]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerConfig>,
    /// Distillation temperature `T` (> 0); 2.0 when absent. Distillation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Weight in `[0, 1]` of the hard-label cross-entropy; 0 when absent. Distillation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_weight: Option<f64>,
    /// The teacher of a distillation stage: a model (same schema as `[model]`) with the
    /// stream's number of outputs, loaded from its `checkpoint` (required) and kept frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<ModelConfig>,
}
