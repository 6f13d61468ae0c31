//! `retain grid`: run, resume and collect a grid of experiments.
//!
//! Layout of `<output>/<name>/`:
//!
//! | path | content |
//! |---|---|
//! | `grid.toml` | the grid file as last collected (the report reads `[published]` from it) |
//! | `cells/<cell-id>/` | one run folder per cell: exactly what `retain run` writes, plus `cell.log` (the cell's stderr) |
//! | `runs.parquet` | one row per cell: axis values, status, error, costs |
//! | `accuracy.parquet`, `metrics.parquet` | every complete cell's rows with a leading `cell` column |
//! | `plots/` | per-task accuracy lines, method comparison bars, accuracy against parameters |
//!
//! `grid run` starts each cell as a child process (`retain grid cell`), so a crashing or
//! diverging cell cannot take the grid down, a cell is exactly a run, and a cluster scheduler
//! can run the same cells as separate jobs. Children report progress as lines on stdout and
//! exit when their stdin closes, i.e. when the parent dies, so killing the runner leaves no
//! orphaned training. Re-running resumes: a cell's `manifest.json` (written last, atomically)
//! decides whether it is complete.
//!
//! Subcommands: [`runner`] (`grid run`), [`cell`], [`collect`], [`slurm`] (`grid submit`,
//! `grid status`), all starting from [`setup`]; `grid list` is here.

use anyhow::Result;
use retain_grid::CellStatus;

use crate::cli::GridCommand;

pub mod cell;
pub mod collect;
pub mod runner;
pub mod setup;
pub mod slurm;

pub fn execute(command: &GridCommand) -> Result<()> {
    match command {
        GridCommand::Run(args) => runner::execute(args),
        GridCommand::Cell(args) => cell::execute(args),
        GridCommand::Collect(args) => collect::collect(&setup::load(args)?, false),
        GridCommand::Submit(args) => slurm::submit(args),
        GridCommand::Status(args) => slurm::status(args),
        GridCommand::List(args) => {
            let loaded = setup::load(args)?;
            for cell in &loaded.spec.cells {
                let status = CellStatus::of(&loaded.spec.cell_dir(cell))?;
                println!("{}\t{}", cell.id, status.as_str());
            }
            Ok(())
        }
    }
}
