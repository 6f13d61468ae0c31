//! The `[pretrain]` stage of a run: train (or reuse) the stage's weights before the task
//! stream starts.
//!
//! A stage's result is cached under `<output>/<experiment>/stages/pretrain-<hash>/`:
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | the trained model's variables (a `[model] checkpoint` for any run) |
//! | `stage.json` | the resolved stage, model config, seed, data identity, accuracy (and the teacher's), seconds, parameter counts |
//!
//! `<hash>` is a hash of everything that determines the weights: the resolved stage (classes,
//! epochs, batch size, optimiser, teacher and its settings), the model config, the seed, the
//! dataset's identity (its name and the checksums its files are verified against) and the
//! contents of the starting and teacher checkpoints. The device is not part of it: a stage
//! trained on a GPU serves CPU runs too (the weights differ only by floating-point order).
//! The runs of one experiment, and every cell of a grid (which share `<output>/<grid>/`),
//! therefore train a stage once; cells that start it at the same moment may each train it,
//! and each write is atomic (`retain_fs`), `stage.json` last, so a reader sees either a whole
//! stage or none.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use md5::{Digest, Md5};
use retain_config::{Experiment, ModelConfig, PretrainPlan};
use retain_fs::write_atomically;
use retain_stream::TaskStream;
use retain_train::Network;
use retain_train::stage::{self, StageOutcome};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::provenance::device_name;
use crate::usage::UsageError;

/// What a run records about its stage in `manifest.json` (`pretrain`).
pub type StageSummary = retain_manifest::Pretrain;

/// `stage.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub hash: String,
    /// Everything the hash covers.
    pub key: serde_json::Value,
    pub accuracy: f64,
    pub teacher_accuracy: Option<f64>,
    pub seconds: f64,
    pub steps: usize,
    pub epoch_losses: Vec<f64>,
    pub student_parameters: u64,
    pub teacher_parameters: Option<u64>,
    pub device: String,
}

/// The cache key of `experiment`'s stage (see the module docs) and its hash, 16 hex digits.
pub fn key(experiment: &Experiment, plan: &PretrainPlan) -> Result<(serde_json::Value, String)> {
    let file_digest = |path: Option<&Path>, what: &str| -> Result<Option<String>> {
        let Some(path) = path else { return Ok(None) };
        let bytes = std::fs::read(path)
            .map_err(|e| UsageError::new(format!("{what}: cannot read {}: {e}", path.display())))?;
        Ok(Some(format!("{:x}", Md5::digest(&bytes))))
    };
    let spec = retain_data::DatasetSpec::by_name(plan.dataset.as_str())?;
    let files: Vec<serde_json::Value> = spec
        .files
        .iter()
        .map(|f| serde_json::json!({ "name": f.name, "md5": f.md5, "size": f.size }))
        .collect();
    // Paths are replaced by the hashes of the files' contents, and the evaluation batch size
    // is left out: neither changes the weights.
    let mut stage = plan.clone();
    if let Some(d) = &mut stage.distillation {
        d.teacher = strip_checkpoint(&d.teacher);
    }
    let mut stage = serde_json::to_value(&stage)?;
    if let Some(fields) = stage.as_object_mut() {
        fields.remove("eval_batch_size");
    }
    let key = serde_json::json!({
        "stage": stage,
        "model": strip_checkpoint(&experiment.model),
        "model_checkpoint_md5": file_digest(experiment.model.checkpoint(), "model.checkpoint")?,
        "model_checkpoint_sha256": experiment
            .model
            .checkpoint()
            .map(crate::run::plan::checkpoint_sha256)
            .transpose()
            .map_err(|e| UsageError::new(format!("model.checkpoint: {e}")))?,
        "teacher_checkpoint_md5": file_digest(
            plan.distillation.as_ref().and_then(|d| d.teacher.checkpoint()),
            "pretrain.teacher.checkpoint",
        )?,
        "seed": experiment.seed,
        "outputs": retain_config::dataset_classes(experiment.stream.dataset),
        "data": { "dataset": plan.dataset.as_str(), "files": files },
    });
    let digest = Md5::digest(serde_json::to_string(&key)?.as_bytes());
    let hash = format!("{digest:x}")[..16].to_owned();
    Ok((key, hash))
}

/// A model config without its checkpoint path: the file's content is hashed instead, so
/// moving a checkpoint does not retrain the stage and overwriting one does.
fn strip_checkpoint(model: &ModelConfig) -> ModelConfig {
    let mut model = model.clone();
    match &mut model {
        ModelConfig::Mlp { checkpoint, .. }
        | ModelConfig::Resnet18 { checkpoint, .. }
        | ModelConfig::Vit { checkpoint, .. } => *checkpoint = None,
    }
    model
}

/// `<output>/<experiment>/stages/pretrain-<hash>/`.
pub fn cache_dir(experiment: &Experiment, hash: &str) -> PathBuf {
    experiment
        .output
        .join(&experiment.name)
        .join("stages")
        .join(format!("pretrain-{hash}"))
}

