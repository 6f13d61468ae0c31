//! The `retain` command-line tool. See `retain --help` and the README.

mod cli;
mod data;
mod device_memory;
mod doctor;
mod grid;
mod methods;
mod plan;
mod progress;
mod registry;
mod report;
mod run;
mod slurm;
mod stage;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

/// A mistake in what the user asked for (a malformed config, an unknown method, a device that
/// does not exist): reported with exit status 2, like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<retain_config::ConfigError> for UsageError {
    fn from(error: retain_config::ConfigError) -> Self {
        Self(error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Run(args) => run::execute(args),
        cli::Command::Plan(args) => plan::execute(args),
        cli::Command::Pretrain(args) => stage::execute(args),
        cli::Command::Doctor => doctor::run(),
        cli::Command::Data(command) => data::execute(command),
        cli::Command::Grid(command) => grid::execute(command),
        cli::Command::Report(args) => report::execute(args),
        cli::Command::Check(args) => report::check(args),
        cli::Command::Methods(args) => methods::execute(args.name.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if error.chain().any(|e| e.is::<UsageError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
