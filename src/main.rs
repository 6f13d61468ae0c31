//! The `retain` command-line tool. See `retain --help` and the README.
//!
//! Modules form a tree: `main` dispatches to one module per command under `commands/` (and
//! the method listing in `methods`); commands use the shared modules below them (`run`: one
//! run from plan to manifest; `collected`, `tables`, `progress`, `live_log`, `device_memory`,
//! `provenance`, `registry`, `cli`, `usage`), and no shared module imports a command.

// Printing that survives a closed pipe (`retain run … | head -1`): std's `println!` family
// panics when a write fails, which would abort a run over its output; these, in textual scope
// for every module below, drop a failed write instead.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod collected;
mod commands;
mod device_memory;
mod live_log;
mod methods;
mod progress;
mod provenance;
mod registry;
mod run;
mod signals;
mod tables;
mod usage;

use std::process::ExitCode;

use clap::Parser;

use commands::{check, data, doctor, grid, plan, pretrain, report};
// `retain methods` (src/methods.rs) names the usage error from the crate root.
pub use usage::UsageError;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Run(args) => commands::run::execute(args),
        cli::Command::Plan(args) => plan::execute(args),
        cli::Command::Pretrain(args) => pretrain::execute(args),
        cli::Command::Doctor => doctor::execute(),
        cli::Command::Data(command) => data::execute(command),
        cli::Command::Grid(command) => grid::execute(command),
        cli::Command::Report(args) => report::execute(args),
        cli::Command::Check(args) => check::execute(args),
        cli::Command::Methods(args) => methods::execute(args.name.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if error.chain().any(|e| e.is::<run::Stopped>()) {
                ExitCode::from(run::EXIT_STOPPED_CODE as u8)
            } else if error.chain().any(|e| e.is::<UsageError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
