//! The adversarial-suffix signal: how surprised a small causal LM (SmolLM2-135M) is by each
//! token of the input, summarized into windowed features, and the calibrated rule that turns
//! them into a probability. Optimized suffixes (GCG and relatives) are strings no language model
//! would write: a run of tokens with very high surprise, usually after fluent text.
//!
//! It owns tokenizing for the LM, batching, the features and the rule; the forward pass is
//! `crate::models::llama`; how the probability joins the verdict is the detector's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::llama::LlamaModel;
use crate::signals::classifier::sigmoid;
use crate::verdict::{Category, LmSurpriseEvidence, Verdict};

/// File name of the GGUF inside the LM directory.
pub const LM_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Tokens with more surprise than this (nats) count as "high": beyond ln(49,152) ≈ 10.8 the LM
/// found the token less likely than a uniform guess would.
pub const HIGH_SURPRISE: f32 = 10.0;
/// The feature names, in the rule's input order.
pub const LM_INPUT_NAMES: [&str; 5] = ["mean", "max_w10", "max_w20", "tail_contrast", "frac_high"];
/// Sequences per LM forward pass (sorted by length first, so little padding).
const LM_BATCH: usize = 8;

/// Summary of one input's per-token surprise (nats).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LmFeatures {
    /// Content tokens scored (the last `max_tokens` of the input).
    pub tokens: usize,
    /// Mean surprise.
    pub mean: f32,
    /// Largest mean surprise over 10 consecutive tokens (the whole input when shorter).
    pub max_w10: f32,
    /// The same over 20 tokens.
    pub max_w20: f32,
    /// Mean surprise of the tail (last min(20, n/2) tokens) minus that of the tokens before it.
    pub tail_contrast: f32,
    /// Share of tokens above [`HIGH_SURPRISE`].
    pub frac_high: f32,
}

impl LmFeatures {
    /// The rule's inputs, in [`LM_INPUT_NAMES`] order.
    pub fn inputs(&self) -> [f32; 5] {
        [
            self.mean,
            self.max_w10,
            self.max_w20,
            self.tail_contrast,
            self.frac_high,
        ]
    }
}

/// Windowed features of a surprise sequence. Empty input gives all zeros.
pub fn window_features(s: &[f32]) -> LmFeatures {
    let n = s.len();
    if n == 0 {
        return LmFeatures::default();
    }
    let mean_of = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let max_window = |w: usize| {
        if n <= w {
            return mean_of(s);
        }
        s.windows(w).map(mean_of).fold(f32::MIN, f32::max)
    };
    let tail = (n / 2).min(20);
    let tail_contrast = if tail == 0 {
        0.0
    } else {
        mean_of(&s[n - tail..]) - mean_of(&s[..n - tail])
    };
    LmFeatures {
        tokens: n,
        mean: mean_of(s),
        max_w10: max_window(10),
        max_w20: max_window(20),
        tail_contrast,
        frac_high: s.iter().filter(|&&x| x > HIGH_SURPRISE).count() as f32 / n as f32,
    }
}

/// Where the LM of a rule lives and what its files must hash to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmRef {
    pub name: String,
    /// Directory with the GGUF and `tokenizer.json`, relative to the model directory when not
    /// absolute.
    pub dir: PathBuf,
    /// File name → sha256; every one is checked before use.
    pub files: BTreeMap<String, String>,
}

/// The calibrated rule of a detector manifest: `p = sigmoid(w · z + bias)` over the
/// standardized features `z = (x − center) / scale`. Its bias is set so that the rule alone
/// flags a chosen share of benign calibration rows at the model's `balanced` threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmRule {
    pub lm: LmRef,
    /// Content tokens scored per input (its last ones).
    pub max_tokens: usize,
    /// Inputs with fewer content tokens get probability 0: an optimized suffix is ~20 tokens
    /// on top of a request, while short unusual text (a made-up word, a name, a code) reads
    /// as gibberish to any LM. 0 scores every input.
    #[serde(default)]
    pub min_tokens: usize,
    pub inputs: Vec<String>,
    pub center: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl LmRule {
    /// Checks that the rule fits this build's features.
    ///
    /// # Errors
    /// [`Error::Config`] naming the mismatch.
    pub fn validate(&self) -> Result<()> {
        let names: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
        let n = LM_INPUT_NAMES.len();
        if names != LM_INPUT_NAMES
            || self.center.len() != n
            || self.scale.len() != n
            || self.weights.len() != n
            || !self.scale.iter().all(|&s| s.is_finite() && s > 0.0)
            || self.max_tokens == 0
            || self.min_tokens > self.max_tokens
        {
            return Err(Error::Config(format!(
                "lm_surprise rule has inputs {names:?} (tokens {}..={}); this build expects \
                 {LM_INPUT_NAMES:?}, positive scales and 1 ≤ max_tokens, min_tokens ≤ \
                 max_tokens",
                self.min_tokens, self.max_tokens
            )));
        }
        Ok(())
    }

    /// The rule's logit for `f` (before the sigmoid).
    pub fn logit(&self, f: &LmFeatures) -> f32 {
        super::standardized_dot(&f.inputs(), &self.center, &self.scale, &self.weights) + self.bias
    }

    /// The rule's attack probability for `f`; 0 under `min_tokens`.
    pub fn probability(&self, f: &LmFeatures) -> f32 {
        if f.tokens < self.min_tokens {
            0.0
        } else {
            sigmoid(self.logit(f))
        }
    }
}

