//! The verdict returned for each input and the evidence of each signal (serde). Plain data:
//! no scoring logic lives here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// `score >= threshold`.
    pub flagged: bool,
    /// The most likely attack category when flagged, `benign` otherwise.
    pub category: Category,
    /// The threshold the decision used.
    pub threshold: f32,
    /// Evidence of each signal that ran.
    pub signals: Signals,
}

/// Evidence per signal; a signal that did not run is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Signals {
    pub classifier: ClassifierEvidence,
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
}
