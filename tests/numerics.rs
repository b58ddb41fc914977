//! Numerical behaviour: large means and magnitudes in f32, constant channels, inference
//! folding, thread-count independence, and agreement of the fast kernels with a plain
//! reference implementation on awkward shapes.

mod common;

use batchnorm::bn::{BatchNorm, BatchNormConfig, Layout};
use common::{TestRng, max_scaled_error, reference_train};

/// Runs train forward + backward in f32, returns (y, dx) widened to f64.
fn run_f32(x: &[f64], dy: &[f64], shape: &[usize], layout: Layout, c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(c)).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let dy32: Vec<f32> = dy.iter().map(|&v| v as f32).collect();
    let mut y = vec![0.0f32; x.len()];
    let mut dx = vec![0.0f32; x.len()];
    bn.forward(&x32, shape, layout, &mut y).unwrap();
    bn.backward(&x32, &dy32, &mut dx).unwrap();
    (
        y.iter().map(|&v| f64::from(v)).collect(),
        dx.iter().map(|&v| f64::from(v)).collect(),
    )
}

/// `x = offset + spread * N(0, 1)` in f32, normalized and differentiated in f32, must
/// match the exact result (computed in f64 from the same f32 inputs) to 1e-5.
fn check_offset(offset: f64, spread: f64) {
    let mut rng = TestRng::new(7);
    let (n, c) = (256, 3);
    let x: Vec<f64> = (0..n * c)
        .map(|_| f64::from((offset + spread * rng.normal()) as f32))
        .collect();
    let dy: Vec<f64> = rng.normals(n * c).iter().map(|&v| f64::from(v as f32)).collect();
    let (y, dx) = run_f32(&x, &dy, &[n, c], Layout::ChannelsFirst, c);
    let (ry, rdx, _, _) = reference_train(
        &x,
        &dy,
        &[n, c],
        Layout::ChannelsFirst,
        &[1.0; 3],
        &[0.0; 3],
        1e-5,
    );
    let (ey, edx) = (max_scaled_error(&y, &ry), max_scaled_error(&dx, &rdx));
    assert!(
        ey <= 1e-5 && edx <= 1e-5,
        "offset {offset}: y error {ey:.2e}, dx error {edx:.2e}"
    );
}

#[test]
fn large_mean_does_not_cancel_in_f32() {
    check_offset(1e4, 1.0);
    check_offset(-3e6, 1.0);
}

#[test]
fn huge_f32_values_neither_overflow_nor_lose_precision() {
    check_offset(1e18, 1e16);
    check_offset(0.0, 1e18);
    check_offset(3e37, 1e36);
}

#[test]
fn constant_channel_gives_zero_and_finite_gradients() {
    let (n, c) = (10, 2);
    let x: Vec<f32> = (0..n * c)
        .map(|i| if i % 2 == 0 { 4.25 } else { i as f32 })
        .collect();
    let dy: Vec<f32> = (0..n * c).map(|i| (i as f32).sin()).collect();
    let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(c)).unwrap();
    let mut y = vec![1.0f32; n * c];
    let mut dx = vec![0.0f32; n * c];
    bn.forward(&x, &[n, c], Layout::ChannelsFirst, &mut y).unwrap();
    bn.backward(&x, &dy, &mut dx).unwrap();
    for i in (0..n * c).step_by(2) {
        assert_eq!(y[i], 0.0, "constant channel must normalize to beta = 0");
    }
    assert!(dx.iter().all(|v| v.is_finite()));
    assert!(bn.grad_weight().unwrap().iter().all(|v| v.is_finite()));
    assert_eq!(bn.grad_weight().unwrap()[0], 0.0);
    // dx of a constant channel: gamma / sqrt(eps) * (dy - mean(dy)), finite.
    let mean_dy: f32 = (0..n).map(|k| dy[2 * k]).sum::<f32>() / n as f32;
    let expected = (dy[0] - mean_dy) / 1e-5f32.sqrt();
    assert!(
        (dx[0] - expected).abs() <= 1e-3 * expected.abs().max(1.0),
        "{} vs {expected}",
        dx[0]
    );
}

