//! The verdict returned for each input and the evidence of each signal (serde). Plain data:
//! no scoring logic lives here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::normalize::ObfuscationSignals;

/// What kind of input the detector judged it to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Category {
    Benign,
    /// Instructions meant to override the application's (direct or hidden in content).
    Injection,
    /// Framings that try to lift the model's safety rules (DAN, role play, hypotheticals).
    Jailbreak,
    /// Adversarially perturbed text (typos, substitutions, optimized suffixes).
    Adversarial,
    /// Input built to exhaust resources (oversized or repetitive).
    ResourceAbuse,
}

impl Category {
    /// Parses a label as used in the data files and manifests.
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "benign" => Some(Category::Benign),
            "injection" => Some(Category::Injection),
            "jailbreak" => Some(Category::Jailbreak),
            "adversarial" => Some(Category::Adversarial),
            "resource_abuse" => Some(Category::ResourceAbuse),
            _ => None,
        }
    }

    /// The label string used in data files and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Benign => "benign",
            Category::Injection => "injection",
            Category::Jailbreak => "jailbreak",
            Category::Adversarial => "adversarial",
            Category::ResourceAbuse => "resource_abuse",
        }
    }
}

/// The detector's judgement of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Calibrated probability that the input is an attack, in [0, 1].
    pub score: f32,
    /// `score >= threshold`, or a size/repetition bound fired (category `resource_abuse`).
    pub flagged: bool,
    /// The most likely attack category when flagged, `benign` otherwise.
    pub category: Category,
    /// The threshold the decision used.
    pub threshold: f32,
    /// Evidence of each signal that ran.
    pub signals: Signals,
}

/// Evidence per signal; a signal that did not run or found nothing is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Signals {
    pub classifier: ClassifierEvidence,
    /// Present when the normalizer found a trick or scored an extra view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<NormalizeEvidence>,
    /// Present when a size or repetition bound fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dos: Option<DosEvidence>,
    /// Present when the perturbation-sensitivity check ran on the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<SensitivityEvidence>,
    /// Present when the LM-surprise signal ran (`--lm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_surprise: Option<LmSurpriseEvidence>,
}

impl Verdict {
    /// Attack probability of the raw text alone, as a detector without normalization would
    /// have scored it.
    pub fn raw_score(&self) -> f32 {
        self.signals
            .normalize
            .as_ref()
            .map_or(self.signals.classifier.score, |n| n.raw_score)
    }

    /// The score before the perturbation-sensitivity check and the LM-surprise signal (the
    /// classifier over all views). The check runs first, so its base is the earlier one.
    pub fn base_score(&self) -> f32 {
        match (&self.signals.sensitivity, &self.signals.lm_surprise) {
            (Some(s), _) => s.base_score,
            (None, Some(l)) => l.base_score,
            (None, None) => self.score,
        }
    }
}

/// How the scores of perturbed copies of the input moved (see `tremble::ops::sensitivity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SensitivityEvidence {
    /// Why the input was checked: `band` (base score in the uncertainty band), `obfuscation`
    /// (an obfuscation signal fired) or `always`.
    pub reason: String,
    /// Perturbed copies scored.
    pub copies: usize,
    /// The detector's score before the check.
    pub base_score: f32,
    /// Mean attack probability of the copies.
    pub mean: f32,
    /// Their standard deviation.
    pub std: f32,
    /// Share of copies on the other side of the classifier's `balanced` threshold.
    pub flip_rate: f32,
    /// Largest move of a copy's attack probability from the base score.
    pub max_abs_delta: f32,
    /// Mean Jensen–Shannon divergence between the copies' label distributions and the
    /// original's, in nats.
    pub js_mean: f32,
    /// Whether the model's fusion produced the verdict's score (else the base score stands).
    pub fused: bool,
}

/// How surprised the small LM was by the input's tokens (see `tremble::signals::lm_surprise`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LmSurpriseEvidence {
    /// The features, in nats per token.
    #[serde(flatten)]
    pub features: crate::signals::lm_surprise::LmFeatures,
    /// The rule's attack probability.
    pub score: f32,
    /// The verdict's score before this signal (the verdict keeps the larger of the two).
    pub base_score: f32,
    /// Whether this signal decided the verdict (its probability was the larger and flagged).
    pub decided: bool,
}

/// What the normalizer found and how each view scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NormalizeEvidence {
    /// The view whose score decided (`raw` when the text as given scored highest).
    pub decided_by: String,
    /// Calibrated attack probability of the raw text alone.
    pub raw_score: f32,
    /// Attack probability of each extra view scored, by view name.
    pub views: BTreeMap<String, f32>,
    /// Names of the obfuscation signals that fired.
    pub fired: Vec<String>,
    /// The counts behind them.
    pub counts: ObfuscationSignals,
}

/// Size and repetition bounds that fired for an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DosEvidence {
    /// Input size in bytes.
    pub bytes: usize,
    /// Only the first `max_bytes` were scored.
    pub truncated: bool,
    /// Share of distinct chunks among the input's word chunks (low = repetitive).
    pub distinct_ratio: f32,
    /// The input repeats itself beyond the bound.
    pub repetitive: bool,
    /// Dialogue-turn markers found (many-shot stuffing).
    pub turns: usize,
    /// Whether the input counts as resource abuse.
    pub abuse: bool,
}

/// What the transformer classifier saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClassifierEvidence {
    /// Calibrated attack probability of the highest-scoring window.
    pub score: f32,
    /// Attack category probabilities of that window (conditional on attack).
    pub categories: BTreeMap<String, f32>,
    /// Content tokens in the input.
    pub tokens: usize,
    /// Windows the input was split into.
    pub windows: usize,
    /// Windows scored: fewer than `windows` only when the per-record window cap was hit.
    pub windows_scored: usize,
    /// Index of the window that decided.
    pub top_window: usize,
    /// The model that read the input, when the detector routes by language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_score_is_the_score_before_either_signal() {
        let mut v = Verdict {
            score: 0.9,
            flagged: true,
            category: Category::Adversarial,
            threshold: 0.7,
            signals: Default::default(),
        };
        assert_eq!(v.base_score(), 0.9);
        v.signals.lm_surprise = Some(LmSurpriseEvidence {
            features: Default::default(),
            score: 0.9,
            base_score: 0.3,
            decided: true,
        });
        assert_eq!(v.base_score(), 0.3);
        v.signals.sensitivity = Some(SensitivityEvidence {
            base_score: 0.2,
            ..Default::default()
        });
        assert_eq!(v.base_score(), 0.2);
    }
}
