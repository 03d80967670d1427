//! Scoring a labelled file with a detector for evaluation: batched scores for the metrics,
//! a seeded sample scored one record at a time for request latencies, and the guard that
//! refuses to report metrics on the data a model was trained on.

use std::path::Path;
use std::time::Instant;

use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::eval::attack::{AttackConfig, AttackSummary};
use crate::eval::metrics::Scored;
use crate::eval::rewrites::{attack_classifier, rewrite, RewrittenScores};
use crate::rng::Rng;
use crate::signals::sensitivity::PerturbPolicy;
use crate::train::data::Example;
use crate::weights::sha256_file;

/// Scores and timings of one evaluation run.
pub struct EvalRun {
    pub scored: Vec<Scored>,
    /// The same records' scores before the perturbation-sensitivity check.
    pub base: Vec<Scored>,
    /// Records the check ran on.
    pub checked: usize,
    /// Latencies of the same sample with the check off (empty when the policy is `never`).
    pub single_latencies_base_ms: Vec<f64>,
    /// Wall time of the batched scoring of every record.
    pub batch_seconds: f64,
    /// Latency of single-record calls (`Detector::score`) on a seeded sample.
    pub single_latencies_ms: Vec<f64>,
    /// The same records' scores before the LM-surprise signal (empty when it is off).
    pub without_lm: Vec<Scored>,
    /// Latencies of the same sample with the LM-surprise signal skipped (empty when off).
    pub single_latencies_no_lm_ms: Vec<f64>,
    /// The model that read each record, in `scored` order, when the detector routes by
    /// language (empty otherwise).
    pub read_by: Vec<String>,
}

/// Refuses `data` when its sha256 is among the files the model manifest says it trained on.
///
/// # Errors
/// [`Error::Config`] naming the file when it is training data.
pub fn refuse_training_data(detector: &Detector, data: &Path) -> Result<()> {
    let sha = sha256_file(data)?;
    let trained = detector
        .manifest()
        .info
        .as_ref()
        .and_then(|i| i["trained_on"].as_array().cloned())
        .unwrap_or_default();
    if trained
        .iter()
        .any(|t| t["sha256"].as_str() == Some(sha.as_str()))
    {
        return Err(Error::Config(format!(
            "{} is the data model {} was trained on: metrics on training data are not reported",
            data.display(),
            detector.manifest().name
        )));
    }
    Ok(())
}

/// The languages the model held out of training as its validation split
/// (`tremble train --holdout-langs`, recorded in its manifest).
///
/// # Errors
/// [`Error::Config`] when the model records none.
pub fn held_out_langs(detector: &Detector) -> Result<Vec<String>> {
    let m = detector.manifest();
    let langs = m.holdout_langs();
    if langs.is_empty() || detector.routes() {
        return Err(Error::Config(format!(
            "model {} holds out no languages (train with --holdout-langs; a routing model \
             is evaluated on its routes' held-out split with --model <that model>)",
            m.name
        )));
    }
    Ok(langs)
}

