//! The evaluation report: the numbers of one eval run, rendered as Markdown, a self-contained
//! HTML page, a standalone SVG ROC curve and a compact terminal summary.
//!
//! This module owns presentation only. It computes nothing beyond calling
//! [`metrics`], and must not score text, read data or write files: callers
//! decide where the strings go (the Markdown refers to the curve as `roc.svg`, so write
//! [`Report::roc_svg`] beside it under that name). Rendering is deterministic: same report,
//! same bytes. Escaping and table formatting live in `render`; text must
//! reach the output only through them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::metrics::{self, Confusion, GroupRow, Scored};
use super::render::{
    esc, html_table, markdown_to_html, md_code, md_table, md_text, pct, svg_line, svg_text,
    text_table, CSS,
};

/// The false-positive rates the headline recall is reported at.
const TARGET_FPRS: [f64; 3] = [0.001, 0.01, 0.05];

/// Latency percentiles reported, in percent.
const LATENCY_PS: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("max", 100.0),
];

/// Everything one eval run found, ready to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Heading, e.g. `tremble eval — tremble-minilm-v1 on dev.jsonl`.
    pub title: String,
    /// Model name or directory.
    pub model: String,
    /// Data file evaluated.
    pub data: String,
    /// When the run happened, as the caller formats it.
    pub date: String,
    /// The command line that produced the report, for reproducing it.
    pub command: String,
    /// Attack examples evaluated.
    pub n_attack: usize,
    /// Benign examples evaluated.
    pub n_benign: usize,
    /// ROC AUC; `None` when a class is missing.
    pub auc: Option<f64>,
    /// `(target fpr, recall, threshold, actual fpr)` for each target that could be computed.
    pub recall_at: Vec<(f64, f64, f32, f64)>,
    /// The model's operating threshold.
    pub threshold: f32,
    /// Its name, e.g. `balanced`.
    pub threshold_name: String,
    /// Confusion counts at [`Report::threshold`].
    pub confusion: Confusion,
    /// Flag rates by data source at the operating threshold.
    pub by_source: Vec<GroupRow>,
    /// Each attack source against all benign rows: ROC AUC and recall at 1% FPR.
    #[serde(default)]
    pub by_attack_source: Vec<metrics::SourceSeparation>,
    /// Flag rates by subtype prefix at the operating threshold.
    pub by_subtype: Vec<GroupRow>,
    /// Flag rates by language at the operating threshold.
    pub by_lang: Vec<GroupRow>,
    /// ROC AUC per language with both classes, and over the pooled non-English rows.
    #[serde(default)]
    pub by_lang_auc: Vec<metrics::LangSeparation>,
    /// Per-record latency percentiles in milliseconds, e.g. `("p50", 3.2)`.
    pub latency_ms: Vec<(String, f64)>,
    /// Records per second over the whole run, when the wall time is known.
    pub throughput: Option<f64>,
    /// ROC curve points `(fpr, tpr)`.
    pub roc: Vec<(f64, f64)>,
    /// Further `(heading, Markdown body)` sections, appended verbatim (e.g. comparisons).
    pub extra_sections: Vec<(String, String)>,
}

