//! `tremble fuse`: fit the fusion of the base score with the perturbation-sensitivity features
//! on the calibration split of the model's own training data, and store it in the manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressStyle;
use std::path::Path;

use tremble::detector::Detector;
use tremble::eval::attack::{random_edits, AttackConfig};
use tremble::eval::rewrites::{attack_classifier, rewrite};
use tremble::evasion::Technique;
use tremble::manifest::DetectorManifest;
use tremble::rng::Rng;
use tremble::signals::sensitivity::fusion_inputs;
use tremble::signals::sensitivity::PerturbPolicy;
use tremble::train::data::{drop_held_out, read_examples, Example, SampleCaps};
use tremble::train::fusion::{fit, FusionRow};
use tremble::train::{calibration_sample, split_indices};
use tremble::weights::sha256_file;

use crate::args::ModelArgs;
use crate::score::load_detector;

#[derive(Debug, Args)]
pub struct FuseArgs {
    /// The labelled JSONL the model was trained on (its calibration split is rebuilt from it).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Use a seeded sample of this many calibration rows (quicker; default all).
    #[arg(long)]
    pub rows: Option<usize>,
    /// Ridge penalty on the standardized fusion weights.
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// Calibration attacks and as many benign calibration rows rewritten by the evasion
    /// catalogue's adversarial rewrites (one technique each, in turn) and added to the fit
    /// (not to the thresholds), so the fusion sees what the check is for; 0 adds none.
    #[arg(long, default_value_t = 300)]
    pub rewrites: usize,
    /// Flagged calibration attacks run through the black-box attack against the classifier;
    /// each evading rewrite is added to the fit with a benign control carrying as many random
    /// edits of the same kinds; 0 adds none.
    #[arg(long, default_value_t = 150)]
    pub attack: usize,
    /// Keep the scored rows in FILE and reuse them while the model, data and settings match
    /// (refitting with another --l2 then takes seconds).
    #[arg(long, value_name = "FILE")]
    pub cache: Option<PathBuf>,
    /// Records per scoring call.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(mut a: FuseArgs) -> Result<ExitCode> {
    let dir = crate::score::model_dir(&a.model)?;
    // The fusion belongs to this model's scores on its own calibration split; a routed model
    // has another split and was maybe trained on these rows.
    a.model.no_route = true;
    let detector = load_detector(&a.model)?;
    let settings = detector.perturb_settings();
    if settings.policy == tremble::signals::sensitivity::PerturbPolicy::Never {
        bail!("--perturb never leaves nothing to fuse: use auto (the default) or always");
    }
    let CalibrationSplit {
        examples,
        mut rows,
        seed,
        sha,
    } = calibration_split(&detector, &a.data)?;
    if let Some(n) = a.rows {
        Rng::new(seed ^ 0xF5).shuffle(&mut rows);
        rows.truncate(n);
        rows.sort_unstable();
    }
    let key = cache_key(&detector, &sha, &rows, &a);
    let scored = match a.cache.as_deref().and_then(|p| read_cache(p, &key)) {
        Some(s) => {
            eprintln!(
                "reusing the scored rows in {}",
                a.cache
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            );
            s
        }
        None => {
            let s = score_all(&detector, &examples, &rows, &a, seed)?;
            if let Some(p) = &a.cache {
                write_cache(p, &key, &s)?;
            }
            s
        }
    };
    let (fusion_rows, extra) = (scored.calibration, scored.extra);
    let fitted = fit(&fusion_rows, &extra, settings.copies, settings.rate, a.l2)?;
    let mut manifest = DetectorManifest::read(&dir)?;
    manifest.fusion = Some(fitted.fusion.clone());
    let mut info = manifest
        .info
        .take()
        .unwrap_or_else(|| serde_json::json!({}));
    info["fusion"] = serde_json::json!({
        "policy": settings.policy.name(),
        "calibration_rows": fusion_rows.len(),
        "extra_rows": extra.len(),
        "extra_rows_checked": extra.iter().filter(|r| r.checked.is_some()).count(),
        "rewrites": a.rewrites,
        "attacked": a.attack,
        "checked_rows": fitted.checked,
        "checked_attacks": fitted.checked_attacks,
        "l2": a.l2,
        "calibration_auc_base": fitted.base_auc,
        "calibration_auc_fused_in_sample": fitted.fused_auc,
    });
    manifest.info = Some(info);
    manifest.write(&dir)?;
    let t = fitted.fusion.thresholds;
    println!(
        "fusion fitted on {} checked rows ({} attacks) of {} calibration rows and {} rewrites\n\
         calibration ROC AUC: base {:.4}, fused {:.4} (in-sample)\n\
         thresholds: strict {:.4}, balanced {:.4}, permissive {:.4}\n\
         weights (standardized): {}\nwritten to {}",
        fitted.checked,
        fitted.checked_attacks,
        fusion_rows.len(),
        extra.len(),
        fitted.base_auc.unwrap_or(f64::NAN),
        fitted.fused_auc.unwrap_or(f64::NAN),
        t.strict,
        t.balanced,
        t.permissive,
        fitted
            .fusion
            .inputs
            .iter()
            .zip(&fitted.fusion.weights)
            .map(|(n, w)| format!("{n} {w:+.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        dir.join(tremble::manifest::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The calibration split `tremble train` held out from `data`, rebuilt from the seed, fraction
/// and caps the model's manifest records.
pub struct CalibrationSplit {
    pub examples: Vec<Example>,
    /// Indices into `examples`, in order.
    pub rows: Vec<usize>,
    pub seed: u64,
    /// sha256 of the data file.
    pub sha: String,
}

/// Rebuilds the calibration split; refuses data the model was not trained on.
pub fn calibration_split(detector: &Detector, data: &Path) -> Result<CalibrationSplit> {
    let info = detector.manifest().info.clone().unwrap_or_default();
    let sha = sha256_file(data)?;
    let trained = info["trained_on"].as_array().cloned().unwrap_or_default();
    if !trained.iter().any(|t| t["sha256"].as_str() == Some(&sha)) {
        bail!(
            "{} is not the data model {} was trained on: fits on the calibration \
             split held out from that file",
            data.display(),
            detector.manifest().name
        );
    }
    let num = |v: &serde_json::Value, what: &str| {
        v.as_f64().with_context(|| {
            format!("the model manifest lacks info.{what}; retrain with this build")
        })
    };
    let seed = num(&info["train"]["seed"], "train.seed")? as u64;
    let fraction = num(
        &info["sample"]["calibration_fraction"],
        "sample.calibration_fraction",
    )?;
    let caps = SampleCaps {
        per_group: num(
            &info["sample"]["max_rows_per_group"],
            "sample.max_rows_per_group",
        )? as usize,
        per_source: num(
            &info["sample"]["max_rows_per_source"],
            "sample.max_rows_per_source",
        )? as usize,
    };
    let examples =
        read_examples(data).with_context(|| format!("cannot read {}", data.display()))?;
    // The rows training held out for validation were not in its calibration split either.
    let (examples, _) = drop_held_out(examples, &detector.manifest().holdout_langs());
    let (cal_idx, _) = split_indices(&examples, seed, fraction);
    let rows = calibration_sample(&examples, &cal_idx, caps, seed);
    Ok(CalibrationSplit {
        examples,
        rows,
        seed,
        sha,
    })
}

/// The scored rows a fit needs: the calibration split and the adversarial extra rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScoredRows {
    key: String,
    calibration: Vec<FusionRow>,
    extra: Vec<FusionRow>,
}

/// Everything the scored rows depend on: data, model files, calibration, check settings, the
/// rows chosen and the extra-row counts.
fn cache_key(detector: &Detector, data_sha: &str, rows: &[usize], a: &FuseArgs) -> String {
    let m = detector.manifest();
    let s = detector.perturb_settings();
    let rows_hash = rows
        .iter()
        .fold(0u64, |h, &i| tremble::rng::mix(h ^ i as u64));
    serde_json::json!({
        "data": data_sha,
        "files": m.files,
        "base": m.base.files,
        "calibration": m.calibration,
        "window": m.window,
        "check": [s.policy.name(), s.copies.to_string(), s.rate.to_string(), s.seed.to_string()],
        "rows": [rows.len(), rows_hash],
        "rewrites": a.rewrites,
        "attack": a.attack,
    })
    .to_string()
}

fn read_cache(path: &Path, key: &str) -> Option<ScoredRows> {
    let text = std::fs::read_to_string(path).ok()?;
    let rows: ScoredRows = serde_json::from_str(&text).ok()?;
    if rows.key == key {
        Some(rows)
    } else {
        eprintln!(
            "{} holds rows scored for another model, data or setting: scoring again",
            path.display()
        );
        None
    }
}

fn write_cache(path: &Path, key: &str, rows: &ScoredRows) -> Result<()> {
    let json =
        serde_json::json!({"key": key, "calibration": rows.calibration, "extra": rows.extra});
    std::fs::write(path, json.to_string())
        .with_context(|| format!("cannot write the row cache {}", path.display()))
}

/// Scores texts with the check on, as fusion rows.
fn score_rows(
    detector: &Detector,
    texts: &[(&str, bool)],
    chunk: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<FusionRow>> {
    let mut out = Vec::with_capacity(texts.len());
    for part in texts.chunks(chunk.max(1)) {
        let refs: Vec<&str> = part.iter().map(|t| t.0).collect();
        for (&(_, attack), v) in part.iter().zip(detector.score_batch(&refs)?) {
            let obfuscated = v
                .signals
                .normalize
                .as_ref()
                .is_some_and(|n| !n.fired.is_empty());
            out.push(FusionRow {
                base: v.base_score(),
                checked: v.signals.sensitivity.as_ref().map(|s| {
                    let f = [s.mean, s.std, s.flip_rate, s.max_abs_delta, s.js_mean];
                    fusion_inputs(s.base_score, &f, obfuscated)
                }),
                attack,
            });
        }
        bar.inc(part.len() as u64);
    }
    Ok(out)
}

fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = crate::score::progress_bar(false);
    bar.set_length(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{wide_bar}} {{pos}}/{{len}} {what} {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Scores the calibration rows, then builds and scores the adversarial extra rows.
fn score_all(
    detector: &Detector,
    examples: &[Example],
    rows: &[usize],
    a: &FuseArgs,
    seed: u64,
) -> Result<ScoredRows> {
    let settings = detector.perturb_settings();
    eprintln!(
        "scoring {} calibration rows with the check ({} policy, {} copies at rate {})",
        rows.len(),
        settings.policy.name(),
        settings.copies,
        settings.rate
    );
    let texts: Vec<(&str, bool)> = rows
        .iter()
        .map(|&i| (examples[i].text.as_str(), examples[i].is_attack()))
        .collect();
    let b = bar(texts.len(), "calibration rows");
    let calibration = score_rows(detector, &texts, a.chunk, &b)?;
    b.finish_and_clear();

    // Seeded picks of the calibration split; rewrites never touch dev data.
    let pick = |attack: bool, n: usize, salt: u64| {
        let mut idx: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| examples[i].is_attack() == attack)
            .collect();
        Rng::new(seed ^ salt).shuffle(&mut idx);
        idx.truncate(n);
        idx
    };
    let mut extra_texts: Vec<(String, bool)> = Vec::new();
    let techniques = Technique::REWRITES;
    for attack in [true, false] {
        for (k, i) in pick(attack, a.rewrites, 0x5EED).into_iter().enumerate() {
            let t = techniques[k % techniques.len()];
            extra_texts.push((rewrite(t, &examples[i].text, seed), attack));
        }
    }
    if a.attack > 0 {
        let base_t = detector.threshold_for(PerturbPolicy::Never);
        let mut flagged: Vec<usize> = calibration
            .iter()
            .zip(rows)
            .filter(|(r, _)| r.attack && r.base >= base_t)
            .map(|(_, &i)| i)
            .collect();
        Rng::new(seed ^ 0xA7).shuffle(&mut flagged);
        flagged.truncate(a.attack);
        let attack_texts: Vec<&str> = flagged.iter().map(|&i| examples[i].text.as_str()).collect();
        let b = bar(attack_texts.len(), "calibration attacks attacked");
        let outcomes = attack_classifier(
            detector,
            &attack_texts,
            AttackConfig {
                seed: seed ^ 0xB1AC,
                ..AttackConfig::default()
            },
            &mut |done, _| b.set_position(done as u64),
        )?;
        b.finish_and_clear();
        let controls = pick(false, outcomes.len(), 0xC0);
        for (o, &c) in outcomes
            .iter()
            .filter(|o| o.evaded)
            .zip(controls.iter().cycle())
        {
            extra_texts.push((o.text.clone(), true));
            extra_texts.push((random_edits(&examples[c].text, o.edits, seed), false));
        }
    }
    let refs: Vec<(&str, bool)> = extra_texts.iter().map(|(t, y)| (t.as_str(), *y)).collect();
    let b = bar(refs.len(), "rewrites");
    let extra = score_rows(detector, &refs, a.chunk, &b)?;
    b.finish_and_clear();
    Ok(ScoredRows {
        key: String::new(),
        calibration,
        extra,
    })
}
