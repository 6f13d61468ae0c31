//! Command-line interface definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// retain: continual-learning experiments on libtorch.
#[derive(Debug, Parser)]
#[command(name = "retain", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment file and write its results under `<output>/<name>/<run>/`.
    Run(RunArgs),
    /// Show the libtorch in use, CUDA and cuDNN availability, and where libtorch was found.
    Doctor,
    /// Fetch, verify and list datasets.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment file (TOML).
    pub experiment: PathBuf,
    /// Override a config key, e.g. `--set training.optimizer.lr=0.05` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Override the device: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Name of the run folder (default: `<method>-seed<seed>`).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Override the results folder.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Override the datasets folder.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// No progress bars or tables, only errors.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset (or copy it from `--from`), verify every file's checksum, and store it
    /// under `<root>/<name>/`. Files already present and verified are kept.
    Fetch {
        /// Dataset name: mnist, fashion-mnist.
        name: String,
        /// Datasets folder.
        #[arg(long, default_value = "datasets")]
        root: PathBuf,
        /// Take the files from a local folder or .tar.gz/.tgz archive instead of the network.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// List known datasets: present, size, verified.
    List {
        /// Datasets folder.
        #[arg(long, default_value = "datasets")]
        root: PathBuf,
    },
}
