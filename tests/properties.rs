//! Properties of the transform that hold for any input (proptest).

mod common;

use batchnorm::bn::{BatchNorm, BatchNormConfig, Layout};
use common::{TestRng, channel_of, random_shape};
use proptest::prelude::*;

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::ChannelsFirst), Just(Layout::ChannelsLast)]
}

/// Random data per channel with its own mean and scale.
fn data(rng: &mut TestRng, shape: &[usize], layout: Layout) -> Vec<f64> {
    let c = shape[layout.channel_axis(shape.len())];
    let loc: Vec<f64> = (0..c).map(|_| 10.0 * rng.normal()).collect();
    let scale: Vec<f64> = (0..c).map(|_| 0.1 + 5.0 * rng.uniform()).collect();
    channel_of(shape, layout)
        .into_iter()
        .map(|k| loc[k] + scale[k] * rng.normal())
        .collect()
}

fn forward(bn: &mut BatchNorm<f64>, x: &[f64], shape: &[usize], layout: Layout) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    bn.forward(x, shape, layout, &mut y).unwrap();
    y
}

fn per_channel_stats(v: &[f64], chan: &[usize], c: usize) -> Vec<(f64, f64)> {
    (0..c)
        .map(|k| {
            let vals: Vec<f64> = v
                .iter()
                .zip(chan)
                .filter(|(_, ch)| **ch == k)
                .map(|(x, _)| *x)
                .collect();
            let m = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / m;
            let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / m;
            (mean, var)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// With gamma = 1 and beta = 0 every channel of the output has mean 0 and biased
    /// variance var / (var + eps), which is 1 up to eps.
    #[test]
    fn output_is_standardized(seed in any::<u64>(), c in 1usize..5, layout in layout_strategy()) {
        let mut rng = TestRng::new(seed);
        let shape = random_shape(&mut rng, c, layout, 2, 6);
        let x = data(&mut rng, &shape, layout);
        let mut bn = BatchNorm::<f64>::new(BatchNormConfig::new(c)).unwrap();
        let y = forward(&mut bn, &x, &shape, layout);
        let chan = channel_of(&shape, layout);
        let before = per_channel_stats(&x, &chan, c);
        for (k, (mean, var)) in per_channel_stats(&y, &chan, c).into_iter().enumerate() {
            let expected = before[k].1 / (before[k].1 + 1e-5);
            prop_assert!(mean.abs() < 1e-12, "channel {k}: mean {mean}");
            prop_assert!((var - expected).abs() < 1e-12, "channel {k}: var {var}, expected {expected}");
        }
    }

    /// Channels-last gives the channels-first result, transposed.
    #[test]
    fn channels_last_is_transposed_channels_first(seed in any::<u64>(), c in 1usize..6) {
        let mut rng = TestRng::new(seed);
        let cf_shape = random_shape(&mut rng, c, Layout::ChannelsFirst, 2, 5);
        let x = data(&mut rng, &cf_shape, Layout::ChannelsFirst);
        let dy = rng.normals(x.len());
        let (n, inner) = (cf_shape[0], cf_shape[2..].iter().product::<usize>());
        // channels-first index (o, k, s) -> channels-last index (o, s, k)
        let to_last = |i: usize| {
            let (o, k, s) = (i / (c * inner), (i / inner) % c, i % inner);
            (o * inner + s) * c + k
        };
        let mut x_last = vec![0.0; x.len()];
        let mut dy_last = vec![0.0; x.len()];
        for i in 0..x.len() {
            x_last[to_last(i)] = x[i];
            dy_last[to_last(i)] = dy[i];
        }
        let mut cl_shape = vec![n];
        cl_shape.extend_from_slice(&cf_shape[2..]);
        cl_shape.push(c);

        let run = |x: &[f64], dy: &[f64], shape: &[usize], layout: Layout| {
            let mut bn = BatchNorm::<f64>::new(BatchNormConfig::new(c)).unwrap();
            let y = forward(&mut bn, x, shape, layout);
            let mut dx = vec![0.0; x.len()];
            bn.backward(x, dy, &mut dx).unwrap();
            (y, dx, bn.grad_weight().unwrap().to_vec(), bn.running_var().unwrap().to_vec())
        };
        let (y1, dx1, dg1, rv1) = run(&x, &dy, &cf_shape, Layout::ChannelsFirst);
        let (y2, dx2, dg2, rv2) = run(&x_last, &dy_last, &cl_shape, Layout::ChannelsLast);
        for i in 0..x.len() {
            prop_assert!((y1[i] - y2[to_last(i)]).abs() < 1e-12);
            prop_assert!((dx1[i] - dx2[to_last(i)]).abs() < 1e-12);
        }
        for k in 0..c {
            prop_assert!((dg1[k] - dg2[k]).abs() < 1e-9 * (1.0 + dg1[k].abs()));
            prop_assert!((rv1[k] - rv2[k]).abs() < 1e-12 * (1.0 + rv1[k].abs()));
        }
    }

    /// In training, `x -> a * x + b` per channel (a > 0) leaves the output unchanged
    /// (exactly so as eps -> 0; eps is 1e-12 here).
    #[test]
    fn training_output_is_affine_invariant(seed in any::<u64>(), c in 1usize..5, layout in layout_strategy()) {
        let mut rng = TestRng::new(seed);
        let shape = random_shape(&mut rng, c, layout, 2, 6);
        let x = data(&mut rng, &shape, layout);
        let a: Vec<f64> = (0..c).map(|_| 0.01 + 100.0 * rng.uniform()).collect();
        let b: Vec<f64> = (0..c).map(|_| 100.0 * rng.normal()).collect();
        let chan = channel_of(&shape, layout);
        let x2: Vec<f64> = x.iter().zip(&chan).map(|(v, &k)| a[k] * v + b[k]).collect();
        let eps = 1e-12;
        let config = BatchNormConfig { eps, ..BatchNormConfig::new(c) };
        let y1 = forward(&mut BatchNorm::new(config).unwrap(), &x, &shape, layout);
        let y2 = forward(&mut BatchNorm::new(config).unwrap(), &x2, &shape, layout);
        // The only difference is eps against var and a^2 var: relative eps / min(var).
        let var = per_channel_stats(&x, &chan, c);
        for i in 0..x.len() {
            let k = chan[i];
            let min_var = var[k].1.min(a[k] * a[k] * var[k].1);
            let tol = 1e-10 + y1[i].abs() * eps / min_var;
            prop_assert!((y1[i] - y2[i]).abs() <= tol, "{} vs {}", y1[i], y2[i]);
        }
    }

    /// gamma = sqrt(var_B + eps) and beta = mean_B give back the input (the identity the
    /// learnable scale and shift can represent).
    #[test]
    fn gamma_beta_can_recover_identity(seed in any::<u64>(), c in 1usize..5, layout in layout_strategy()) {
        let mut rng = TestRng::new(seed);
        let shape = random_shape(&mut rng, c, layout, 2, 6);
        let x = data(&mut rng, &shape, layout);
        let chan = channel_of(&shape, layout);
        let stats = per_channel_stats(&x, &chan, c);
        let mut bn = BatchNorm::<f64>::new(BatchNormConfig::new(c)).unwrap();
        let gamma: Vec<f64> = stats.iter().map(|(_, v)| (v + 1e-5).sqrt()).collect();
        let beta: Vec<f64> = stats.iter().map(|(m, _)| *m).collect();
        bn.set_affine(&gamma, &beta).unwrap();
        let y = forward(&mut bn, &x, &shape, layout);
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (p, q) in x.iter().zip(&y) {
            prop_assert!((p - q).abs() <= 1e-13 * scale, "{p} vs {q}");
        }
    }
}
