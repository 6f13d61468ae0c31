//! End-to-end tests of the `retain` binary on real MNIST (fetched by `just test`).

mod cli;
mod common;
mod grid;
mod rehearsal;
mod slurm;
