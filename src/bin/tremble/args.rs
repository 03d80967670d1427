//! Command-line arguments (clap derive). Parsing only; no behaviour.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tremble::records::Format;

/// Flags prompt injections, jailbreaks and adversarial inputs before they reach an LLM.
#[derive(Debug, Parser)]
#[command(name = "tremble", version, about, propagate_version = true)]
pub struct Cli {
    /// Log pipeline stages with their timings to stderr.
    #[arg(long, global = true)]
    pub trace: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score records and write one JSONL verdict per record, in input order.
    Score(ScoreArgs),
    /// Train a detector model on labelled JSONL (fine-tunes the top encoder layers and a head).
    Train(crate::train::TrainArgs),
    /// Evaluate a model on labelled JSONL: ROC AUC, recall at fixed FPR, per-source tables, reports.
    Eval(crate::eval::EvalArgs),
    /// Evasion matrix: apply evasion transforms to sampled attack and benign rows of labelled
    /// JSONL and report detection and FPR with and without normalization.
    Evasion(crate::evasion::EvasionArgs),
    /// Fit the fusion of the classifier score with the perturbation-sensitivity check on the
    /// calibration split of the model's training data, and store it in the model manifest.
    Fuse(crate::fuse::FuseArgs),
    /// Fit the rule of the LM-surprise signal (--lm) on the model's training data and store it
    /// in the model manifest.
    FitLm(crate::fit_lm::FitLmArgs),
}

/// Options shared by every command that loads a detector.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Detector model directory [default: models/tremble-minilm-v1, or $TREMBLE_MODEL_DIR].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Base encoder directory, overriding the one the model's manifest names.
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// strict, balanced, permissive, or a probability in [0, 1].
    #[arg(long, default_value = "balanced")]
    pub threshold: String,
    /// Token windows per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Most token windows scored per record (the verdict says when a record had more).
    #[arg(long, default_value_t = 64)]
    pub max_windows: usize,
    /// Score only the raw text: no decoded or folded views (obfuscation goes unseen).
    #[arg(long)]
    pub no_normalize: bool,
    /// Most extra views (decoded channels, folded text, guessed inverses) scored per record.
    #[arg(long, default_value_t = tremble::normalize::DEFAULT_MAX_VIEWS)]
    pub max_views: usize,
    /// Bytes of a record that are scored; a longer record is cut there and flagged as
    /// resource abuse.
    #[arg(long, default_value_t = tremble::detector::DEFAULT_MAX_BYTES)]
    pub max_bytes: usize,
    /// Perturbation-sensitivity check: auto (records whose score is in the uncertainty band
    /// or that show obfuscation), always, or never.
    #[arg(long, default_value = "auto", value_name = "POLICY")]
    pub perturb: String,
    /// Perturbed copies scored per checked record.
    #[arg(long, default_value_t = tremble::signals::sensitivity::DEFAULT_COPIES)]
    pub perturb_copies: usize,
    /// Edit rate of each perturbed copy (share of characters or words edited).
    #[arg(long, default_value_t = tremble::signals::sensitivity::DEFAULT_RATE)]
    pub perturb_rate: f64,
    /// Add the LM-surprise signal (a small causal LM reads each record; catches optimized
    /// gibberish suffixes; ~0.15-0.45 s per record on 2 CPU cores). Needs the LM files from
    /// scripts/setup.sh and a model with an lm_surprise rule.
    #[arg(long)]
    pub lm: bool,
    /// LM directory, overriding the one the model's rule names.
    #[arg(long, value_name = "DIR")]
    pub lm_dir: Option<PathBuf>,
    /// Score every input with the English model, also text in other languages (by default
    /// such text goes to the multilingual model the model's manifest names, if any).
    #[arg(long)]
    pub no_route: bool,
    /// Arithmetic of the encoder's matmuls: f32, bf16 (about 1.5x faster on CPUs with
    /// AVX512-BF16) or int8 (about 2x, AVX512-VNNI); see the README's Performance section for
    /// their accuracy cost.
    #[arg(long, default_value = "f32", value_name = "PRECISION")]
    pub precision: String,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Input files; `-` (or none) reads standard input.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// JSONL field that holds the text.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// CSV column that holds the text.
    #[arg(long, default_value = "text")]
    pub column: String,
    /// Longer input lines (CSV fields) become error records without being held in memory.
    #[arg(long, value_name = "BYTES", default_value_t = tremble::records::DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    /// Write verdicts here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}
