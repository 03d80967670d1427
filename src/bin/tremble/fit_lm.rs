//! `tremble fit-lm`: fit the calibrated rule of the LM-surprise signal on the model's training
//! data and store it in the model manifest. Negatives are benign rows of the calibration split
//! (every source: prose, code, other languages); positives are the training file's optimized
//! suffix attacks (`adv_suffix:*`) plus calibration attacks given a synthetic suffix of random
//! vocabulary tokens (the shape GCG's search produces). The rule's bias is then set so that
//! it alone flags `--fpr` of the benign rows at the model's `balanced` threshold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use tremble::manifest::DetectorManifest;
use tremble::rng::Rng;
use tremble::signals::lm_surprise::{
    LmFeatures, LmRef, LmRule, LmSurprise, LM_GGUF, LM_INPUT_NAMES,
};
use tremble::signals::sensitivity::logit;
use tremble::train::logistic::Standardized;

use crate::args::ModelArgs;
use crate::fuse::{calibration_split, CalibrationSplit};
use crate::score::load_detector;

#[derive(Debug, Args)]
pub struct FitLmArgs {
    /// The labelled JSONL the model was trained on.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Benign calibration rows (a seeded sample) used as negatives.
    #[arg(long, default_value_t = 1500)]
    pub benign: usize,
    /// Calibration attacks given a synthetic random-token suffix, added as positives.
    #[arg(long, default_value_t = 300)]
    pub synthetic: usize,
    /// Share of benign calibration rows the rule alone may flag at the `balanced` threshold.
    #[arg(long, default_value_t = 0.005)]
    pub fpr: f64,
    /// Content tokens the LM reads per record (its last ones).
    #[arg(long, default_value_t = 96)]
    pub max_tokens: usize,
    /// Ridge penalty on the standardized weights.
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// The LM's fetch manifest (names the directory and pins the files).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "models/smollm2-135m-instruct.manifest.json"
    )]
    pub lm_manifest: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: FitLmArgs) -> Result<ExitCode> {
    if !(a.fpr > 0.0 && a.fpr < 1.0) || a.max_tokens == 0 {
        bail!("--fpr must lie in (0, 1) and --max-tokens be at least 1");
    }
    let model_dir = crate::score::model_dir(&a.model)?;
    let detector = load_detector(&a.model)?;
    let (lm_dir, files, name) = lm_files(&a.lm_manifest)?;
    let lm = LmSurprise::load(&lm_dir, &files, a.max_tokens, detector.device())
        .context("cannot load the LM")?;
    let CalibrationSplit {
        examples,
        rows,
        seed,
        ..
    } = calibration_split(&detector, &a.data)?;

    let mut rng = Rng::new(seed ^ 0x115);
    let mut benign: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&i| !examples[i].is_attack())
        .collect();
    rng.shuffle(&mut benign);
    benign.truncate(a.benign);
    let suffix_rows: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].subtype.starts_with("adv_suffix"))
        .collect();
    let mut hosts: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&i| examples[i].is_attack() && examples[i].text.len() <= 400)
        .collect();
    rng.shuffle(&mut hosts);
    hosts.truncate(a.synthetic);
    let vocab = lm.tokenizer().get_vocab_size(false) as u32;
    let mut texts: Vec<String> = benign.iter().map(|&i| examples[i].text.clone()).collect();
    texts.extend(suffix_rows.iter().map(|&i| examples[i].text.clone()));
    for &i in &hosts {
        let n = 15 + rng.below(16);
        // ids above the 17 control tokens: ordinary vocabulary, as GCG searches it
        let ids: Vec<u32> = (0..n)
            .map(|_| 17 + rng.below(vocab as usize - 17) as u32)
            .collect();
        let suffix = lm
            .tokenizer()
            .decode(&ids, true)
            .map_err(|e| anyhow::anyhow!("LM tokenizer: {e}"))?;
        texts.push(format!("{} {}", examples[i].text, suffix.trim()));
    }
    let labels: Vec<f64> = (0..texts.len())
        .map(|i| f64::from(u8::from(i >= benign.len())))
        .collect();
    eprintln!(
        "LM features of {} benign calibration rows, {} adv_suffix rows, {} synthetic suffixes",
        benign.len(),
        suffix_rows.len(),
        hosts.len()
    );
    let features = features_with_progress(&lm, &texts)?;

    let x: Vec<Vec<f64>> = features
        .iter()
        .map(|f| f.inputs().iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut m = Standardized::fit(&x, &labels, a.l2);
    let balanced = detector.manifest().thresholds.balanced;
    let mut neg: Vec<f64> = x
        .iter()
        .zip(&labels)
        .filter(|(_, &y)| y == 0.0)
        .map(|(r, _)| m.logit(r))
        .collect();
    neg.sort_by(f64::total_cmp);
    let q = neg[((1.0 - a.fpr) * neg.len() as f64).floor() as usize % neg.len().max(1)];
    // Shift so that at most --fpr of the benign logits reach the balanced threshold's logit.
    m.bias += f64::from(logit(balanced)) - q + 1e-6;
    let rule = LmRule {
        lm: LmRef {
            name,
            dir: relative_to(&lm_dir, &model_dir),
            files,
        },
        max_tokens: a.max_tokens,
        inputs: LM_INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        center: m.center.iter().map(|&v| v as f32).collect(),
        scale: m.scale.iter().map(|&v| v as f32).collect(),
        weights: m.weights.iter().map(|&v| v as f32).collect(),
        bias: m.bias as f32,
    };
    rule.validate()?;
    let flagged = |range: std::ops::Range<usize>| {
        let n = range.len();
        let k = range
            .filter(|&i| rule.probability(&features[i]) >= balanced)
            .count();
        (k, n)
    };
    let nb = benign.len();
    let ns = suffix_rows.len();
    let (fb, _) = flagged(0..nb);
    let (fs, _) = flagged(nb..nb + ns);
    let (fy, ny) = flagged(nb + ns..texts.len());
    let summary = serde_json::json!({
        "data_sha256": tremble::weights::sha256_file(&a.data)?,
        "benign_rows": nb, "adv_suffix_rows": ns, "synthetic_rows": ny,
        "target_fpr": a.fpr, "l2": a.l2,
        "in_sample_flagged_at_balanced": {
            "benign": fb, "adv_suffix": fs, "synthetic": fy
        }
    });
    let mut manifest = DetectorManifest::read(&model_dir)?;
    manifest.lm_surprise = Some(rule.clone());
    let mut info = manifest
        .info
        .take()
        .unwrap_or_else(|| serde_json::json!({}));
    info["lm_surprise"] = summary;
    manifest.info = Some(info);
    manifest.write(&model_dir)?;
    println!(
        "lm_surprise rule fitted; at balanced ({balanced:.4}), in-sample: benign {fb}/{nb} \
         flagged, adv_suffix {fs}/{ns}, synthetic {fy}/{ny}\nweights (standardized) {}: {:?}, \
         bias {:.3}\nwritten to {}",
        LM_INPUT_NAMES.join(", "),
        rule.weights,
        rule.bias,
        model_dir.join(tremble::manifest::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The LM directory and the pinned files (fetched and derived) of its fetch manifest.
fn lm_files(manifest: &Path) -> Result<(PathBuf, BTreeMap<String, String>, String)> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let m: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", manifest.display()))?;
    let mut files = BTreeMap::new();
    for key in ["files", "derived"] {
        for (k, v) in m[key].as_object().into_iter().flatten() {
            files.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    if !files.contains_key(LM_GGUF) || !files.contains_key("tokenizer.json") {
        bail!(
            "{} does not pin {LM_GGUF} and tokenizer.json",
            manifest.display()
        );
    }
    let dir = m["dir"]
        .as_str()
        .with_context(|| format!("{} names no dir", manifest.display()))?;
    let name = m["name"].as_str().unwrap_or("lm").to_string();
    Ok((PathBuf::from(dir), files, name))
}

/// `dir` as the manifest should name it: relative to the model directory when both are
/// under the same parent (`../smollm2-135m-instruct`), else as given.
fn relative_to(dir: &Path, model_dir: &Path) -> PathBuf {
    let (Ok(d), Ok(m)) = (dir.canonicalize(), model_dir.canonicalize()) else {
        return dir.to_path_buf();
    };
    match (d.parent(), m.parent(), d.file_name()) {
        (Some(a), Some(b), Some(name)) if a == b => Path::new("..").join(name),
        _ => d,
    }
}

fn features_with_progress(lm: &LmSurprise, texts: &[String]) -> Result<Vec<LmFeatures>> {
    let bar = crate::score::progress_bar(false);
    bar.set_length(texts.len() as u64);
    let mut out = Vec::with_capacity(texts.len());
    for part in texts.chunks(64) {
        let refs: Vec<&str> = part.iter().map(String::as_str).collect();
        out.extend(lm.features(&refs)?);
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}
