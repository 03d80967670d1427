//! Encoder forward of the real all-MiniLM-L6-v2 (when `scripts/setup.sh` has fetched it) at
//! batch × tokens shapes, timed with `iter_custom` so the clock stops after the outputs exist.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tremble::models::bert::{BertConfig, BertModel, EncoderOps, Precision};

fn load() -> Option<BertModel> {
    tremble::alloc::keep_freed_buffers();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        eprintln!("skipping encoder benches: run scripts/setup.sh to fetch the base encoder");
        return None;
    }
    let cfg: BertConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    let t = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).ok()?;
    BertModel::load(VarBuilder::from_tensors(t, DType::F32, &Device::Cpu), &cfg).ok()
}

fn ids(b: usize, t: usize) -> Tensor {
    let ids: Vec<u32> = (0..b * t)
        .map(|i| 1000 + (i as u32 * 7919) % 20000)
        .collect();
    Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
}

/// Forward + pooling, with the clock stopped once the pooled rows are on the host.
fn forward(model: &BertModel, ids: &Tensor, mask: &Tensor, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let h = model.forward(ids, mask).unwrap();
        let _ = model.pool(&h, mask).unwrap().to_vec2::<f32>().unwrap();
    }
    start.elapsed()
}

fn encoder(c: &mut Criterion) {
    // What the detector runs: packed f32 weights where the CPU has AVX-512F.
    let Some(model) = load().and_then(|m| m.with_precision(Precision::F32).ok()) else {
        return;
    };
    let reduced = |p: Precision| load().and_then(|m| m.with_precision(p).ok());
    let bf16 = tremble::ops::bf16_supported()
        .then(|| reduced(Precision::Bf16))
        .flatten();
    let int8 = tremble::ops::int8_supported()
        .then(|| reduced(Precision::Int8))
        .flatten();
    let mut g = c.benchmark_group("cpu_encoder_forward");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for &(b, t) in &[(1usize, 32usize), (1, 128), (8, 128), (32, 128), (32, 512)] {
        let ids = ids(b, t);
        let mask = ids.ones_like().unwrap();
        g.throughput(Throughput::Elements((b * t) as u64));
        let models = [
            ("f32", Some(&model)),
            ("bf16", bf16.as_ref()),
            ("int8", int8.as_ref()),
        ];
        for (name, m) in models.into_iter().filter_map(|(n, m)| Some((n, m?))) {
            g.bench_with_input(
                BenchmarkId::new(name, format!("{b}x{t}")),
                &(),
                |bench, _| bench.iter_custom(|iters| forward(m, &ids, &mask, iters)),
            );
        }
    }
    g.finish();
}

/// The comparison: the same weights run on tremble's fused ops and on candle's
/// separate ops, side by side in one group, at batch 32 × 128 tokens (and 8 × 128). A quarter
/// of each batch's rows is padded to half length, as real batches are.
fn fused_vs_separate(c: &mut Criterion) {
    let Some(fused) = load() else { return };
    let Some(separate) = load() else { return };
    let separate = separate.with_ops(EncoderOps::Candle);
    assert_eq!(fused.ops(), EncoderOps::Fused);
    let mut g = c.benchmark_group("cpu_encoder_fused_vs_separate");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for &(b, t) in &[(32usize, 128usize), (8, 128)] {
        let ids = ids(b, t);
        let keep: Vec<u32> = (0..b * t)
            .map(|i| u32::from(i / t % 4 != 3 || i % t < t / 2))
            .collect();
        let mask = Tensor::from_vec(keep, (b, t), &Device::Cpu).unwrap();
        g.throughput(Throughput::Elements((b * t) as u64));
        for (name, model) in [("fused", &fused), ("candle_separate", &separate)] {
            g.bench_with_input(
                BenchmarkId::new(name, format!("{b}x{t}")),
                &(),
                |bench, _| bench.iter_custom(|iters| forward(model, &ids, &mask, iters)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, encoder, fused_vs_separate);
