//! Criterion bench of one training step's matrix products on the BN paper's network
//! (784-100-100-100-10, batch 60, `f32`): the `Linear` layers' own row kernels against
//! the same eleven products through the `gemm` crate (`nn::gemm`). The README's choice of
//! the row kernels for the network rests on this comparison; rerun it with
//! `cargo bench --bench products`.
//!
//! The input has half of its values zero, as Fashion-MNIST's images do, which the first
//! layer's row kernels skip.

use std::hint::black_box;

use batchnorm::nn::Linear;
use batchnorm::nn::gemm::{matmul, matmul_a_bt, matmul_at_b};
use criterion::{Criterion, criterion_group, criterion_main};

const BATCH: usize = 60;
const WIDTHS: [usize; 5] = [784, 100, 100, 100, 10];

/// Deterministic values in `[-0.5, 0.5)`.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 * 1e-3 - 0.5)
        .collect()
}

/// Per layer `l`: its input `[BATCH, WIDTHS[l]]` (the first half zeros, as image pixels
/// are), output and output gradient `[BATCH, WIDTHS[l + 1]]`, and the input gradient.
struct Buffers {
    x: Vec<Vec<f32>>,
    y: Vec<Vec<f32>>,
    dy: Vec<Vec<f32>>,
    dx: Vec<Vec<f32>>,
}

fn buffers() -> Buffers {
    let layers = WIDTHS.len() - 1;
    let mut x: Vec<Vec<f32>> = (0..layers).map(|l| values(BATCH * WIDTHS[l], l)).collect();
    for (i, v) in x[0].iter_mut().enumerate() {
        if (i * 2654435761) % 7 < 3 || *v < 0.0 {
            *v = 0.0;
        }
    }
    let zero_share = x[0].iter().filter(|&&v| v == 0.0).count() as f64 / x[0].len() as f64;
    assert!((0.4..0.8).contains(&zero_share), "zero share {zero_share}");
    Buffers {
        x,
        y: (0..layers).map(|l| vec![0.0; BATCH * WIDTHS[l + 1]]).collect(),
        dy: (0..layers)
            .map(|l| values(BATCH * WIDTHS[l + 1], 10 + l))
            .collect(),
        dx: (0..layers).map(|l| vec![0.0; BATCH * WIDTHS[l]]).collect(),
    }
}

fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("paper_network_step_products");
    group.sample_size(50);
    let layers = WIDTHS.len() - 1;

    let mut b = buffers();
    let mut linears: Vec<Linear<f32>> = (0..layers)
        .map(|l| {
            let mut lin = Linear::new(WIDTHS[l], WIDTHS[l + 1], l + 1 == layers, l == 0).expect("sizes");
            for (i, w) in lin.weight_mut().iter_mut().enumerate() {
                *w = ((i * 31) % 997) as f32 * 1e-4 - 0.05;
            }
            lin
        })
        .collect();
    group.bench_function("row_kernels", |bench| {
        bench.iter(|| {
            for (l, lin) in linears.iter_mut().enumerate() {
                lin.forward(black_box(&b.x[l]), BATCH, &mut b.y[l]);
            }
            for (l, lin) in linears.iter_mut().enumerate().rev() {
                let dx = (l > 0).then_some(&mut b.dx[l][..]);
                lin.backward(&b.x[l], black_box(&b.dy[l]), BATCH, dx);
            }
        })
    });

    let mut b = buffers();
    let weights: Vec<Vec<f32>> = (0..layers)
        .map(|l| values(WIDTHS[l + 1] * WIDTHS[l], 20 + l))
        .collect();
    let mut grads: Vec<Vec<f32>> = weights.iter().map(|w| vec![0.0; w.len()]).collect();
    group.bench_function("gemm_crate", |bench| {
        bench.iter(|| {
            for l in 0..layers {
                let (inp, out) = (WIDTHS[l], WIDTHS[l + 1]);
                matmul_a_bt(
                    BATCH,
                    inp,
                    out,
                    black_box(&b.x[l]),
                    &weights[l],
                    &mut b.y[l],
                    false,
                );
            }
            for l in (0..layers).rev() {
                let (inp, out) = (WIDTHS[l], WIDTHS[l + 1]);
                matmul_at_b(
                    out,
                    BATCH,
                    inp,
                    black_box(&b.dy[l]),
                    &b.x[l],
                    &mut grads[l],
                    false,
                );
                if l > 0 {
                    matmul(BATCH, out, inp, &b.dy[l], &weights[l], &mut b.dx[l], false);
                }
            }
        })
    });
    group.finish();
}

// Without plots: criterion draws its text through plotters, which this crate builds
// without system fonts (it embeds its own for the lab), and the drawing panics.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = products
}
criterion_main!(benches);
