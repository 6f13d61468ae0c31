//! Compiles the CUDA-graph shim (`shim/graph.cpp`, with the fused-kernel launcher
//! `shim/fused.cpp`) against the libtorch in use, when that
//! libtorch has CUDA (`libtorch_cuda.so`) and the CUDA runtime headers are found; otherwise
//! builds nothing and the crate reports capture as unavailable (`cfg(retain_graph_shim)` off).
//! The autocast shim (`shim/autocast.cpp`) needs only libtorch's own headers, present in every
//! libtorch and PyTorch wheel (`cfg(retain_autocast_shim)`).
//!
//! Headers: libtorch's own (`<libtorch>/include`), and the CUDA runtime's, looked for in
//! `CUDA_HOME`/`CUDA_PATH`, the `nvidia/cu13` (or `nvidia/cuda_runtime`) package next to a
//! PyTorch wheel, and `/usr/local/cuda`. `crt/host_config.h` comes from the PyPI package
//! `nvidia-cuda-crt`, which `./setup.sh` installs beside the wheel.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // This crate's own tests link libtorch too (RUNPATH, libtorch_cuda kept).
    retain_build::link_libtorch_cuda();
    println!("cargo:rustc-check-cfg=cfg(retain_graph_shim)");
    println!("cargo:rustc-check-cfg=cfg(retain_autocast_shim)");
    println!("cargo:rerun-if-changed=shim/graph.cpp");
    println!("cargo:rerun-if-changed=shim/autocast.cpp");
    println!("cargo:rerun-if-changed=shim/fused.cpp");
    println!("cargo:rerun-if-changed=shim/guard.h");
    for var in ["CUDA_HOME", "CUDA_PATH", "RETAIN_GRAPH_DISABLE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    match autocast_inputs() {
        Ok(inputs) => compile_autocast(&inputs),
        Err(why) => {
            println!("cargo:rustc-env=RETAIN_AUTOCAST_BUILD=built without the autocast shim: {why}")
        }
    }
    match shim_inputs() {
        Ok(inputs) => compile(&inputs),
        Err(why) => println!("cargo:rustc-env=RETAIN_GRAPH_BUILD=built without the shim: {why}"),
    }
}

/// libtorch's lib folder and headers, for the autocast shim.
fn autocast_inputs() -> Result<Inputs, String> {
    let lib_dir = retain_build::libtorch_lib_dir().ok_or("libtorch not located")?;
    let root = lib_dir
        .parent()
        .ok_or("libtorch lib folder has no parent")?;
    let torch_include = root.join("include");
    if !torch_include.join("ATen/autocast_mode.h").exists() {
        return Err(format!(
            "no ATen/autocast_mode.h under {}",
            torch_include.display()
        ));
    }
    Ok(Inputs {
        lib_dir,
        includes: vec![
            torch_include.clone(),
            torch_include.join("torch/csrc/api/include"),
        ],
        cxx11_abi: cxx11_abi(),
    })
}

fn compile_autocast(inputs: &Inputs) {
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .includes(&inputs.includes)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", inputs.cxx11_abi))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("shim/autocast.cpp")
        .compile("retain_autocast_shim");
    println!(
        "cargo:rustc-link-search=native={}",
        inputs.lib_dir.display()
    );
    for lib in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-cfg=retain_autocast_shim");
    println!("cargo:rustc-env=RETAIN_AUTOCAST_BUILD=built with the autocast shim");
}

struct Inputs {
    lib_dir: PathBuf,
    includes: Vec<PathBuf>,
    cxx11_abi: &'static str,
}

fn shim_inputs() -> Result<Inputs, String> {
    if std::env::var_os("RETAIN_GRAPH_DISABLE").is_some() {
        return Err("RETAIN_GRAPH_DISABLE is set".into());
    }
    let lib_dir = retain_build::libtorch_lib_dir().ok_or("libtorch not located")?;
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return Err(format!(
            "{} has no libtorch_cuda.so (a CPU-only libtorch)",
            lib_dir.display()
        ));
    }
    let root = lib_dir
        .parent()
        .ok_or("libtorch lib folder has no parent")?;
    let torch_include = root.join("include");
    if !torch_include.join("ATen/cuda/CUDAGraph.h").exists() {
        return Err(format!(
            "no ATen/cuda/CUDAGraph.h under {}",
            torch_include.display()
        ));
    }
    let mut cuda: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var) {
            cuda.push(Path::new(&home).join("include"));
        }
    }
    if let Some(site) = root.parent() {
        cuda.push(site.join("nvidia/cu13/include"));
        cuda.push(site.join("nvidia/cuda_runtime/include"));
        cuda.push(site.join("nvidia/cuda_crt/include"));
    }
    cuda.push(PathBuf::from("/usr/local/cuda/include"));
    cuda.retain(|dir| dir.is_dir());
    for header in ["cuda_runtime_api.h", "crt/host_config.h"] {
        if !cuda.iter().any(|dir| dir.join(header).exists()) {
            return Err(format!(
                "CUDA header {header} not found (install nvidia-cuda-crt beside the PyPI wheel, \
                 as ./setup.sh does, or set CUDA_HOME)"
            ));
        }
    }
    let mut includes = vec![
        torch_include.clone(),
        torch_include.join("torch/csrc/api/include"),
    ];
    includes.extend(cuda);
    Ok(Inputs {
        lib_dir,
        includes,
        cxx11_abi: cxx11_abi(),
    })
}

/// libtorch 2.x wheels use the C++11 ABI; a PyTorch in use says so itself.
fn cxx11_abi() -> &'static str {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let script = "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))";
        for python in ["python3", "python"] {
            if let Ok(out) = Command::new(python).args(["-c", script]).output()
                && out.status.success()
            {
                return if out.stdout.starts_with(b"0") {
                    "0"
                } else {
                    "1"
                };
            }
        }
    }
    "1"
}

fn compile(inputs: &Inputs) {
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .includes(&inputs.includes)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", inputs.cxx11_abi))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("shim/graph.cpp")
        .file("shim/fused.cpp")
        .compile("retain_graph_shim");
    println!(
        "cargo:rustc-link-search=native={}",
        inputs.lib_dir.display()
    );
    for lib in ["torch_cuda", "c10_cuda", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-cfg=retain_graph_shim");
    println!("cargo:rustc-env=RETAIN_GRAPH_BUILD=built with the shim");
}