#[test]
fn folded_linear_equals_linear_then_batchnorm() {
    let mut rng = TestRng::new(3);
    let (n, fan_in, out) = (16, 7, 5);
    let mut bn = common::random_layer(&mut rng, BatchNormConfig::new(out));
    bn.set_training(false);
    let w = rng.normals(out * fan_in);
    let b = rng.normals(out);
    let x = rng.normals(n * fan_in);
    let linear = |w: &[f64], b: &[f64]| -> Vec<f64> {
        (0..n * out)
            .map(|i| {
                let (r, o) = (i / out, i % out);
                b[o] + (0..fan_in)
                    .map(|k| x[r * fan_in + k] * w[o * fan_in + k])
                    .sum::<f64>()
            })
            .collect()
    };
    let z = linear(&w, &b);
    let mut expected = vec![0.0; z.len()];
    bn.forward(&z, &[n, out], Layout::ChannelsFirst, &mut expected)
        .unwrap();
    let (wf, bf) = bn.fold_into_linear(&w, fan_in, Some(&b)).unwrap();
    let folded = linear(&wf, &bf);
    assert!(max_scaled_error(&folded, &expected) < 1e-14);
    // A linear layer without bias folds too.
    let z0 = linear(&w, &[0.0; 5]);
    bn.forward(&z0, &[n, out], Layout::ChannelsFirst, &mut expected)
        .unwrap();
    let (wf, bf) = bn.fold_into_linear(&w, fan_in, None).unwrap();
    assert!(max_scaled_error(&linear(&wf, &bf), &expected) < 1e-14);
    // And the affine map itself: y = a * x + b.
    let (a, shift) = bn.inference_affine().unwrap();
    for (i, v) in z0.iter().enumerate() {
        assert!((a[i % out] * v + shift[i % out] - expected[i]).abs() < 1e-12);
    }
}

/// Forward + backward in a pool of `threads` threads; returns the bits of everything.
fn bits_with_threads(threads: usize, x: &[f32], dy: &[f32], shape: &[usize], layout: Layout) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let c = shape[layout.channel_axis(shape.len())];
        let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(c)).unwrap();
        let mut y = vec![0.0f32; x.len()];
        let mut dx = vec![0.0f32; x.len()];
        bn.forward(x, shape, layout, &mut y).unwrap();
        bn.backward(x, dy, &mut dx).unwrap();
        y.iter()
            .chain(&dx)
            .chain(bn.grad_weight().unwrap())
            .chain(bn.grad_bias().unwrap())
            .chain(bn.running_mean().unwrap())
            .chain(bn.running_var().unwrap())
            .map(|v| v.to_bits())
            .collect()
    })
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let mut rng = TestRng::new(11);
    for (shape, layout) in [
        (vec![16, 8, 33, 31], Layout::ChannelsFirst),
        (vec![8, 29, 31, 12], Layout::ChannelsLast),
        (vec![4099, 37], Layout::ChannelsFirst),
        // Large enough (16 MB and more) for the outputs to be written with streaming stores.
        (vec![4, 33, 181, 181], Layout::ChannelsFirst),
        (vec![3, 181, 181, 45], Layout::ChannelsLast),
        // Rows of 4096 columns: reductions in four panels, streamed four rows at a time.
        (vec![1030, 4096], Layout::ChannelsFirst),
    ] {
        let len: usize = shape.iter().product();
        let x: Vec<f32> = rng.normals(len).iter().map(|&v| (5.0 + 2.0 * v) as f32).collect();
        let dy: Vec<f32> = rng.normals(len).iter().map(|&v| v as f32).collect();
        let one = bits_with_threads(1, &x, &dy, &shape, layout);
        for t in [2, 4] {
            assert!(
                one == bits_with_threads(t, &x, &dy, &shape, layout),
                "{shape:?}: {t} threads differ"
            );
        }
    }
}

