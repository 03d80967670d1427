//! The LM-surprise signal on the real SmolLM2-135M (when `scripts/setup.sh` has fetched it):
//! features of a batch of records cut to exactly 128 tokens, as `--lm` computes them
//! (tokenize, batched forward, per-token surprise, summary), at batch 8 and 32.

use std::path::Path;
use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tremble::manifest::FetchManifest;
use tremble::signals::lm_surprise::LmSurprise;

const TOKENS: usize = 128;

fn load() -> Option<LmSurprise> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let loaded = FetchManifest::read(&root.join("models/smollm2-135m-instruct.manifest.json"))
        .and_then(|m| LmSurprise::load(&root.join(&m.dir), &m.files, TOKENS, &Device::Cpu));
    match loaded {
        Ok(lm) => Some(lm),
        Err(e) => {
            eprintln!("skipping LM benches: {e}");
            None
        }
    }
}

/// Distinct records longer than 128 tokens (the LM reads the last 128 of each).
fn records(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut s = format!("Record {i}: ");
            for k in 0..60 {
                s.push_str(
                    [
                        "the ", "report ", "says ", "revenue ", "grew ", "in ", "spring, ",
                    ][(i + k * 3) % 7],
                );
                s.push_str(&format!("{} ", (i * 31 + k * 17) % 997));
            }
            s
        })
        .collect()
}

fn lm_features(c: &mut Criterion) {
    let Some(lm) = load() else { return };
    let mut g = c.benchmark_group("cpu_lm_surprise");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    for b in [8usize, 32] {
        let texts = records(b);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert!(lm
            .features(&refs)
            .unwrap()
            .iter()
            .all(|f| f.tokens == TOKENS));
        g.throughput(Throughput::Elements((b * TOKENS) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{b}x{TOKENS}")),
            &(),
            |bench, _| bench.iter(|| lm.features(&refs).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, lm_features);
