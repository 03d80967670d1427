//! `tremble score`: stream records in, score them in chunks, write one verdict per record in
//! input order. A chunk that fails as a whole is retried record by record so that one bad
//! record costs only its own verdict.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tremble::records::{read_all, ReadOpts, Record};
use tremble::{Detector, DeviceChoice, Threshold};

use crate::args::{ModelArgs, ScoreArgs};

/// Loads the detector the model options describe.
/// The model directory the arguments name, else the default one (for commands that write
/// into it).
pub fn model_dir(m: &ModelArgs) -> Result<std::path::PathBuf> {
    m.model
        .clone()
        .or_else(tremble::detector::default_model_dir)
        .context("no model directory: pass --model DIR")
}

pub fn load_detector(m: &ModelArgs) -> Result<Detector> {
    let threshold: Threshold = m.threshold.parse()?;
    let device: DeviceChoice = m.device.parse()?;
    let mut b = Detector::builder()
        .device(device)
        .threshold(threshold)
        .batch_size(m.batch_size)
        .max_windows(m.max_windows)
        .normalize(!m.no_normalize)
        .max_views(m.max_views)
        .max_bytes(m.max_bytes)
        .perturb(m.perturb.parse()?)
        .perturb_copies(m.perturb_copies)
        .perturb_rate(m.perturb_rate)
        .lm(m.lm)
        .route(!m.no_route)
        .precision(m.precision.parse().map_err(anyhow::Error::msg)?);
    if let Some(dir) = &m.lm_dir {
        b = b.lm_dir(dir);
    }
    if let Some(dir) = &m.model {
        b = b.model_dir(dir);
    }
    if let Some(dir) = &m.base {
        b = b.base_dir(dir);
    }
    b.build().context("cannot load the detector model")
}

pub fn run(a: ScoreArgs) -> Result<ExitCode> {
    let detector = load_detector(&a.model)?;
    let opts = ReadOpts {
        format: a.format,
        field: a.field.clone(),
        column: a.column.clone(),
        max_line_bytes: a.max_line_bytes,
    };
    let mut records = read_all(&a.inputs, &opts)?;
    let sink: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(
            File::create(p).with_context(|| format!("cannot create output {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, sink);
    let progress = progress_bar(a.no_progress);
    let chunk_len = (a.model.batch_size * 8).max(64);
    let (mut index, mut flagged) = (0usize, false);
    loop {
        let chunk: Vec<Record> = records
            .by_ref()
            .take(chunk_len)
            .collect::<tremble::Result<_>>()?;
        if chunk.is_empty() {
            break;
        }
        for (record, verdict) in chunk.iter().zip(score_chunk(&detector, &chunk)) {
            let line = match verdict {
                Ok(v) => {
                    flagged |= v.flagged;
                    let mut obj = serde_json::to_value(&v)?;
                    obj["index"] = json!(index);
                    obj["error"] = Value::Null;
                    obj
                }
                Err(msg) => {
                    eprintln!("tremble: {}: {msg}", record.origin);
                    json!({"index": index, "score": null, "flagged": null, "category": null,
                           "signals": null, "error": format!("{}: {msg}", record.origin)})
                }
            };
            let mut bytes = serde_json::to_vec(&ordered(line))?;
            bytes.push(b'\n');
            out.write_all(&bytes)?;
            index += 1;
        }
        progress.inc(chunk.len() as u64);
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(if flagged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Verdicts for a chunk: readable records scored together, per record on a batch failure.
fn score_chunk(
    detector: &Detector,
    chunk: &[Record],
) -> Vec<std::result::Result<tremble::Verdict, String>> {
    let texts: Vec<&str> = chunk
        .iter()
        .filter_map(|r| r.text.as_deref().ok())
        .collect();
    let mut batch = match detector.score_batch(&texts) {
        Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(_) => texts
            .iter()
            .map(|t| detector.score(t).map_err(|e| e.to_string()))
            .collect(),
    }
    .into_iter();
    chunk
        .iter()
        .map(|r| match &r.text {
            Ok(_) => batch
                .next()
                .unwrap_or_else(|| Err("internal: verdict missing".into())),
            Err(msg) => Err(msg.clone()),
        })
        .collect()
}

/// Puts `index` first so that records read naturally; the other keys keep serde's order.
fn ordered(v: Value) -> Value {
    let Value::Object(map) = v else { return v };
    let mut out = serde_json::Map::with_capacity(map.len());
    for key in [
        "index",
        "score",
        "flagged",
        "category",
        "threshold",
        "signals",
        "error",
    ] {
        if let Some(val) = map.get(key) {
            out.insert(key.to_string(), val.clone());
        }
    }
    Value::Object(out)
}

pub fn progress_bar(disabled: bool) -> ProgressBar {
    if disabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} records  {per_sec}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}
