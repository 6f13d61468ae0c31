//! `retain pretrain`: run (or reuse) only an experiment's `[pretrain]` stage (see
//! [`crate::run::stage`]).

use anyhow::{Context, Result};
use retain_fs::write_atomically;

use crate::cli::{PretrainArgs, RunArgs};
use crate::run::{Plan, build_network, stage};
use crate::usage::UsageError;

/// `retain pretrain exp.toml [--out FILE]`: runs (or reuses) only the stage, and copies its
/// checkpoint to `FILE` with `stage.json` beside it.
pub fn execute(args: &PretrainArgs) -> Result<()> {
    let run_args = RunArgs {
        experiment: args.experiment.clone(),
        overrides: args.overrides.clone(),
        device: args.device.clone(),
        seed: args.seed,
        run_name: None,
        output: args.output.clone(),
        data_root: args.data_root.clone(),
        quiet: args.quiet,
        save_checkpoint: false,
        resume: false,
    };
    let plan = Plan::from_args(&run_args)?;
    let experiment = &plan.experiment;
    if experiment.pretrain.is_none() {
        return Err(UsageError::new(format!(
            "{}: no `[pretrain]` table, so there is no stage to run",
            args.experiment.display()
        ))
        .into());
    }
    // The model is built for the stream's images and classes, as in a run; only the
    // stream's shape is needed, not its data.
    let stream_shape = retain_config::dataset_shape(experiment.stream.dataset);
    let outputs = retain_config::dataset_classes(experiment.stream.dataset);
    let network = build_network(experiment, stream_shape, outputs, plan.device)?;
    let quiet = args.quiet;
    let mut say = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let summary =
        stage::apply(experiment, &network, plan.device, &mut say)?.expect("checked above");
    let source_dir = summary
        .checkpoint
        .parent()
        .expect("a checkpoint sits in its stage folder")
        .to_owned();
    let written = match &args.out {
        Some(out) => {
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let bytes = std::fs::read(&summary.checkpoint)?;
            write_atomically(out, &bytes)?;
            let record = std::fs::read(source_dir.join("stage.json"))?;
            write_atomically(&out.with_file_name("stage.json"), &record)?;
            out.clone()
        }
        None => summary.checkpoint.clone(),
    };
    println!("{}", written.display());
    Ok(())
}
