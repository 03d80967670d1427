//! `tremble eval`: score a labelled JSONL file, print the summary, write the reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::ProgressStyle;
use tremble::eval::attack::AttackConfig;
use tremble::eval::compare::CheckComparison;
use tremble::eval::lm::LmComparison;
use tremble::eval::report::Report;
use tremble::eval::rewrites::{RewrittenComparison, REWRITE_RATE};
use tremble::eval::runner::{
    attack_sample, held_out_langs, refuse_training_data, rewrite_sample, score_examples, utc_date,
};
use tremble::signals::sensitivity::PerturbPolicy;
use tremble::train::data::{in_langs, read_examples};

use crate::args::ModelArgs;
use crate::score::load_detector;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Labelled JSONL (text, label, source, subtype, lang); never the model's training data.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Report directory [default: reports/<model>/<data file stem>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Records per scoring call.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Records scored one at a time for the latency percentiles.
    #[arg(long, default_value_t = 200)]
    pub latency_sample: usize,
    /// Evaluate only the first N records (quick checks; the report says so).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate a seeded random sample of N records, in file order (quicker runs that still
    /// cover every source; the report says so).
    #[arg(long, conflicts_with = "limit")]
    pub sample: Option<usize>,
    /// Flagged dev attacks to run the black-box attack on (with the check on; 0 skips it).
    #[arg(long, default_value_t = 100)]
    pub attack: usize,
    /// Dev attacks rewritten by each adversarial evasion rewrite (with the check on; 0 skips).
    #[arg(long, default_value_t = 200)]
    pub rewrites: usize,
    /// Evaluate on the validation split the model held out of training (`tremble train
    /// --holdout-langs`): only the records in its held-out languages, which may then come
    /// from its training file (their rows and translated twins were never trained on).
    #[arg(long, conflicts_with = "langs")]
    pub holdout: bool,
    /// Evaluate only the records of these languages (the data's `lang` codes, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "LANGS")]
    pub langs: Vec<String>,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: EvalArgs, command_line: String) -> Result<ExitCode> {
    let detector = load_detector(&a.model)?;
    let langs = if a.holdout {
        held_out_langs(&detector)?
    } else {
        refuse_training_data(&detector, &a.data)?;
        a.langs.clone()
    };
    let mut examples =
        read_examples(&a.data).with_context(|| format!("cannot read {}", a.data.display()))?;
    if !langs.is_empty() {
        // The same test training used to hold them out.
        examples.retain(|e| in_langs(&e.lang, &langs));
    }
    if let Some(n) = a.limit {
        examples.truncate(n);
    }
    if let Some(n) = a.sample {
        let mut keep: Vec<usize> = (0..examples.len()).collect();
        tremble::rng::Rng::new(0x005A_3D1E).shuffle(&mut keep);
        keep.truncate(n);
        let mut pick = vec![false; examples.len()];
        for i in keep {
            pick[i] = true;
        }
        examples = examples
            .into_iter()
            .zip(pick)
            .filter_map(|(e, keep)| keep.then_some(e))
            .collect();
    }
    let bar = crate::score::progress_bar(false);
    bar.set_length(examples.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{wide_bar} {pos}/{len} records {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let run = score_examples(
        &detector,
        &examples,
        a.chunk,
        a.latency_sample,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();

    let model = detector.manifest().name.clone();
    let mut stem = data_stem(&a.data);
    if a.holdout {
        stem.push_str("-holdout");
    } else if !langs.is_empty() {
        stem.push_str(&format!("-{}", langs.join("-")));
    }
    let out = a.out.clone().unwrap_or_else(|| report_dir(&model, &stem));
    let mut data_name = match (a.limit, a.sample) {
        (Some(n), _) => format!("{} (first {n} records)", a.data.display()),
        (_, Some(n)) => format!("{} (seeded sample of {n} records)", a.data.display()),
        _ => a.data.display().to_string(),
    };
    if a.holdout {
        data_name.push_str(&format!(", held-out languages {} only", langs.join(", ")));
    } else if !langs.is_empty() {
        data_name.push_str(&format!(", languages {} only", langs.join(", ")));
    }
    let mut report = Report::build(
        &format!("tremble eval — {model} on {stem}"),
        &model,
        &data_name,
        &utc_date(),
        &command_line,
        &run.scored,
        detector.threshold(),
        &a.model.threshold,
        &run.single_latencies_ms,
        run.batch_seconds,
    );
    let settings = detector.perturb_settings();
    let comparison = (settings.policy != PerturbPolicy::Never).then(|| CheckComparison {
        base: &run.base,
        full: &run.scored,
        base_threshold: detector.threshold_for(PerturbPolicy::Never),
        full_threshold: detector.threshold(),
        checked: run.checked,
        base_latency_ms: &run.single_latencies_base_ms,
        full_latency_ms: &run.single_latencies_ms,
        setting: format!(
            "Policy `{}`, {} copies at edit rate {}, {}",
            settings.policy.name(),
            settings.copies,
            settings.rate,
            if detector.manifest().fusion.is_some() {
                "scores fused by the model's fusion"
            } else {
                "model without a fusion (`tremble fuse`): scores unchanged, evidence only"
            }
        ),
    });
    if let Some(c) = &comparison {
        report.extra_sections.push(c.section());
    }
    if let Some(s) = tremble::eval::routes::section(&run.scored, &run.read_by) {
        report.extra_sections.push(s);
    }
    let attack = if comparison.is_some() && a.attack > 0 {
        let bar = crate::score::progress_bar(false);
        bar.set_style(
            ProgressStyle::with_template("{wide_bar} {pos}/{len} attacked {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let s = attack_sample(
            &detector,
            &examples,
            &run.base,
            a.attack,
            AttackConfig::default(),
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        report.extra_sections.push(s.section());
        Some(s)
    } else {
        None
    };
    let rewritten = if comparison.is_some() && a.rewrites > 0 {
        let mut sets = rewrite_sample(&detector, &examples, a.rewrites, 0x2E_3217, &mut |_, _| {})?;
        sets.extend(attack.as_ref().and_then(|s| s.evaded_scores.clone()));
        Some(sets)
    } else {
        None
    };
    let benign = |rows: &[tremble::eval::metrics::Scored]| -> Vec<f32> {
        rows.iter().filter(|r| !r.attack).map(|r| r.score).collect()
    };
    let (base_benign, full_benign) = (benign(&run.base), benign(&run.scored));
    let rewritten = rewritten.as_ref().map(|sets| RewrittenComparison {
        sets,
        base_benign: &base_benign,
        full_benign: &full_benign,
        base_balanced: detector.threshold_for(PerturbPolicy::Never),
        full_balanced: detector.threshold(),
        setting: format!(
            "A seeded sample of {} dev attacks, each rewritten by every word- and \
             character-level evasion rewrite no normalizer undoes (rate {REWRITE_RATE}), plus \
             the black-box attack's evading rewrites",
            a.rewrites
        ),
    });
    if let Some(r) = &rewritten {
        report.extra_sections.push(r.section());
    }
    let lm =
        (detector.lm_enabled() && run.without_lm.len() == run.scored.len()).then(|| LmComparison {
            without: &run.without_lm,
            with: &run.scored,
            threshold: detector.threshold(),
            latency_without_ms: &run.single_latencies_no_lm_ms,
            latency_with_ms: &run.single_latencies_ms,
        });
    if let Some(c) = &lm {
        report.extra_sections.push(c.section());
    }
    write_reports(&out, &report)?;
    print!("{}", report.summary_text());
    if let Some(c) = &comparison {
        print!("{}", c.summary());
    }
    if let Some(s) = &attack {
        print!("{}", s.summary());
    }
    if let Some(r) = &rewritten {
        print!("{}", r.summary());
    }
    if let Some(c) = &lm {
        print!("{}", c.summary());
    }
    eprintln!("reports written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn write_reports(out: &std::path::Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, text) in [
        ("report.md", report.to_markdown()),
        ("report.html", report.to_html()),
        ("roc.svg", report.roc_svg()),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("report.json"), json)
        .with_context(|| format!("cannot write {}", out.join("report.json").display()))
}

/// The data file's name without extension, naming its reports.
pub fn data_stem(data: &std::path::Path) -> String {
    data.file_stem()
        .map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned())
}

/// The default report directory of a model's run on a data set: `reports/<model>/<name>`.
pub fn report_dir(model: &str, name: &str) -> PathBuf {
    PathBuf::from("reports").join(model).join(name)
}
