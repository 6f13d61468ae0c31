//! `retain run`: one experiment file → one run folder of results (see [`crate::run`]).

use anyhow::Result;

use crate::cli::RunArgs;
use crate::run::{Display, Plan, run_plan};

pub fn execute(args: &RunArgs) -> Result<()> {
    // SIGTERM stops the run at its next task boundary, checkpointed (exit status 75).
    crate::signals::install();
    let plan = Plan::from_args(args)?;
    let display = if args.quiet {
        Display::Quiet
    } else {
        Display::Interactive
    };
    run_plan(&plan, display)
}
