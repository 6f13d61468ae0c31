//! End-to-end tests of the `retain` binary on real MNIST (fetched by `just test`).

mod blurry;
mod cli;
mod common;
mod costs;
mod data;
mod events;
mod fidelity;
mod graphs;
mod grid;
mod increments;
mod online;
mod plan;
mod pretrain;
mod refusals;
mod rehearsal;
mod resume;
mod slurm;
