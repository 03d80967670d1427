//! Routing by language (`tremble::route::route`) on the normalizer bench's 1 KiB inputs, and
//! the shipped detector scoring an English and a Hindi record with routing on and off side by
//! side (when `scripts/setup.sh` has fetched both bases): what routing adds to English input,
//! and what the multilingual path costs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tremble::route::route;
use tremble::signals::sensitivity::PerturbPolicy;
use tremble::{Detector, DeviceChoice};

fn route_1kib(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_route");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, text) in super::normalize::inputs() {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("1KiB", name), &text, |b, text| {
            b.iter(|| route(black_box(text)))
        });
    }
    g.finish();
}

fn detector(route: bool) -> Option<Detector> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let bases = [
        "all-MiniLM-L6-v2/model.safetensors",
        "multilingual-e5-small/e5-small-q4.bin",
    ];
    if !bases.iter().all(|b| root.join(b).is_file()) {
        eprintln!("skipping routed detector benches: run scripts/setup.sh to fetch the bases");
        return None;
    }
    Detector::builder()
        .model_dir(root.join("tremble-minilm-v1"))
        .device(DeviceChoice::Cpu)
        .perturb(PerturbPolicy::Never)
        .route(route)
        .build()
        .ok()
}

fn detector_routes(c: &mut Criterion) {
    let (Some(routed), Some(english)) = (detector(true), detector(false)) else {
        return;
    };
    let prose = "The committee met on Tuesday to review the quarterly budget. After a long \
                 discussion about travel costs, they agreed to postpone the new office until \
                 spring and to publish the minutes by Friday.";
    let hindi = "समिति ने मंगलवार को तिमाही बजट की समीक्षा के लिए बैठक की। यात्रा खर्च पर लंबी \
                 चर्चा के बाद वे नए कार्यालय को वसंत तक टालने पर सहमत हुए।";
    let mut g = c.benchmark_group("cpu_detector_route");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, text) in [("english", prose), ("hindi", hindi)] {
        for (mode, d) in [("routed", &routed), ("english_only", &english)] {
            g.bench_with_input(BenchmarkId::new(mode, name), &text, |b, text| {
                b.iter(|| d.score(black_box(text)).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, route_1kib, detector_routes);
