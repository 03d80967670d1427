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
use sha2::{Digest, Sha256};

use tremble::manifest::{DetectorManifest, FetchManifest};
use tremble::rng::Rng;
use tremble::signals::lm_surprise::{
    LmFeatures, LmRef, LmRule, LmSurprise, LM_GGUF, LM_INPUT_NAMES,
};
use tremble::signals::sensitivity::logit;
use tremble::train::data::Example;
use tremble::train::logistic::Standardized;

use crate::args::ModelArgs;
use crate::fuse::{calibration_split, CalibrationSplit};
use crate::score::load_detector;

/// SmolLM2's special tokens come first in its vocabulary; synthetic suffixes skip them.
const LM_CONTROL_TOKENS: usize = 17;

#[derive(Debug, Args)]
pub struct FitLmArgs {
    /// The labelled JSONL the model was trained on.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Benign calibration rows (a seeded sample) used as negatives.
    #[arg(long, default_value_t = 1500)]
    pub benign: usize,
    /// Benign calibration rows of each language other than English (code included) added to
    /// the negatives when the sample holds fewer: other languages and code are where a
    /// perplexity filter raises false alarms, and a few per language keep the fit from
    /// learning English fluency alone.
    #[arg(long, default_value_t = 25)]
    pub per_language: usize,
    /// Calibration attacks given a synthetic random-token suffix, added as positives.
    #[arg(long, default_value_t = 300)]
    pub synthetic: usize,
    /// Share of benign calibration rows the rule alone may flag at the `balanced` threshold.
    #[arg(long, default_value_t = 0.005)]
    pub fpr: f64,
    /// Content tokens the LM reads per record (its last ones).
    #[arg(long, default_value_t = 96)]
    pub max_tokens: usize,
    /// Inputs with fewer content tokens are left to the classifier (the rule gives them 0):
    /// optimized suffixes are ~20 tokens on top of a request, and short odd text (made-up
    /// words, names, codes) is where an LM raises false alarms.
    #[arg(long, default_value_t = 20)]
    pub min_tokens: usize,
    /// Ridge penalty on the standardized weights.
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// Keep the LM features in FILE and reuse them while the data, LM and rows match
    /// (refitting with another --l2 or --fpr then takes seconds).
    #[arg(long, value_name = "FILE")]
    pub cache: Option<PathBuf>,
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

pub fn run(mut a: FitLmArgs) -> Result<ExitCode> {
    if !(a.fpr > 0.0 && a.fpr < 1.0)
        || a.max_tokens == 0
        || a.benign == 0
        || a.min_tokens > a.max_tokens
    {
        bail!(
            "--fpr must lie in (0, 1), --max-tokens and --benign be at least 1, and \
             --min-tokens at most --max-tokens"
        );
    }
    let model_dir = crate::score::model_dir(&a.model)?;
    // Only the device and the manifest are needed here: no routed model.
    a.model.no_route = true;
    let detector = load_detector(&a.model)?;
    let (lm_dir, files, name) = lm_files(&a.lm_manifest)?;
    let lm = LmSurprise::load(&lm_dir, &files, a.max_tokens, detector.device())
        .context("cannot load the LM")?;
    let CalibrationSplit {
        examples,
        rows,
        seed,
        sha,
    } = calibration_split(&detector, &a.data)?;

    let mut rng = Rng::new(seed ^ 0x115);
    let benign = negatives(&examples, &rows, &a, &mut rng);
    if benign.is_empty() {
        bail!(
            "the calibration split of {} holds no benign rows: the rule's threshold is set on \
             them",
            a.data.display()
        );
    }
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
    let vocab = lm.tokenizer().get_vocab_size(false);
    if vocab <= LM_CONTROL_TOKENS {
        bail!("the LM's tokenizer has no ordinary tokens to build suffixes from");
    }
    let mut texts: Vec<String> = benign.iter().map(|&i| examples[i].text.clone()).collect();
    texts.extend(suffix_rows.iter().map(|&i| examples[i].text.clone()));
    for &i in &hosts {
        let n = 15 + rng.below(16);
        // Ordinary vocabulary above the control tokens, as GCG searches it.
        let ids: Vec<u32> = (0..n)
            .map(|_| (LM_CONTROL_TOKENS + rng.below(vocab - LM_CONTROL_TOKENS)) as u32)
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
    let key = cache_key(&sha, &files, a.max_tokens, &texts);
    let features = match a.cache.as_deref().and_then(|p| read_cache(p, &key)) {
        Some(f) => f,
        None => {
            let f = features_with_progress(&lm, &texts)?;
            if let Some(p) = &a.cache {
                write_cache(p, &key, &f)?;
            }
            f
        }
    };

    // The rule sees only inputs of at least --min-tokens tokens: fit and place it on those,
    // with the FPR budget of all benign rows (the short ones are never flagged).
    let x: Vec<Vec<f64>> = features
        .iter()
        .map(|f| f.inputs().iter().map(|&v| f64::from(v)).collect())
        .collect();
    let long: Vec<usize> = (0..x.len())
        .filter(|&i| features[i].tokens >= a.min_tokens)
        .collect();
    let pick = |idx: &[usize]| -> Vec<Vec<f64>> { idx.iter().map(|&i| x[i].clone()).collect() };
    let long_y: Vec<f64> = long.iter().map(|&i| labels[i]).collect();
    if !long_y.contains(&0.0) || !long_y.contains(&1.0) {
        bail!(
            "with --min-tokens {} the fit lacks benign or attack rows; lower it",
            a.min_tokens
        );
    }
    let mut m = Standardized::fit(&pick(&long), &long_y, a.l2);
    let balanced = detector.manifest().thresholds.balanced;
    let long_neg: Vec<usize> = long.iter().copied().filter(|&i| i < benign.len()).collect();
    let fpr_long = (a.fpr * benign.len() as f64 / long_neg.len() as f64).min(0.999);
    m.place_for_fpr(&pick(&long_neg), fpr_long, f64::from(logit(balanced)));
    let rule = LmRule {
        lm: LmRef {
            name,
            dir: relative_to(&lm_dir, &model_dir),
            files,
        },
        max_tokens: a.max_tokens,
        min_tokens: a.min_tokens,
        inputs: LM_INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        center: m.center.iter().map(|&v| v as f32).collect(),
        scale: m.scale.iter().map(|&v| v as f32).collect(),
        weights: m.weights.iter().map(|&v| v as f32).collect(),
        bias: m.bias as f32,
    };
    rule.validate()?;
    let hit: Vec<bool> = features
        .iter()
        .map(|f| rule.probability(f) >= balanced)
        .collect();
    let flagged = |range: std::ops::Range<usize>| hit[range].iter().filter(|&&h| h).count();
    let nb = benign.len();
    let ns = suffix_rows.len();
    let ny = hosts.len();
    let (fb, fs, fy) = (
        flagged(0..nb),
        flagged(nb..nb + ns),
        flagged(nb + ns..texts.len()),
    );
    let other = |i: usize| !examples[i].lang.is_empty() && examples[i].lang != "en";
    let n_other = benign.iter().filter(|&&i| other(i)).count();
    let mut f_other = 0;
    let mut by_lang: BTreeMap<&str, usize> = BTreeMap::new();
    for (&i, _) in benign.iter().zip(&hit).filter(|(_, &h)| h) {
        *by_lang.entry(examples[i].lang.as_str()).or_default() += 1;
        f_other += usize::from(other(i));
    }
    let summary = serde_json::json!({
        "data_sha256": sha,
        "benign_rows": nb, "benign_rows_not_english": n_other,
        "adv_suffix_rows": ns, "synthetic_rows": ny,
        "target_fpr": a.fpr, "l2": a.l2, "per_language": a.per_language,
        "min_tokens": a.min_tokens, "rows_under_min_tokens": x.len() - long.len(),
        "in_sample_flagged_at_balanced": {
            "benign": fb, "benign_not_english": f_other, "adv_suffix": fs, "synthetic": fy,
            "benign_by_language": by_lang,
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
         flagged ({f_other}/{n_other} not English), adv_suffix {fs}/{ns}, synthetic \
         {fy}/{ny}; benign flagged by language {by_lang:?}\nweights (standardized) {}: {:?}, \
         bias {:.3}\nwritten to {}",
        LM_INPUT_NAMES.join(", "),
        rule.weights,
        rule.bias,
        model_dir.join(tremble::manifest::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The benign rows used as negatives: a seeded sample of `--benign` calibration rows, topped
/// up to `--per-language` rows for each language other than English.
fn negatives(examples: &[Example], rows: &[usize], a: &FitLmArgs, rng: &mut Rng) -> Vec<usize> {
    let mut all: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&i| !examples[i].is_attack())
        .collect();
    rng.shuffle(&mut all);
    let (picked, rest) = all.split_at(a.benign.min(all.len()));
    let mut out = picked.to_vec();
    let mut per_lang: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &out {
        *per_lang.entry(examples[i].lang.as_str()).or_default() += 1;
    }
    for &i in rest {
        let lang = examples[i].lang.as_str();
        let n = per_lang.entry(lang).or_default();
        if !lang.is_empty() && lang != "en" && *n < a.per_language {
            *n += 1;
            out.push(i);
        }
    }
    out
}

/// Everything the features depend on: data, LM files, token cap and the texts themselves.
fn cache_key(
    data_sha: &str,
    files: &BTreeMap<String, String>,
    max_tokens: usize,
    texts: &[String],
) -> String {
    let mut h = Sha256::new();
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    serde_json::json!({
        "data": data_sha, "lm": files, "max_tokens": max_tokens,
        "texts": format!("{:x}", h.finalize()),
    })
    .to_string()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FeatureCache {
    key: String,
    features: Vec<LmFeatures>,
}

fn read_cache(path: &Path, key: &str) -> Option<Vec<LmFeatures>> {
    let text = std::fs::read_to_string(path).ok()?;
    let c: FeatureCache = serde_json::from_str(&text).ok()?;
    if c.key == key {
        eprintln!("reusing the LM features in {}", path.display());
        Some(c.features)
    } else {
        eprintln!(
            "{} holds features of other data, rows or LM: computing them again",
            path.display()
        );
        None
    }
}

fn write_cache(path: &Path, key: &str, features: &[LmFeatures]) -> Result<()> {
    let c = FeatureCache {
        key: key.to_string(),
        features: features.to_vec(),
    };
    std::fs::write(path, serde_json::to_string(&c)?)
        .with_context(|| format!("cannot write the feature cache {}", path.display()))
}

/// The LM directory and the pinned files (fetched and derived) of its fetch manifest.
fn lm_files(manifest: &Path) -> Result<(PathBuf, BTreeMap<String, String>, String)> {
    let m = FetchManifest::read(manifest)?;
    if !m.files.contains_key(LM_GGUF) || !m.files.contains_key("tokenizer.json") {
        bail!(
            "{} does not pin {LM_GGUF} and tokenizer.json",
            manifest.display()
        );
    }
    let name = if m.name.is_empty() {
        "lm".into()
    } else {
        m.name
    };
    Ok((m.dir, m.files, name))
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
