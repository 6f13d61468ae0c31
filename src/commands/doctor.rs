//! `retain doctor`: what libtorch this binary runs on and what it can see.

use std::path::Path;

use tch::Cuda;

use crate::provenance::{TCH_VERSION, libtorch_version, loaded_libtorch};

pub fn execute() -> anyhow::Result<()> {
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
        ("tch", TCH_VERSION.to_owned()),
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
