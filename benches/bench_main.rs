//! `cargo bench`: criterion groups, device-prefixed names, throughput in tokens.

mod benchmarks;

criterion::criterion_main!(benchmarks::model::benches);
