//! The whole detector (`score_batch`: normalizer, tokenizer, windows, encoder, head) at batch
//! × tokens-per-record shapes, in f32 and bf16, and the perturbation check's cost at K copies.
//! Skipped, with a message, when the shipped model or its base is missing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tremble::models::bert::Precision;
use tremble::signals::sensitivity::PerturbPolicy;
use tremble::{Detector, DeviceChoice};

fn detector(precision: Precision, policy: PerturbPolicy, copies: usize) -> Option<Detector> {
    tremble::alloc::keep_freed_buffers();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tremble-minilm-v1");
    let built = Detector::builder()
        .model_dir(&dir)
        .device(DeviceChoice::Cpu)
        .batch_size(32)
        .route(false)
        .precision(precision)
        .perturb(policy)
        .perturb_copies(copies.max(1))
        .build();
    match built {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping detector benches ({precision:?}): {e}");
            None
        }
    }
}

/// `n` records of about `tokens` word-piece tokens each (common English words, one token
/// each; [CLS] and [SEP] included), different per record.
fn records(n: usize, tokens: usize) -> Vec<String> {
    const WORDS: [&str; 16] = [
        "the", "report", "was", "sent", "to", "our", "team", "after", "a", "long", "meeting",
        "about", "budget", "and", "travel", "plans",
    ];
    (0..n)
        .map(|r| {
            (0..tokens.saturating_sub(2))
                .map(|i| WORDS[(i * 7 + r * 3) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn score_batch(c: &mut Criterion) {
    let Some(f32_detector) = detector(Precision::F32, PerturbPolicy::Never, 1) else {
        return;
    };
    let bf16 = tremble::ops::bf16_supported()
        .then(|| detector(Precision::Bf16, PerturbPolicy::Never, 1))
        .flatten();
    let int8 = tremble::ops::int8_supported()
        .then(|| detector(Precision::Int8, PerturbPolicy::Never, 1))
        .flatten();
    let mut g = c.benchmark_group("cpu_score_batch");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for b in [1usize, 8, 32] {
        for t in [32usize, 128, 512] {
            let texts = records(b, t);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            g.throughput(Throughput::Elements((b * t) as u64));
            let mut run = |name: &str, d: &Detector| {
                g.bench_with_input(
                    BenchmarkId::new(name, format!("{b}x{t}")),
                    &refs,
                    |bn, r| bn.iter(|| d.score_batch(black_box(r)).unwrap()),
                );
            };
            run("f32", &f32_detector);
            for (name, d) in [("bf16", &bf16), ("int8", &int8)] {
                if let Some(d) = d {
                    run(name, d);
                }
            }
        }
    }
    g.finish();
}

/// Batch 8 × 128 tokens with the check on every record (K = 0: the check off).
fn perturb_check(c: &mut Criterion) {
    let texts = records(8, 128);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("cpu_perturb_check");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(8 * 128));
    for k in [0usize, 4, 8, 16] {
        let policy = match k {
            0 => PerturbPolicy::Never,
            _ => PerturbPolicy::Always,
        };
        let Some(d) = detector(Precision::F32, policy, k) else {
            return;
        };
        g.bench_with_input(BenchmarkId::new("k", k), &refs, |bn, r| {
            bn.iter(|| d.score_batch(black_box(r)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, score_batch, perturb_check);