/// The loaded LM and its tokenizer: `Send + Sync`, shared by every scoring thread.
pub struct LmSurprise {
    model: LlamaModel,
    tokenizer: tokenizers::Tokenizer,
    /// `<|im_start|>user\n`: the input is read as a user turn, as the LM was tuned on.
    prefix: Vec<u32>,
    max_tokens: usize,
}

impl LmSurprise {
    /// Loads the GGUF and `tokenizer.json` of `dir`, after checking `files`' sha256.
    ///
    /// # Errors
    /// [`Error::ModelFile`] naming a missing or altered file (fetched by `scripts/setup.sh`),
    /// or a GGUF that is not a Llama model.
    pub fn load(
        dir: &Path,
        files: &BTreeMap<String, String>,
        max_tokens: usize,
        device: &Device,
    ) -> Result<Self> {
        // A missing file is named with the setup hint by `verify_file`.
        crate::weights::verify_all(dir, files)?;
        let gguf = dir.join(LM_GGUF);
        let model = LlamaModel::from_gguf(&gguf, device)
            .map_err(|e| Error::model_file(&gguf, format!("cannot load the LM: {e}")))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::model_file(&tok_path, e.to_string()))?;
        if tokenizer.get_vocab_size(true) > model.config().vocab_size {
            return Err(Error::model_file(
                &tok_path,
                "tokenizer has more tokens than the LM: wrong tokenizer for this model",
            ));
        }
        let prefix = encode(&tokenizer, "<|im_start|>user\n")?;
        Ok(Self {
            model,
            tokenizer,
            prefix,
            max_tokens,
        })
    }

    /// Features of each text, scored in batches of similar length. Only the last
    /// `max_tokens` tokens of a text are scored (optimized suffixes sit at the end).
    ///
    /// # Errors
    /// Tokenizer or tensor errors.
    pub fn features(&self, texts: &[&str]) -> Result<Vec<LmFeatures>> {
        let _span = tracing::debug_span!("lm_surprise", inputs = texts.len()).entered();
        let mut seqs = Vec::with_capacity(texts.len());
        for t in texts {
            let mut ids = encode(&self.tokenizer, tail_bytes(t, self.max_tokens * 32))?;
            let keep = ids.len().min(self.max_tokens);
            ids.drain(..ids.len() - keep);
            let mut s = self.prefix.clone();
            s.extend(ids);
            seqs.push(s);
        }
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        // candle's CPU forward at these sizes keeps little more than one core busy; running
        // batches side by side on the rayon pool measured ~10% faster on 2 cores.
        let chunks: Vec<&[usize]> = order.chunks(LM_BATCH).collect();
        let scored = chunks
            .par_iter()
            .map(|chunk| {
                let batch: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
                self.model.surprise(&batch)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut out = vec![LmFeatures::default(); seqs.len()];
        for (chunk, surprise) in chunks.iter().zip(scored) {
            for (&i, s) in chunk.iter().zip(surprise) {
                // The first surprise is the prefix's own next token; content starts after it.
                out[i] = window_features(&s[self.prefix.len() - 1..]);
            }
        }
        Ok(out)
    }

    /// The LM's tokenizer (e.g. for building synthetic suffixes).
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }
}

/// Joins the signal to a verdict: the verdict keeps the larger score, and the signal decides
/// (category `adversarial`) when its probability alone crosses the verdict's threshold and
/// nothing else flagged the input.
pub fn join(v: &mut Verdict, features: LmFeatures, p: f32) {
    let base = v.score;
    let decided = !v.flagged && p >= v.threshold && p > base;
    if p > base {
        v.score = p;
    }
    if decided {
        v.flagged = true;
        v.category = Category::Adversarial;
    }
    v.signals.lm_surprise = Some(LmSurpriseEvidence {
        features,
        score: p,
        base_score: base,
        decided,
    });
}

fn encode(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| Error::Tokenizer(format!("LM tokenizer: {e}")))
}

