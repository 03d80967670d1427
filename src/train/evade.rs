//! Training-data augmentation with the evasion catalogue (`tremble::evasion`): rows of the
//! training split rewritten by a subset of its techniques, benign and attack alike, each
//! trained on exactly what the detector would score for it (the normalizer's views, with the
//! raw text only where no view reads the whole text). Without it the classifier has seen
//! encoded, enciphered, typo-ridden or run-together text only in attacks, so it flags benign
//! text merely for looking odd (the evasion matrix's benign FPR), and it has never seen an
//! attack's wrapper around harmless content.
//!
//! Only a subset of techniques is used, so that the evasion matrix keeps measuring the others
//! as unseen; deterministic for a seed; never reads the calibration split.

use crate::evasion::{apply, Technique};
use crate::normalize::{normalize, whole_reading, DEFAULT_MAX_VIEWS};
use crate::rng::{hash_str, Rng};
use crate::train::data::Example;

/// The `source` of rewritten rows, so reports and weights can tell them apart.
pub const EVASION_SOURCE: &str = "augment_evasion";

/// The techniques training draws from. Held out for the evasion matrix to measure as unseen:
/// base32, URL and quoted-printable encodings (they share garak's prompt templates with the
/// two trained encodings), Atbash, bidi, and every exactly-undone character trick (the
/// normalizer reads those back to the clean text, so there is nothing to learn).
pub const TRAIN_TECHNIQUES: [Technique; 9] = [
    Technique::Base64,
    Technique::Hex,
    Technique::Rot13,
    Technique::Reverse,
    Technique::Leetspeak,
    Technique::Spaces,
    Technique::SpaceRemoval,
    Technique::CharTypos,
    Technique::TokenBreak,
];

/// Rates drawn for techniques whose rate matters (the matrix measures 0.1, 0.3 and 1.0).
const RATES: [f64; 3] = [0.1, 0.3, 1.0];

/// How many rows to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvasionConfig {
    /// Rewritten rows to add, half benign and half attacks (0 = none).
    pub rows: usize,
    /// Rows longer than this (chars) are not rewritten: the techniques target prompts, and a
    /// long document's views would cost most of the added windows.
    pub max_chars: usize,
}

impl Default for EvasionConfig {
    fn default() -> Self {
        Self {
            rows: 0,
            max_chars: 2000,
        }
    }
}

/// A rewritten row: its record (the rewritten text, the original's label) and the texts the
/// detector would score for it, whose windows the trainer maxes over.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    pub example: Example,
    pub scored: Vec<String>,
}

/// Rewritten rows drawn from `pool` (training indices), `cfg.rows / 2` of each class, each by
/// one of [`TRAIN_TECHNIQUES`] at a drawn rate, with `source` [`EVASION_SOURCE`], `subtype`
/// naming the technique and rate, and the original's label and group.
pub fn evasion_rows(
    examples: &[Example],
    pool: &[usize],
    cfg: EvasionConfig,
    seed: u64,
) -> Vec<Rewritten> {
    let mut out = Vec::with_capacity(cfg.rows);
    let mut rng = Rng::new(seed ^ 0xE7A5_1011);
    for attack in [false, true] {
        let mut hosts: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&i| {
                let e = &examples[i];
                e.is_attack() == attack
                    && !e.text.trim().is_empty()
                    && e.text.chars().count() <= cfg.max_chars
            })
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.is_empty() {
            continue;
        }
        rng.shuffle(&mut hosts);
        let want = if attack {
            cfg.rows - cfg.rows / 2
        } else {
            cfg.rows / 2
        };
        for k in 0..want {
            let host = &examples[hosts[k % hosts.len()]];
            let t = TRAIN_TECHNIQUES[rng.below(TRAIN_TECHNIQUES.len())];
            let p = if t.rated() {
                RATES[rng.below(RATES.len())]
            } else {
                1.0
            };
            let text = apply(t, &host.text, p, hash_str(rng.next_u64(), &host.text));
            out.push(Rewritten {
                scored: scored_texts(&text),
                example: Example {
                    source: EVASION_SOURCE.into(),
                    subtype: format!("{t}@{p}"),
                    text,
                    ..host.clone()
                },
            });
        }
    }
    out
}

