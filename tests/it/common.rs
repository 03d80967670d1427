//! Shared helpers: tiny model directories, the real base encoder when present.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tremble::manifest::Thresholds;
use tremble::signals::sensitivity::{Fusion, FUSION_INPUTS, FUSION_INPUT_NAMES};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny detector model in a fresh temporary directory.
pub fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tremble::testing::write_tiny_model(dir.path()).unwrap();
    dir
}

/// The real base encoder's directory, or `None` (printing why the caller skips).
pub fn real_base(test: &str) -> Option<PathBuf> {
    let dir = repo().join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!("SKIPPED {test}: real weights absent (run scripts/setup.sh)");
        None
    }
}

/// Largest absolute difference of two tensors of the same shape, on any devices and dtypes.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let host = |t: &Tensor| {
        t.to_dtype(DType::F32)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap()
    };
    let d = (host(a) - host(b)).unwrap();
    d.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn load_golden(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(repo().join("tests/golden").join(name), &Device::Cpu).unwrap()
}

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::write(path, content).unwrap();
}

/// The real multilingual-e5-small base (E5S1 blob and tokenizer), or `None` (printing why the
/// caller skips).
pub fn real_e5_base(test: &str) -> Option<PathBuf> {
    let dir = repo().join("models/multilingual-e5-small");
    let present = [tremble::models::e5::BLOB_FILE, "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if present {
        Some(dir)
    } else {
        eprintln!("SKIPPED {test}: multilingual-e5-small absent (run scripts/setup.sh)");
        None
    }
}

/// A fusion with these weights on unstandardized inputs, fitted (so it says) with 8 copies at
/// rate 0.1, and presets 0.9 / 0.8 / 0.7 of its own.
pub fn fusion(weights: [f32; FUSION_INPUTS], bias: f32) -> Fusion {
    Fusion {
        inputs: FUSION_INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        center: vec![0.0; FUSION_INPUTS],
        scale: vec![1.0; FUSION_INPUTS],
        weights: weights.to_vec(),
        bias,
        copies: 8,
        rate: 0.1,
        thresholds: Thresholds {
            strict: 0.9,
            balanced: 0.8,
            permissive: 0.7,
        },
    }
}
