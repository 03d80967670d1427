//! Which model read the records of each language, for a detector that routes by language
//! (`crate::route`): a report section, so misrouted languages show next to their scores.

use std::collections::BTreeMap;

use super::metrics::Scored;

/// The report section (heading, Markdown body): one row per language with its record count
/// and how many each model read. `read_by` is in `scored` order; `None` when it is empty
/// (the detector does not route).
pub fn section(scored: &[Scored], read_by: &[String]) -> Option<(String, String)> {
    if read_by.is_empty() || read_by.len() != scored.len() {
        return None;
    }
    let models: Vec<&str> = {
        let mut m: Vec<&str> = read_by.iter().map(String::as_str).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    let mut by_lang: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (s, m) in scored.iter().zip(read_by) {
        let lang = if s.lang.is_empty() { "(none)" } else { &s.lang };
        *by_lang.entry(lang).or_default().entry(m).or_default() += 1;
    }
    let mut md = String::from(
        "Records per language and the model that read them (routing by script and English \
         word share; the route is never evidence).\n\n| language | n |",
    );
    for m in &models {
        md.push_str(&format!(" {m} |"));
    }
    md.push_str(&format!("\n|---|---|{}\n", "---|".repeat(models.len())));
    for (lang, counts) in by_lang {
        let n: usize = counts.values().sum();
        md.push_str(&format!("| {lang} | {n} |"));
        for m in &models {
            let k = counts.get(m).copied().unwrap_or(0);
            md.push_str(&format!(" {k} ({:.1}%) |", 100.0 * k as f64 / n as f64));
        }
        md.push('\n');
    }
    Some(("Routing by language".into(), md))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_language_by_model() {
        let row = |lang: &str| Scored {
            lang: lang.into(),
            ..Scored::default()
        };
        let scored = [row("en"), row("en"), row("hi"), row("")];
        let read_by = ["a", "b", "b", "a"].map(String::from);
        let (_, md) = section(&scored, &read_by).unwrap();
        assert!(md.contains("| language | n | a | b |"), "{md}");
        assert!(md.contains("| en | 2 | 1 (50.0%) | 1 (50.0%) |"), "{md}");
        assert!(md.contains("| hi | 1 | 0 (0.0%) | 1 (100.0%) |"), "{md}");
        assert!(
            md.contains("| (none) | 1 | 1 (100.0%) | 0 (0.0%) |"),
            "{md}"
        );
        assert!(section(&scored, &[]).is_none());
    }
}