/// The fast kernels against the plain per-channel reference, in f64, on shapes that hit
/// every code path: tiny N, C = 1, lengths not divisible by the SIMD width, short and
/// long inner runs, and tensors large enough to be split into chunks and threads. The
/// tolerance is the f64 parity tolerance: with 2 values per channel `dx` is of the order
/// of eps and cancels to about 1e-11.
#[test]
fn fast_kernels_match_plain_reference() {
    let mut rng = TestRng::new(5);
    let shapes: Vec<(Vec<usize>, Layout)> = vec![
        (vec![2, 1], Layout::ChannelsFirst),
        (vec![2, 3], Layout::ChannelsLast),
        (vec![3, 1, 1], Layout::ChannelsFirst),
        (vec![5, 7, 3], Layout::ChannelsFirst),
        (vec![5, 3, 7], Layout::ChannelsLast),
        (vec![2, 1, 33], Layout::ChannelsFirst),
        (vec![3, 2, 17, 19], Layout::ChannelsFirst),
        (vec![3, 17, 19, 2], Layout::ChannelsLast),
        (vec![60, 100], Layout::ChannelsFirst),
        (vec![2, 3, 2, 5, 7], Layout::ChannelsFirst),
        (vec![2, 2, 5, 7, 3], Layout::ChannelsLast),
        (vec![1000, 1], Layout::ChannelsFirst),
        (vec![17, 1, 4099], Layout::ChannelsFirst),
        (vec![9, 3, 97, 101], Layout::ChannelsFirst),
        (vec![5, 61, 67, 9], Layout::ChannelsLast),
        (vec![3001, 23], Layout::ChannelsFirst),
        (vec![40, 5, 7, 3], Layout::ChannelsFirst),
        // Rows wider than 256 columns, reduced four rows at a time, with 3 and 2 rows
        // after the last group of four.
        (vec![7, 300], Layout::ChannelsFirst),
        (vec![3, 2, 3, 261], Layout::ChannelsLast),
        // Rows wider than one reduction panel (1024 columns): two panels, the second
        // partial.
        (vec![6, 1500], Layout::ChannelsFirst),
        // Outputs of 16 MB and more, written with streaming stores.
        (vec![3, 5, 381, 383], Layout::ChannelsFirst),
        (vec![2, 263, 271, 15], Layout::ChannelsLast),
    ];
    for (shape, layout) in shapes {
        let c = shape[layout.channel_axis(shape.len())];
        let len: usize = shape.iter().product();
        let x: Vec<f64> = rng.normals(len).iter().map(|v| 2.0 * v - 1.0).collect();
        let dy = rng.normals(len);
        let gamma: Vec<f64> = (0..c).map(|_| 0.5 + rng.uniform()).collect();
        let beta = rng.normals(c);
        let mut bn = BatchNorm::<f64>::new(BatchNormConfig::new(c)).unwrap();
        bn.set_affine(&gamma, &beta).unwrap();
        let mut y = vec![0.0; len];
        let mut dx = vec![0.0; len];
        bn.forward(&x, &shape, layout, &mut y).unwrap();
        bn.backward(&x, &dy, &mut dx).unwrap();
        let (ry, rdx, rdg, rdb) = reference_train(&x, &dy, &shape, layout, &gamma, &beta, 1e-5);
        for (name, got, want) in [
            ("y", &y[..], &ry[..]),
            ("dx", &dx[..], &rdx[..]),
            ("dgamma", bn.grad_weight().unwrap(), &rdg[..]),
            ("dbeta", bn.grad_bias().unwrap(), &rdb[..]),
        ] {
            let err = max_scaled_error(got, want);
            assert!(err < 1e-10, "{shape:?} {layout:?} {name}: error {err:.2e}");
        }
    }
}

/// Distance of `got` from the exact `want` in units of the f32 spacing at `want`, after
/// allowing `slack` of absolute error.
fn f32_ulps(got: f64, want: f64, slack: f64) -> f64 {
    let err = ((got - want).abs() - slack).max(0.0);
    let ulp = f64::from((want as f32).abs().next_up() - (want as f32).abs());
    err / ulp
}

