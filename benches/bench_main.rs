//! `cargo bench`: criterion groups, device-prefixed names, throughput in tokens (in bytes for
//! the text-only stages such as normalization).

mod benchmarks;

criterion::criterion_main!(
    benchmarks::model::benches,
    benchmarks::detector::benches,
    benchmarks::normalize::benches,
    benchmarks::lm::benches,
    benchmarks::route::benches
);
