//! `retain grid cell`: one cell, run in this process. What `grid run` starts for each cell,
//! and what a cluster scheduler's job runs.

use anyhow::{Context, Result, anyhow};
use retain_grid::CellStatus;

use super::setup::load;
use crate::cli::GridCellArgs;
use crate::run::{Display, Plan, check_method, resolve_device, run_plan};
use crate::usage::UsageError;

/// Runs the cell unless it is complete (or failed, without `--retry-failed`); `--force` runs
/// it anyway.
pub fn execute(args: &GridCellArgs) -> Result<()> {
    // SIGTERM stops the cell at its next task boundary, checkpointed (exit status 75).
    crate::signals::install();
    if args.watch_stdin {
        // The parent holds our stdin open; EOF means it is gone, so stop training at once.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(130);
        });
    }
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads.max(1) as i32);
    }
    let loaded = load(&args.grid)?;
    let spec = &loaded.spec;
    let cell = spec
        .cell(&args.cell)
        .map_err(|e| UsageError::new(e.to_string()))?;
    let dir = spec.cell_dir(cell);
    match CellStatus::of(&dir)? {
        CellStatus::Complete if !args.force => {
            eprintln!(
                "cell {} is complete ({}); --force reruns it",
                cell.id,
                dir.display()
            );
            return Ok(());
        }
        CellStatus::Failed { error } if !(args.force || args.retry_failed) => {
            return Err(anyhow!(
                "cell {} failed earlier: {error} (--retry-failed reruns it)",
                cell.id
            ));
        }
        _ => {}
    }
    let mut extra = loaded.extra.clone();
    if let Some(device) = &args.device {
        extra.push(format!("device=\"{device}\""));
    }
    let experiment = spec
        .experiment(cell, &extra)
        .map_err(|e| UsageError::new(e.to_string()))?;
    check_method(&experiment, &format!("{}: cell `{}`", spec.origin, cell.id))?;
    let device = resolve_device(experiment.device)?;
    // A stale manifest would make an interrupted rerun look finished.
    match std::fs::remove_file(dir.join("manifest.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context(format!("cannot reset {}", dir.display()));
        }
        _ => {}
    }
    let plan = Plan {
        experiment,
        run_name: cell.id.clone(),
        run_dir: dir,
        device,
        save_checkpoint: false,
        // An unfinished cell continues from its last task boundary.
        resume: true,
    };
    let display = if args.progress_lines {
        Display::Lines
    } else if args.quiet {
        Display::Quiet
    } else {
        Display::Interactive
    };
    run_plan(&plan, display)
}
