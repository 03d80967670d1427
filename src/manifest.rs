//! The manifest of a detector model directory (`tremble.json`) and of a base encoder
//! (`models/<name>.manifest.json`), and how the base encoder's files are located:
//! an explicit directory, the directory the manifest names, then the Hugging Face cache/hub.
//! Which files a base has, and how they load, is [`crate::models::base`]'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::base::BaseFormat;
use crate::tokenize::WindowSpec;

/// File name of a detector model's manifest inside its directory.
pub const MANIFEST_FILE: &str = "tremble.json";
/// Current manifest format version.
pub const FORMAT: u32 = 1;

/// A fetch manifest (`models/<name>.manifest.json`, what `scripts/fetch_base.py` installs):
/// the directory it installs into and every file it pins, fetched or derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchManifest {
    pub name: String,
    /// Relative to the repository root, as written.
    pub dir: PathBuf,
    /// File name → sha256, the `files` and `derived` sections together.
    pub files: BTreeMap<String, String>,
}

impl FetchManifest {
    /// Reads the fetch manifest at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; [`Error::ModelFile`] when it is not JSON or names
    /// no `dir`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        let m: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::model_file(path, format!("not valid JSON: {e}")))?;
        let mut files = BTreeMap::new();
        for key in ["files", "derived"] {
            for (k, v) in m[key].as_object().into_iter().flatten() {
                files.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        let dir = m["dir"]
            .as_str()
            .ok_or_else(|| Error::model_file(path, "names no dir"))?;
        Ok(Self {
            name: m["name"].as_str().unwrap_or_default().to_string(),
            dir: PathBuf::from(dir),
            files,
        })
    }
}

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
    /// The multilingual model that reads text this (English) model should not: see
    /// [`crate::route`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
    /// Free-form facts for people (training recipe, metrics); never read by code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// Where a model sends text that is not English.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteSpec {
    /// The multilingual model's directory, relative to this model's directory when not
    /// absolute.
    pub multilingual: PathBuf,
}

/// The base encoder a detector builds on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseRef {
    pub name: String,
    /// Directory with the base's files ([`BaseFormat::files`]: `config.json`,
    /// `tokenizer.json`, `model.safetensors`, or `tokenizer.json` and an `E5S1` blob), relative
    /// to the model directory when not absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Hugging Face repo id to fetch from when the directory is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_repo: Option<String>,
    /// Base file name → sha256; every one is checked before use. Which weights file is pinned
    /// tells the base's form.
    pub files: BTreeMap<String, String>,
    /// Text whose tokens open every window, after the start token, in training and scoring
    /// alike (`query: ` for an e5 base; see [`TextTokenizer::with_prefix`]). Empty, and then
    /// absent from the file, for a base that wants none.
    ///
    /// [`TextTokenizer::with_prefix`]: crate::tokenize::TextTokenizer::with_prefix
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input_prefix: String,
}

impl BaseRef {
    /// The base's form, from the weights file its pins name.
    ///
    /// # Errors
    /// A message for the manifest's error when they name none or both.
    pub fn format(&self) -> std::result::Result<BaseFormat, String> {
        BaseFormat::of_pins(&self.files)
    }
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

impl DetectorManifest {
    /// The languages `tremble train --holdout-langs` held out of this model's training and
    /// calibration (recorded under `info.sample`); empty when none.
    pub fn holdout_langs(&self) -> Vec<String> {
        self.info
            .as_ref()
            .and_then(|i| i["sample"]["holdout_langs"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(String::from))
            .collect()
    }

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
        let format = m.base.format().map_err(|e| Error::model_file(path, e))?;
        for f in format.files() {
            if !m.base.files.contains_key(*f) {
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
    let format = base
        .format()
        .map_err(|e| Error::model_file(model_dir.join(MANIFEST_FILE), e))?;
    let mut looked = Vec::new();
    if let Some(rel) = &base.dir {
        let dir = model_dir.join(rel);
        if dir.join(format.weights_file()).is_file() {
            return Ok(dir);
        }
        looked.push(dir.display().to_string());
    }
    match &base.hf_repo {
        Some(repo) => crate::hub::fetch_model(repo, format.files()).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[&str], prefix: &str) -> serde_json::Value {
        let files: BTreeMap<&str, &str> = files.iter().map(|f| (*f, "00")).collect();
        let mut base = serde_json::json!({"name": "b", "files": files});
        if !prefix.is_empty() {
            base["input_prefix"] = prefix.into();
        }
        serde_json::json!({"format": FORMAT, "name": "m", "base": base,
            "files": {"head.safetensors": "00"}, "categories": ["injection"]})
    }

    fn parse(v: &serde_json::Value) -> Result<DetectorManifest> {
        DetectorManifest::parse(&v.to_string(), Path::new("m/tremble.json"))
    }

    #[test]
    fn a_manifest_without_an_input_prefix_reads_and_writes_as_before() {
        let v = manifest(BaseFormat::Safetensors.files(), "");
        let m = parse(&v).unwrap();
        assert_eq!(m.base.input_prefix, "");
        assert_eq!(m.base.format(), Ok(BaseFormat::Safetensors));
        let written: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert!(written["base"].get("input_prefix").is_none(), "{written}");
    }

    #[test]
    fn an_e5_base_pins_its_blob_and_tokenizer_and_keeps_its_prefix() {
        let m = parse(&manifest(BaseFormat::E5s1.files(), "query: ")).unwrap();
        assert_eq!(m.base.format(), Ok(BaseFormat::E5s1));
        assert_eq!(m.base.input_prefix, "query: ");
        let back = parse(&serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn incomplete_base_pins_are_refused_naming_the_file() {
        let msg = parse(&manifest(&["e5-small-q4.bin"], ""))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("m/tremble.json") && msg.contains("lacks a sha256 for tokenizer.json"),
            "{msg}"
        );
        let msg = parse(&manifest(&["tokenizer.json"], ""))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pins no weights file"), "{msg}");
    }
}
