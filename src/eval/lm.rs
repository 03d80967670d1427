//! Side-by-side measurement of the LM-surprise signal: the same records scored without and
//! with it (one run: the verdict keeps its score from before the signal), overall and on the
//! groups the signal is for or could hurt: optimized-suffix attacks, benign code, benign text
//! in other languages (the known weak spots of perplexity filters).

use std::fmt::Write as _;

use crate::eval::metrics::{confusion, per_key, percentiles, recall_at_fpr, roc_auc, Scored};

/// Both scorings of the same records, in the same order, and the latencies of a sample.
pub struct LmComparison<'a> {
    pub without: &'a [Scored],
    pub with: &'a [Scored],
    /// The decision threshold (the same for both: the signal only raises scores).
    pub threshold: f32,
    pub latency_without_ms: &'a [f64],
    pub latency_with_ms: &'a [f64],
}

/// A named subset of the records: attacks (recall is reported) or benign rows (FPR).
struct Group {
    name: String,
    attack: bool,
    keep: fn(&Scored) -> bool,
}

fn is_code(r: &Scored) -> bool {
    r.subtype.contains("code") || r.source.contains("code")
}

fn groups() -> Vec<Group> {
    vec![
        Group {
            name: "optimized-suffix attacks (`adv_suffix:*`)".into(),
            attack: true,
            keep: |r| r.subtype.starts_with("adv_suffix"),
        },
        Group {
            name: "all attacks".into(),
            attack: true,
            keep: |_| true,
        },
        Group {
            name: "benign code".into(),
            attack: false,
            keep: is_code,
        },
        Group {
            name: "benign, not English".into(),
            attack: false,
            keep: |r| !r.lang.is_empty() && r.lang != "en",
        },
        Group {
            name: "all benign".into(),
            attack: false,
            keep: |_| true,
        },
    ]
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v))
}

impl LmComparison<'_> {
    /// Share of `g`'s rows flagged at the threshold, and the row count.
    fn rate(&self, rows: &[Scored], g: &Group) -> (Option<f64>, usize) {
        let sel: Vec<&Scored> = rows
            .iter()
            .filter(|r| r.attack == g.attack && (g.keep)(r))
            .collect();
        let hit = sel.iter().filter(|r| r.score >= self.threshold).count();
        (
            (!sel.is_empty()).then(|| hit as f64 / sel.len() as f64),
            sel.len(),
        )
    }

    /// The section as `(heading, Markdown body)` for [`crate::eval::report::Report`].
    pub fn section(&self) -> (String, String) {
        let mut b = String::new();
        let _ = writeln!(
            b,
            "Threshold {:.4} for both columns (the signal keeps the larger of the two scores).\n",
            self.threshold
        );
        let _ = writeln!(b, "| rows | n | without the LM | with the LM |");
        let _ = writeln!(b, "|---|---|---|---|");
        for g in groups() {
            let (a, n) = self.rate(self.without, &g);
            let (w, _) = self.rate(self.with, &g);
            let what = if g.attack { "recall" } else { "FPR" };
            let _ = writeln!(b, "| {} ({what}) | {n} | {} | {} |", g.name, pct(a), pct(w));
        }
        let num = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.4}"));
        let _ = writeln!(
            b,
            "| ROC AUC | {} | {} | {} |",
            self.with.len(),
            num(roc_auc(self.without)),
            num(roc_auc(self.with))
        );
        let r = |s: &[Scored]| recall_at_fpr(s, 0.01).map(|x| x.0);
        let _ = writeln!(
            b,
            "| recall at 1% FPR | {} | {} | {} |",
            self.with.len(),
            pct(r(self.without)),
            pct(r(self.with))
        );
        let lw = percentiles(self.latency_without_ms, &[50.0, 99.0]);
        let ll = percentiles(self.latency_with_ms, &[50.0, 99.0]);
        let _ = writeln!(
            b,
            "| latency p50 / p99 (ms, one record per call) | {} | {:.1} / {:.1} | {:.1} / {:.1} |",
            self.latency_with_ms.len(),
            lw[0],
            lw[1],
            ll[0],
            ll[1]
        );
        let _ = writeln!(b, "\n{}", self.per_subtype());
        ("LM-surprise signal, side by side".into(), b)
    }

    /// Recall per optimized-suffix subtype, without and with the signal.
    fn per_subtype(&self) -> String {
        let rows = |scored: &[Scored]| {
            let suffix: Vec<Scored> = scored
                .iter()
                .filter(|r| r.attack && r.subtype.starts_with("adv_suffix"))
                .cloned()
                .collect();
            per_key(&suffix, self.threshold, |r| &r.subtype)
        };
        let mut b = String::from("| subtype | n | without | with |\n|---|---|---|---|\n");
        for (a, w) in rows(self.without).iter().zip(rows(self.with)) {
            let _ = writeln!(
                b,
                "| {} | {} | {:.1}% | {:.1}% |",
                a.key,
                a.n,
                100.0 * a.rate,
                100.0 * w.rate
            );
        }
        b
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let g = groups();
        let (sa, _) = self.rate(self.without, &g[0]);
        let (sw, _) = self.rate(self.with, &g[0]);
        let (fa, _) = self.rate(self.without, &g[4]);
        let (fw, _) = self.rate(self.with, &g[4]);
        let cw = confusion(self.without, self.threshold);
        let cl = confusion(self.with, self.threshold);
        format!(
            "lm: adv_suffix recall {} -> {}, benign FPR {} -> {}, recall {:.1}% -> {:.1}%\n",
            pct(sa),
            pct(sw),
            pct(fa),
            pct(fw),
            100.0 * cw.recall(),
            100.0 * cl.recall()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(score: f32, attack: bool, subtype: &str, lang: &str) -> Scored {
        Scored {
            score,
            attack,
            subtype: subtype.into(),
            lang: lang.into(),
            ..Scored::default()
        }
    }

    #[test]
    fn groups_count_their_own_rows() {
        let without = vec![
            s(0.2, true, "adv_suffix:gcg:a", "en"),
            s(0.9, true, "adv_suffix:gcg:a", "en"),
            s(0.9, true, "template", "en"),
            s(0.1, false, "code_instruction", "en"),
            s(0.1, false, "chat", "fr"),
        ];
        let mut with = without.clone();
        with[0].score = 0.8;
        with[4].score = 0.75;
        let c = LmComparison {
            without: &without,
            with: &with,
            threshold: 0.7,
            latency_without_ms: &[1.0],
            latency_with_ms: &[3.0],
        };
        let (_, body) = c.section();
        assert!(
            body.contains(
                "| optimized-suffix attacks (`adv_suffix:*`) (recall) | 2 | 50.0% | 100.0% |"
            ),
            "{body}"
        );
        assert!(
            body.contains("| benign code (FPR) | 1 | 0.0% | 0.0% |"),
            "{body}"
        );
        assert!(
            body.contains("| benign, not English (FPR) | 1 | 0.0% | 100.0% |"),
            "{body}"
        );
        assert!(
            body.contains("| adv_suffix:gcg:a | 2 | 50.0% | 100.0% |"),
            "{body}"
        );
        assert!(c.summary().contains("adv_suffix recall 50.0% -> 100.0%"));
    }
}
