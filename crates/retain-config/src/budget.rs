//! Bounds on sizes, checked before anything is allocated: a value whose memory (or step
//! count) cannot be met is refused with the key, the value and what it would need, instead
//! of a failed allocation (or an overflow) once the run is under way.

use std::fmt::Display;

/// The most optimiser steps one task may take (`epochs` × batches per epoch): 10⁹, days of
/// training at the fastest step this framework takes. More is a mistake in the file.
pub const MAX_STEPS_PER_TASK: u128 = 1_000_000_000;

/// Total physical memory of this host in bytes (`MemTotal` of `/proc/meminfo`); `None` where
/// it cannot be read, and then only sizes that overflow are refused.
pub fn host_memory_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `Ok` when `bytes` (`None`: more than `u128` can count) fit this host's memory; else why
/// not, naming `key` and its `value`, e.g. "`model.hidden` = [1000000000000] needs at least
/// 3.1 TiB of memory (its weights, 4 bytes each), more than this host's 15.5 GiB".
pub fn check_memory(
    key: &str,
    value: impl Display,
    bytes: Option<u128>,
    what: &str,
) -> Result<(), String> {
    check_memory_against(key, value, bytes, what, host_memory_bytes())
}

/// [`check_memory`] against a given amount of memory (`None`: unknown).
pub fn check_memory_against(
    key: &str,
    value: impl Display,
    bytes: Option<u128>,
    what: &str,
    host: Option<u128>,
) -> Result<(), String> {
    match (bytes, host) {
        (Some(bytes), Some(host)) if bytes > host => Err(format!(
            "`{key}` = {value} needs at least {} of memory ({what}), more than this host's {}",
            human_bytes(bytes),
            human_bytes(host)
        )),
        (None, _) => Err(format!(
            "`{key}` = {value} needs more memory than can be counted ({what})"
        )),
        _ => Ok(()),
    }
}

/// `bytes` in binary units with one decimal: `3.1 TiB`.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_host_or_beyond_counting_are_refused_with_key_value_and_bytes() {
        let gib = 1u128 << 30;
        assert!(check_memory_against("k", 1, Some(gib), "w", Some(2 * gib)).is_ok());
        assert!(check_memory_against("k", 1, Some(gib), "w", None).is_ok());
        let err =
            check_memory_against("method.rank", 7, Some(3 * gib), "w", Some(gib)).unwrap_err();
        assert_eq!(
            err,
            "`method.rank` = 7 needs at least 3.0 GiB of memory (w), more than this host's 1.0 GiB"
        );
        let err = check_memory_against("model.hidden", "[9]", None, "w", None).unwrap_err();
        assert!(err.contains("`model.hidden` = [9]"), "{err}");
        assert_eq!(human_bytes(512), "512 B");
    }
}
