//! Facts about this process and machine that runs record and `retain doctor` shows: device
//! names, the git revision, timestamps, peak memory and the libtorch in use.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tch::Device;

/// The tch release this binary is built against (pinned in the workspace).
pub const TCH_VERSION: &str = "0.24.0";

/// `cpu`, `cuda:N`, as experiment files and manifests write devices.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `git rev-parse HEAD` of the working directory, with `-dirty` when tracked files changed;
/// `unknown` outside a repository.
pub fn git_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(status) if !status.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".into(),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`), Linux only. The GPU
/// counterpart is sampled from the driver (`device_memory`).
pub fn peak_host_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Path of the `libtorch_cpu.so` actually mapped into this process: the truth about which
/// libtorch runs, whatever the build used.
pub fn loaded_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .map(PathBuf::from)
}

/// Version of the libtorch at `library`: from PyTorch's `version.py` when it is PyTorch's
/// bundled libtorch, else from a standalone distribution's `build-version` file.
pub fn libtorch_version(library: &Path) -> Option<String> {
    let root = library.parent()?.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_owned());
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|v| v.trim().to_owned())
}
