//! Peak GPU memory of this process, sampled from the driver while a run trains.
//!
//! tch exposes no statistics of libtorch's CUDA caching allocator, so the figure comes from the
//! driver: `nvidia-smi --query-compute-apps` lists the memory each process holds on each GPU
//! (per PID, so runs sharing a card are told apart). That is what the process *reserved* —
//! the CUDA context plus the allocator's cache — which is what limits how many runs fit on a
//! card. A background thread samples it every 200 ms; a peak shorter than that can be missed,
//! and the figure is `None` on the CPU or where `nvidia-smi` is unavailable.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running sampler; [`DeviceMemoryProbe::finish`] stops it and returns the peak.
pub struct DeviceMemoryProbe {
    stop: Arc<AtomicBool>,
    peak_mib: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DeviceMemoryProbe {
    /// Starts sampling this process on CUDA devices; on the CPU it samples nothing.
    pub fn start(cuda: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_mib = Arc::new(AtomicU64::new(0));
        let thread = cuda.then(|| {
            let (stop, peak_mib) = (Arc::clone(&stop), Arc::clone(&peak_mib));
            let pid = std::process::id();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match sample(pid) {
                        Some(mib) => {
                            peak_mib.fetch_max(mib, Ordering::Relaxed);
                        }
                        None if peak_mib.load(Ordering::Relaxed) == 0 => {
                            // Keep trying: the process appears once its CUDA context exists.
                        }
                        None => {}
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        });
        Self {
            stop,
            peak_mib,
            thread,
        }
    }

    /// Stops sampling (after one last sample) and returns the peak in bytes, if any was seen.
    pub fn finish(mut self) -> Option<u64> {
        let thread = self.thread.take()?;
        if let Some(mib) = sample(std::process::id()) {
            self.peak_mib.fetch_max(mib, Ordering::Relaxed);
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        let mib = self.peak_mib.load(Ordering::Relaxed);
        (mib > 0).then_some(mib * 1024 * 1024)
    }
}

/// Memory held by `pid` on every GPU, in MiB, from one `nvidia-smi` query.
fn sample(pid: u32) -> Option<u64> {
    let output = Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    used_mib(&String::from_utf8_lossy(&output.stdout), pid)
}

/// Sums the `used_memory` of `pid`'s rows in `nvidia-smi --query-compute-apps=pid,used_memory
/// --format=csv,noheader,nounits` output (one row per process and GPU).
pub fn used_mib(csv: &str, pid: u32) -> Option<u64> {
    let rows: Vec<u64> = csv
        .lines()
        .filter_map(|line| {
            let (row_pid, mib) = line.split_once(',')?;
            (row_pid.trim().parse::<u32>().ok()? == pid).then(|| mib.trim().parse().ok())?
        })
        .collect();
    (!rows.is_empty()).then(|| rows.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::used_mib;

    #[test]
    fn sums_this_process_rows_only() {
        let csv = "4242, 1530\n977, 20480\n4242, 512\n";
        assert_eq!(used_mib(csv, 4242), Some(2042));
        assert_eq!(used_mib(csv, 977), Some(20480));
        assert_eq!(used_mib(csv, 1), None);
        assert_eq!(used_mib("", 4242), None);
        assert_eq!(used_mib("No running processes found\n", 4242), None);
    }
}
