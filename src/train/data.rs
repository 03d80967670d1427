//! Labelled examples in the shared JSONL schema, the calibration split (by group hash, so no
//! template straddles it) and seeded sampling that caps rows per group and per source so that
//! a few templates or one large source cannot dominate.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::rng::{hash_str, Rng};

/// One labelled record.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub subtype: String,
    #[serde(default)]
    pub lang: String,
    #[serde(default)]
    pub group: String,
}

impl Example {
    /// Any label but `benign` is an attack.
    pub fn is_attack(&self) -> bool {
        self.label != "benign"
    }

    /// The sampling/split key: the group, or the text itself for ungrouped rows.
    pub fn group_key(&self) -> String {
        if self.group.is_empty() {
            format!("{}:{}", self.source, self.text)
        } else {
            format!("{}:{}", self.label, self.group)
        }
    }
}

/// Reads a labelled JSONL file.
///
/// # Errors
/// [`Error::Io`] for unreadable files, [`Error::Config`] naming `file:line` for a bad row.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.map_err(|e| Error::io(format!("cannot read {}:{}", path.display(), i + 1), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let ex: Example = serde_json::from_str(&line).map_err(|e| {
            Error::Config(format!(
                "{}:{}: not a labelled record: {e}",
                path.display(),
                i + 1
            ))
        })?;
        out.push(ex);
    }
    Ok(out)
}

