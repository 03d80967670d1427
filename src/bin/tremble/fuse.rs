//! `tremble fuse`: fit the fusion of the base score with the perturbation-sensitivity features
//! on the calibration split of the model's own training data, and store it in the manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressStyle;
use tremble::detector::default_model_dir;
use tremble::manifest::DetectorManifest;
use tremble::rng::Rng;
use tremble::signals::sensitivity::fusion_inputs;
use tremble::train::data::{read_examples, SampleCaps};
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
    /// Records per scoring call.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: FuseArgs) -> Result<ExitCode> {
    let dir = a
        .model
        .model
        .clone()
        .or_else(default_model_dir)
        .context("no model directory: pass --model DIR")?;
    let detector = load_detector(&a.model)?;
    let settings = detector.perturb_settings();
    if settings.policy == tremble::signals::sensitivity::PerturbPolicy::Never {
        bail!("--perturb never leaves nothing to fuse: use auto (the default) or always");
    }
    let info = detector.manifest().info.clone().unwrap_or_default();
    let sha = sha256_file(&a.data)?;
    let trained = info["trained_on"].as_array().cloned().unwrap_or_default();
    if !trained.iter().any(|t| t["sha256"].as_str() == Some(&sha)) {
        bail!(
            "{} is not the data model {} was trained on: the fusion is fitted on the calibration \
             split held out from that file",
            a.data.display(),
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
        read_examples(&a.data).with_context(|| format!("cannot read {}", a.data.display()))?;
    let (cal_idx, _) = split_indices(&examples, seed, fraction);
    let mut rows = calibration_sample(&examples, &cal_idx, caps, seed);
    if let Some(n) = a.rows {
        Rng::new(seed ^ 0xF5).shuffle(&mut rows);
        rows.truncate(n);
        rows.sort_unstable();
    }
    eprintln!(
        "scoring {} calibration rows with the check ({} policy, {} copies at rate {})",
        rows.len(),
        settings.policy.name(),
        settings.copies,
        settings.rate
    );
    let bar = crate::score::progress_bar(false);
    bar.set_length(rows.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{wide_bar} {pos}/{len} records {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut fusion_rows = Vec::with_capacity(rows.len());
    for part in rows.chunks(a.chunk.max(1)) {
        let texts: Vec<&str> = part.iter().map(|&i| examples[i].text.as_str()).collect();
        for (&i, v) in part.iter().zip(detector.score_batch(&texts)?) {
            let obfuscated = v
                .signals
                .normalize
                .as_ref()
                .is_some_and(|n| !n.fired.is_empty());
            fusion_rows.push(FusionRow {
                base: v.base_score(),
                checked: v.signals.sensitivity.as_ref().map(|s| {
                    let f = [s.mean, s.std, s.flip_rate, s.max_abs_delta, s.js_mean];
                    fusion_inputs(s.base_score, &f, obfuscated)
                }),
                attack: examples[i].is_attack(),
            });
        }
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();

    let fitted = fit(&fusion_rows, settings.copies, settings.rate, a.l2)?;
    let mut manifest = DetectorManifest::read(&dir)?;
    manifest.fusion = Some(fitted.fusion.clone());
    let mut info = manifest
        .info
        .take()
        .unwrap_or_else(|| serde_json::json!({}));
    info["fusion"] = serde_json::json!({
        "policy": settings.policy.name(),
        "calibration_rows": fusion_rows.len(),
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
        "fusion fitted on {} checked rows ({} attacks) of {} calibration rows\n\
         calibration ROC AUC: base {:.4}, fused {:.4} (in-sample)\n\
         thresholds: strict {:.4}, balanced {:.4}, permissive {:.4}\n\
         weights (standardized): {}\nwritten to {}",
        fitted.checked,
        fitted.checked_attacks,
        fusion_rows.len(),
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
