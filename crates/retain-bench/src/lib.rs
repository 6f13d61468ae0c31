//! Benchmarks only: `cargo bench -p retain-bench` times one training step of each method
//! (naive, EWC, LwF, joint) on the Split-MNIST MLP (784-100-100-10) at batch 10, on the CPU
//! and, when one is visible, on the first CUDA device.
//!
//! A step is what the trainer does per batch: gather the batch on the device, the method's
//! loss, `zero_grad`, `backward`, `after_backward`, the optimiser step
//! (`retain_train::train_step`). Each method is first taken through task 1 (its
//! `after_task`: EWC's Fisher, LwF's copy) so that the timed steps on task 2 carry the
//! method's full cost. On CUDA the clock is read after `tch::Cuda::synchronize`, so queued
//! kernels are counted.
