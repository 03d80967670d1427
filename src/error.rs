//! The crate's one public error type. Tensor code works in `candle_core::Result` and is
//! converted here, once, at the public boundary; every variant names what the user must look at.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or scoring text.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file is missing, unreadable, or does not fit the model it belongs to.
    #[error("model file {}: {msg}", path.display())]
    ModelFile { path: PathBuf, msg: String },

    /// A file's sha256 differs from the one pinned in its manifest.
    #[error(
        "checksum mismatch for {}: expected sha256 {expected}, found {found} \
         (re-run scripts/setup.sh, or restore the file)",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// An invalid setting, named in the message.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The requested device could not be used.
    #[error("device: {0}")]
    Device(String),

    /// Fetching from the Hugging Face hub failed (or the hub is disabled).
    #[error("hub: {0}")]
    Hub(String),

    /// An I/O error with the file or operation it concerns.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A tensor operation failed: a bug or a model inconsistent with its config.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn model_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::ModelFile {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
