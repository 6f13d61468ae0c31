//! Parameter-efficient fine-tuning by name patterns: only the selected variables train.
//!
//! Before the first task, every trainable variable of the model is matched against the
//! `trainable` patterns, and those that match one of them and none of the `frozen` patterns
//! (exclusions, applied after) stay trainable; every other variable gets `requires_grad` off
//! for the whole run. The trainer's optimiser then never moves them (see `retain_train`'s
//! crate docs), so they stay bit-identical, and the trainable parameter count in the
//! manifest is the selection's. The loss is naive fine-tuning's cross-entropy: the method
//! limits what can change, not how.
//!
//! Patterns are globs over the model's stable variable names (`*` matches any run of
//! characters, dots included; see [`retain_models::names::matches()`]): `hidden.1.*`,
//! `head.*` and `*.bias` on the MLP, `layer4.*`, `layer4.1.bn2.*` and `linear.*` on ResNet-18
//! (names in `retain_models`' crate docs). Buffers such as batch-norm running statistics are
//! not variables that train: they never match, and still follow the data in training mode.
//!
//! This covers the selective fine-tuning baselines of the parameter-efficient literature:
//! linear probing (`["head.*"]`), training the top layers only (`["hidden.1.*", "head.*"]`),
//! BitFit (`["*.bias", "head.*"]`, also registered as `bitfit`). Mind the head: on a
//! class-split stream the new classes' outputs can only be learned if the head trains.
//!
//! A pattern that matches no trainable variable of the model, or a selection that ends up
//! empty, fails the run before training with the model's variable names listed.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `trainable` | (required) | name patterns of the variables that train (at least one; each must match a variable) |
//! | `frozen` | `[]` | name patterns of variables to freeze among those `trainable` selects (each must match a variable) |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "mlp"
//! hidden = [100, 100]
//! checkpoint = "results/pretrained/model.safetensors"
//!
//! [method]
//! name = "peft"
//! trainable = ["hidden.1.*", "head.*"]
//! frozen = ["hidden.1.bias"]
//! ```
//!
//! Selective fine-tuning as surveyed in Lialin, Deshpande & Rumshisky, "Scaling Down to
//! Scale Up: A Guide to Parameter-Efficient Fine-Tuning", arXiv:2303.15647, 2023 (§ selective
//! methods); BitFit is Ben Zaken, Ravfogel & Goldberg, ACL 2022.

use retain_models::names::{abbreviated, matches, matches_any};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, Network, TaskContext, TrainError, set_trainable, trainable_variables};
use serde::Deserialize;

/// The registry entry of `peft`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "peft",
    family: Family::ParameterEfficient,
    summary: "Selective fine-tuning: only the variables matching name patterns train",
    paper: "Lialin, Deshpande & Rumshisky, \"Scaling Down to Scale Up: A Guide to Parameter-Efficient Fine-Tuning\", arXiv:2303.15647, 2023 (selective methods)",
    params: &[
        Param {
            name: "trainable",
            kind: ParamKind::Strings,
            default: ParamDefault::Required,
            doc: "name patterns of the variables that train (at least one; each must match a variable)",
        },
        Param {
            name: "frozen",
            kind: ParamKind::Strings,
            default: ParamDefault::Value("[]"),
            doc: "name patterns of variables to freeze among those `trainable` selects (each must match a variable)",
        },
    ],
    example: "trainable = [\"hidden.1.*\", \"head.*\"]\nfrozen = [\"hidden.1.bias\"]",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// How many variable names an error lists before cutting the list short.
const LISTED_NAMES: usize = 24;

/// The hyper-parameters: the `[method]` table without `name` (defaults in [`DESCRIPTOR`]).
/// Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeftParams {
    pub trainable: Vec<String>,
    pub frozen: Vec<String>,
}

/// Name-pattern fine-tuning (see the crate docs).
#[derive(Debug)]
pub struct Peft {
    trainable: Vec<String>,
    frozen: Vec<String>,
    /// The selected variables' names, sorted; empty until the first task.
    selected: Vec<String>,
}

/// Registry factory for `peft`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Peft::new(DESCRIPTOR.parse(params)?)?))
}

impl Peft {
    pub fn new(params: PeftParams) -> Result<Self, TrainError> {
        if params.trainable.is_empty() {
            return Err(TrainError::MethodParams {
                method: "peft".into(),
                message: "`trainable` must list at least one name pattern".into(),
            });
        }
        Ok(Self {
            trainable: params.trainable,
            frozen: params.frozen,
            selected: Vec::new(),
        })
    }

    /// The names of the variables that train, sorted; empty before the first task.
    pub fn selected(&self) -> &[String] {
        &self.selected
    }

    /// The names among `names` that match a `trainable` pattern and no `frozen` one, sorted;
    /// an error message when a pattern matches none of `names` or nothing is selected.
    pub fn selection(&self, names: &[String]) -> Result<Vec<String>, String> {
        let mut names = names.to_vec();
        names.sort();
        for (key, patterns) in [("trainable", &self.trainable), ("frozen", &self.frozen)] {
            for pattern in patterns {
                if !names.iter().any(|n| matches(pattern, n)) {
                    return Err(format!(
                        "`method.{key}` pattern `{pattern}` matches no trainable variable (the model has: {})",
                        abbreviated(&names, LISTED_NAMES)
                    ));
                }
            }
        }
        let selected: Vec<String> = names
            .iter()
            .filter(|n| matches_any(&self.trainable, n) && !matches_any(&self.frozen, n))
            .cloned()
            .collect();
        if selected.is_empty() {
            return Err(format!(
                "`frozen` excludes every variable `trainable` selects, so nothing would train (the model has: {})",
                abbreviated(&names, LISTED_NAMES)
            ));
        }
        Ok(selected)
    }
}

impl Method for Peft {
    fn name(&self) -> &str {
        "peft"
    }

    /// The step is the default one over the selected variables, fixed for the run.
    fn capturable(&self) -> bool {
        true
    }

    /// Every `trainable` and `frozen` pattern must match a trainable variable, and something
    /// must be left to train.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        let names: Vec<String> = trainable_variables(&network.vars)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        self.selection(&names)
            .map(|_| ())
            .map_err(|message| TrainError::Method {
                method: "peft".into(),
                message,
            })
    }

    /// Freezes every variable outside the selection once, before the first task.
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if !self.selected.is_empty() {
            return Ok(());
        }
        let variables = trainable_variables(ctx.vars());
        let names: Vec<String> = variables.iter().map(|(n, _)| n.clone()).collect();
        self.selected = self
            .selection(&names)
            .map_err(|message| TrainError::Method {
                method: "peft".into(),
                message,
            })?;
        set_trainable(&variables, |name| {
            self.selected
                .binary_search_by(|s| s.as_str().cmp(name))
                .is_ok()
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
