//! Training a detector model: sample the data by group and source, hold out a calibration
//! split by group, cache the frozen layers' activations, fine-tune the top layers and the head,
//! calibrate, and export a model directory that `Detector` loads. Used by `tremble train`.

pub mod augment;
pub mod calibrate;
pub mod data;
pub mod evade;
pub mod features;
pub mod fusion;
pub mod logistic;
pub mod trainer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::manifest::{BaseRef, Calibration, DetectorManifest, Thresholds, FORMAT};
use crate::models::base::{BaseEncoder, BaseFormat};
use crate::models::bert::{BertConfig, BertModel};
use crate::tokenize::WindowSpec;
use crate::weights::sha256_file;
use augment::{splice_injections, SpliceConfig};
use data::{
    drop_held_out, in_calibration, read_examples, row_weights, sample, Example, SampleCaps,
};
use evade::{evasion_rows, EvasionConfig};
use features::{FeatureJob, WindowFeatures};
use trainer::{RowLabel, StepReport, TrainConfig, TrainModel};

/// The attack categories, in head output order.
pub const CATEGORIES: [&str; 3] = ["injection", "jailbreak", "adversarial"];

/// Everything a training run needs.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub data: Vec<PathBuf>,
    pub base_dir: PathBuf,
    pub base_name: String,
    pub hf_repo: Option<String>,
    pub out_dir: PathBuf,
    pub name: String,
    pub cache_dir: PathBuf,
    pub config: TrainConfig,
    pub window: WindowSpec,
    pub caps: SampleCaps,
    /// Benign rows keep at most this many windows (evenly spaced) for training.
    pub max_windows_per_row: usize,
    /// Attack rows keep at most this many: an injection sits in one window of a long document,
    /// and the max over windows can only find it if that window is there.
    pub max_windows_per_attack_row: usize,
    /// Payloads spliced into benign documents of the training split (see [`augment`]).
    pub splice: SpliceConfig,
    /// Training rows rewritten by evasion techniques (see [`evade`]).
    pub evasion: EvasionConfig,
    pub calibration_fraction: f64,
    /// Use at most this many training rows (a quick run); calibration shrinks in proportion.
    pub limit_rows: Option<usize>,
    /// Text whose tokens open every window (recorded in the manifest, applied again when
    /// scoring); `None`: the base form's own ([`BaseFormat::default_input_prefix`]:
    /// `query: ` for an e5 base, none for a BERT).
    pub input_prefix: Option<String>,
    /// Languages held out for validation: their rows and every row sharing a template with
    /// them are neither trained on nor calibrated on ([`data::held_out`]).
    pub holdout_langs: Vec<String>,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    Phase(String),
    Features { done: usize, total: usize },
    Step(StepReport),
}

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub train_rows: usize,
    /// Of `train_rows`, how many were made by splicing payloads into benign documents.
    pub spliced_rows: usize,
    /// Of `train_rows`, how many were rewritten by evasion techniques.
    pub evasion_rows: usize,
    pub calibration_rows: usize,
    /// Rows set aside by `holdout_langs` (their languages and translated twins).
    pub held_out_rows: usize,
    pub windows: usize,
    pub steps: usize,
    pub calibration: Calibration,
    pub thresholds: Thresholds,
    /// ROC AUC on the calibration split (held out from training, same origins).
    pub calibration_auc: Option<f64>,
}

