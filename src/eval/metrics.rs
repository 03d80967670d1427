//! Evaluation metrics over scored examples: ROC AUC and curve, thresholds at a target
//! false-positive rate, confusion counts and per-group breakdowns, percentiles.
//!
//! Pure functions over plain data. This module must not run the model, read files or format
//! output; it never panics on empty or degenerate input (empty classes give `None`, zeros or
//! empty vectors as documented on each item). The decision rule everywhere is `score >= t`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One evaluated example: the detector's score and what the data says it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The detector's score in `[0, 1]`; higher means more likely an attack.
    pub score: f32,
    /// Ground truth: whether the example is an attack (any non-benign label).
    pub attack: bool,
    /// The example's label as written in the data (e.g. `injection`, `benign`).
    pub label: String,
    /// Which data set or generator the example came from.
    pub source: String,
    /// Finer attack family, `:`-separated from general to specific (e.g. `indirect:email:x`).
    pub subtype: String,
    /// Language code of the text.
    pub lang: String,
}

/// Exact ROC AUC (the Mann–Whitney statistic), with tied attack/benign pairs counted as 1/2.
///
/// Returns `None` when either class is empty, where AUC is undefined.
pub fn roc_auc(scored: &[Scored]) -> Option<f64> {
    let n_pos = scored.iter().filter(|s| s.attack).count();
    let n_neg = scored.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut sorted: Vec<&Scored> = scored.iter().collect();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    // Average ranks over runs of equal scores: that is exactly what counts a tie as 1/2.
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && same_score(sorted[j].score, sorted[i].score) {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        let pos_in_run = sorted[i..j].iter().filter(|s| s.attack).count();
        rank_sum_pos += mean_rank * pos_in_run as f64;
        i = j;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    let u = rank_sum_pos - p * (p + 1.0) / 2.0;
    Some(u / (p * n))
}

/// The ROC curve as `(fpr, tpr)` points from `(0, 0)` to `(1, 1)`, one point per distinct
/// score (examples with equal scores move the curve in one diagonal step).
///
/// Returns an empty vector when either class is empty, where the curve is undefined.
pub fn roc_curve(scored: &[Scored]) -> Vec<(f64, f64)> {
    let n_pos = scored.iter().filter(|s| s.attack).count();
    let n_neg = scored.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&Scored> = scored.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let (p, n) = (n_pos as f64, n_neg as f64);
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && same_score(sorted[j].score, sorted[i].score) {
            if sorted[j].attack {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        points.push((fp as f64 / n, tp as f64 / p));
        i = j;
    }
    points
}

/// The smallest threshold `t` such that the fraction of `benign_scores` with `score >= t` is at
/// most `fpr`; the smallest one flags the most attacks for that false-positive budget.
///
/// The answer is the float just above the highest benign score that must stay unflagged.
/// Thresholds are clamped to `1.0`, so when that benign score is already `1.0` the result is
/// `1.0` and the realised FPR may exceed the target. When the budget allows every benign
/// score to be flagged the result is `0.0`. Empty `benign_scores` gives `0.5` (no evidence
/// either way). NaN scores are never flagged under `score >= t`, so they only count in the
/// denominator.
pub fn threshold_at_fpr(benign_scores: &[f32], fpr: f64) -> f32 {
    if benign_scores.is_empty() {
        return 0.5;
    }
    let n = benign_scores.len();
    // The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from losing an allowed example.
    let allowed = if fpr.is_nan() || fpr <= 0.0 {
        0
    } else {
        (fpr * n as f64 + 1e-9).floor().min(n as f64) as usize
    };
    let mut sorted: Vec<f32> = benign_scores
        .iter()
        .copied()
        .filter(|s| !s.is_nan())
        .collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // With scores sorted high to low, at most `allowed` are flagged iff t > sorted[allowed].
    match sorted.get(allowed) {
        None => 0.0,
        Some(&x) if x >= 1.0 => 1.0,
        Some(&x) => next_up(x),
    }
}

/// Recall at the threshold [`threshold_at_fpr`] picks for `fpr` on the benign examples, as
/// `(recall, threshold, actual_fpr)`. `None` when either class is empty.
pub fn recall_at_fpr(scored: &[Scored], fpr: f64) -> Option<(f64, f32, f64)> {
    let benign: Vec<f32> = scored
        .iter()
        .filter(|s| !s.attack)
        .map(|s| s.score)
        .collect();
    if benign.is_empty() || benign.len() == scored.len() {
        return None;
    }
    let t = threshold_at_fpr(&benign, fpr);
    let c = confusion(scored, t);
    Some((c.recall(), t, c.fpr()))
}

/// Confusion counts at one threshold (`fn_` because `fn` is a keyword).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Attacks flagged.
    pub tp: usize,
    /// Benign examples flagged.
    pub fp: usize,
    /// Benign examples passed.
    pub tn: usize,
    /// Attacks passed.
    pub fn_: usize,
}

impl Confusion {
    /// `tp / (tp + fp)`, or `0.0` when nothing was flagged.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)`, or `0.0` when there are no attacks.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Harmonic mean of precision and recall, or `0.0` when both are zero.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }

    /// `fp / (fp + tn)`, or `0.0` when there are no benign examples.
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

/// Confusion counts for the rule `score >= threshold`.
pub fn confusion(scored: &[Scored], threshold: f32) -> Confusion {
    let mut c = Confusion::default();
    for s in scored {
        match (s.attack, s.score >= threshold) {
            (true, true) => c.tp += 1,
            (true, false) => c.fn_ += 1,
            (false, true) => c.fp += 1,
            (false, false) => c.tn += 1,
        }
    }
    c
}

/// Flag counts for one group and class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    /// The group (a source, subtype prefix or language); `(none)` when the field was empty.
    pub key: String,
    /// `attack` or `benign`.
    pub label: String,
    /// Examples in this group and class.
    pub n: usize,
    /// How many of them were flagged.
    pub flagged: usize,
    /// `flagged / n`: recall for attack rows, false-positive rate for benign rows.
    pub rate: f64,
}

/// One [`GroupRow`] per (group, attack/benign) pair present in `scored`, sorted by key then
/// label, counting `score >= threshold` as flagged.
pub fn per_key(scored: &[Scored], threshold: f32, key: fn(&Scored) -> &str) -> Vec<GroupRow> {
    let mut groups: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    for s in scored {
        let k = match key(s) {
            "" => "(none)",
            k => k,
        };
        let class = if s.attack { "attack" } else { "benign" };
        let entry = groups.entry((k, class)).or_insert((0, 0));
        entry.0 += 1;
        if s.score >= threshold {
            entry.1 += 1;
        }
    }
    groups
        .into_iter()
        .map(|((key, label), (n, flagged))| GroupRow {
            key: key.to_string(),
            label: label.to_string(),
            n,
            flagged,
            rate: ratio(flagged, n),
        })
        .collect()
}

/// [`per_key`] by data source.
pub fn per_source(scored: &[Scored], threshold: f32) -> Vec<GroupRow> {
    per_key(scored, threshold, |s| &s.source)
}

/// [`per_key`] by the first two `:`-separated parts of the subtype
/// (`indirect:email:Foo:end` groups as `indirect:email`), so rare leaf variants pool.
pub fn per_subtype(scored: &[Scored], threshold: f32) -> Vec<GroupRow> {
    per_key(scored, threshold, |s| subtype_prefix(&s.subtype))
}

/// [`per_key`] by language.
pub fn per_lang(scored: &[Scored], threshold: f32) -> Vec<GroupRow> {
    per_key(scored, threshold, |s| &s.lang)
}

/// ROC AUC within one language (or the pooled non-English rows), where it has both classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LangSeparation {
    /// A language code, or `non-English` for every row tagged with neither `en` nor `code`.
    pub lang: String,
    pub n_attack: usize,
    pub n_benign: usize,
    pub auc: Option<f64>,
}

