//! Side-by-side measurement of the perturbation-sensitivity check: the same records scored
//! by the classifier alone (the base score) and by the full detector, each at its own
//! threshold, with the per-record cost of both.

use std::fmt::Write as _;

use crate::eval::metrics::{confusion, percentiles, recall_at_fpr, roc_auc, Scored};

/// Inputs of the comparison: both scorings of the same records, in the same order.
pub struct CheckComparison<'a> {
    pub base: &'a [Scored],
    pub full: &'a [Scored],
    pub base_threshold: f32,
    pub full_threshold: f32,
    /// Records the check ran on.
    pub checked: usize,
    /// Single-record latencies of the same sample under each policy.
    pub base_latency_ms: &'a [f64],
    pub full_latency_ms: &'a [f64],
    /// How the check was configured, for the section's first line.
    pub setting: String,
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn num(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.4}"))
}

impl CheckComparison<'_> {
    /// The section as `(heading, Markdown body)` for [`crate::eval::report::Report`].
    pub fn section(&self) -> (String, String) {
        let mut b = String::new();
        let n = self.full.len().max(1);
        let _ = writeln!(
            b,
            "{}; checked {} of {} records ({:.1}%).\n",
            self.setting,
            self.checked,
            self.full.len(),
            100.0 * self.checked as f64 / n as f64
        );
        let _ = writeln!(b, "| metric | classifier alone | with the check |");
        let _ = writeln!(b, "|---|---|---|");
        let _ = writeln!(
            b,
            "| ROC AUC | {} | {} |",
            num(roc_auc(self.base)),
            num(roc_auc(self.full))
        );
        for fpr in [0.001, 0.01, 0.05] {
            let r = |s: &[Scored]| recall_at_fpr(s, fpr).map(|x| x.0);
            let _ = writeln!(
                b,
                "| recall at {}% FPR | {} | {} |",
                fpr * 100.0,
                pct(r(self.base)),
                pct(r(self.full))
            );
        }
        let cb = confusion(self.base, self.base_threshold);
        let cf = confusion(self.full, self.full_threshold);
        let _ = writeln!(
            b,
            "| threshold | {:.4} | {:.4} |",
            self.base_threshold, self.full_threshold
        );
        let rate = |a: usize, d: usize| (d > 0).then(|| a as f64 / d as f64);
        let _ = writeln!(
            b,
            "| recall at the threshold | {} | {} |",
            pct(rate(cb.tp, cb.tp + cb.fn_)),
            pct(rate(cf.tp, cf.tp + cf.fn_))
        );
        let _ = writeln!(
            b,
            "| benign FPR at the threshold | {} | {} |",
            pct(rate(cb.fp, cb.fp + cb.tn)),
            pct(rate(cf.fp, cf.fp + cf.tn))
        );
        let lb = percentiles(self.base_latency_ms, &[50.0, 99.0]);
        let lf = percentiles(self.full_latency_ms, &[50.0, 99.0]);
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let _ = writeln!(
            b,
            "| latency p50 / p99 (ms, one record per call) | {:.1} / {:.1} | {:.1} / {:.1} |",
            lb[0], lb[1], lf[0], lf[1]
        );
        if let (Some(mb), Some(mf)) = (mean(self.base_latency_ms), mean(self.full_latency_ms)) {
            let _ = writeln!(
                b,
                "| mean latency (ms) and cost ratio | {mb:.1} | {mf:.1} ({:.2}×) |",
                mf / mb.max(1e-9)
            );
        }
        b.push_str(
            "\nEach column at its own threshold for the chosen preset; latencies from the same \
             records, scored under each policy in turn.\n",
        );
        ("Perturbation-sensitivity check, side by side".into(), b)
    }

    /// One line per metric for the terminal.
    pub fn summary(&self) -> String {
        let r = |s: &[Scored]| recall_at_fpr(s, 0.01).map(|x| x.0);
        let cb = confusion(self.base, self.base_threshold);
        let cf = confusion(self.full, self.full_threshold);
        let fpr = |c: &crate::eval::metrics::Confusion| c.fp as f64 / (c.fp + c.tn).max(1) as f64;
        let rec = |c: &crate::eval::metrics::Confusion| c.tp as f64 / (c.tp + c.fn_).max(1) as f64;
        format!(
            "check ({} of {} records): ROC AUC {} -> {}, recall@1%FPR {} -> {}, \
             at threshold recall {:.1}% -> {:.1}%, FPR {:.1}% -> {:.1}%\n",
            self.checked,
            self.full.len(),
            num(roc_auc(self.base)),
            num(roc_auc(self.full)),
            pct(r(self.base)),
            pct(r(self.full)),
            100.0 * rec(&cb),
            100.0 * rec(&cf),
            100.0 * fpr(&cb),
            100.0 * fpr(&cf),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(score: f32, attack: bool) -> Scored {
        Scored {
            score,
            attack,
            ..Scored::default()
        }
    }

    #[test]
    fn section_shows_both_columns() {
        let base = vec![s(0.9, true), s(0.4, true), s(0.3, false), s(0.1, false)];
        let full = vec![s(0.9, true), s(0.8, true), s(0.3, false), s(0.1, false)];
        let c = CheckComparison {
            base: &base,
            full: &full,
            base_threshold: 0.5,
            full_threshold: 0.5,
            checked: 1,
            base_latency_ms: &[1.0, 2.0],
            full_latency_ms: &[2.0, 4.0],
            setting: "auto policy".into(),
        };
        let (h, body) = c.section();
        assert!(h.contains("side by side"));
        assert!(
            body.contains("| recall at the threshold | 50.0% | 100.0% |"),
            "{body}"
        );
        assert!(body.contains("(2.00×)"), "{body}");
        assert!(body.contains("checked 1 of 4 records (25.0%)"), "{body}");
        assert!(c.summary().contains("50.0% -> 100.0%"), "{}", c.summary());
    }
}
