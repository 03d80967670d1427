//! `tremble train`: argument mapping and progress display around `tremble::train::run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tremble::models::base::BaseFormat;
use tremble::train::augment::SpliceConfig;
use tremble::train::data::SampleCaps;
use tremble::train::evade::EvasionConfig;
use tremble::train::trainer::TrainConfig;
use tremble::train::{Progress, TrainJob};

/// Where the default base, all-MiniLM-L6-v2, can be fetched from.
const DEFAULT_HF_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Labelled JSONL (text, label, source, group…); repeat to add your own data.
    #[arg(long = "data", required = true, value_name = "FILE")]
    pub data: Vec<PathBuf>,
    /// Where to write the model directory.
    #[arg(long, default_value = "models/tremble-minilm-v1", value_name = "DIR")]
    pub out: PathBuf,
    /// Base encoder directory: config.json, tokenizer.json and model.safetensors, or
    /// tokenizer.json and an E5S1 blob e5-small-q4.bin (models/multilingual-e5-small).
    #[arg(long, default_value = "models/all-MiniLM-L6-v2", value_name = "DIR")]
    pub base: PathBuf,
    /// Hugging Face repo id of the base, recorded so the model can fetch it elsewhere ("" for
    /// none) [default: sentence-transformers/all-MiniLM-L6-v2 for a safetensors base, none for
    /// an E5S1 base, whose blob only scripts/setup.sh fetches].
    #[arg(long, value_name = "REPO")]
    pub hf_repo: Option<String>,
    /// Text whose tokens open every window, in training and (recorded in the model) in scoring
    /// ("" for none) [default: "query: " for an E5S1 base, none for a safetensors base].
    #[arg(long, value_name = "TEXT")]
    pub input_prefix: Option<String>,
    /// Model name [default: the output directory's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Cache of frozen-layer activations and checkpoints (reused and resumed across runs).
    #[arg(long, default_value = ".cache/train", value_name = "DIR")]
    pub cache_dir: PathBuf,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Top encoder layers to fine-tune (0 = head only).
    #[arg(long, default_value_t = 1)]
    pub train_layers: usize,
    /// Width of a hidden layer in the head (0 = linear).
    #[arg(long, default_value_t = 0)]
    pub head_hidden: usize,
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f64,
    /// Rows per optimizer step.
    #[arg(long, default_value_t = 32)]
    pub batch_rows: usize,
    /// Learning rate of the head.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning rate of the fine-tuned layers.
    #[arg(long, default_value_t = 5e-5)]
    pub lr_layers: f64,
    #[arg(long, default_value_t = 0.3)]
    pub category_weight: f64,
    #[arg(long, default_value_t = 2)]
    pub max_rows_per_group: usize,
    /// Per (source, label).
    #[arg(long, default_value_t = 1500)]
    pub max_rows_per_source: usize,
    /// Long benign rows keep this many evenly spaced windows for training.
    #[arg(long, default_value_t = 3)]
    pub max_windows_per_row: usize,
    /// Long attack rows keep this many (an injection may sit in any window of a document).
    #[arg(long, default_value_t = 8)]
    pub max_windows_per_attack_row: usize,
    /// Training rows made by splicing short attack texts of the training split into its benign
    /// documents (start, middle or end); 0 turns the augmentation off.
    #[arg(long, default_value_t = 2000)]
    pub splice_rows: usize,
    /// Training rows rewritten by evasion techniques (encodings, ciphers, leetspeak, spacing,
    /// typos, TokenBreak), half benign and half attacks, each trained on the texts the
    /// detector would score for it; 0 turns the augmentation off.
    #[arg(long, default_value_t = 0)]
    pub evasion_rows: usize,
    /// Fraction of groups held out for calibration.
    #[arg(long, default_value_t = 0.15)]
    pub calibration_fraction: f64,
    /// Tokens per window (start/end tokens included).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Tokens shared by consecutive windows.
    #[arg(long, default_value_t = 64)]
    pub overlap: usize,
    /// Stop after this many optimizer steps (the model is still calibrated and written).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Stop training after this many minutes (the model is still calibrated and written).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Use at most this many training rows (quick runs).
    #[arg(long)]
    pub limit_rows: Option<usize>,
    /// Languages (the data's `lang` codes, comma-separated) held out as a validation split:
    /// their rows, and every row sharing a template with them (translations included), are
    /// neither trained nor calibrated on; evaluate on them with `tremble eval --holdout`.
    #[arg(long, value_delimiter = ',', value_name = "LANGS")]
    pub holdout_langs: Vec<String>,
}