/// Runs a training job end to end and writes the model to `job.out_dir`.
///
/// # Errors
/// Data, model-file, tensor and I/O errors, each naming its file.
pub fn run(job: &TrainJob, progress: &mut dyn FnMut(Progress)) -> Result<TrainSummary> {
    let cfg = &job.config;
    job.window.validate()?;
    progress(Progress::Phase("reading data".into()));
    let mut examples = Vec::new();
    for path in &job.data {
        examples.extend(read_examples(path)?);
    }
    if let Some(bad) = examples
        .iter()
        .find(|e| crate::verdict::Category::from_label(&e.label).is_none())
    {
        return Err(Error::Config(format!(
            "unknown label {:?} (expected benign, injection, jailbreak, adversarial)",
            bad.label
        )));
    }
    let (mut examples, held_out_rows) = drop_held_out(examples, &job.holdout_langs);
    let (cal_idx, train_idx) = split_indices(&examples, cfg.seed, job.calibration_fraction);
    let mut train_rows = sample(&examples, &train_idx, job.caps, cfg.seed);
    let mut cal_rows = calibration_sample(&examples, &cal_idx, job.caps, cfg.seed);
    let mut splice = job.splice;
    let mut evasion = job.evasion;
    if let Some(limit) = job.limit_rows {
        let frac = limit as f64 / train_rows.len().max(1) as f64;
        if frac < 1.0 {
            splice.rows = (splice.rows as f64 * frac).ceil() as usize;
            evasion.rows = (evasion.rows as f64 * frac).ceil() as usize;
        }
        let mut rng = crate::rng::Rng::new(cfg.seed ^ 0x11);
        rng.shuffle(&mut train_rows);
        rng.shuffle(&mut cal_rows);
        train_rows.truncate(limit);
        cal_rows.truncate(((cal_rows.len() as f64 * frac).ceil() as usize).max(20));
    }
    let spliced = splice_injections(&examples, &train_idx, splice, cfg.seed);
    let spliced_rows = spliced.len();
    train_rows.extend(examples.len()..examples.len() + spliced_rows);
    examples.extend(spliced);
    // Rewritten rows are trained on the texts the detector would score for them; every other
    // row on its own text.
    let rewritten = evasion_rows(&examples, &train_rows, evasion, cfg.seed);
    let rewritten_rows = rewritten.len();
    let mut scored_texts: HashMap<usize, Vec<String>> = HashMap::new();
    for r in rewritten {
        train_rows.push(examples.len());
        scored_texts.insert(examples.len(), r.scored);
        examples.push(r.example);
    }
    for (what, rows) in [("training", &train_rows), ("calibration", &cal_rows)] {
        let attacks = rows.iter().filter(|&&i| examples[i].is_attack()).count();
        if attacks == 0 || attacks == rows.len() {
            return Err(Error::Config(format!(
                "the {what} sample needs both benign and attack rows ({attacks} of {} are attacks)",
                rows.len()
            )));
        }
    }

    progress(Progress::Phase("loading the base encoder".into()));
    let BaseEncoder {
        format,
        config: bert,
        tensors: base,
        tokenizer,
        weights_path,
    } = BaseEncoder::load_detected(&job.base_dir, &Device::Cpu)?;
    if cfg.train_layers > bert.num_hidden_layers {
        return Err(Error::Config(format!(
            "--train-layers {} exceeds the encoder's {} layers",
            cfg.train_layers, bert.num_hidden_layers
        )));
    }
    // Caught here rather than when the trained model first loads.
    if job.window.max_tokens > bert.max_position_embeddings {
        return Err(Error::Config(format!(
            "--window {} exceeds the encoder's {} positions",
            job.window.max_tokens, bert.max_position_embeddings
        )));
    }
    let input_prefix = job
        .input_prefix
        .clone()
        .unwrap_or_else(|| format.default_input_prefix().to_string());
    let tokenizer = tokenizer.with_prefix(&input_prefix)?;
    tokenizer.check_spec(job.window)?;
    let encoder = BertModel::load(
        VarBuilder::from_tensors(base.clone(), DType::F32, &Device::Cpu),
        &bert,
    )?;

    progress(Progress::Phase(
        "caching activations of the frozen layers".into(),
    ));
    let mut all_rows: Vec<usize> = train_rows.iter().chain(&cal_rows).copied().collect();
    all_rows.sort_unstable();
    let fjob = FeatureJob {
        encoder: &encoder,
        tokenizer: &tokenizer,
        spec: job.window,
        texts: all_rows
            .iter()
            .flat_map(|&i| {
                let max = if examples[i].is_attack() {
                    job.max_windows_per_attack_row
                } else {
                    job.max_windows_per_row
                };
                let texts: Vec<&str> = match scored_texts.get(&i) {
                    Some(t) => t.iter().map(String::as_str).collect(),
                    None => vec![examples[i].text.as_str()],
                };
                texts.into_iter().map(move |t| (i as u32, t, max))
            })
            .collect(),
        layer: bert.num_hidden_layers - cfg.train_layers,
        batch_size: 32,
        model_key: sha256_file(&weights_path)?,
        cache_dir: job.cache_dir.clone(),
    };
    let feats = WindowFeatures::build(&fjob, &mut |done, total| {
        progress(Progress::Features { done, total })
    })?;

    progress(Progress::Phase("training".into()));
    let model = TrainModel::new(&base, &bert, CATEGORIES.len(), cfg)?;
    let labels = row_labels(&examples, &train_rows);
    let ckpt_dir = job.cache_dir.join(format!("checkpoint-{}", job.name));
    let data_key = format!("{:016x}", feats.key());
    let steps = trainer::train(
        &model,
        &feats,
        &labels,
        cfg,
        &ckpt_dir,
        &data_key,
        &mut |s| progress(Progress::Step(s)),
    )?;
    model.round_to_f16()?;

    progress(Progress::Phase("calibrating".into()));
    let by_row = feats.by_row();
    let cal_u32: Vec<u32> = cal_rows.iter().map(|&i| i as u32).collect();
    let logits: Vec<f32> = model
        .row_logits(&feats, &cal_u32, &by_row)?
        .into_iter()
        .map(|x| x.0)
        .collect();
    let truth: Vec<bool> = cal_rows.iter().map(|&i| examples[i].is_attack()).collect();
    let calibration = calibrate::fit_platt(&logits, &truth);
    let probs = calibrate::calibrated(&logits, calibration);
    let benign: Vec<f32> = probs
        .iter()
        .zip(&truth)
        .filter(|(_, &t)| !t)
        .map(|(&p, _)| p)
        .collect();
    let thresholds = calibrate::preset_thresholds(&benign);
    let scored: Vec<crate::eval::metrics::Scored> = cal_rows
        .iter()
        .zip(&probs)
        .map(|(&i, &p)| scored(&examples[i], p))
        .collect();
    let summary = TrainSummary {
        train_rows: train_rows.len(),
        spliced_rows,
        evasion_rows: rewritten_rows,
        calibration_rows: cal_rows.len(),
        held_out_rows,
        windows: feats.len(),
        steps,
        calibration,
        thresholds,
        calibration_auc: crate::eval::metrics::roc_auc(&scored),
    };

    progress(Progress::Phase("writing the model".into()));
    export(job, &model, &bert, (format, input_prefix), &summary)?;
    Ok(summary)
}

