//! Tokenization and windowing. Long input is split into overlapping token windows, each framed
//! by the model's start/end tokens, so that nothing is silently truncated. No candle here.

use std::path::Path;

use crate::error::{Error, Result};

/// Window geometry: at most `max_tokens` per window (start/end tokens included), consecutive
/// windows sharing `overlap` content tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSpec {
    pub max_tokens: usize,
    pub overlap: usize,
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            overlap: 64,
        }
    }
}

impl WindowSpec {
    /// # Errors
    /// When a window could not advance (`overlap` too large) or holds no content token.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens < 3 || self.overlap + 2 >= self.max_tokens {
            return Err(Error::Config(format!(
                "window of {} tokens with overlap {}: need max_tokens ≥ 3 and overlap < max_tokens − 2",
                self.max_tokens, self.overlap
            )));
        }
        Ok(())
    }

    fn body(&self) -> usize {
        self.max_tokens - 2
    }

    /// Start offsets of the windows over `n` content tokens; the last window ends at `n`.
    pub fn starts(&self, n: usize) -> Vec<usize> {
        let body = self.body();
        if n <= body {
            return vec![0];
        }
        let step = body - self.overlap;
        let mut starts: Vec<usize> = (0..)
            .map(|k| k * step)
            .take_while(|&s| s + body < n)
            .collect();
        starts.push(n - body);
        starts
    }
}

/// Byte span in the text of each token.
pub type Offsets = Vec<(usize, usize)>;

/// A tokenizer plus the special tokens that frame a window.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    start: u32,
    end: u32,
    pad: u32,
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`, disabling its own truncation and padding
    /// (windowing and batching are ours).
    ///
    /// # Errors
    /// [`Error::ModelFile`] when the file is unreadable or lacks start/end tokens.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::model_file(path, format!("not a valid tokenizer.json: {e}")))?;
        Self::new(inner).map_err(|e| Error::model_file(path, e.to_string()))
    }

    /// Wraps a tokenizer that has `[CLS]`/`[SEP]`/`[PAD]` (BERT) or `<s>`/`</s>`/`<pad>` tokens.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when those tokens are missing.
    pub fn new(mut inner: tokenizers::Tokenizer) -> Result<Self> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let find = |names: [&str; 2]| names.iter().find_map(|n| inner.token_to_id(n));
        let start = find(["[CLS]", "<s>"]);
        let end = find(["[SEP]", "</s>"]);
        let pad = find(["[PAD]", "<pad>"]);
        match (start, end, pad) {
            (Some(start), Some(end), Some(pad)) => Ok(Self {
                inner,
                start,
                end,
                pad,
            }),
            _ => Err(Error::Tokenizer(
                "tokenizer lacks [CLS]/[SEP]/[PAD] (or <s>/</s>/<pad>) tokens".into(),
            )),
        }
    }

    /// Id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Content token ids, without start/end tokens.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails on the text.
    pub fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Content token ids with the byte span of the text each one came from.
    ///
    /// # Errors
    /// As [`Self::content_ids`].
    pub fn content_ids_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Offsets)> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// The text as framed windows; short text gives one window equal to the tokenizer's own
    /// encoding with special tokens.
    ///
    /// # Errors
    /// As [`Self::content_ids`].
    pub fn windows(&self, text: &str, spec: WindowSpec) -> Result<Vec<Vec<u32>>> {
        let ids = self.content_ids(text)?;
        Ok(self.frame(&ids, spec))
    }

    /// Frames content ids into windows.
    pub fn frame(&self, ids: &[u32], spec: WindowSpec) -> Vec<Vec<u32>> {
        let body = spec.max_tokens - 2;
        spec.starts(ids.len())
            .into_iter()
            .map(|s| {
                let chunk = &ids[s..ids.len().min(s + body)];
                let mut w = Vec::with_capacity(chunk.len() + 2);
                w.push(self.start);
                w.extend_from_slice(chunk);
                w.push(self.end);
                w
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_everything_with_overlap() {
        let spec = WindowSpec {
            max_tokens: 10,
            overlap: 3,
        };
        assert_eq!(spec.starts(0), vec![0]);
        assert_eq!(spec.starts(8), vec![0]);
        assert_eq!(spec.starts(9), vec![0, 1]);
        let n = 30;
        let starts = spec.starts(n);
        assert_eq!(*starts.last().unwrap() + 8, n);
        for w in starts.windows(2) {
            assert!(w[1] > w[0] && w[1] - w[0] <= 5, "{starts:?}");
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(WindowSpec {
            max_tokens: 2,
            overlap: 0
        }
        .validate()
        .is_err());
        assert!(WindowSpec {
            max_tokens: 10,
            overlap: 8
        }
        .validate()
        .is_err());
        assert!(WindowSpec {
            max_tokens: 10,
            overlap: 7
        }
        .validate()
        .is_ok());
    }
}
