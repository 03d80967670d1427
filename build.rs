//! Builds the kernels in `kernels/`: always as a host twin (their source compiled as C++ under
//! a small CUDA emulation, for tests on machines without a GPU), and, with the `cuda` feature,
//! to PTX with nvcc for `src/ops` to load at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernels compiled to PTX, each loaded by `src/ops/<stem>.rs`.
const KERNELS: [&str; 6] = [
    "sensitivity",
    "perturb_tokens",
    "layer_norm",
    "bias_gelu",
    "masked_softmax",
    "mean_pool",
];

fn main() {
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("kernels/emu.cpp")
        .include("kernels")
        // The Rust twins never contract a*b+c into an FMA; bit-for-bit needs the same here.
        .flag_if_supported("-ffp-contract=off")
        .warnings(true)
        .compile("tremble_kernels_emu");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_ptx();
    }
}

fn build_ptx() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    if cap.is_empty() {
        panic!("CUDA_COMPUTE_CAP must be a compute capability such as 80 or 90");
    }
    for stem in KERNELS {
        let src = Path::new("kernels").join(format!("{stem}.cu"));
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-Ikernels"])
            .arg(format!("-arch=compute_{cap}"))
            .arg(&src)
            .arg("-o")
            .arg(&ptx)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "the `cuda` feature needs nvcc, and `{nvcc}` could not run ({e}); run \
                     `scripts/setup.sh --cuda` and `source .cache/cuda/env.sh`, or set NVCC"
                )
            });
        if !status.success() {
            panic!("nvcc failed on {} ({status})", src.display());
        }
    }
}
