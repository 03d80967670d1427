//! Low-level rendering helpers for the evaluation report: escaping for HTML/SVG and Markdown,
//! tables as plain text, Markdown and HTML, the small SVG primitives, the page's CSS, and the
//! minimal Markdown-to-HTML used for extra sections.
//!
//! This module owns string formatting only. It must not know about [`Report`](super::report)
//! or compute any metric, and must not read or write files; every function is pure and
//! deterministic, and every piece of caller text that reaches HTML, SVG or Markdown goes
//! through [`esc`] or [`md_text`].

use std::fmt::Write as _;

pub(crate) const CSS: &str = "<style>\n\
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}\n\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\n\
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}\n\
th{background:#f4f4f4}\n\
td.num{text-align:right;font-variant-numeric:tabular-nums}\n\
dt{font-weight:bold;float:left;clear:left;width:6em}\n\
dd{margin:0 0 0.3em 7em}\n\
figure{margin:1em 0}\n\
</style>\n";

/// Columns padded to their widest cell, indented under the summary lines.
pub(crate) fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let all = || std::iter::once(header).chain(rows.iter().map(Vec::as_slice));
    let mut widths = vec![0; header.len()];
    for row in all() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    out
}

/// Appends one SVG line from `a` to `b` with extra attributes `attrs`.
pub(crate) fn svg_line(s: &mut String, a: (f64, f64), b: (f64, f64), attrs: &str) {
    let _ = writeln!(
        s,
        "<line x1=\"{:.2}\" y1=\"{:.2}\" x2=\"{:.2}\" y2=\"{:.2}\" {attrs}/>",
        a.0, a.1, b.0, b.1
    );
}

/// Appends one escaped SVG text element anchored at `(x, y)`.
pub(crate) fn svg_text(s: &mut String, x: f64, y: f64, anchor: &str, attrs: &str, text: &str) {
    let _ = writeln!(
        s,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" {attrs}>{}</text>",
        esc(text)
    );
}

/// A rate as a percentage with one decimal.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Escapes text for HTML and SVG, attributes included.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text safe inside one Markdown line or table cell: pipes would end the cell, newlines the
/// row, and `<` could open raw HTML (a source named `a<b` would swallow the rest).
pub(crate) fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An inline code span that survives backticks in `s`.
pub(crate) fn md_code(s: &str) -> String {
    let s = md_text(s);
    if s.is_empty() {
        String::new()
    } else if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

pub(crate) fn md_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| md_text(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

pub(crate) fn html_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n<tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            // Right-align numbers so columns of rates line up.
            let numeric = !cell.is_empty()
                && cell
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '%' | '-'));
            let class = if numeric { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", esc(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Renders the Markdown of an extra section: runs of `|`-rows become tables (the `---`
/// separator row dropped, the first row the header), other non-empty lines paragraphs.
/// Everything is escaped; no other Markdown is interpreted.
pub(crate) fn markdown_to_html(body: &str) -> String {
    let mut out = String::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    let flush = |table: &mut Vec<Vec<String>>, out: &mut String| {
        if let Some((header, rows)) = table.split_first() {
            out.push_str(&html_table(header, rows));
        }
        table.clear();
    };
    for line in body.lines() {
        let line = line.trim();
        if line.starts_with('|') {
            let cells = split_md_row(line);
            let separator = cells
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')));
            if !separator {
                table.push(cells);
            }
            continue;
        }
        flush(&mut table, &mut out);
        if !line.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", esc(line));
        }
    }
    flush(&mut table, &mut out);
    out
}

/// Splits a Markdown table row into trimmed cells, undoing backslash escapes (`\|`, `\<`).
fn split_md_row(line: &str) -> Vec<String> {
    let inner = line.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_punctuation) => {
                cell.extend(chars.next());
            }
            '|' => cells.push(std::mem::take(&mut cell).trim().to_string()),
            c => cell.push(c),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_html_and_markdown() {
        assert_eq!(esc("a<b&\"c'>"), "a&lt;b&amp;&quot;c&#39;&gt;");
        assert_eq!(md_text("a|b<c>\nd"), "a\\|b\\<c\\> d");
        assert_eq!(md_code("x`y"), "`` x`y ``");
        assert_eq!(md_code(""), "");
    }

    #[test]
    fn markdown_rows_round_trip() {
        let row = vec!["a|b".to_string(), "x<y".to_string()];
        let md = md_table(&["h1".into(), "h2".into()], std::slice::from_ref(&row));
        let last = md.lines().last().unwrap_or_default();
        assert_eq!(split_md_row(last), row);
    }

    #[test]
    fn text_table_pads_columns() {
        let t = text_table(
            &["a".into(), "bb".into()],
            &[vec!["ccc".into(), "d".into()]],
        );
        assert_eq!(t, "  a    bb\n  ccc  d\n");
    }
}
