//! A base encoder directory in either of the forms a detector builds on: a Hugging Face BERT
//! (`config.json` + `model.safetensors`) or multilingual-e5-small's `E5S1` blob, each beside
//! the model's `tokenizer.json`. Turns one into the configuration, f32 tensors named as
//! [`BertModel`](super::bert::BertModel) wants them, and the tokenizer, for the detector and
//! the trainer alike. Checking the files against a manifest's pins is the caller's job
//! ([`crate::weights::verify_all`]); this module only reads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::models::bert::BertConfig;
use crate::models::e5;
use crate::tokenize::TextTokenizer;
use crate::weights::load_safetensors;

/// The tokenizer every base form carries.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The configuration of a Hugging Face base.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of a Hugging Face base.
pub const SAFETENSORS_FILE: &str = "model.safetensors";

/// How a base encoder directory stores its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseFormat {
    /// `config.json`, `tokenizer.json`, `model.safetensors` (e.g. all-MiniLM-L6-v2).
    Safetensors,
    /// `tokenizer.json` and the `E5S1` blob `e5-small-q4.bin` (multilingual-e5-small).
    E5s1,
}

impl BaseFormat {
    /// Every form, in the order a directory is probed.
    pub const ALL: [Self; 2] = [Self::Safetensors, Self::E5s1];

    /// The files of this form; a model manifest pins each one's sha256.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::Safetensors => &[CONFIG_FILE, TOKENIZER_FILE, SAFETENSORS_FILE],
            Self::E5s1 => &[TOKENIZER_FILE, e5::BLOB_FILE],
        }
    }

    /// The file holding the weights: its presence tells the forms apart.
    pub fn weights_file(self) -> &'static str {
        match self {
            Self::Safetensors => SAFETENSORS_FILE,
            Self::E5s1 => e5::BLOB_FILE,
        }
    }

    /// The text the encoder was trained to see before an input: e5 embeds a query as
    /// `query: <text>` and drifts without it (see MODELS.md); a plain BERT wants nothing.
    pub fn default_input_prefix(self) -> &'static str {
        match self {
            Self::Safetensors => "",
            Self::E5s1 => "query: ",
        }
    }

    /// The form of the base in `dir`, from which weights file it holds.
    ///
    /// # Errors
    /// [`Error::ModelFile`] naming `dir` and the files each form needs when it holds neither
    /// weights file or both.
    pub fn detect(dir: &Path) -> Result<Self> {
        let found: Vec<Self> = Self::ALL
            .into_iter()
            .filter(|f| dir.join(f.weights_file()).is_file())
            .collect();
        match found[..] {
            [one] => Ok(one),
            [] => Err(Error::model_file(
                dir,
                format!(
                    "not a base encoder directory: expected {} (run scripts/setup.sh, or pass \
                     the right --base)",
                    Self::expected()
                ),
            )),
            _ => Err(Error::model_file(
                dir,
                format!(
                    "holds the weights of both base forms ({}): keep the one the model needs",
                    Self::ALL.map(Self::weights_file).join(" and ")
                ),
            )),
        }
    }

    /// The form whose weights file a manifest's `base.files` pins.
    ///
    /// # Errors
    /// A message for the manifest's error when the pins name no weights file or both.
    pub fn of_pins(pins: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let pinned: Vec<Self> = Self::ALL
            .into_iter()
            .filter(|f| pins.contains_key(f.weights_file()))
            .collect();
        match pinned[..] {
            [one] => Ok(one),
            [] => Err(format!(
                "base.files pins no weights file: expected {}",
                Self::expected()
            )),
            _ => Err(format!(
                "base.files pins the weights of both base forms ({})",
                Self::ALL.map(Self::weights_file).join(" and ")
            )),
        }
    }

    /// What a base directory must hold, in words, for error messages.
    fn expected() -> String {
        Self::ALL.map(|f| f.files().join(" + ")).join(", or ")
    }

    /// Where the configuration comes from, for error messages.
    pub fn config_source(self) -> &'static str {
        match self {
            Self::Safetensors => CONFIG_FILE,
            Self::E5s1 => "the E5S1 blob's header",
        }
    }
}

/// A loaded base encoder: what [`BertModel::load`](super::bert::BertModel::load) and a
/// classifier head are built from.
pub struct BaseEncoder {
    pub format: BaseFormat,
    pub config: BertConfig,
    /// f32 tensors on the device they were loaded on, named as in Hugging Face's `BertModel`.
    pub tensors: HashMap<String, Tensor>,
    /// The base's tokenizer, without an input prefix (see [`TextTokenizer::with_prefix`]).
    pub tokenizer: TextTokenizer,
    /// The weights file: names it in errors and keys caches of activations.
    pub weights_path: PathBuf,
}

