//! Central finite differences in f64 against the closed-form backward, for `dx`,
//! `dgamma` and `dbeta`, on random shapes, both layouts and both modes.
//!
//! The error of one element is `|numeric - analytic| / max(|numeric| + |analytic|, f)`,
//! with the floor `f = 1e-6 * max|analytic|` so that elements whose gradient is zero up to
//! rounding do not divide by zero; the test requires the largest below 1e-7.
//!
//! Batches have at least 3 examples: with 2 values per channel the normalized output is
//! `+-1` whatever `x` is, up to `eps`, so its gradient is of the order of `eps` and a
//! finite difference would measure only rounding.

mod common;

use batchnorm::bn::{BatchNorm, BatchNormConfig, Layout};
use common::{TestRng, random_layer, random_shape};

const H: f64 = 1e-4;

fn output(bn: &mut BatchNorm<f64>, x: &[f64], shape: &[usize], layout: Layout) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    bn.forward(x, shape, layout, &mut y).unwrap();
    y
}

/// The central difference of the loss `sum(y * r)` between two outputs, taking the
/// difference element-wise first so that the sum does not cancel.
fn slope(yp: &[f64], ym: &[f64], r: &[f64]) -> f64 {
    yp.iter()
        .zip(ym)
        .zip(r)
        .map(|((p, m), r)| (p - m) * r)
        .sum::<f64>()
        / (2.0 * H)
}

fn max_rel_error(numeric: &[f64], analytic: &[f64]) -> f64 {
    let scale = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    numeric
        .iter()
        .zip(analytic)
        .map(|(n, a)| (n - a).abs() / (n.abs() + a.abs()).max(1e-6 * scale).max(1e-300))
        .fold(0.0, f64::max)
}

fn check(seed: u64, layout: Layout, training: bool, track: bool) {
    let mut rng = TestRng::new(seed);
    let c = rng.range(1, 4);
    let shape = random_shape(&mut rng, c, layout, 3, 5);
    let len: usize = shape.iter().product();
    let config = BatchNormConfig {
        track_running_stats: track,
        ..BatchNormConfig::new(c)
    };
    let mut bn = random_layer(&mut rng, config);
    bn.set_training(training);
    let x: Vec<f64> = rng.normals(len).iter().map(|v| 3.0 * v + 1.0).collect();
    let r = rng.normals(len);

    let mut y = vec![0.0; len];
    let mut dx = vec![0.0; len];
    bn.forward(&x, &shape, layout, &mut y).unwrap();
    bn.backward(&x, &r, &mut dx).unwrap();
    let dgamma = bn.grad_weight().unwrap().to_vec();
    let dbeta = bn.grad_bias().unwrap().to_vec();

    let mut num_dx = vec![0.0; len];
    let mut xp = x.clone();
    for i in 0..len {
        xp[i] = x[i] + H;
        let yp = output(&mut bn, &xp, &shape, layout);
        xp[i] = x[i] - H;
        let ym = output(&mut bn, &xp, &shape, layout);
        xp[i] = x[i];
        num_dx[i] = slope(&yp, &ym, &r);
    }
    let gamma = bn.weight().unwrap().to_vec();
    let beta = bn.bias().unwrap().to_vec();
    let mut num_dgamma = vec![0.0; c];
    let mut num_dbeta = vec![0.0; c];
    for k in 0..c {
        for (param, out) in [(0, &mut num_dgamma), (1, &mut num_dbeta)] {
            let mut values = [gamma.clone(), beta.clone()];
            values[param][k] += H;
            bn.set_affine(&values[0], &values[1]).unwrap();
            let yp = output(&mut bn, &x, &shape, layout);
            values[param][k] -= 2.0 * H;
            bn.set_affine(&values[0], &values[1]).unwrap();
            let ym = output(&mut bn, &x, &shape, layout);
            out[k] = slope(&yp, &ym, &r);
        }
        bn.set_affine(&gamma, &beta).unwrap();
    }
    let what = format!("seed {seed} shape {shape:?} {layout:?} training={training} track={track}");
    for (name, n, a) in [
        ("dx", &num_dx, &dx),
        ("dgamma", &num_dgamma, &dgamma),
        ("dbeta", &num_dbeta, &dbeta),
    ] {
        let err = max_rel_error(n, a);
        assert!(err < 1e-7, "{name}: max relative error {err:.2e} ({what})");
    }
}

#[test]
fn gradients_match_finite_differences() {
    for seed in 0..24 {
        for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
            check(seed, layout, true, true);
            check(seed, layout, false, true);
            check(seed, layout, false, false);
        }
    }
}