/// Scores `examples` in chunks of `chunk` records, then times `latency_sample` single calls.
///
/// # Errors
/// Scoring errors.
pub fn score_examples(
    detector: &Detector,
    examples: &[Example],
    chunk: usize,
    latency_sample: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalRun> {
    let started = Instant::now();
    let mut scored = Vec::with_capacity(examples.len());
    let mut base = Vec::with_capacity(examples.len());
    let mut checked = 0;
    let mut without_lm = Vec::new();
    let mut read_by = Vec::new();
    for part in examples.chunks(chunk.max(1)) {
        let texts: Vec<&str> = part.iter().map(|e| e.text.as_str()).collect();
        for (e, v) in part.iter().zip(detector.score_batch(&texts)?) {
            let row = Scored {
                score: v.score,
                attack: e.is_attack(),
                label: e.label.clone(),
                source: e.source.clone(),
                subtype: e.subtype.clone(),
                lang: e.lang.clone(),
            };
            checked += usize::from(v.signals.sensitivity.is_some());
            if let Some(m) = &v.signals.classifier.model {
                read_by.push(m.clone());
            }
            if let Some(lm) = &v.signals.lm_surprise {
                without_lm.push(Scored {
                    score: lm.base_score,
                    ..row.clone()
                });
            }
            base.push(Scored {
                score: v.base_score(),
                ..row.clone()
            });
            scored.push(row);
        }
        progress(scored.len(), examples.len());
    }
    let batch_seconds = started.elapsed().as_secs_f64();
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    Rng::new(0x1A7E).shuffle(&mut idx);
    let mut single_latencies_ms = Vec::new();
    let mut single_latencies_base_ms = Vec::new();
    let mut single_latencies_no_lm_ms = Vec::new();
    let policy = detector.perturb_settings().policy;
    for &i in idx.iter().take(latency_sample) {
        let text = [examples[i].text.as_str()];
        // Alternating the two policies record by record keeps machine noise out of the ratio.
        if policy != PerturbPolicy::Never {
            let t = Instant::now();
            detector.score_batch_with(&text, PerturbPolicy::Never)?;
            single_latencies_base_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if detector.lm_enabled() {
            let t = Instant::now();
            detector.score_batch_signals(&text, policy, false)?;
            single_latencies_no_lm_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        detector.score_batch(&text)?;
        single_latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(EvalRun {
        scored,
        base,
        checked,
        single_latencies_base_ms,
        batch_seconds,
        single_latencies_ms,
        without_lm,
        single_latencies_no_lm_ms,
        read_by,
    })
}

/// Runs [`crate::eval::attack::greedy_attack`] against the classifier alone (policy `never`) on up to `n` attacks
/// of `examples` that it flagged (a seeded sample; `base` holds their base scores in order),
/// then scores the rewrites that evaded it with the full detector.
///
/// # Errors
/// Scoring errors.
pub fn attack_sample(
    detector: &Detector,
    examples: &[Example],
    base: &[Scored],
    n: usize,
    cfg: AttackConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AttackSummary> {
    let base_t = detector.threshold_for(PerturbPolicy::Never);
    let mut idx: Vec<usize> = (0..examples.len())
        .filter(|&i| base[i].attack && base[i].score >= base_t)
        .collect();
    Rng::new(cfg.seed).shuffle(&mut idx);
    idx.truncate(n);
    let mut summary = AttackSummary {
        attacked: idx.len(),
        budget: cfg.budget,
        ..AttackSummary::default()
    };
    let texts: Vec<&str> = idx.iter().map(|&i| examples[i].text.as_str()).collect();
    let outcomes = attack_classifier(detector, &texts, cfg, progress)?;
    summary.queries = outcomes.iter().map(|o| o.queries as f64).collect();
    let evaded: Vec<String> = outcomes
        .into_iter()
        .filter(|o| o.evaded)
        .map(|o| o.text)
        .collect();
    summary.evaded = evaded.len();
    let full_t = detector.threshold();
    let scores = RewrittenScores::score(detector, "black-box attack (evading)", &evaded)?;
    summary.still_flagged = scores.full.iter().filter(|&&s| s >= full_t).count();
    summary.checked = scores.checked;
    summary.evaded_scores = Some(scores);
    Ok(summary)
}

/// Rewrites a seeded sample of up to `n` attacks of `examples` with every technique of
/// [`crate::evasion::Technique::REWRITES`] and scores each set with both columns.
///
/// # Errors
/// Scoring errors.
pub fn rewrite_sample(
    detector: &Detector,
    examples: &[Example],
    n: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<RewrittenScores>> {
    let mut idx: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].is_attack())
        .collect();
    Rng::new(seed).shuffle(&mut idx);
    idx.truncate(n);
    let techniques = crate::evasion::Technique::REWRITES;
    let mut sets = Vec::with_capacity(techniques.len());
    for (done, &t) in techniques.iter().enumerate() {
        let texts: Vec<String> = idx
            .iter()
            .map(|&i| rewrite(t, &examples[i].text, seed))
            .collect();
        sets.push(RewrittenScores::score(detector, t.name(), &texts)?);
        progress(done + 1, techniques.len());
    }
    Ok(sets)
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, no time-zone data needed).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_has_the_right_shape() {
        let d = super::utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
    }
}
