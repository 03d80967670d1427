//! The manifest of a detector model directory (`tremble.json`) and of a base encoder
//! (`models/<name>.manifest.json`), and how the base encoder's files are located:
//! an explicit directory, the directory the manifest names, then the Hugging Face cache/hub.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenize::WindowSpec;

/// File name of a detector model's manifest inside its directory.
pub const MANIFEST_FILE: &str = "tremble.json";
/// Current manifest format version.
pub const FORMAT: u32 = 1;

/// What a detector model directory holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetectorManifest {
    pub format: u32,
    pub name: String,
    pub base: BaseRef,
    /// Our own files in this directory (head, fine-tuned layers) → sha256.
    pub files: BTreeMap<String, String>,
    /// The attack categories of the category head, in output order.
    pub categories: Vec<String>,
    #[serde(default)]
    pub window: WindowSpec,
    #[serde(default)]
    pub calibration: Calibration,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The fusion of the base score with the perturbation-sensitivity features, when the model
    /// has one (`tremble fuse` fits it); without it the check reports evidence only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::signals::sensitivity::Fusion>,
    /// The calibrated rule of the optional LM-surprise signal (`--lm`; `tremble fit-lm` fits
    /// it) and the LM it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_surprise: Option<crate::signals::lm_surprise::LmRule>,
    /// Free-form facts for people (training recipe, metrics); never read by code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// The base encoder a detector builds on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseRef {
    pub name: String,
    /// Directory with `config.json`, `tokenizer.json`, `model.safetensors`, relative to the
    /// model directory when not absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Hugging Face repo id to fetch from when the directory is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_repo: Option<String>,
    /// Base file name → sha256; every one is checked before use.
    pub files: BTreeMap<String, String>,
}

/// Platt scaling of the attack logit: `p = sigmoid(a · logit + b)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub a: f32,
    pub b: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self { a: 1.0, b: 0.0 }
    }
}

/// Decision thresholds on the calibrated score for the three presets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    pub strict: f32,
    pub balanced: f32,
    pub permissive: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            strict: 0.5,
            balanced: 0.5,
            permissive: 0.5,
        }
    }
}

pub(crate) const BASE_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

impl DetectorManifest {
    /// Reads `dir/tremble.json`.
    ///
    /// # Errors
    /// [`Error::ModelFile`] when it is missing, malformed, or of an unknown format.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::model_file(
                &path,
                format!("cannot read the model manifest ({e}); is this a tremble model directory?"),
            )
        })?;
        Self::parse(&text, &path)
    }

    /// Parses and checks a manifest's text; `path` names it in errors.
    ///
    /// # Errors
    /// [`Error::ModelFile`] when it is malformed, of an unknown format, or inconsistent.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let m: Self = serde_json::from_str(text)
            .map_err(|e| Error::model_file(path, format!("malformed manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(Error::model_file(
                path,
                format!(
                    "manifest format {} is not supported (expected {FORMAT})",
                    m.format
                ),
            ));
        }
        m.window
            .validate()
            .map_err(|e| Error::model_file(path, e.to_string()))?;
        for f in BASE_FILES {
            if !m.base.files.contains_key(f) {
                return Err(Error::model_file(
                    path,
                    format!("base.files lacks a sha256 for {f}"),
                ));
            }
        }
        Ok(m)
    }

    /// Writes `dir/tremble.json`, pretty-printed.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory is not writable.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }
}

/// Finds the base encoder's directory for a model in `model_dir`: `explicit` if given, then the
/// manifest's `dir`, then the Hugging Face cache (and the hub unless `HF_HUB_OFFLINE` is set).
///
/// # Errors
/// [`Error::ModelFile`] / [`Error::Hub`] saying where it looked and what to run.
pub fn locate_base(model_dir: &Path, base: &BaseRef, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let mut looked = Vec::new();
    if let Some(rel) = &base.dir {
        let dir = model_dir.join(rel);
        if dir.join("model.safetensors").is_file() {
            return Ok(dir);
        }
        looked.push(dir.display().to_string());
    }
    match &base.hf_repo {
        Some(repo) => crate::hub::fetch_model(repo, &BASE_FILES).map_err(|e| {
            Error::Hub(format!(
                "base encoder {} not found in {} and {e}; run scripts/setup.sh",
                base.name,
                looked.join(", ")
            ))
        }),
        None => Err(Error::model_file(
            looked.first().map(PathBuf::from).unwrap_or_default(),
            format!("base encoder {} not found; run scripts/setup.sh", base.name),
        )),
    }
}