impl BaseEncoder {
    /// Loads the base in `dir`, stored as `format`, onto `device`.
    ///
    /// # Errors
    /// [`Error::ModelFile`] naming `dir` and the files the form needs when one is missing, or
    /// naming the file at fault when it is malformed, or when the tokenizer has more tokens
    /// than the encoder embeds.
    pub fn load(dir: &Path, format: BaseFormat, device: &Device) -> Result<Self> {
        if let Some(missing) = format.files().iter().find(|f| !dir.join(f).is_file()) {
            return Err(Error::model_file(
                dir,
                format!(
                    "base encoder lacks {missing}: expected {} (run scripts/setup.sh, or pass \
                     the right base directory)",
                    format.files().join(" + ")
                ),
            ));
        }
        let weights_path = dir.join(format.weights_file());
        let (config, tensors) = match format {
            BaseFormat::Safetensors => (
                BertConfig::read(&dir.join(CONFIG_FILE))?,
                load_safetensors(&weights_path, DType::F32, device)?,
            ),
            BaseFormat::E5s1 => e5::read_e5s1(&weights_path, device)?,
        };
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
        // Ids past the embedding table would fail deep in the forward pass, on some input.
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::model_file(
                tokenizer_path,
                format!(
                    "tokenizer has {} tokens but the encoder only {}: wrong tokenizer for this model",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        Ok(Self {
            format,
            config,
            tensors,
            tokenizer,
            weights_path,
        })
    }

    /// [`Self::load`] of whichever form [`BaseFormat::detect`] finds in `dir`.
    ///
    /// # Errors
    /// As [`BaseFormat::detect`] and [`Self::load`].
    pub fn load_detected(dir: &Path, device: &Device) -> Result<Self> {
        Self::load(dir, BaseFormat::detect(dir)?, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{write_tiny_base, write_tiny_e5_base};

    #[test]
    fn both_forms_load_from_their_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (bert, e5) = (tmp.path().join("bert"), tmp.path().join("e5"));
        write_tiny_base(&bert).unwrap();
        write_tiny_e5_base(&e5).unwrap();
        for (dir, format) in [(bert, BaseFormat::Safetensors), (e5, BaseFormat::E5s1)] {
            let base = BaseEncoder::load_detected(&dir, &Device::Cpu).unwrap();
            assert_eq!(base.format, format);
            assert_eq!(base.weights_path, dir.join(format.weights_file()));
            assert!(base
                .tensors
                .contains_key("encoder.layer.1.output.dense.weight"));
            assert!(base.tokenizer.vocab_size() <= base.config.vocab_size);
        }
    }

    #[test]
    fn a_directory_without_weights_names_itself_and_the_expected_files() {
        let tmp = tempfile::tempdir().unwrap();
        let msg = BaseFormat::detect(tmp.path()).unwrap_err().to_string();
        assert!(
            msg.contains(&tmp.path().display().to_string())
                && msg.contains("model.safetensors")
                && msg.contains("e5-small-q4.bin")
                && msg.contains("tokenizer.json"),
            "{msg}"
        );
        std::fs::write(tmp.path().join("model.safetensors"), b"").unwrap();
        std::fs::write(tmp.path().join("e5-small-q4.bin"), b"").unwrap();
        let msg = BaseFormat::detect(tmp.path()).unwrap_err().to_string();
        assert!(msg.contains("both"), "{msg}");
    }

    #[test]
    fn a_missing_tokenizer_is_named_with_the_files_of_the_form() {
        let tmp = tempfile::tempdir().unwrap();
        write_tiny_e5_base(tmp.path()).unwrap();
        std::fs::remove_file(tmp.path().join(TOKENIZER_FILE)).unwrap();
        let err = BaseEncoder::load(tmp.path(), BaseFormat::E5s1, &Device::Cpu);
        let msg = err.err().unwrap().to_string();
        assert!(
            msg.contains("lacks tokenizer.json")
                && msg.contains("tokenizer.json + e5-small-q4.bin"),
            "{msg}"
        );
    }

    #[test]
    fn the_pins_tell_the_form() {
        let pins = |names: &[&str]| -> BTreeMap<String, String> {
            names.iter().map(|n| (n.to_string(), "00".into())).collect()
        };
        assert_eq!(
            BaseFormat::of_pins(&pins(BaseFormat::Safetensors.files())),
            Ok(BaseFormat::Safetensors)
        );
        assert_eq!(
            BaseFormat::of_pins(&pins(BaseFormat::E5s1.files())),
            Ok(BaseFormat::E5s1)
        );
        assert!(BaseFormat::of_pins(&pins(&["tokenizer.json"]))
            .unwrap_err()
            .contains("no weights file"));
        assert!(
            BaseFormat::of_pins(&pins(&["model.safetensors", "e5-small-q4.bin"]))
                .unwrap_err()
                .contains("both")
        );
    }
}
