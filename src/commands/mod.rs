//! One module per command of the CLI. Commands call the shared modules below them (`run`,
//! `tables`, `collected`, `progress`, `provenance`, …) and the library crates; no command
//! module imports another, except that the `grid` command's subcommands share its `setup`.

pub mod check;
pub mod data;
pub mod doctor;
pub mod grid;
pub mod plan;
pub mod pretrain;
pub mod report;
pub mod run;