/// What the detector scores for `text` ([`whole_reading`]'s rule): its normalizer views, and
/// the raw text too unless a view reads the whole text.
pub fn scored_texts(text: &str) -> Vec<String> {
    let n = normalize(text, DEFAULT_MAX_VIEWS);
    let mut out = Vec::with_capacity(n.views.len() + 1);
    if whole_reading(n.views.iter().map(|v| v.kind)).is_none() {
        out.push(text.to_string());
    }
    out.extend(n.views.into_iter().map(|v| v.text));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(i: usize, label: &str) -> Example {
        Example {
            text: format!("Row {i}: please summarise the attached report about the harbour."),
            label: label.into(),
            source: "src".into(),
            subtype: String::new(),
            lang: "en".into(),
            group: format!("g{i}"),
        }
    }

    fn data() -> Vec<Example> {
        (0..40)
            .map(|i| ex(i, if i % 4 == 0 { "injection" } else { "benign" }))
            .collect()
    }

    #[test]
    fn balanced_deterministic_and_labelled_like_the_original() {
        let d = data();
        let pool: Vec<usize> = (0..d.len()).collect();
        let cfg = EvasionConfig {
            rows: 30,
            max_chars: 2000,
        };
        let a = evasion_rows(&d, &pool, cfg, 7);
        assert_eq!(a, evasion_rows(&d, &pool, cfg, 7));
        assert_ne!(a, evasion_rows(&d, &pool, cfg, 8));
        assert_eq!(a.len(), 30);
        assert_eq!(a.iter().filter(|r| r.example.is_attack()).count(), 15);
        for r in &a {
            assert_eq!(r.example.source, EVASION_SOURCE);
            assert!(!r.scored.is_empty());
            let orig = d.iter().find(|e| e.group == r.example.group).unwrap();
            assert_eq!(orig.label, r.example.label);
            let name = r.example.subtype.split('@').next().unwrap();
            assert!(TRAIN_TECHNIQUES.iter().any(|t| t.name() == name));
        }
        // Attacks (10 rows) are reused to fill 15 rewrites; benign hosts are not exhausted.
        let techniques: std::collections::BTreeSet<_> =
            a.iter().map(|r| r.example.subtype.clone()).collect();
        assert!(techniques.len() > 5, "{techniques:?}");
    }

    #[test]
    fn draws_only_from_the_pool_and_within_the_length_cap() {
        let mut d = data();
        d.push(Example {
            text: "x".repeat(3000),
            ..ex(99, "benign")
        });
        let pool: Vec<usize> = (0..20).chain([d.len() - 1]).collect();
        let a = evasion_rows(
            &d,
            &pool,
            EvasionConfig {
                rows: 40,
                max_chars: 2000,
            },
            1,
        );
        for r in &a {
            let g: usize = r.example.group[1..].parse().unwrap();
            assert!(g < 20, "{}", r.example.group);
        }
        assert!(evasion_rows(&d, &pool, EvasionConfig::default(), 1).is_empty());
    }

    #[test]
    fn scored_texts_follow_the_detector_rule() {
        let plain = "Summarise the attached report.";
        assert_eq!(scored_texts(plain), vec![plain.to_string()]);
        // An encoded payload is read whole by the decoded view, so the raw blob is not scored.
        let b64 = apply(Technique::Base64, plain, 1.0, 3);
        let s = scored_texts(&b64);
        assert!(!s.contains(&b64), "{s:?}");
        assert!(
            s.iter()
                .any(|v| v.contains("summarise the attached report")),
            "{s:?}"
        );
    }
}
