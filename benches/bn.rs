//! Criterion benches of the BatchNorm kernels, for development; the project's figures
//! come from `batchnorm bench`, which also times a copy of the same bytes.

use std::hint::black_box;

use batchnorm::bn::{BatchNorm, BatchNormConfig, Layout};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Shapes in memory order with their layout: small, fully connected, convolutional.
const CASES: [(&str, &[usize], Layout); 4] = [
    ("60x100", &[60, 100], Layout::ChannelsFirst),
    ("256x4096", &[256, 4096], Layout::ChannelsFirst),
    ("32x64x56x56", &[32, 64, 56, 56], Layout::ChannelsFirst),
    ("32x56x56x64-nhwc", &[32, 56, 56, 64], Layout::ChannelsLast),
];

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("batchnorm_f32");
    group.sample_size(20);
    for (name, shape, layout) in CASES {
        let len: usize = shape.iter().product();
        let channels = shape[layout.channel_axis(shape.len())];
        let x: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
        let dy: Vec<f32> = (0..len).map(|i| ((i * 31) % 997) as f32 * 1e-3 - 0.5).collect();
        let mut y = vec![0.0f32; len];
        let mut dx = vec![0.0f32; len];
        let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(channels)).expect("valid config");
        group.throughput(Throughput::Bytes((2 * len * 4) as u64));
        group.bench_function(BenchmarkId::new("train_forward", name), |b| {
            bn.set_training(true);
            b.iter(|| bn.forward(black_box(&x), shape, layout, &mut y).expect("forward"))
        });
        group.bench_function(BenchmarkId::new("eval_forward", name), |b| {
            bn.set_training(false);
            b.iter(|| bn.forward(black_box(&x), shape, layout, &mut y).expect("forward"))
        });
        group.throughput(Throughput::Bytes((5 * len * 4) as u64));
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            bn.set_training(true);
            b.iter(|| {
                bn.forward(black_box(&x), shape, layout, &mut y).expect("forward");
                bn.backward(&x, black_box(&dy), &mut dx).expect("backward")
            })
        });
    }
    group.finish();
}

// Without plots: criterion draws its text through plotters, which this crate builds
// without system fonts (it embeds its own for the lab), and the drawing panics.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = kernels
}
criterion_main!(benches);