/// Name of the pooled row of [`per_lang_auc`].
pub const NON_ENGLISH: &str = "non-English";

/// One [`LangSeparation`] per language with attack and benign rows, sorted, then the pooled
/// non-English rows (tagged, neither `en` nor `code`) when they have both classes.
pub fn per_lang_auc(scored: &[Scored]) -> Vec<LangSeparation> {
    let mut by: BTreeMap<&str, Vec<Scored>> = BTreeMap::new();
    for s in scored {
        by.entry(s.lang.as_str()).or_default().push(s.clone());
        if !matches!(s.lang.as_str(), "" | "en" | "code") {
            by.entry(NON_ENGLISH).or_default().push(s.clone());
        }
    }
    let mut out: Vec<LangSeparation> = by
        .into_iter()
        .filter_map(|(lang, rows)| {
            let n_attack = rows.iter().filter(|s| s.attack).count();
            let n_benign = rows.len() - n_attack;
            (n_attack > 0 && n_benign > 0).then(|| LangSeparation {
                lang: lang.to_string(),
                n_attack,
                n_benign,
                auc: roc_auc(&rows),
            })
        })
        .collect();
    // The pooled row last.
    out.sort_by_key(|r| r.lang == NON_ENGLISH);
    out
}

/// How well one attack source separates from all benign rows, independent of the operating
/// threshold: pooled metrics hide a source the model cannot see behind sources it sees well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSeparation {
    pub source: String,
    /// Attack rows of this source.
    pub n: usize,
    /// ROC AUC of this source's attacks against every benign row.
    pub auc: Option<f64>,
    /// Recall of this source at the threshold that gives 1% FPR on all benign rows.
    pub recall_at_1pct_fpr: f64,
}