pub fn run(a: TrainArgs) -> Result<ExitCode> {
    let name = a.name.clone().unwrap_or_else(|| {
        a.out.file_name().map_or_else(
            || "tremble-model".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let base_name = a
        .base
        .file_name()
        .map_or_else(|| "base".into(), |n| n.to_string_lossy().into_owned());
    // An unreadable base is left for the run to report, with the files it expected.
    let e5_base = BaseFormat::detect(&a.base).is_ok_and(|f| f == BaseFormat::E5s1);
    let hf_repo = match a.hf_repo.clone() {
        Some(repo) => Some(repo),
        None if e5_base => None,
        None => Some(DEFAULT_HF_REPO.to_string()),
    };
    let job = TrainJob {
        data: a.data.clone(),
        base_dir: a.base.clone(),
        base_name,
        hf_repo: hf_repo.filter(|s| !s.is_empty()),
        out_dir: a.out.clone(),
        name,
        cache_dir: a.cache_dir.clone(),
        config: TrainConfig {
            seed: a.seed,
            train_layers: a.train_layers,
            head_hidden: a.head_hidden,
            epochs: a.epochs,
            batch_rows: a.batch_rows,
            lr_head: a.lr,
            lr_layers: a.lr_layers,
            category_weight: a.category_weight,
            max_steps: a.max_steps,
            max_minutes: a.max_minutes,
            ..TrainConfig::default()
        },
        window: tremble::tokenize::WindowSpec {
            max_tokens: a.window,
            overlap: a.overlap,
        },
        caps: SampleCaps {
            per_group: a.max_rows_per_group,
            per_source: a.max_rows_per_source,
        },
        max_windows_per_row: a.max_windows_per_row,
        max_windows_per_attack_row: a.max_windows_per_attack_row,
        splice: SpliceConfig {
            rows: a.splice_rows,
            ..SpliceConfig::default()
        },
        evasion: EvasionConfig {
            rows: a.evasion_rows,
            ..EvasionConfig::default()
        },
        calibration_fraction: a.calibration_fraction,
        limit_rows: a.limit_rows,
        input_prefix: a.input_prefix.clone(),
        holdout_langs: a.holdout_langs.clone(),
    };
    let mut display = Display::new();
    let summary =
        tremble::train::run(&job, &mut |p| display.update(p)).context("training failed")?;
    display.bar.finish_and_clear();
    if summary.held_out_rows > 0 {
        eprintln!(
            "held out for validation: {} rows ({})",
            summary.held_out_rows,
            a.holdout_langs.join(", ")
        );
    }
    eprintln!(
        "trained {} steps on {} rows ({} spliced, {} rewritten by evasions; {} windows); calibration split: {} rows, ROC AUC {}",
        summary.steps,
        summary.train_rows,
        summary.spliced_rows,
        summary.evasion_rows,
        summary.windows,
        summary.calibration_rows,
        summary
            .calibration_auc
            .map_or("n/a".into(), |a| format!("{a:.4}"))
    );
    eprintln!(
        "thresholds: strict {:.4}, balanced {:.4}, permissive {:.4}; model written to {}",
        summary.thresholds.strict,
        summary.thresholds.balanced,
        summary.thresholds.permissive,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal; otherwise a line every so often, for logs.
struct Display {
    bar: ProgressBar,
    tty: bool,
    started: Instant,
    last_line: Instant,
    loss: f32,
}

impl Display {
    fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            tty,
            started: Instant::now(),
            last_line: Instant::now(),
            loss: f32::NAN,
        }
    }

    fn update(&mut self, p: Progress) {
        match p {
            Progress::Phase(name) => {
                self.bar.set_style(
                    ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                self.bar.set_message(name.clone());
                self.bar.set_position(0);
                if !self.tty {
                    eprintln!("[{:>6.0}s] {name}", self.started.elapsed().as_secs_f64());
                }
            }
            Progress::Features { done, total } => self.tick(done, total, "windows", None),
            Progress::Step(s) => {
                self.loss = if self.loss.is_nan() {
                    s.loss
                } else {
                    0.98 * self.loss + 0.02 * s.loss
                };
                self.tick(s.step, s.total, "steps", Some(self.loss));
            }
        }
    }

    fn tick(&mut self, done: usize, total: usize, unit: &str, loss: Option<f32>) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        if let Some(l) = loss {
            self.bar.set_message(format!("training (loss {l:.4})"));
        }
        if !self.tty && (self.last_line.elapsed().as_secs() >= 30 || done == total) {
            self.last_line = Instant::now();
            let loss = loss.map_or(String::new(), |l| format!(", loss {l:.4}"));
            eprintln!(
                "[{:>6.0}s] {done}/{total} {unit}{loss}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