/// Whether a group belongs to the calibration split (a `fraction` of groups, chosen by hash).
pub fn in_calibration(group_key: &str, seed: u64, fraction: f64) -> bool {
    let u = (hash_str(seed ^ 0xCA11, group_key) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// A row's group key with the segments naming its own language removed, so that the
/// translations of one template (`test-04-ga_sysmsg-01-ga`, `test-04-zu_sysmsg-01-zu`) share it.
pub fn template_key(e: &Example) -> String {
    let key = e.group_key();
    if e.lang.is_empty() {
        return key;
    }
    key.split(|c: char| !c.is_alphanumeric())
        .filter(|seg| !seg.is_empty() && !seg.eq_ignore_ascii_case(&e.lang))
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether `lang` is one of `langs` (codes compared without regard to ASCII case).
pub fn in_langs(lang: &str, langs: &[String]) -> bool {
    langs.iter().any(|l| l.eq_ignore_ascii_case(lang))
}

/// Which rows a held-out-language validation split takes away from training and calibration:
/// every row in one of `langs`, and every row sharing a template (group, translations included)
/// with such a row, so that neither a language nor a translated twin of a validation row is
/// trained on. Empty `langs`: nothing.
pub fn held_out(examples: &[Example], langs: &[String]) -> Vec<bool> {
    let held_lang = |e: &Example| in_langs(&e.lang, langs);
    let templates: std::collections::HashSet<String> = examples
        .iter()
        .filter(|e| held_lang(e))
        .map(template_key)
        .collect();
    examples
        .iter()
        .map(|e| held_lang(e) || templates.contains(&template_key(e)))
        .collect()
}

/// `examples` without the rows [`held_out`] takes for `langs`, in order, and how many it took.
pub fn drop_held_out(examples: Vec<Example>, langs: &[String]) -> (Vec<Example>, usize) {
    let held = held_out(&examples, langs);
    let n = held.iter().filter(|&&h| h).count();
    let kept = examples
        .into_iter()
        .zip(held)
        .filter_map(|(e, h)| (!h).then_some(e))
        .collect();
    (kept, n)
}

/// Caps for [`sample`].
#[derive(Debug, Clone, Copy)]
pub struct SampleCaps {
    pub per_group: usize,
    pub per_source: usize,
}

/// Indices of a seeded sample of `examples` with at most `per_group` rows per group and
/// `per_source` rows per (source, label); returned sorted.
pub fn sample(examples: &[Example], idx: &[usize], caps: SampleCaps, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in idx {
        by_group.entry(examples[i].group_key()).or_default().push(i);
    }
    let mut kept = Vec::new();
    for rows in by_group.values_mut() {
        rng.shuffle(rows);
        kept.extend(rows.iter().take(caps.per_group));
    }
    rng.shuffle(&mut kept);
    let mut per_source: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out: Vec<usize> = kept
        .into_iter()
        .filter(|&i: &usize| {
            let n = per_source
                .entry((examples[i].source.as_str(), examples[i].label.as_str()))
                .or_default();
            *n += 1;
            *n <= caps.per_source
        })
        .collect();
    out.sort_unstable();
    out
}

/// Per-row training weights: each class (benign vs attack) gets half of the total weight;
/// within a class a row weighs `1/sqrt(rows of its source)`, so that large sources count more
/// but not proportionally more. Weights average 1.
pub fn row_weights(examples: &[Example], idx: &[usize]) -> Vec<f32> {
    let mut source_n: HashMap<(&str, bool), usize> = HashMap::new();
    for &i in idx {
        *source_n
            .entry((&examples[i].source, examples[i].is_attack()))
            .or_default() += 1;
    }
    let raw: Vec<f64> = idx
        .iter()
        .map(|&i| {
            1.0 / (source_n[&(examples[i].source.as_str(), examples[i].is_attack())] as f64).sqrt()
        })
        .collect();
    let class_sum = |attack: bool| -> f64 {
        idx.iter()
            .zip(&raw)
            .filter(|(&i, _)| examples[i].is_attack() == attack)
            .map(|(_, w)| w)
            .sum()
    };
    let (sa, sb) = (class_sum(true), class_sum(false));
    let n = idx.len() as f64;
    idx.iter()
        .zip(&raw)
        .map(|(&i, w)| {
            let s = if examples[i].is_attack() { sa } else { sb };
            (w / s.max(f64::MIN_POSITIVE) * n / 2.0) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(label: &str, source: &str, group: &str) -> Example {
        Example {
            text: format!("{source} {group}"),
            label: label.into(),
            source: source.into(),
            subtype: String::new(),
            lang: "en".into(),
            group: group.into(),
        }
    }

    #[test]
    fn sampling_caps_groups_and_sources_deterministically() {
        let mut v = Vec::new();
        for g in 0..10 {
            for _ in 0..5 {
                v.push(ex("injection", "a", &format!("g{g}")));
            }
        }
        for k in 0..100 {
            v.push(ex("benign", "b", &format!("b{k}")));
        }
        let idx: Vec<usize> = (0..v.len()).collect();
        let caps = SampleCaps {
            per_group: 2,
            per_source: 30,
        };
        let s = sample(&v, &idx, caps, 7);
        assert_eq!(s, sample(&v, &idx, caps, 7));
        assert_eq!(s.iter().filter(|&&i| v[i].source == "a").count(), 20);
        assert_eq!(s.iter().filter(|&&i| v[i].source == "b").count(), 30);
        assert_ne!(s, sample(&v, &idx, caps, 8));
    }

    #[test]
    fn weights_balance_classes() {
        let v = vec![
            ex("injection", "a", "1"),
            ex("benign", "b", "2"),
            ex("benign", "b", "3"),
            ex("benign", "c", "4"),
        ];
        let idx: Vec<usize> = (0..4).collect();
        let w = row_weights(&v, &idx);
        let attack: f32 = w[0];
        let benign: f32 = w[1..].iter().sum();
        assert!(
            (attack - benign).abs() < 1e-5 && (attack + benign - 4.0).abs() < 1e-4,
            "{w:?}"
        );
        assert!(w[3] > w[1], "the smaller source weighs more per row: {w:?}");
    }

    #[test]
    fn held_out_languages_take_their_rows_and_translated_twins() {
        let mut rows = vec![
            ex("injection", "spikee", "test-04-ga_sysmsg-01-ga"),
            ex("injection", "spikee", "test-04-zu_sysmsg-01-zu"),
            ex("injection", "spikee", "test-04-ga_other-01-ga"),
            ex("benign", "xquad", "xquad:35_1"),
            ex("benign", "xquad", "xquad:35_1"),
            ex("benign", "xquad", "xquad:36_1"),
        ];
        for (r, lang) in rows.iter_mut().zip(["ga", "zu", "ga", "ar", "en", "en"]) {
            r.lang = lang.into();
        }
        let out = held_out(&rows, &["ZU".into(), "ar".into()]);
        assert_eq!(out, [true, true, false, true, true, false]);
        assert!(held_out(&rows, &[]).iter().all(|&h| !h));
        assert_eq!(template_key(&rows[0]), template_key(&rows[1]));
        assert_ne!(template_key(&rows[0]), template_key(&rows[2]));
    }

    #[test]
    fn calibration_split_is_by_group_and_near_the_fraction() {
        let n = (0..10_000)
            .filter(|k| in_calibration(&format!("g{k}"), 1, 0.15))
            .count();
        assert!((1300..1700).contains(&n), "{n}");
        assert_eq!(in_calibration("x", 1, 0.15), in_calibration("x", 1, 0.15));
    }
}