/// Runs `experiment`'s `[pretrain]` stage on `network` (already built, and loaded from
/// `[model] checkpoint` if any), or loads its cached result; `None` without a stage.
/// `say` receives one line about what happened.
pub fn apply(
    experiment: &Experiment,
    network: &Network,
    device: Device,
    say: &mut dyn FnMut(String),
) -> Result<Option<StageSummary>> {
    let Some(plan) = experiment.pretrain_plan() else {
        return Ok(None);
    };
    let (key, hash) = key(experiment, &plan)?;
    let dir = cache_dir(experiment, &hash);
    let checkpoint = dir.join("model.safetensors");
    let record_path = dir.join("stage.json");
    if let Some(record) = read_record(&record_path).filter(|_| checkpoint.exists()) {
        network
            .load(&checkpoint)
            .with_context(|| format!("loading the cached pretrain stage {}", dir.display()))?;
        say(format!(
            "pretrain: reused {} (accuracy {:.2}%)",
            dir.display(),
            record.accuracy * 100.0
        ));
        return Ok(Some(StageSummary {
            checkpoint,
            reused: true,
            hash,
            accuracy: record.accuracy,
            teacher_accuracy: record.teacher_accuracy,
            seconds: record.seconds,
        }));
    }

    let clock = Instant::now();
    let dataset = retain_data::load(plan.dataset.as_str(), &experiment.data_root)?;
    let stream = TaskStream::build(
        &dataset,
        &stage::stream_config(&plan),
        stage::seed(experiment.seed),
        device,
    )
    .context("building the pretrain stage's data")?;
    drop(dataset);
    let outputs = retain_config::dataset_classes(experiment.stream.dataset);
    let teacher = match &plan.distillation {
        Some(d) => Some(
            stage::load_teacher(&d.teacher, stream.image_shape, outputs, device)
                .map_err(|e| UsageError::new(format!("pretrain.teacher: {e}")))?,
        ),
        None => None,
    };
    let outcome: StageOutcome = stage::pretrain(
        &plan,
        experiment.seed,
        &stream,
        network,
        teacher.as_ref(),
        &mut retain_train::Silent,
    )?;
    let seconds = clock.elapsed().as_secs_f64();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    network.save(&checkpoint)?;
    let record = StageRecord {
        hash: hash.clone(),
        key,
        accuracy: outcome.accuracy,
        teacher_accuracy: outcome.teacher_accuracy,
        seconds,
        steps: outcome.steps,
        epoch_losses: outcome.epoch_losses,
        student_parameters: stage::parameter_count(network),
        teacher_parameters: teacher.as_ref().map(stage::parameter_count),
        device: device_name(device),
    };
    write_atomically(
        &record_path,
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    say(format!(
        "pretrain: trained {} in {seconds:.1}s, accuracy {:.2}%{}",
        dir.display(),
        record.accuracy * 100.0,
        record
            .teacher_accuracy
            .map(|t| format!(" (teacher {:.2}%)", t * 100.0))
            .unwrap_or_default()
    ));
    Ok(Some(StageSummary {
        checkpoint,
        reused: false,
        hash,
        accuracy: record.accuracy,
        teacher_accuracy: record.teacher_accuracy,
        seconds,
    }))
}

fn read_record(path: &Path) -> Option<StageRecord> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(overrides: &[&str]) -> Experiment {
        let text = include_str!("../../experiments/pretrain-fashion-half.toml");
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Experiment::from_source(text, "exp.toml", &overrides).unwrap()
    }

    fn hash(overrides: &[&str]) -> String {
        let experiment = experiment(overrides);
        key(&experiment, &experiment.pretrain_plan().unwrap())
            .unwrap()
            .1
    }

    /// The cache key follows what determines the weights and nothing else.
    #[test]
    fn the_stage_hash_covers_what_determines_the_weights() {
        let base = hash(&[]);
        assert_eq!(base.len(), 16);
        assert_eq!(hash(&[]), base, "stable");
        // Not the evaluation, the method, the stream's tasks or where results go.
        for same in [
            "training.eval_batch_size=100",
            "method.name=\"ewc\"",
            "stream.tasks=1",
            "output=\"elsewhere\"",
        ] {
            assert_eq!(hash(&[same]), base, "{same}");
        }
        for different in [
            "seed=1",
            "pretrain.epochs=4",
            "pretrain.classes=[0, 1]",
            "pretrain.batch_size=32",
            "pretrain.optimizer.lr=0.01",
            "model.hidden=[50]",
        ] {
            assert_ne!(hash(&[different]), base, "{different}");
        }
        assert!(
            cache_dir(&experiment(&[]), &base)
                .ends_with(format!("pretrain-fashion-half/stages/pretrain-{base}"))
        );
    }
}
