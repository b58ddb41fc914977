//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// The worst violation of `|got - ref| <= tol * (|ref| + max|ref|)` over a tensor, as the
/// ratio `|got - ref| / (|ref| + max|ref|)` (so the check passes when it is `<= tol`).
pub fn max_scaled_error(got: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(got.len(), reference.len(), "length mismatch");
    let max_ref = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(reference)
        .map(|(g, r)| {
            let err = (g - r).abs();
            let scale = r.abs() + max_ref;
            if err == 0.0 {
                0.0
            } else if scale == 0.0 || !err.is_finite() {
                f64::INFINITY
            } else {
                err / scale
            }
        })
        .fold(0.0, f64::max)
}

/// A small deterministic generator (SplitMix64) for test inputs, so tests need no
/// extra dependency and are reproducible.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.normal()).collect()
    }
    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

use batchnorm::bn::{BatchNorm, BatchNormConfig, Layout};

/// A random activation shape of rank 2 to 5 with `c` channels and a batch of `min_n` to
/// `max_dim` examples, in `layout`'s order.
pub fn random_shape(rng: &mut TestRng, c: usize, layout: Layout, min_n: usize, max_dim: usize) -> Vec<usize> {
    let rank = rng.range(2, 5);
    let n = rng.range(min_n, max_dim.max(min_n));
    let spatial: Vec<usize> = (0..rank - 2).map(|_| rng.range(1, max_dim)).collect();
    let mut shape = vec![n];
    match layout {
        Layout::ChannelsFirst => {
            shape.push(c);
            shape.extend(spatial);
        }
        Layout::ChannelsLast => {
            shape.extend(spatial);
            shape.push(c);
        }
    }
    shape
}

/// An f64 layer with random gamma, beta and running statistics.
pub fn random_layer(rng: &mut TestRng, config: BatchNormConfig) -> BatchNorm<f64> {
    let c = config.num_features;
    let mut bn = BatchNorm::<f64>::new(config).unwrap();
    if config.affine {
        let w: Vec<f64> = (0..c).map(|_| 0.5 + rng.uniform()).collect();
        let b = rng.normals(c);
        bn.set_affine(&w, &b).unwrap();
    }
    if config.track_running_stats {
        let m = rng.normals(c);
        let v: Vec<f64> = (0..c).map(|_| 0.5 + rng.uniform()).collect();
        bn.set_running_stats(&m, &v, 3).unwrap();
    }
    bn
}

/// Channel index of every element of a tensor of `shape` in `layout`.
pub fn channel_of(shape: &[usize], layout: Layout) -> Vec<usize> {
    let len: usize = shape.iter().product();
    let c = shape[layout.channel_axis(shape.len())];
    let inner: usize = match layout {
        Layout::ChannelsFirst => shape[2..].iter().product(),
        Layout::ChannelsLast => 1,
    };
    (0..len).map(|i| (i / inner) % c).collect()
}

/// The transform written the plain way, in f64, one channel at a time: the reference
/// the fast kernels are checked against. Returns `(y, dx, dgamma, dbeta)` for batch
/// statistics.
pub fn reference_train(
    x: &[f64],
    dy: &[f64],
    shape: &[usize],
    layout: Layout,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let chan = channel_of(shape, layout);
    let c = gamma.len();
    let mut y = vec![0.0; x.len()];
    let mut dx = vec![0.0; x.len()];
    let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
    for k in 0..c {
        let idx: Vec<usize> = (0..x.len()).filter(|&i| chan[i] == k).collect();
        let m = idx.len() as f64;
        let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
        let inv = 1.0 / (var + eps).sqrt();
        for &i in &idx {
            let xh = (x[i] - mean) * inv;
            y[i] = gamma[k] * xh + beta[k];
            dg[k] += dy[i] * xh;
            db[k] += dy[i];
        }
        for &i in &idx {
            let xh = (x[i] - mean) * inv;
            dx[i] = gamma[k] * inv * (dy[i] - db[k] / m - xh * dg[k] / m);
        }
    }
    (y, dx, dg, db)
}
