//! A method's state ([`Method::state`]) as a safetensors file, the method's half of a
//! checkpoint beside the network's own ([`Network::save`](crate::Network::save)).

use std::path::Path;

use retain_models::checkpoint::CheckpointError;
use tch::Device;

use crate::{Method, TrainError};

/// Writes `method`'s [`Method::state`] to the safetensors file `path` (an empty file of
/// tensors when the method keeps none).
pub fn save_method_state(method: &dyn Method, path: &Path) -> Result<(), CheckpointError> {
    retain_models::checkpoint::write(&method.state(), path)
}

/// Reads the safetensors file `path` and hands its tensors, sorted by name and moved to
/// `device`, to [`Method::load_state`].
pub fn load_method_state(
    method: &mut dyn Method,
    path: &Path,
    device: Device,
) -> Result<(), TrainError> {
    let state = retain_models::checkpoint::read(path)?
        .into_iter()
        .map(|(name, tensor)| (name, tensor.to_device(device)))
        .collect();
    method.load_state(state)
}
