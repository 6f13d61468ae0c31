//! An experiment file and the command line resolved into what a run needs.

use std::path::{Path, PathBuf};

use anyhow::Result;
use retain_config::{DeviceSpec, Experiment};
use retain_train::Network;
use tch::Device;

use crate::cli::RunArgs;
use crate::registry;
use crate::usage::UsageError;

/// Everything a run needs, resolved from the file and the command line.
pub struct Plan {
    pub experiment: Experiment,
    pub run_name: String,
    pub run_dir: PathBuf,
    pub device: Device,
    /// Write `model.safetensors` and `method-state.safetensors` after training.
    pub save_checkpoint: bool,
    /// Continue from the run folder's resume checkpoint, when there is one.
    pub resume: bool,
}

impl Plan {
    /// Loads the experiment with the command line's overrides, checks its method and device,
    /// and names the run folder.
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let mut overrides = args.overrides.clone();
        if let Some(device) = &args.device {
            overrides.push(format!("device=\"{device}\""));
        }
        if let Some(seed) = args.seed {
            // Above i64::MAX a TOML integer cannot hold it: the seed's string form.
            overrides.push(format!("seed=\"{seed}\""));
        }
        if let Some(output) = &args.output {
            overrides.push(format!("output={}", toml_path(output)));
        }
        if let Some(root) = &args.data_root {
            overrides.push(format!("data_root={}", toml_path(root)));
        }
        let experiment =
            Experiment::load(&args.experiment, &overrides).map_err(UsageError::from)?;
        check_method(&experiment, &args.experiment.display().to_string())?;
        let device = resolve_device(experiment.device)?;
        let run_name = match &args.run_name {
            Some(name) => {
                retain_config::check_folder_name(name)
                    .map_err(|e| UsageError::new(format!("--run-name {e}")))?;
                name.clone()
            }
            None => format!("{}-seed{}", experiment.method.name, experiment.seed),
        };
        let run_dir = experiment.output.join(&experiment.name).join(&run_name);
        Ok(Self {
            experiment,
            run_name,
            run_dir,
            device,
            save_checkpoint: args.save_checkpoint,
            resume: args.resume,
        })
    }
}

/// A path as a TOML string, for a `KEY=VALUE` override.
pub fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// Maps the configured device onto what this machine has.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cuda(n) => {
            let count = tch::Cuda::device_count() as usize;
            if n >= count {
                return Err(UsageError::new(format!(
                    "device cuda:{n} requested but {count} CUDA device(s) are visible (run `retain doctor`)"
                ))
                .into());
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// Checks that the method exists, accepts its hyper-parameters, provides every requested
/// read-out and can train the experiment's model ([`check_network`]), and that this build can
/// train as `[training]` asks, before any data loads.
pub fn check_method(experiment: &Experiment, origin: &str) -> Result<()> {
    let Some(factory) = registry::factory(&experiment.method.name) else {
        return Err(UsageError::new(format!(
            "{origin}: unknown method `{}` (known: {})",
            experiment.method.name,
            registry::names().join(", ")
        ))
        .into());
    };
    let method = factory(&experiment.method.params)
        .map_err(|e| UsageError::new(format!("{origin}: {e}")))?;
    retain_train::check_readouts(&experiment.stream.readouts, Some(method.as_ref()))
        .map_err(|e| UsageError::new(format!("{origin}: stream.readouts: {e}")))?;
    retain_train::check_training(&experiment.training)
        .map_err(|e| UsageError::new(format!("{origin}: {e}")))?;
    check_network(experiment, method.as_ref(), origin)
}

/// Builds the experiment's model from the configuration alone, on the CPU: for the stream
/// dataset's image shape and classes (dataset facts, no data read), with `[model] checkpoint`
/// loaded (a missing file or one whose names or shapes differ is refused, naming the key),
/// and the `[pretrain.teacher]` likewise; then lets `method` check itself against it
/// ([`retain_train::Method::check_network`]). Every error is a usage error naming `origin`.
pub fn check_network(
    experiment: &Experiment,
    method: &dyn retain_train::Method,
    origin: &str,
) -> Result<()> {
    if let (Some(path), Some(expected)) = (
        experiment.model.checkpoint(),
        experiment.model.checkpoint_sha256(),
    ) {
        let actual = checkpoint_sha256(path)
            .map_err(|e| UsageError::new(format!("{origin}: model.checkpoint: {e}")))?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(UsageError::new(format!(
                "{origin}: model.checkpoint_sha256: {} has sha256 {actual}, not the expected {expected}",
                path.display()
            ))
            .into());
        }
    }
    let shape = retain_config::dataset_shape(experiment.stream.dataset);
    let outputs = experiment.stream.outputs();
    // tch's layer defaults, not the experiment's initialisation: only the names and shapes
    // matter here, and drawing them on the host would cost more than the check.
    let config = experiment.model.clone();
    let network = Network::from_builder(Device::Cpu, move |path| {
        retain_models::build(&config, path, shape, outputs)
    });
    if let Some(checkpoint) = experiment.model.checkpoint() {
        network
            .load(checkpoint)
            .map_err(|e| UsageError::new(format!("{origin}: model.checkpoint: {e}")))?;
    }
    if let Some(distillation) = experiment.pretrain_plan().and_then(|p| p.distillation) {
        retain_train::stage::load_teacher(&distillation.teacher, shape, outputs, Device::Cpu)
            .map_err(|e| UsageError::new(format!("{origin}: pretrain.teacher.checkpoint: {e}")))?;
    }
    method
        .check_network(&network)
        .map_err(|e| UsageError::new(format!("{origin}: {e}")))?;
    Ok(())
}

/// The sha256 of a checkpoint file's contents, 64 lower-case hex digits: what `[model]
/// checkpoint_sha256` pins, the manifest records and the `[pretrain]` stage key covers.
pub fn checkpoint_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The method of an experiment whose method [`check_method`] accepted.
pub fn build_method(experiment: &Experiment) -> Result<Box<dyn retain_train::Method>> {
    let factory = registry::factory(&experiment.method.name).expect("checked by check_method");
    Ok(factory(&experiment.method.params).map_err(|e| UsageError::new(e.to_string()))?)
}

/// The experiment's network for images of `image_shape` and `outputs` classes on `device`,
/// loaded from `[model] checkpoint` when one is given.
pub fn build_network(
    experiment: &Experiment,
    image_shape: [usize; 3],
    outputs: usize,
    device: Device,
) -> Result<Network> {
    let network = Network::for_shape(experiment, image_shape, outputs, device);
    if let Some(checkpoint) = experiment.model.checkpoint() {
        network
            .load(checkpoint)
            .map_err(|e| UsageError::new(format!("model.checkpoint: {e}")))?;
    }
    Ok(network)
}
