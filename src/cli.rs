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
    /// Show what `run` would do, without doing it: the resolved experiment, every task's
    /// classes, samples and optimiser steps, the evaluations, the device, the data, and a
    /// wall-time estimate from a short warm-up of the real step on that device.
    Plan(PlanArgs),
    /// Run only an experiment's `[pretrain]` stage (or reuse its cached result) and print the
    /// checkpoint's path; `--out` copies it (with `stage.json` beside it) for `[model] checkpoint`.
    Pretrain(PretrainArgs),
    /// Show the libtorch in use, CUDA and cuDNN availability, and where libtorch was found.
    Doctor,
    /// Fetch, verify and list datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Run, resume and collect grids of experiments (`[grid]` axes in an experiment file).
    #[command(subcommand)]
    Grid(GridCommand),
    /// Table of a collected grid, mean ± std over seeds, with published numbers if declared.
    Report(ReportArgs),
    /// Compare a collected grid with a stored baseline; exits 1 when a metric moved.
    Check(CheckArgs),
    /// List the registered methods (family, summary), or show one method's hyper-parameters
    /// with their types and defaults, its paper and an example `[method]` table.
    Methods(MethodsArgs),
}

#[derive(Debug, Args)]
pub struct MethodsArgs {
    /// A method's name, e.g. `ewc`: show its card instead of the list.
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GridCommand {
    /// Run every unfinished cell concurrently (child processes), then collect. Complete cells
    /// are skipped, so re-running resumes an interrupted grid.
    Run(GridRunArgs),
    /// Run one cell in this process (what `grid run` starts; also a job for a cluster
    /// scheduler). Skips a complete cell unless `--force`.
    Cell(GridCellArgs),
    /// Merge the cells' results into runs/accuracy/metrics Parquet files and plots.
    Collect(GridArgs),
    /// List the cells: id and status, one per line.
    List(GridArgs),
    /// Submit the cells to a cluster scheduler as a job array (one array task per cell).
    Submit(GridSubmitArgs),
    /// Cells done, running or queued (from `squeue`), failed (with the reason) and missing.
    Status(GridArgs),
}

#[derive(Debug, Args)]
pub struct GridSubmitArgs {
    #[command(flatten)]
    pub grid: GridArgs,
    /// Submit to Slurm with `sbatch` (the supported scheduler).
    #[arg(long)]
    pub slurm: bool,
    /// Slurm partition (checked with `sinfo` before submitting).
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per array task; cells then run on `cuda`.
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// Wall-time limit per array task, in Slurm's format (e.g. 02:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// CPU cores per array task (also the cell's libtorch threads).
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: u32,
    /// At most this many array tasks at once (`--array=0-N%K`).
    #[arg(long)]
    pub array_parallelism: Option<u32>,
    /// Submit only cells that are missing or failed.
    #[arg(long)]
    pub resume: bool,
    /// Only write the script (and the cells file); do not submit.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where a grid is and where its results go.
#[derive(Debug, Args)]
pub struct GridArgs {
    /// The grid file (an experiment TOML with a `[grid]` table).
    pub grid: PathBuf,
    /// Override the results folder.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Override the datasets folder.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GridRunArgs {
    #[command(flatten)]
    pub grid: GridArgs,
    /// Rerun cells that failed before (by default they are reported and skipped).
    #[arg(long)]
    pub retry_failed: bool,
    /// Devices to use: auto, cpu, or a list like cuda:0,cuda:1 (overrides `[grid] devices`).
    #[arg(long)]
    pub devices: Option<String>,
    /// Concurrent runs per device (overrides `[grid] runs_per_device`).
    #[arg(long)]
    pub runs_per_device: Option<usize>,
    /// No progress display, only the summary and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct GridCellArgs {
    #[command(flatten)]
    pub grid: GridArgs,
    /// The cell id (see `retain grid list`).
    pub cell: String,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Run even if the cell is complete or failed.
    #[arg(long)]
    pub force: bool,
    /// Rerun the cell if it failed before.
    #[arg(long)]
    pub retry_failed: bool,
    /// Report progress as `@progress ...` lines on stdout instead of bars.
    #[arg(long)]
    pub progress_lines: bool,
    /// Exit when stdin closes: a child of `grid run` dies with its parent.
    #[arg(long, hide = true)]
    pub watch_stdin: bool,
    /// libtorch CPU threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars or tables, only errors.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A collected grid folder (`results/<grid>/`).
    pub results: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A collected grid folder (`results/<grid>/`).
    pub results: PathBuf,
    /// The baseline: a .toml (`[[metric]]` tables) or .csv (metric,method,scenario,value,tolerance).
    #[arg(long)]
    pub baseline: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The experiment file (TOML).
    pub experiment: PathBuf,
    /// Override a config key, as `run --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Override the device: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the results folder (where a cached `[pretrain]` stage is looked for).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Override the datasets folder.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Optimiser steps per warm-up task (two tasks) for the time estimate; 0 for no estimate.
    #[arg(long, default_value_t = 4)]
    pub warmup_steps: usize,
}

#[derive(Debug, Clone, Args)]
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
    /// Also write the trained model (`model.safetensors`) and the method's state
    /// (`method-state.safetensors`) into the run folder, e.g. to start another run from them
    /// with `[model] checkpoint`.
    #[arg(long)]
    pub save_checkpoint: bool,
    /// Continue from the run folder's last resume checkpoint (written at every task
    /// boundary, `resume/`) instead of from the start; without one, start from the start.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// The experiment file (TOML) with a `[pretrain]` table.
    pub experiment: PathBuf,
    /// Copy the trained checkpoint here (and `stage.json` into the same folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a config key, e.g. `--set pretrain.epochs=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Override the device: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the results folder (the stage cache is `<output>/<experiment>/stages/`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Override the datasets folder.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Only errors and the checkpoint's path.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset (or copy it from `--from`), verify every file's checksum, and store it
    /// under `<root>/<name>/`. Files already present and verified are kept.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["name", "for_file"])))]
    Fetch {
        /// Dataset name: mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse.
        name: Option<String>,
        /// Fetch every dataset this experiment or grid file uses (its stream's, its
        /// `[pretrain]` stage's) and nothing else, instead of one named dataset.
        #[arg(long = "for", value_name = "EXP.toml", conflicts_with_all = ["name", "from"])]
        for_file: Option<PathBuf>,
        /// With `--for`: print the datasets, one per line, and fetch nothing.
        #[arg(long, requires = "for_file")]
        dry_run: bool,
        /// Datasets folder.
        #[arg(long, default_value = "datasets")]
        root: PathBuf,
        /// Take the files from a local folder or .tar.gz/.tgz archive instead of the network.
        #[arg(long)]
        from: Option<PathBuf>,
        /// A TOML file naming, per dataset, the sources to try instead of the shipped ones
        /// (a site mirror): `[cifar10] archive = "https://…"`, `per_file = "https://…/{file}.gz"`,
        /// `local = "/path"`, and for CIFAR `md5 = "…"` when the archive is repackaged.
        /// Datasets it does not name use the shipped sources.
        #[arg(long, value_name = "SOURCES.toml", conflicts_with = "from")]
        sources: Option<PathBuf>,
    },
    /// List known datasets: present, size, verified.
    List {
        /// Datasets folder.
        #[arg(long, default_value = "datasets")]
        root: PathBuf,
    },
}
