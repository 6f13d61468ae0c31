//! Termination requests: SIGTERM (Slurm preemption, `scancel --signal=TERM`, `kill`) sets a
//! flag instead of killing the process; a training run checks it at each task boundary, after
//! writing that boundary's resume checkpoint, and stops there with
//! [`crate::run::EXIT_STOPPED_CODE`]. Commands that do not train keep the default (SIGTERM
//! ends them at once): the handler is installed only by those that check the flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static TERMINATE: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the SIGTERM handler (once; later calls do nothing). Where it cannot be installed
/// SIGTERM keeps its default action.
pub fn install() {
    TERMINATE.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flag));
        flag
    });
}

/// Whether SIGTERM arrived since [`install`].
pub fn termination_requested() -> bool {
    TERMINATE.get().is_some_and(|f| f.load(Ordering::SeqCst))
}
