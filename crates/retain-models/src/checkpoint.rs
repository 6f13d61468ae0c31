//! Model weights as safetensors files, keyed by the stable parameter names.
//!
//! [`save`] writes every variable of a `VarStore` (trainable or not, e.g. batch-norm running
//! statistics) under its name; [`load`] reads a file back into a `VarStore` of the same
//! architecture, and refuses a file that does not match it with an error listing the missing
//! and unexpected tensor names and the shape mismatches. Because the names are PyTorch's
//! `state_dict` names, a file written by `safetensors.torch.save_file(model.state_dict(), …)`
//! for the same architecture loads as is (`fixtures/mlp_reference.py`).
//!
//! Every file is written through the workspace's atomic writer ([`retain_fs`]): a reader, or a
//! run resuming after a crash, finds the previous checkpoint or the new one, never half of one.

use std::path::{Path, PathBuf};

use retain_fs::AtomicError;
use tch::{Device, Tensor, nn};

/// Errors of reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    /// The file system refused a step of the atomic write (creating, flushing or renaming
    /// the temporary file); `source` names the step and the path it failed on.
    #[error("checkpoint {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: retain_fs::WriteError,
    },
    #[error("checkpoint {} does not match the architecture: {}", path.display(), mismatch.describe())]
    Mismatch { path: PathBuf, mismatch: Mismatch },
}

/// How a file's tensors differ from the expected ones, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Expected tensors the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file the architecture has no place for.
    pub unexpected: Vec<String>,
    /// `(name, expected shape, shape in the file)`.
    pub shapes: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl Mismatch {
    /// Compares `found` against `expected` (names and shapes).
    pub fn between(expected: &[(String, Vec<i64>)], found: &[(String, Vec<i64>)]) -> Self {
        use std::collections::BTreeMap;
        let expected: BTreeMap<&str, &Vec<i64>> =
            expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let found: BTreeMap<&str, &Vec<i64>> = found.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let mut mismatch = Mismatch::default();
        for (name, shape) in &expected {
            match found.get(name) {
                None => mismatch.missing.push(name.to_string()),
                Some(other) if other != shape => {
                    mismatch
                        .shapes
                        .push((name.to_string(), shape.to_vec(), other.to_vec()))
                }
                Some(_) => {}
            }
        }
        mismatch.unexpected = found
            .keys()
            .filter(|n| !expected.contains_key(*n))
            .map(|n| n.to_string())
            .collect();
        mismatch
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }

    /// One line: `missing [a, b]; unexpected [c]; shape of d: expected [2, 3], file has [3, 2]`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing [{}]", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected [{}]", self.unexpected.join(", ")));
        }
        for (name, expected, found) in &self.shapes {
            parts.push(format!(
                "shape of {name}: expected {expected:?}, file has {found:?}"
            ));
        }
        parts.join("; ")
    }
}

/// The variables of `vars` with their names, sorted by name.
pub fn named_variables(vars: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Writes `tensors` (copied to the host) to the safetensors file `path` through
/// [`retain_fs::write_atomically_with`], so that a reader never sees half a file and a crash
/// leaves the old file in place.
pub fn write(tensors: &[(String, Tensor)], path: &Path) -> Result<(), CheckpointError> {
    let host: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    retain_fs::write_atomically_with(path, |temporary| {
        Tensor::write_safetensors(&host, temporary)
    })
    .map_err(|error| match error {
        AtomicError::Writer(source) => CheckpointError::Io {
            path: path.to_owned(),
            source,
        },
        AtomicError::Write(source) => CheckpointError::Write {
            path: path.to_owned(),
            source,
        },
    })
}

/// Reads every tensor of the safetensors file `path` (on the host), sorted by name.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let mut tensors = Tensor::read_safetensors(path).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Saves every variable of `vars` to `path`.
pub fn save(vars: &nn::VarStore, path: &Path) -> Result<(), CheckpointError> {
    write(&named_variables(vars), path)
}

/// Loads `path` into `vars`: the file must hold exactly the variables of `vars`, with the
/// same shapes, or nothing is changed and the error lists every difference. Values are
/// converted to each variable's kind and device; `requires_grad` is kept.
pub fn load(vars: &nn::VarStore, path: &Path) -> Result<(), CheckpointError> {
    let file = read(path)?;
    let targets = named_variables(vars);
    let shapes = |v: &[(String, Tensor)]| -> Vec<(String, Vec<i64>)> {
        v.iter().map(|(n, t)| (n.clone(), t.size())).collect()
    };
    let mismatch = Mismatch::between(&shapes(&targets), &shapes(&file));
    if !mismatch.is_empty() {
        return Err(CheckpointError::Mismatch {
            path: path.to_owned(),
            mismatch,
        });
    }
    let _no_grad = tch::no_grad_guard();
    for ((_, target), (_, value)) in targets.iter().zip(&file) {
        target
            .shallow_clone()
            .f_copy_(value)
            .map_err(|source| CheckpointError::Io {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