/// (calibration, training) indices of `examples`: the split is by group hash.
pub fn split_indices(examples: &[Example], seed: u64, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    (0..examples.len()).partition(|&i| in_calibration(&examples[i].group_key(), seed, fraction))
}

/// The calibration rows `tremble train` holds out with this seed and these caps (before
/// `--limit-rows`); `tremble fuse` fits on the same rows.
pub fn calibration_sample(
    examples: &[Example],
    cal_idx: &[usize],
    caps: SampleCaps,
    seed: u64,
) -> Vec<usize> {
    sample(examples, cal_idx, caps, seed.wrapping_add(1))
}

fn scored(e: &Example, p: f32) -> crate::eval::metrics::Scored {
    crate::eval::metrics::Scored {
        score: p,
        attack: e.is_attack(),
        label: e.label.clone(),
        source: e.source.clone(),
        subtype: e.subtype.clone(),
        lang: e.lang.clone(),
    }
}

fn row_labels(examples: &[Example], rows: &[usize]) -> Vec<RowLabel> {
    let weights = row_weights(examples, rows);
    rows.iter()
        .zip(weights)
        .map(|(&i, weight)| RowLabel {
            row: i as u32,
            attack: examples[i].is_attack(),
            category: CATEGORIES
                .iter()
                .position(|c| *c == examples[i].label)
                .unwrap_or(0) as u32,
            weight,
        })
        .collect()
}

/// Writes `head.safetensors` (head in f32, fine-tuned layers in f16) and `tremble.json`, which
/// pins every file of the base's form and records the input prefix the windows had.
fn export(
    job: &TrainJob,
    model: &TrainModel,
    bert: &BertConfig,
    (format, input_prefix): (BaseFormat, String),
    s: &TrainSummary,
) -> Result<()> {
    let out = &job.out_dir;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
    let tensors: BTreeMap<String, Tensor> = {
        let data = model
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned var map".into()))?;
        data.iter()
            .map(|(n, v)| {
                let dtype = if n.starts_with("encoder.") {
                    DType::F16
                } else {
                    DType::F32
                };
                Ok((n.clone(), v.as_tensor().to_dtype(dtype)?))
            })
            .collect::<Result<_>>()?
    };
    let head_path = out.join("head.safetensors");
    candle_core::safetensors::save(&tensors.into_iter().collect(), &head_path)?;
    let pins = format
        .files()
        .iter()
        .map(|f| Ok((f.to_string(), sha256_file(&job.base_dir.join(f))?)))
        .collect::<Result<_>>()?;
    let data_pins: Vec<serde_json::Value> = job
        .data
        .iter()
        .map(|p| Ok(serde_json::json!({"file": p.file_name().map(|f| f.to_string_lossy().into_owned()), "sha256": sha256_file(p)?})))
        .collect::<Result<_>>()?;
    let manifest = DetectorManifest {
        fusion: None,
        lm_surprise: None,
        format: FORMAT,
        name: job.name.clone(),
        base: BaseRef {
            name: job.base_name.clone(),
            dir: Some(relative_dir(out, &job.base_dir)),
            hf_repo: job.hf_repo.clone(),
            files: pins,
            input_prefix,
        },
        files: BTreeMap::from([("head.safetensors".to_string(), sha256_file(&head_path)?)]),
        categories: CATEGORIES.map(String::from).to_vec(),
        window: job.window,
        calibration: s.calibration,
        thresholds: s.thresholds,
        route: None,
        info: Some(serde_json::json!({
            "trained_on": data_pins,
            "train": job.config,
            "encoder_layers": bert.num_hidden_layers,
            "sample": {"max_rows_per_group": job.caps.per_group, "max_rows_per_source": job.caps.per_source,
                       "max_windows_per_row": job.max_windows_per_row,
                       "max_windows_per_attack_row": job.max_windows_per_attack_row,
                       "splice": job.splice, "evasion": job.evasion, "calibration_fraction": job.calibration_fraction,
                       "limit_rows": job.limit_rows, "holdout_langs": job.holdout_langs},
            "summary": s,
        })),
    };
    manifest.write(out)
}

/// `to` relative to `from` when both share a parent directory chain, else `to` as given.
fn relative_dir(from: &Path, to: &Path) -> PathBuf {
    let (Ok(from), Ok(to)) = (from.canonicalize(), to.canonicalize()) else {
        return to.to_path_buf();
    };
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in common..from.components().count() {
        rel.push("..");
    }
    for c in to.components().skip(common) {
        rel.push(c);
    }
    rel
}
