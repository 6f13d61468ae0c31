//! `retain doctor`: what libtorch this binary runs on and what it can see.

use std::path::{Path, PathBuf};

use tch::Cuda;

pub fn run() -> anyhow::Result<()> {
    let (library, version) = match loaded_libtorch() {
        Some(path) => {
            let version = libtorch_version(&path).unwrap_or_else(|| "unknown".into());
            (path.display().to_string(), version)
        }
        None => (
            "not found in this process's mappings".into(),
            "unknown".into(),
        ),
    };
    let cuda = Cuda::is_available();
    let rows: Vec<(&str, String)> = vec![
        ("retain", env!("CARGO_PKG_VERSION").to_owned()),
        ("tch", "0.24.0".to_owned()),
        ("libtorch version", version),
        ("libtorch found at", library),
        ("CUDA available", yes_no(cuda)),
        ("CUDA devices", Cuda::device_count().to_string()),
        (
            "CUDA runtime",
            if cuda {
                cuda_version(tch::utils::version_cudart())
            } else {
                "-".into()
            },
        ),
        ("cuDNN available", yes_no(Cuda::cudnn_is_available())),
        (
            "cuDNN version",
            if cuda {
                tch::utils::version_cudnn().to_string()
            } else {
                "-".into()
            },
        ),
        ("CPU threads", tch::get_num_threads().to_string()),
        (
            "MKL / OpenMP",
            format!(
                "{} / {}",
                yes_no(tch::utils::has_mkl()),
                yes_no(tch::utils::has_openmp())
            ),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
    if !cuda && Path::new("/proc/driver/nvidia").exists() {
        println!(
            "\nAn NVIDIA driver is present but CUDA is not available: check that the binary links \
             libtorch_cuda.so (`ldd $(which retain) | grep torch_cuda`) and that LD_LIBRARY_PATH \
             points at a CUDA build of libtorch."
        );
    }
    Ok(())
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn cuda_version(encoded: i64) -> String {
    // CUDA encodes versions as major·1000 + minor·10.
    format!("{}.{}", encoded / 1000, (encoded % 1000) / 10)
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
