//! Seeds derived from the experiment seed, and the PRNG that consumes them: re-exported from
//! `retain-seed`, where every crate that draws (streams, initialisation, methods) finds them.

pub use retain_seed::*;