/// One [`SourceSeparation`] per attack source, sorted by source.
pub fn per_attack_source(scored: &[Scored]) -> Vec<SourceSeparation> {
    let benign: Vec<Scored> = scored.iter().filter(|s| !s.attack).cloned().collect();
    let benign_scores: Vec<f32> = benign.iter().map(|s| s.score).collect();
    let t = threshold_at_fpr(&benign_scores, 0.01);
    let mut sources: BTreeMap<&str, Vec<&Scored>> = BTreeMap::new();
    for s in scored.iter().filter(|s| s.attack) {
        sources.entry(s.source.as_str()).or_default().push(s);
    }
    sources
        .into_iter()
        .map(|(source, rows)| {
            let mut pooled = benign.clone();
            pooled.extend(rows.iter().map(|&s| s.clone()));
            let hit = rows.iter().filter(|s| s.score >= t).count();
            SourceSeparation {
                source: source.to_string(),
                n: rows.len(),
                auc: roc_auc(&pooled),
                recall_at_1pct_fpr: ratio(hit, rows.len()),
            }
        })
        .collect()
}

/// Nearest-rank percentiles of `values`, with each `p` in percent (`50.0` is the median).
///
/// Sorts a copy, ignoring NaNs; `p` is clamped to `[0, 100]`. Empty input gives one `0.0` per
/// requested percentile so callers can zip the result without checking.
pub fn percentiles(values: &[f64], ps: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return vec![0.0; ps.len()];
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    ps.iter()
        .map(|&p| {
            let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
            let rank = (p / 100.0 * n as f64).ceil() as usize;
            sorted[rank.clamp(1, n) - 1]
        })
        .collect()
}

/// The first two `:`-separated parts of `subtype` (all of it when it has fewer).
fn subtype_prefix(subtype: &str) -> &str {
    match subtype.match_indices(':').nth(1) {
        Some((i, _)) => &subtype[..i],
        None => subtype,
    }
}

/// Equality that treats NaN as equal to NaN, matching the `total_cmp` sort order.
fn same_score(a: f32, b: f32) -> bool {
    a.total_cmp(&b) == Ordering::Equal || a == b
}

