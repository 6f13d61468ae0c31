//! Build-script helper shared by every package that produces a binary, test or bench linking
//! libtorch.
//!
//! Two link details matter at run time and cannot be inherited from `torch-sys`
//! (`cargo:rustc-link-arg` does not propagate to dependents):
//!
//! * `libtorch_cuda.so` must stay in the executable's `DT_NEEDED` list. Nothing in the Rust code
//!   references its symbols, so the linker's `--as-needed` drops it and
//!   `tch::Cuda::is_available()` then reports `false` even on a GPU machine. The flag is only
//!   emitted when the libtorch in use actually ships `libtorch_cuda.so`, so a CPU-only libtorch
//!   still links.
//! * A `RUNPATH` to the libtorch library folder, so that `target/*/retain` runs without
//!   `LD_LIBRARY_PATH`. `LD_LIBRARY_PATH` still takes precedence (it is searched before
//!   `RUNPATH`), which is how a binary built here runs against another machine's libtorch.
//!
//! libtorch is located exactly as `torch-sys` does: `LIBTORCH` if set, otherwise the PyTorch of
//! the `python3` (or `python`) on `PATH` when `LIBTORCH_USE_PYTORCH` is set.

use std::path::PathBuf;
use std::process::Command;

/// Emits the link arguments described in the crate docs. Call it from `build.rs`.
pub fn link_libtorch_cuda() {
    for var in ["LIBTORCH", "LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(lib_dir) = libtorch_lib_dir() else {
        println!("cargo:warning=libtorch not located; CUDA link flag not emitted");
        return;
    };
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// The folder holding `libtorch*.so`, if it can be found.
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    if let Ok(lib) = std::env::var("LIBTORCH_LIB") {
        return Some(PathBuf::from(lib));
    }
    if let Ok(root) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(root).join("lib"));
    }
    // Only when asked to use PyTorch's libtorch.
    std::env::var_os("LIBTORCH_USE_PYTORCH")?;
    let script = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    ["python3", "python"].iter().find_map(|python| {
        let output = Command::new(python).args(["-c", script]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        let dir = String::from_utf8(output.stdout).ok()?;
        Some(PathBuf::from(dir.trim()))
    })
}