impl Report {
    /// Computes every metric of the report from the scored examples.
    ///
    /// `latencies_ms` are per-record latencies (may be empty); `wall_seconds` is the whole
    /// run's wall time, used for throughput (ignored unless positive).
    // The arguments are the report's independent inputs; a builder would only move them.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        title: &str,
        model: &str,
        data: &str,
        date: &str,
        command: &str,
        scored: &[Scored],
        threshold: f32,
        threshold_name: &str,
        latencies_ms: &[f64],
        wall_seconds: f64,
    ) -> Report {
        let n_attack = scored.iter().filter(|s| s.attack).count();
        let recall_at = TARGET_FPRS
            .iter()
            .filter_map(|&f| metrics::recall_at_fpr(scored, f).map(|(r, t, a)| (f, r, t, a)))
            .collect();
        let latency_ms = if latencies_ms.is_empty() {
            Vec::new()
        } else {
            let ps: Vec<f64> = LATENCY_PS.iter().map(|&(_, p)| p).collect();
            LATENCY_PS
                .iter()
                .zip(metrics::percentiles(latencies_ms, &ps))
                .map(|(&(name, _), v)| (name.to_string(), v))
                .collect()
        };
        let throughput =
            (wall_seconds > 0.0 && !scored.is_empty()).then(|| scored.len() as f64 / wall_seconds);
        Report {
            title: title.to_string(),
            model: model.to_string(),
            data: data.to_string(),
            date: date.to_string(),
            command: command.to_string(),
            n_attack,
            n_benign: scored.len() - n_attack,
            auc: metrics::roc_auc(scored),
            recall_at,
            threshold,
            threshold_name: threshold_name.to_string(),
            confusion: metrics::confusion(scored, threshold),
            by_source: metrics::per_source(scored, threshold),
            by_attack_source: metrics::per_attack_source(scored),
            by_subtype: metrics::per_subtype(scored, threshold),
            by_lang: metrics::per_lang(scored, threshold),
            by_lang_auc: metrics::per_lang_auc(scored),
            latency_ms,
            throughput,
            roc: metrics::roc_curve(scored),
            extra_sections: Vec::new(),
        }
    }

    /// The report as Markdown; the ROC curve is referenced as `roc.svg`.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# {}\n\n", md_text(&self.title));
        for (name, value) in self.meta() {
            let _ = writeln!(out, "- {name}: {}", md_code(value));
        }
        for (i, t) in self.tables().iter().enumerate() {
            let _ = write!(out, "\n## {}\n\n", md_text(&t.heading));
            out.push_str(&md_table(&t.header, &t.rows));
            if i == 0 {
                out.push_str("\n![ROC](roc.svg)\n");
            }
        }
        for (heading, body) in &self.extra_sections {
            let _ = write!(out, "\n## {}\n\n{}\n", md_text(heading), body.trim_end());
        }
        out
    }

    /// The report as one self-contained HTML page: inline CSS, the ROC SVG inline, and every
    /// piece of text escaped. Extra sections' Markdown tables become HTML tables; their other
    /// lines become escaped paragraphs.
    pub fn to_html(&self) -> String {
        let mut out =
            String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(
            out,
            "<title>{}</title>\n{CSS}</head>\n<body>",
            esc(&self.title)
        );
        let _ = writeln!(out, "<h1>{}</h1>\n<dl>", esc(&self.title));
        for (name, value) in self.meta() {
            let _ = writeln!(out, "<dt>{name}</dt><dd><code>{}</code></dd>", esc(value));
        }
        out.push_str("</dl>\n");
        for (i, t) in self.tables().iter().enumerate() {
            let _ = writeln!(out, "<h2>{}</h2>", esc(&t.heading));
            out.push_str(&html_table(&t.header, &t.rows));
            if i == 0 {
                let _ = write!(out, "<figure>\n{}</figure>\n", self.roc_svg());
            }
        }
        for (heading, body) in &self.extra_sections {
            let _ = writeln!(out, "<h2>{}</h2>", esc(heading));
            out.push_str(&markdown_to_html(body));
        }
        out.push_str("</body>\n</html>\n");
        out
    }

    /// The ROC curve as a standalone 480×480 SVG document: linear axes with ticks, the
    /// chance diagonal, a marker line at 1% FPR, and the AUC in the title.
    pub fn roc_svg(&self) -> String {
        // Plot area in SVG units; y grows downwards, so tpr is flipped.
        const X0: f64 = 60.0;
        const Y0: f64 = 40.0;
        const SIDE: f64 = 390.0;
        const RED: &str = "fill=\"#d62728\"";
        let (x_end, y_end) = (X0 + SIDE, Y0 + SIDE);
        let px = |fpr: f64| X0 + fpr.clamp(0.0, 1.0) * SIDE;
        let py = |tpr: f64| Y0 + (1.0 - tpr.clamp(0.0, 1.0)) * SIDE;
        let auc = self.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
        let mut s = String::from(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"480\" height=\"480\" \
             viewBox=\"0 0 480 480\" font-family=\"sans-serif\" font-size=\"12\">\n",
        );
        let _ = writeln!(s, "<title>{} — ROC</title>", esc(&self.title));
        s.push_str("<rect width=\"480\" height=\"480\" fill=\"white\"/>\n");
        svg_text(
            &mut s,
            240.0,
            24.0,
            "middle",
            "font-size=\"15\"",
            &format!("ROC curve — AUC {auc}"),
        );
        for i in 0..=5 {
            let v = f64::from(i) / 5.0;
            let (x, y) = (px(v), py(v));
            svg_line(&mut s, (x, Y0), (x, y_end), "stroke=\"#eee\"");
            svg_line(&mut s, (X0, y), (x_end, y), "stroke=\"#eee\"");
            svg_line(&mut s, (x, y_end), (x, y_end + 5.0), "stroke=\"black\"");
            svg_line(&mut s, (X0 - 5.0, y), (X0, y), "stroke=\"black\"");
            svg_text(&mut s, x, y_end + 18.0, "middle", "", &format!("{v:.1}"));
            svg_text(&mut s, X0 - 8.0, y + 4.0, "end", "", &format!("{v:.1}"));
        }
        let _ = writeln!(
            s,
            "<rect x=\"{X0}\" y=\"{Y0}\" width=\"{SIDE}\" height=\"{SIDE}\" fill=\"none\" stroke=\"black\"/>"
        );
        let (cx, cy) = (X0 + SIDE / 2.0, Y0 + SIDE / 2.0);
        svg_text(&mut s, cx, 472.0, "middle", "", "false-positive rate");
        let rotate = format!("transform=\"rotate(-90 16 {cy:.1})\"");
        svg_text(
            &mut s,
            16.0,
            cy,
            "middle",
            &rotate,
            "true-positive rate (recall)",
        );
        svg_line(
            &mut s,
            (X0, y_end),
            (x_end, Y0),
            "stroke=\"#999\" stroke-dasharray=\"4 4\"",
        );
        // On a linear axis 1% FPR sits almost on the y axis; the marker shows how little of
        // the curve's width an operating point at low FPR actually uses.
        let x1 = px(0.01);
        svg_line(
            &mut s,
            (x1, Y0),
            (x1, y_end),
            "stroke=\"#d62728\" stroke-dasharray=\"2 3\"",
        );
        svg_text(&mut s, x1 + 4.0, y_end - 8.0, "start", RED, "1% FPR");
        if !self.roc.is_empty() {
            let points: Vec<String> = self
                .roc
                .iter()
                .map(|&(f, t)| format!("{:.2},{:.2}", px(f), py(t)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        if let Some(&(_, recall, _, _)) = self.recall_at.iter().find(|r| r.0 == 0.01) {
            let y = py(recall);
            let _ = writeln!(s, "<circle cx=\"{x1:.2}\" cy=\"{y:.2}\" r=\"3.5\" {RED}/>");
            let label = format!("recall {} @ 1% FPR", pct(recall));
            svg_text(
                &mut s,
                x1 + 8.0,
                (y + 16.0).min(y_end - 24.0),
                "start",
                RED,
                &label,
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// A compact plain-text summary for the terminal: AUC, recall at 0.1/1/5% FPR, precision,
    /// recall and F1 at the operating threshold, then one line per source and class.
    pub fn summary_text(&self) -> String {
        let c = &self.confusion;
        let mut lines = vec![
            (
                "examples".to_string(),
                format!("{} attack / {} benign", self.n_attack, self.n_benign),
            ),
            (
                "ROC AUC".to_string(),
                self.auc.map_or("n/a".to_string(), |a| format!("{a:.4}")),
            ),
        ];
        for &target in &TARGET_FPRS {
            let value = match self.recall_at.iter().find(|r| r.0 == target) {
                Some(&(_, recall, t, actual)) => {
                    format!("{} (t={t}, actual FPR {})", pct(recall), pct(actual))
                }
                None => "n/a".to_string(),
            };
            lines.push((format!("recall@{}FPR", pct(target)), value));
        }
        lines.push((
            format!("at {} (t={})", self.threshold_name, self.threshold),
            format!(
                "precision {}  recall {}  F1 {:.4}  FPR {}",
                pct(c.precision()),
                pct(c.recall()),
                c.f1(),
                pct(c.fpr())
            ),
        ));
        let mut out = format!("{}\n", self.title);
        for (label, value) in lines {
            let _ = writeln!(out, "  {label:<16} {value}");
        }
        // Per language only when there is more than English to show.
        let several_langs = self.by_lang.iter().any(|r| r.key != self.by_lang[0].key);
        for t in self.tables().iter().filter(|t| {
            t.heading == "By source"
                || (several_langs
                    && matches!(t.heading.as_str(), "By language" | "ROC AUC by language"))
        }) {
            if !t.rows.is_empty() {
                out.push_str(&text_table(&t.header, &t.rows));
            }
        }
        out
    }

    /// `(name, value)` pairs describing the run.
    fn meta(&self) -> [(&'static str, &str); 4] {
        [
            ("Model", &self.model),
            ("Data", &self.data),
            ("Date", &self.date),
            ("Command", &self.command),
        ]
    }

    /// The report's tables in order: headline, operating threshold, per-group, latency.
    /// Markdown and HTML render the same list, so the two formats cannot drift apart.
    fn tables(&self) -> Vec<Table> {
        let auc = self.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
        let mut headline = vec![
            vec!["attack examples".into(), self.n_attack.to_string()],
            vec!["benign examples".into(), self.n_benign.to_string()],
            vec!["ROC AUC".into(), auc],
        ];
        for &(target, recall, t, actual) in &self.recall_at {
            headline.push(vec![
                format!("recall @ {} FPR", pct(target)),
                format!(
                    "{} (threshold {t}, actual FPR {})",
                    pct(recall),
                    pct(actual)
                ),
            ]);
        }
        if let Some(t) = self.throughput {
            headline.push(vec!["throughput".into(), format!("{t:.1} records/s")]);
        }
        let c = &self.confusion;
        let mut tables = vec![
            Table::new("Headline", &["metric", "value"], headline),
            Table::new(
                &format!(
                    "At the model's threshold ({} = {})",
                    self.threshold_name, self.threshold
                ),
                &["precision", "recall", "F1", "FPR", "TP", "FP", "TN", "FN"],
                vec![vec![
                    pct(c.precision()),
                    pct(c.recall()),
                    format!("{:.4}", c.f1()),
                    pct(c.fpr()),
                    c.tp.to_string(),
                    c.fp.to_string(),
                    c.tn.to_string(),
                    c.fn_.to_string(),
                ]],
            ),
        ];
        for (heading, column, rows) in [
            ("By source", "source", &self.by_source),
            ("By subtype", "subtype", &self.by_subtype),
            ("By language", "language", &self.by_lang),
        ] {
            let rows = rows
                .iter()
                .map(|r| {
                    let (n, flagged) = (r.n.to_string(), r.flagged.to_string());
                    vec![r.key.clone(), r.label.clone(), n, flagged, pct(r.rate)]
                })
                .collect();
            tables.push(Table::new(
                heading,
                &[column, "class", "n", "flagged", "rate"],
                rows,
            ));
        }
        if !self.by_lang_auc.is_empty() {
            let rows = self
                .by_lang_auc
                .iter()
                .map(|r| {
                    let auc = r.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
                    vec![
                        r.lang.clone(),
                        r.n_attack.to_string(),
                        r.n_benign.to_string(),
                        auc,
                    ]
                })
                .collect();
            tables.push(Table::new(
                "ROC AUC by language",
                &["language", "attacks", "benign", "ROC AUC"],
                rows,
            ));
        }
        if !self.by_attack_source.is_empty() {
            let rows = self
                .by_attack_source
                .iter()
                .map(|r| {
                    let auc = r.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
                    vec![
                        r.source.clone(),
                        r.n.to_string(),
                        auc,
                        pct(r.recall_at_1pct_fpr),
                    ]
                })
                .collect();
            tables.insert(
                3,
                Table::new(
                    "Each attack source against all benign rows",
                    &["source", "n", "ROC AUC", "recall @ 1% FPR"],
                    rows,
                ),
            );
        }
        if !self.latency_ms.is_empty() {
            let rows = self
                .latency_ms
                .iter()
                .map(|(name, ms)| vec![name.clone(), format!("{ms:.2}")])
                .collect();
            tables.push(Table::new("Latency", &["percentile", "ms"], rows));
        }
        tables
    }
}

/// One titled table, format-neutral.
struct Table {
    heading: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(heading: &str, header: &[&str], rows: Vec<Vec<String>>) -> Table {
        let header = header.iter().map(|h| h.to_string()).collect();
        Table {
            heading: heading.to_string(),
            header,
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic() -> Vec<Scored> {
        (0..20)
            .map(|i| {
                let attack = i % 2 == 0;
                Scored {
                    // Mostly separated, with one overlap so the AUC is not trivially 1.
                    score: if attack {
                        0.5 + i as f32 / 50.0
                    } else {
                        i as f32 / 30.0
                    },
                    attack,
                    label: if attack { "injection" } else { "benign" }.into(),
                    source: if i < 10 { "a<b&c".into() } else { "web".into() },
                    subtype: if attack {
                        "indirect:email:x:end".into()
                    } else {
                        String::new()
                    },
                    lang: "en".into(),
                }
            })
            .collect()
    }

    fn report(scored: &[Scored]) -> Report {
        Report::build(
            "tremble eval — test on \"dev\".jsonl",
            "tremble-minilm-v1",
            "dev.jsonl",
            "2025-01-01",
            "tremble eval --data dev.jsonl",
            scored,
            0.5,
            "balanced",
            &[1.0, 2.0, 3.0, 4.0],
            2.0,
        )
    }

    #[test]
    fn markdown_has_auc_and_source_rows() {
        let s = synthetic();
        let r = report(&s);
        let auc = r.auc.unwrap_or(f64::NAN);
        assert!(auc > 0.9 && auc < 1.0, "{auc}");
        let md = r.to_markdown();
        assert!(md.contains(&format!("{auc:.4}")), "{md}");
        assert!(md.contains("| web | attack | 5 | 5 | 100.0% |"), "{md}");
        assert!(md.contains("| indirect:email | attack | 10 |"), "{md}");
        assert!(md.contains("![ROC](roc.svg)"));
        assert!(md.contains("## By language"));
        assert!(md.contains("## ROC AUC by language"), "{md}");
        assert!(md.contains(&format!("| en | 10 | 10 | {auc:.4} |")), "{md}");
        assert!(md.contains("| p50 |"));
        assert_eq!(r.throughput, Some(10.0));
        assert_eq!(r.recall_at.len(), 3);
    }

    #[test]
    fn html_is_escaped_and_has_svg() {
        let mut r = report(&synthetic());
        r.extra_sections.push((
            "Compare <x>".into(),
            "note & more\n\n| model | AUC |\n|---|---|\n| a\\|b | 0.9 |\n".into(),
        ));
        let html = r.to_html();
        assert!(html.contains("<svg"));
        assert!(html.contains("a&lt;b&amp;c"));
        assert!(!html.contains("a<b&c"));
        assert!(html.contains("&quot;dev&quot;"));
        assert!(html.contains("Compare &lt;x&gt;"));
        assert!(html.contains("<td>a|b</td>"), "{html}");
        assert!(html.contains("<p>note &amp; more</p>"));
        let md = r.to_markdown();
        assert!(md.contains("## Compare \\<x\\>\n\nnote & more"));
        assert!(md.contains("| a\\<b&c | benign |"), "{md}");
    }

    #[test]
    fn svg_is_a_document() {
        let r = report(&synthetic());
        let svg = r.roc_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("AUC 0."));
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn summary_lists_sources() {
        let text = report(&synthetic()).summary_text();
        assert!(text.contains("ROC AUC"));
        assert!(text.contains("recall@1.0%FPR"));
        assert!(text.contains("a<b&c"));
        assert!(
            !text.contains("language"),
            "English only: no language table\n{text}"
        );
        let mut s = synthetic();
        for row in s.iter_mut().take(6) {
            row.lang = "hi".into();
        }
        let text = report(&s).summary_text();
        assert!(text.contains("language") && text.contains("hi"), "{text}");
        assert!(text.contains("non-English"), "{text}");
    }

    #[test]
    fn empty_input_does_not_panic() {
        let r = Report::build("t", "m", "d", "", "", &[], 0.5, "balanced", &[], 0.0);
        assert_eq!(r.auc, None);
        assert!(r.recall_at.is_empty() && r.roc.is_empty() && r.latency_ms.is_empty());
        assert_eq!(r.throughput, None);
        assert!(r.to_markdown().contains("n/a"));
        assert!(r.to_html().contains("<svg"));
        let svg = r.roc_svg();
        assert!(svg.starts_with("<svg") && !svg.contains("<polyline"));
        assert!(r.summary_text().contains("n/a"));
    }
}
