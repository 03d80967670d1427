//! Times tremble's classifier (`Detector::classify_windows`) for `scripts/compare-peers.sh`,
//! which runs other runtimes on the same model and inputs and compares.
//!
//! ```text
//! cargo run --release --example peer_harness -- --model models/tremble-minilm-v1 \
//!     --inputs INPUTS.json [--path fp32|bf16|int8] [--batch-size 32] [--warmup 3] [--repeats 20] \
//!     [--out RESULTS.json] [--serve]
//! ```
//!
//! INPUTS.json is either a list of framed windows (lists of token ids with [CLS] and [SEP]),
//! scored in one call and timed as the case `all`, or an object
//! `{"agreement": [[window, ...], ...], "cases": {"name": [window, ...], ...}}`: each agreement
//! batch is scored in one call (so mixed lengths are padded together), each case is one call.
//!
//! The first stdout line is a JSON object with the scores of every agreement batch. Then, by
//! default, every case is timed (`--warmup` discarded calls, `--repeats` timed ones) and the
//! latencies go to `--out` (or stdout). With `--serve` the harness instead reads commands from
//! stdin, so a driver can interleave it with other runtimes without reloading the model:
//! `time NAME N` answers one JSON line with N per-call latencies, `quit` (or EOF) ends.
//! Threads come from rayon's global pool: set `RAYON_NUM_THREADS`.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;
use tremble::{Detector, DeviceChoice};

type Res<T> = Result<T, Box<dyn Error>>;

#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    Plain(Vec<Vec<u32>>),
    Sets {
        #[serde(default)]
        agreement: Vec<Vec<Vec<u32>>>,
        #[serde(default)]
        cases: BTreeMap<String, Vec<Vec<u32>>>,
    },
}

struct Args {
    model: PathBuf,
    inputs: PathBuf,
    /// The `--path` as given (the driver keys its results by it) and the precision it names.
    path: String,
    precision: tremble::Precision,
    batch_size: usize,
    warmup: usize,
    repeats: usize,
    out: Option<PathBuf>,
    serve: bool,
}

const USAGE: &str = "usage: peer_harness --model DIR --inputs FILE [--path fp32|bf16|int8] \
[--batch-size N] [--warmup N] [--repeats N] [--out FILE] [--serve]";

fn parse_args() -> Res<Args> {
    let mut args = Args {
        model: PathBuf::from("models").join(tremble::DEFAULT_MODEL),
        inputs: PathBuf::new(),
        path: "fp32".into(),
        precision: tremble::Precision::F32,
        batch_size: 32,
        warmup: 3,
        repeats: 20,
        out: None,
        serve: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--serve" {
            args.serve = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let count = |v: &str| -> Res<usize> {
            v.parse()
                .map_err(|_| format!("{flag}: expected a count, got {v:?}").into())
        };
        match flag.as_str() {
            "--model" => args.model = value.into(),
            "--inputs" => args.inputs = value.into(),
            "--path" => {
                args.precision = value.parse().map_err(|e| format!("--path: {e}\n{USAGE}"))?;
                args.path = value;
            }
            "--batch-size" => args.batch_size = count(&value)?,
            "--warmup" => args.warmup = count(&value)?,
            "--repeats" => args.repeats = count(&value)?,
            "--out" => args.out = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}").into()),
        }
    }
    if args.inputs.as_os_str().is_empty() {
        return Err(format!("--inputs is required\n{USAGE}").into());
    }
    Ok(args)
}

/// Per-call wall times of `n` calls on one case, in seconds.
fn time_case(detector: &Detector, windows: &[&[u32]], n: usize) -> Res<Vec<f64>> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let out = detector.classify_windows(windows)?;
        std::hint::black_box(&out.attack);
        latencies.push(start.elapsed().as_secs_f64());
    }
    Ok(latencies)
}

fn refs(windows: &[Vec<u32>]) -> Vec<&[u32]> {
    windows.iter().map(Vec::as_slice).collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("peer_harness: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args = parse_args()?;
    // As the tremble binary does: freed tensor buffers stay in the heap for the next batch.
    tremble::alloc::keep_freed_buffers();
    if !args.model.join("tremble.json").is_file() {
        return Err(format!(
            "no model at {} (tremble.json missing): run scripts/setup.sh, or pass --model DIR",
            args.model.display()
        )
        .into());
    }
    let text = std::fs::read_to_string(&args.inputs)
        .map_err(|e| format!("cannot read {}: {e}", args.inputs.display()))?;
    let (agreement, cases) = match serde_json::from_str::<Inputs>(&text).map_err(|e| {
        format!(
            "{}: not a list of windows nor {{agreement, cases}}: {e}",
            args.inputs.display()
        )
    })? {
        Inputs::Plain(windows) => {
            let cases = BTreeMap::from([("all".to_string(), windows.clone())]);
            (vec![windows], cases)
        }
        Inputs::Sets { agreement, cases } => (agreement, cases),
    };
    if let Some(w) = cases.values().find(|w| w.len() > args.batch_size) {
        // A case larger than one forward would time several, not the shape it names.
        return Err(format!(
            "a case has {} windows but --batch-size is {}",
            w.len(),
            args.batch_size
        )
        .into());
    }

    // The multilingual model is not loaded (route off): every window goes to the English
    // encoder, which is what the peers compute.
    let builder = Detector::builder()
        .model_dir(&args.model)
        .device(DeviceChoice::Cpu)
        .route(false)
        .batch_size(args.batch_size);
    let detector = builder.precision(args.precision).build().map_err(|e| {
        format!(
            "cannot load {}: {e} (run scripts/setup.sh to fetch the base encoder)",
            args.model.display()
        )
    })?;
    let threads = rayon::current_num_threads();
    eprintln!(
        "peer_harness: path {}, {threads} rayon threads, batch size {}",
        args.path, args.batch_size
    );

    let mut scores = Vec::with_capacity(agreement.len());
    for batch in &agreement {
        scores.push(detector.classify_windows(&refs(batch))?.attack);
    }
    let mut stdout = std::io::stdout().lock();
    let header = json!({
        "runtime": "tremble",
        "path": args.path,
        "threads": threads,
        "scores": scores,
    });
    writeln!(stdout, "{header}")?;
    stdout.flush()?;

    let cases: BTreeMap<&str, Vec<&[u32]>> =
        cases.iter().map(|(k, v)| (k.as_str(), refs(v))).collect();

    if args.serve {
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                [] => continue,
                ["quit"] => break,
                ["time", name, n] => {
                    let windows = cases
                        .get(name)
                        .ok_or_else(|| format!("unknown case {name:?}"))?;
                    let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                    json!({"case": name, "latencies_s": time_case(&detector, windows, n)?})
                }
                _ => return Err(format!("unknown command {line:?}").into()),
            };
            writeln!(stdout, "{reply}")?;
            stdout.flush()?;
        }
        return Ok(());
    }

    let mut timings = serde_json::Map::new();
    for (name, windows) in &cases {
        time_case(&detector, windows, args.warmup)?;
        let latencies = time_case(&detector, windows, args.repeats)?;
        let tokens: usize = windows.iter().map(|w| w.len()).sum();
        timings.insert(
            name.to_string(),
            json!({"windows": windows.len(), "tokens": tokens, "latencies_s": latencies}),
        );
    }
    let results = json!({
        "runtime": "tremble",
        "path": args.path,
        "threads": threads,
        "warmup": args.warmup,
        "timings": timings,
    });
    match &args.out {
        Some(p) => std::fs::write(p, format!("{results:#}\n"))
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
        None => writeln!(stdout, "{results}")?,
    }
    Ok(())
}
