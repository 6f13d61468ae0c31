//! One run: an experiment resolved into a [`Plan`], trained, and written into its run folder.
//! `retain run`, `retain plan`, `retain pretrain` and `retain grid cell` all go through here;
//! nothing here knows about the commands.
//!
//! Layout of `<output>/<experiment>/<run>/`:
//!
//! | file | content |
//! |---|---|
//! | `accuracy.parquet` | long-form accuracy matrix: one row per read-out × trained tasks × evaluated task |
//! | `metrics.parquet` | ACC, BWT, FWT, forgetting, average incremental accuracy per read-out, and the run's costs |
//! | `config.toml` | the experiment as run, defaults and overrides resolved |
//! | `manifest.json` | schema version, versions, seed, device, git revision, timings, wall time, trainable parameters, peak host memory, `costs` (trainable parameters, method state bytes in all and per task, frozen base bytes, seconds per step), status ([`retain_manifest`]) |
//! | `heatmap-<readout>.png` | the accuracy matrix of each read-out |
//! | `events.jsonl`, `events.out.tfevents.*` | live logs, written while the run trains: each epoch's mean loss and each evaluation, as JSON lines and TensorBoard scalars ([`crate::live_log`]) |
//! | (`manifest.json` `pretrain`) | with a `[pretrain]` stage: its cached checkpoint under `<output>/<experiment>/stages/`, whether it was reused, its accuracy and seconds (see [`stage`]) |
//! | `resume/checkpoint.safetensors` | while the run trains: the checkpoint after its last finished task, for `--resume` ([`retain_train::resume`]); removed when the run completes, and with the other results by a run without `--resume` |
//! | `model.safetensors`, `method-state.safetensors` | with `--save-checkpoint` only: the trained model's variables by name (a `[model] checkpoint` for another run) and the method's state |
//!
//! Every file but the live logs is written atomically, and `manifest.json` last: a folder
//! whose manifest says `"complete"` holds a whole run. Before writing anything a run removes
//! the result files and live logs an earlier run left in its folder
//! ([`record::clear_results`]). A run that fails (a diverging loss, a result file that cannot
//! be written) writes a manifest with status `"failed"` and the reason, and no result files
//! beside it, only its live logs; nothing outside its folder is touched.
//!
//! Modules, lowest first: [`plan`] (resolving), [`stage`] (the `[pretrain]` stage),
//! [`record`] (result files and the manifest), [`summary`] (the tables printed after a run),
//! [`execute`] (the run itself, using all of them).

pub mod execute;
pub mod plan;
pub mod record;
pub mod stage;
pub mod summary;

pub use execute::{Display, EXIT_STOPPED_CODE, Stopped, run_plan};
pub use plan::{Plan, build_network, check_method, resolve_device};
