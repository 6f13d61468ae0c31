//! Benchmarks only: `cargo bench -p retain-bench` times one training step of every registered
//! method (`retain_methods::all()`, each built from its descriptor's example) on the
//! Split-MNIST MLP (784-100-100-10) at batch 10 — on the default vision transformer for a
//! method the MLP cannot carry (prompts, prefixes) — on the CPU and, when one is visible, on
//! the first CUDA device; `--bench rehearsal_step` times every rehearsal method in its steady
//! state.
//!
//! A step is what the trainer does per batch: gather the batch on the device, the method's
//! loss, `zero_grad`, `backward`, `after_backward`, the optimiser step
//! (`retain_train::train_step`). Each method is first taken through task 1 (its
//! `after_task`: EWC's Fisher, LwF's copy) so that the timed steps on task 2 carry the
//! method's full cost. On CUDA the clock is read after `tch::Cuda::synchronize`, so queued
//! kernels are counted.