/// The f32 column traversal (`[N, C]` and channels-last tensors), which folds a channel's
/// center into its shift when every mean is within 2^20 standard deviations of zero,
/// stays within one f32 ulp of the exact result, on both sides of that bound, besides an
/// absolute slack for outputs near zero: `dx` sums terms that cancel, and an f64 mean far
/// from zero carries an error of about `2^-52 * |mean|`, so each output may also be off by
/// `2^-40` of its largest value, or `2^-50 * max_z` of it for means `max_z` standard
/// deviations away.
#[test]
fn f32_column_traversal_stays_within_an_ulp() {
    let mut rng = TestRng::new(11);
    let cases: Vec<(Vec<usize>, Layout, f64)> = vec![
        (vec![300, 37], Layout::ChannelsFirst, 1e3),
        (vec![64, 2000], Layout::ChannelsFirst, 1e5),
        (vec![3, 5, 7, 11], Layout::ChannelsLast, 1e4),
        // Rows wider than 256 columns, whose element-wise passes go four rows at a time,
        // with row counts that leave 3, 1 and 2 rows after the last group of four.
        (vec![67, 300], Layout::ChannelsFirst, 1e3),
        (vec![5, 3, 3, 290], Layout::ChannelsLast, 1e2),
        (vec![6, 40, 3, 3], Layout::ChannelsFirst, 1e4),
        // Rows of at most 32 columns, whose moments are taken in one pass per block, over
        // two blocks (8192 rows and 808).
        (vec![9000, 16], Layout::ChannelsFirst, 1e4),
        // An output of 16 MB and more with rows of 2048 columns and more, streamed four
        // rows at a time (the last block ends with a single row).
        (vec![1025, 4096], Layout::ChannelsFirst, 1e3),
        // Past the bound: one channel's mean is 1e7 standard deviations from zero.
        (vec![300, 37], Layout::ChannelsFirst, 1e7),
        (vec![4, 9, 6, 13], Layout::ChannelsLast, 1e7),
    ];
    for (shape, layout, max_z) in cases {
        let c = shape[layout.channel_axis(shape.len())];
        let len: usize = shape.iter().product();
        let offsets: Vec<f64> = (0..c)
            .map(|i| max_z * (i as f64 / (c - 1) as f64) * rng.normal().signum())
            .collect();
        let channel = common::channel_of(&shape, layout);
        let x: Vec<f64> = (0..len)
            .map(|i| f64::from((offsets[channel[i]] + rng.normal()) as f32))
            .collect();
        let dy: Vec<f64> = rng.normals(len).iter().map(|&v| f64::from(v as f32)).collect();
        let (y, dx) = run_f32(&x, &dy, &shape, layout, c);
        let (ry, rdx, _, _) = reference_train(&x, &dy, &shape, layout, &vec![1.0; c], &vec![0.0; c], 1e-5);
        let slack = |r: &[f64]| {
            r.iter().fold(0.0f64, |m, v| m.max(v.abs())) * 2f64.powi(-40).max(2f64.powi(-50) * max_z)
        };
        let (y_slack, dx_slack) = (slack(&ry), slack(&rdx));
        for i in 0..len {
            let (ey, edx) = (f32_ulps(y[i], ry[i], y_slack), f32_ulps(dx[i], rdx[i], dx_slack));
            assert!(
                ey <= 1.0 && edx <= 1.0,
                "{shape:?} {layout:?} max z {max_z}, element {i}: y {ey:.2} ulp, dx {edx:.2} ulp"
            );
        }
    }
}

/// A constant channel far from zero (its mean is 3e11 standard deviations away, with the
/// eps of the variance) is normalized to exactly beta in the f32 column traversal: the
/// center is not folded into the shift there, so `x - mean` is exactly zero.
#[test]
fn f32_constant_channel_far_from_zero_gives_exactly_beta() {
    let (n, c) = (64, 5);
    let x: Vec<f32> = (0..n * c)
        .map(|i| if i % c == 2 { 1e9 } else { (i % 7) as f32 })
        .collect();
    let beta = [0.1f32, -0.2, 0.7, 1.5, 0.0];
    let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(c)).unwrap();
    bn.set_affine(&[1.0; 5], &beta).unwrap();
    let mut y = vec![0.0f32; n * c];
    bn.forward(&x, &[n, c], Layout::ChannelsFirst, &mut y).unwrap();
    for row in y.chunks_exact(c) {
        assert_eq!(row[2], beta[2]);
    }
}
