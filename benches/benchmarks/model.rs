//! Encoder forward of the real all-MiniLM-L6-v2 (when `scripts/setup.sh` has fetched it) at
//! batch × tokens shapes, timed with `iter_custom` so the clock stops after the outputs exist.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tremble::models::bert::{mean_pool, BertConfig, BertModel};

fn load() -> Option<BertModel> {
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

fn encoder(c: &mut Criterion) {
    let Some(model) = load() else { return };
    let mut g = c.benchmark_group("cpu_encoder_forward");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for &(b, t) in &[(1usize, 32usize), (1, 128), (8, 128), (32, 128)] {
        let ids: Vec<u32> = (0..b * t)
            .map(|i| 1000 + (i as u32 * 7919) % 20000)
            .collect();
        let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
        let mask = ids.ones_like().unwrap();
        g.throughput(Throughput::Elements((b * t) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{b}x{t}")),
            &(),
            |bench, _| {
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let h = model.forward(&ids, &mask).unwrap();
                        let _ = mean_pool(&h, &mask).unwrap().to_vec2::<f32>().unwrap();
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, encoder);
