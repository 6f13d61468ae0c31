//! Generates the registry's list from this crate's `retain-method-*` dependencies, so that
//! registering a method is the one dependency line in Cargo.toml.

use std::path::PathBuf;

fn main() {
    retain_build::link_libtorch_cuda();
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let manifest = dir.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", manifest.display());
    let text = std::fs::read_to_string(&manifest).expect("read Cargo.toml");
    let crates: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("retain-method-"))
        .filter_map(|rest| rest.split([' ', '=', '.']).next())
        .map(|name| format!("retain_method_{}", name.replace('-', "_")))
        .collect();
    let entries: String = crates
        .iter()
        .map(|c| format!("    {c}::METHODS,\n"))
        .collect();
    let code = format!(
        "/// Every method crate's descriptors, in the order of `Cargo.toml`.\n\
         const CRATES: &[&[retain_train::method::MethodDescriptor]] = &[\n{entries}];\n"
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("crates.rs");
    std::fs::write(out, code).expect("write crates.rs");
}