/// `num / den`, or `0.0` when `den` is zero.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The next representable `f32` above `x` (`f32::next_up` is newer than our MSRV).
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        x
    } else if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(score: f32, attack: bool) -> Scored {
        Scored {
            score,
            attack,
            label: if attack { "injection" } else { "benign" }.into(),
            ..Scored::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_separated_reversed_and_tied() {
        let sep = [ex(0.9, true), ex(0.8, true), ex(0.2, false), ex(0.1, false)];
        assert_eq!(roc_auc(&sep), Some(1.0));
        let rev = [ex(0.1, true), ex(0.2, true), ex(0.8, false), ex(0.9, false)];
        assert_eq!(roc_auc(&rev), Some(0.0));
        let ties = [ex(0.5, true), ex(0.5, true), ex(0.5, false)];
        assert_eq!(roc_auc(&ties), Some(0.5));
    }

    #[test]
    fn auc_hand_case() {
        // Pairs (attack, benign): (0.8,0.6) win, (0.8,0.4) win, (0.6,0.6) tie, (0.6,0.4) win,
        // (0.3,0.6) loss, (0.3,0.4) loss -> (3 + 0.5) / 6.
        let s = [
            ex(0.8, true),
            ex(0.6, true),
            ex(0.3, true),
            ex(0.6, false),
            ex(0.4, false),
        ];
        let auc = roc_auc(&s).unwrap_or(f64::NAN);
        assert!(close(auc, 3.5 / 6.0), "{auc}");
    }

    #[test]
    fn auc_matches_trapezoid_under_curve() {
        let s = [
            ex(0.8, true),
            ex(0.6, true),
            ex(0.3, true),
            ex(0.6, false),
            ex(0.4, false),
        ];
        let c = roc_curve(&s);
        let area: f64 = c
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!(close(area, roc_auc(&s).unwrap_or(f64::NAN)));
    }

    #[test]
    fn curve_steps_once_per_distinct_score() {
        let s = [ex(0.9, true), ex(0.5, true), ex(0.5, false), ex(0.1, false)];
        let c = roc_curve(&s);
        assert_eq!(c, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    }

    #[test]
    fn threshold_hand_data() {
        let benign: Vec<f32> = (1..=10).map(|i| i as f32 / 10.0).collect();
        let t = threshold_at_fpr(&benign, 0.1);
        assert!(t > 0.9 && t < 0.9001, "{t}");
        assert_eq!(benign.iter().filter(|&&b| b >= t).count(), 1);
        let t = threshold_at_fpr(&benign, 0.3);
        assert_eq!(benign.iter().filter(|&&b| b >= t).count(), 3);
        // Zero budget: just above the maximum, which is 1.0, so clamped (and FPR exceeds).
        assert_eq!(threshold_at_fpr(&benign, 0.0), 1.0);
        let below_one = [0.2f32, 0.7];
        let t = threshold_at_fpr(&below_one, 0.0);
        assert!(t > 0.7 && below_one.iter().all(|&b| b < t));
        assert_eq!(threshold_at_fpr(&benign, 1.0), 0.0);
        assert_eq!(threshold_at_fpr(&[], 0.01), 0.5);
    }

    #[test]
    fn threshold_with_tied_benign_scores() {
        // Four tied at 0.5: allowing 1 of 5 must exclude the whole tie.
        let benign = [0.5f32, 0.5, 0.5, 0.5, 0.1];
        let t = threshold_at_fpr(&benign, 0.2);
        assert_eq!(benign.iter().filter(|&&b| b >= t).count(), 0);
    }

    #[test]
    fn recall_at_fpr_hand_case() {
        let mut s: Vec<Scored> = (1..=10).map(|i| ex(i as f32 / 10.0, false)).collect();
        s.extend([ex(0.95, true), ex(0.85, true), ex(0.5, true), ex(1.0, true)]);
        let (recall, t, fpr) = recall_at_fpr(&s, 0.1).unwrap_or((f64::NAN, 0.0, f64::NAN));
        assert!(t > 0.9);
        assert!(close(recall, 0.5), "{recall}");
        assert!(close(fpr, 0.1), "{fpr}");
        assert_eq!(recall_at_fpr(&s[..10], 0.1), None);
        assert_eq!(recall_at_fpr(&[], 0.1), None);
    }

    #[test]
    fn confusion_and_f1() {
        let s = [
            ex(0.9, true),
            ex(0.7, true),
            ex(0.2, true),
            ex(0.6, false),
            ex(0.1, false),
            ex(0.3, false),
        ];
        let c = confusion(&s, 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 2,
                fn_: 1
            }
        );
        assert!(close(c.precision(), 2.0 / 3.0));
        assert!(close(c.recall(), 2.0 / 3.0));
        assert!(close(c.f1(), 2.0 / 3.0));
        assert!(close(c.fpr(), 1.0 / 3.0));
        let z = Confusion::default();
        assert_eq!(
            (z.precision(), z.recall(), z.f1(), z.fpr()),
            (0.0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn per_subtype_truncates_and_sorts() {
        let mut a = ex(0.9, true);
        a.subtype = "indirect:email:Foo:end".into();
        let mut b = ex(0.1, true);
        b.subtype = "indirect:email:Bar".into();
        let mut c = ex(0.6, false);
        c.subtype = "chat".into();
        let rows = per_subtype(&[a, b, c], 0.5);
        let keys: Vec<(&str, &str, usize, usize)> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.label.as_str(), r.n, r.flagged))
            .collect();
        assert_eq!(
            keys,
            vec![("chat", "benign", 1, 1), ("indirect:email", "attack", 2, 1)]
        );
        assert!(close(rows[1].rate, 0.5));
        assert_eq!(subtype_prefix("a"), "a");
        assert_eq!(subtype_prefix("a:b"), "a:b");
    }

    #[test]
    fn language_auc_needs_both_classes_and_pools_non_english() {
        let row = |score: f32, attack: bool, lang: &str| Scored {
            lang: lang.into(),
            ..ex(score, attack)
        };
        let scored = [
            row(0.9, true, "en"),
            row(0.1, false, "en"),
            row(0.2, true, "sq"),
            row(0.8, false, "ko"),
            row(0.3, false, "code"),
            row(0.7, true, "de"),
        ];
        let got = per_lang_auc(&scored);
        let langs: Vec<&str> = got.iter().map(|r| r.lang.as_str()).collect();
        assert_eq!(langs, ["en", NON_ENGLISH]);
        assert_eq!(got[0].auc, Some(1.0));
        // non-English: attacks 0.2 (sq), 0.7 (de) against benign 0.8 (ko): both below.
        assert_eq!((got[1].n_attack, got[1].n_benign), (2, 1));
        assert_eq!(got[1].auc, Some(0.0));
    }

    #[test]
    fn per_source_and_lang_group_by_class() {
        let mut a = ex(0.9, true);
        a.source = "x".into();
        let mut b = ex(0.9, false);
        b.source = "x".into();
        let rows = per_source(&[a, b], 0.5);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].label.as_str(), rows[1].label.as_str()),
            ("attack", "benign")
        );
        let rows = per_lang(&[ex(0.1, false)], 0.5);
        assert_eq!(rows[0].key, "(none)");
    }

    #[test]
    fn per_attack_source_separates_each_source_against_all_benign() {
        let mut v: Vec<Scored> = (0..100).map(|k| ex(k as f32 / 100.0, false)).collect();
        let src = |score: f32, source: &str| Scored {
            source: source.into(),
            ..ex(score, true)
        };
        v.extend([
            src(0.995, "a"),
            src(0.999, "a"),
            src(0.5, "b"),
            src(0.995, "b"),
        ]);
        let rows = per_attack_source(&v);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].source.as_str(), rows[0].n), ("a", 2));
        assert!(close(rows[0].auc.unwrap(), 1.0));
        assert!(close(rows[0].recall_at_1pct_fpr, 1.0));
        // b: 0.5 beats 50 of 100 benign scores (one tie counts half), 0.995 beats all.
        assert!(
            close(rows[1].auc.unwrap(), (50.5 + 100.0) / 200.0),
            "{:?}",
            rows[1]
        );
        assert!(close(rows[1].recall_at_1pct_fpr, 0.5));
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            percentiles(&v, &[50.0, 99.0, 100.0, 0.0]),
            vec![50.0, 99.0, 100.0, 1.0]
        );
        assert_eq!(percentiles(&[3.0, 1.0, 2.0], &[50.0]), vec![2.0]);
        assert_eq!(percentiles(&[], &[50.0, 99.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        assert_eq!(roc_auc(&[]), None);
        assert!(roc_curve(&[]).is_empty());
        assert_eq!(confusion(&[], 0.5), Confusion::default());
        assert!(per_source(&[], 0.5).is_empty());
        assert_eq!(roc_auc(&[ex(0.5, true)]), None);
        assert!(roc_curve(&[ex(0.5, false)]).is_empty());
    }
}