/// The last at most `max` bytes of `text`, starting on a character boundary: bounds the
/// tokenizer's work on huge inputs (a token is rarely longer than 32 bytes).
fn tail_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_features_by_hand() {
        let f = window_features(&[1.0, 1.0, 1.0, 1.0, 12.0, 12.0]);
        assert_eq!(f.tokens, 6);
        assert!((f.mean - 28.0 / 6.0).abs() < 1e-6);
        // shorter than both windows: the mean
        assert_eq!(f.max_w10, f.mean);
        assert_eq!(f.max_w20, f.mean);
        // tail = min(20, 3) = 3 tokens: (1 + 12 + 12) / 3 - 1
        assert!((f.tail_contrast - (25.0 / 3.0 - 1.0)).abs() < 1e-5);
        assert!((f.frac_high - 2.0 / 6.0).abs() < 1e-6);
    }

    #[test]
    fn windows_find_the_gibberish_run() {
        let mut s = vec![2.0f32; 40];
        for x in &mut s[30..40] {
            *x = 14.0;
        }
        let f = window_features(&s);
        assert!((f.max_w10 - 14.0).abs() < 1e-6);
        assert!((f.max_w20 - 8.0).abs() < 1e-6);
        // tail = 20 tokens: 10 × 2 + 10 × 14 over 20 = 8, rest = 2
        assert!((f.tail_contrast - 6.0).abs() < 1e-6);
        assert_eq!(window_features(&[]), LmFeatures::default());
        assert_eq!(window_features(&[3.0]).tail_contrast, 0.0);
    }

    #[test]
    fn tail_bytes_keeps_characters_whole() {
        assert_eq!(tail_bytes("abc", 10), "abc");
        assert_eq!(tail_bytes("aé€", 4), "€");
        assert_eq!(tail_bytes("aé€", 5), "é€");
    }

    #[test]
    fn join_keeps_the_larger_score_and_decides_only_alone() {
        let mut v = Verdict {
            score: 0.2,
            flagged: false,
            category: Category::Benign,
            threshold: 0.7,
            signals: Default::default(),
        };
        join(&mut v, LmFeatures::default(), 0.9);
        assert_eq!(
            (v.score, v.flagged, v.category),
            (0.9, true, Category::Adversarial)
        );
        let e = v.signals.lm_surprise.as_ref().unwrap();
        assert_eq!((e.base_score, e.score, e.decided), (0.2, 0.9, true));

        let mut low = Verdict {
            score: 0.2,
            flagged: false,
            category: Category::Benign,
            threshold: 0.7,
            signals: Default::default(),
        };
        join(&mut low, LmFeatures::default(), 0.5);
        assert_eq!((low.score, low.flagged), (0.5, false));

        let mut already = Verdict {
            score: 0.95,
            flagged: true,
            category: Category::Injection,
            threshold: 0.7,
            signals: Default::default(),
        };
        join(&mut already, LmFeatures::default(), 0.99);
        assert_eq!(
            (already.score, already.category),
            (0.99, Category::Injection)
        );
        assert!(!already.signals.lm_surprise.unwrap().decided);
    }

    fn rule() -> LmRule {
        LmRule {
            lm: LmRef {
                name: "lm".into(),
                dir: "lm".into(),
                files: BTreeMap::new(),
            },
            max_tokens: 8,
            min_tokens: 0,
            inputs: LM_INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
            center: vec![2.0, 0.0, 0.0, 0.0, 0.0],
            scale: vec![2.0, 1.0, 1.0, 1.0, 1.0],
            weights: vec![1.0, 0.0, 0.0, 0.0, 0.5],
            bias: -1.0,
        }
    }

    #[test]
    fn rule_standardizes_then_applies_the_logistic() {
        let r = rule();
        r.validate().unwrap();
        let f = LmFeatures {
            mean: 6.0,
            frac_high: 2.0,
            ..Default::default()
        };
        // (6 - 2) / 2 · 1 + 2 · 0.5 - 1 = 2
        assert!((r.logit(&f) - 2.0).abs() < 1e-6);
        assert!((r.probability(&f) - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        // Under min_tokens the rule stays silent, whatever the features.
        let mut short = r.clone();
        short.min_tokens = 3;
        short.validate().unwrap();
        assert_eq!(short.probability(&LmFeatures { tokens: 2, ..f }), 0.0);
        assert_eq!(
            short.probability(&LmFeatures { tokens: 3, ..f }),
            r.probability(&f)
        );
        short.min_tokens = 9;
        assert!(short.validate().is_err());
        let mut bad = r.clone();
        bad.scale[1] = 0.0;
        assert!(bad.validate().is_err());
        let mut bad = r;
        bad.inputs.pop();
        assert!(bad.validate().is_err());
    }
}
