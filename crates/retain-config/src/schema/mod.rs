//! The raw experiment file: what TOML deserialises into, before any check.
//!
//! Every struct rejects unknown keys. A key with a fixed default gets it here, as the file
//! is read (serde `default`); a key that applies to one kind of stream only, or whose default
//! is another key's value, stays an `Option` and is resolved by validation into the plan
//! (see [`crate::plan`]).

mod model;
mod pretrain;
mod stream;
mod training;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use model::{InitScheme, ModelConfig, VitNormalize, VitPreset, VitSpec};
pub use pretrain::PretrainConfig;
pub use stream::{
    Angles, AnglesName, AugmentConfig, ClassOrder, ClassOrderName, ClassesPerTask, EvaluateOn,
    ICARL_CIFAR100_ORDER, Readout, SplitLabels, StreamConfig, StreamKind,
};
pub use training::{MemoryFormat, OptimizerConfig, Precision, TrainingConfig, TrainingLoss};

/// The whole experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment; results go to `<output>/<name>/<run>/`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Master seed. Every other seed (class order, permutations, sampling, initialisation,
    /// shuffling) is derived from it, independently of the method. Any u64: TOML integers
    /// stop at 2⁶³ − 1, so larger seeds are written as strings (`seed = "18446744073709551615"`).
    #[serde(default, with = "seed_value")]
    pub seed: u64,
    /// `"auto"` (first CUDA device if any, else CPU), `"cpu"`, `"cuda"` or `"cuda:N"`.
    #[serde(default = "default_device")]
    pub device: DeviceSpec,
    /// Folder that holds `datasets/<name>/`.
    #[serde(default = "default_data_root")]
    pub data_root: PathBuf,
    /// Folder results are written under.
    #[serde(default = "default_output")]
    pub output: PathBuf,
    pub stream: StreamConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    /// A stage that trains `[model]` before the stream starts; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<PretrainConfig>,
    pub method: MethodConfig,
}

/// A seed as TOML holds it: an integer up to `i64::MAX`, a string of digits above (and
/// below: `"7"` reads as 7).
mod seed_value {
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*seed) {
            Ok(seed) => s.serialize_i64(seed),
            Err(_) => s.collect_str(seed),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Integer(i64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let expected = "`seed` must be an integer from 0 to 18446744073709551615 (above 9223372036854775807, the largest TOML integer, write it as a string: seed = \"18446744073709551615\")";
        let raw = Raw::deserialize(d).map_err(|_| de::Error::custom(expected))?;
        match &raw {
            Raw::Integer(n) => u64::try_from(*n).ok(),
            Raw::Text(text) => text.trim().parse().ok(),
        }
        .ok_or_else(|| {
            let given = match raw {
                Raw::Integer(n) => n.to_string(),
                Raw::Text(text) => format!("{text:?}"),
            };
            de::Error::custom(format!("{expected}; got {given}"))
        })
    }
}

fn default_device() -> DeviceSpec {
    DeviceSpec::Auto
}
fn default_data_root() -> PathBuf {
    PathBuf::from("datasets")
}
fn default_output() -> PathBuf {
    PathBuf::from("results")
}

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}`: use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")
                }),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[method]`: `name` picks the plugin; every other key is the plugin's own hyper-parameter
/// and is checked by the plugin (unknown keys rejected there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    pub name: String,
    #[serde(flatten)]
    pub params: toml::Table,
}
