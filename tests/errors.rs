//! Every bad input gets a typed error whose message names what is wrong, and leaves the
//! layer's parameters, running statistics and counter exactly as they were.

use batchnorm::bn::{BatchNorm, BatchNormConfig, BnError, Layout, Momentum};

type State = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, u64);

fn state(bn: &BatchNorm<f32>) -> State {
    (
        bn.weight().unwrap().to_vec(),
        bn.bias().unwrap().to_vec(),
        bn.running_mean().unwrap().to_vec(),
        bn.running_var().unwrap().to_vec(),
        bn.num_batches_tracked(),
    )
}

/// A layer of 3 channels that has already taken one step, so its state is not the default.
fn trained_layer() -> BatchNorm<f32> {
    let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(3)).unwrap();
    bn.set_affine(&[1.5, 0.5, 2.0], &[0.1, -0.2, 0.3]).unwrap();
    let x: Vec<f32> = (0..12).map(|i| (i * i) as f32 * 0.1).collect();
    let mut y = vec![0.0; 12];
    bn.forward(&x, &[4, 3], Layout::ChannelsFirst, &mut y).unwrap();
    bn
}

/// Runs a forward that must fail; checks the state did not change and returns the error.
fn refused_forward(x: &[f32], shape: &[usize], layout: Layout, y_len: usize) -> (BnError, String) {
    let mut bn = trained_layer();
    let before = state(&bn);
    let mut y = vec![7.0; y_len];
    let err = bn.forward(x, shape, layout, &mut y).unwrap_err();
    assert_eq!(state(&bn), before, "state changed on error {err}");
    assert!(y.iter().all(|v| *v == 7.0), "output written on error {err}");
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn rank_below_two() {
    let (err, msg) = refused_forward(&[1.0, 2.0, 3.0], &[3], Layout::ChannelsFirst, 3);
    assert!(matches!(err, BnError::RankTooLow { .. }));
    assert!(msg.contains("[3]"), "{msg}");
}

#[test]
fn channel_count_mismatch() {
    let (err, msg) = refused_forward(&[0.0; 8], &[2, 4], Layout::ChannelsFirst, 8);
    assert!(
        matches!(
            err,
            BnError::ChannelMismatch {
                expected: 3,
                got: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("[2, 4]") && msg.contains("num_features = 3"),
        "{msg}"
    );
    let (err, _) = refused_forward(&[0.0; 12], &[2, 3, 2], Layout::ChannelsLast, 12);
    assert!(matches!(err, BnError::ChannelMismatch { got: 2, .. }), "{err:?}");
}

#[test]
fn buffer_length_mismatch() {
    let (err, msg) = refused_forward(&[0.0; 11], &[4, 3], Layout::ChannelsFirst, 12);
    assert!(matches!(
        err,
        BnError::LengthMismatch {
            buffer: "x",
            expected: 12,
            got: 11,
            ..
        }
    ));
    assert!(
        msg.contains("11") && msg.contains("12") && msg.contains("[4, 3]"),
        "{msg}"
    );
    let (err, _) = refused_forward(&[0.0; 12], &[4, 3], Layout::ChannelsFirst, 13);
    assert!(matches!(err, BnError::LengthMismatch { buffer: "y", .. }));
}

#[test]
fn shape_overflow() {
    let (err, _) = refused_forward(&[0.0; 3], &[usize::MAX, 3, 2], Layout::ChannelsFirst, 3);
    assert!(matches!(err, BnError::ShapeOverflow { .. }), "{err:?}");
}

#[test]
fn one_value_per_channel_in_training() {
    let (err, msg) = refused_forward(&[1.0, 2.0, 3.0], &[1, 3], Layout::ChannelsFirst, 3);
    assert!(matches!(err, BnError::TooFewValues { per_channel: 1, .. }));
    assert!(
        msg.contains("more than 1 value per channel when training"),
        "{msg}"
    );
    // In evaluation with running statistics one value is fine.
    let mut bn = trained_layer();
    bn.set_training(false);
    let mut y = [0.0; 3];
    bn.forward(&[1.0, 2.0, 3.0], &[1, 3], Layout::ChannelsFirst, &mut y)
        .unwrap();
}

#[test]
fn non_finite_input_in_training() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![1.0f32; 12];
        x[4] = bad;
        let (err, msg) = refused_forward(&x, &[4, 3], Layout::ChannelsFirst, 12);
        assert!(matches!(err, BnError::NonFinite { channel: 1, .. }), "{err:?}");
        assert!(msg.contains("channel 1"), "{msg}");
    }
    // Evaluation does not touch the state, so it passes NaN through.
    let mut bn = trained_layer();
    bn.set_training(false);
    let mut x = vec![1.0f32; 12];
    x[0] = f32::NAN;
    let mut y = vec![0.0; 12];
    bn.forward(&x, &[4, 3], Layout::ChannelsFirst, &mut y).unwrap();
    assert!(y[0].is_nan() && y[1].is_finite());
}

#[test]
fn invalid_config() {
    let base = BatchNormConfig::new(3);
    for eps in [0.0, -1e-5, f64::NAN, f64::INFINITY] {
        let err = BatchNorm::<f32>::new(BatchNormConfig { eps, ..base }).unwrap_err();
        assert!(matches!(err, BnError::InvalidEps(_)), "eps {eps}: {err:?}");
    }
    for m in [-0.1, 1.5, f64::NAN] {
        let err = BatchNorm::<f32>::new(BatchNormConfig {
            momentum: Momentum::Exponential(m),
            ..base
        })
        .unwrap_err();
        assert!(
            matches!(err, BnError::InvalidMomentum(_)),
            "momentum {m}: {err:?}"
        );
        assert!(err.to_string().contains("[0, 1]"));
    }
    for m in [0.0, 1.0] {
        BatchNorm::<f32>::new(BatchNormConfig {
            momentum: Momentum::Exponential(m),
            ..base
        })
        .unwrap();
    }
    assert_eq!(
        BatchNorm::<f32>::new(BatchNormConfig::new(0)).unwrap_err(),
        BnError::ZeroFeatures
    );
    // Channels whose buffers cannot fit are refused (they aborted in the allocator).
    for c in [usize::MAX, usize::MAX / 64, 1 << 50] {
        let err = BatchNorm::<f32>::new(BatchNormConfig::new(c)).unwrap_err();
        assert!(
            matches!(err, BnError::TooManyFeatures { num_features, .. } if num_features == c),
            "{c}: {err}"
        );
    }
}

#[test]
fn invalid_momentum_change_leaves_the_layer_as_it_was() {
    let mut bn = trained_layer();
    let before = state(&bn);
    for m in [-0.1, 1.5, f64::NAN] {
        let err = bn.set_momentum(Momentum::Exponential(m)).unwrap_err();
        assert!(
            matches!(err, BnError::InvalidMomentum(_)),
            "momentum {m}: {err:?}"
        );
        assert_eq!(bn.config().momentum, Momentum::Exponential(0.1));
    }
    assert_eq!(state(&bn), before);
    bn.set_momentum(Momentum::Cumulative).unwrap();
    assert_eq!(bn.config().momentum, Momentum::Cumulative);
    // After a reset, the cumulative average of one batch is that batch's statistics:
    // mean 2.5 and unbiased variance 5/3 of the values 1, 2, 3, 4.
    bn.reset_running_stats();
    assert_eq!(
        (
            bn.running_mean().unwrap(),
            bn.running_var().unwrap(),
            bn.num_batches_tracked()
        ),
        (&[0.0; 3][..], &[1.0; 3][..], 0)
    );
    let x: Vec<f32> = (1..=4).flat_map(|v| [v as f32; 3]).collect();
    let mut y = vec![0.0; 12];
    bn.forward(&x, &[4, 3], Layout::ChannelsFirst, &mut y).unwrap();
    assert_eq!(bn.running_mean().unwrap(), &[2.5; 3]);
    for v in bn.running_var().unwrap() {
        assert!((v - 5.0 / 3.0).abs() < 1e-6, "{v}");
    }
}

#[test]
fn wrong_parameter_lengths() {
    let mut bn = trained_layer();
    let before = state(&bn);
    let err = bn.set_affine(&[1.0; 2], &[0.0; 3]).unwrap_err();
    assert!(matches!(
        err,
        BnError::ParamLength {
            name: "weight",
            expected: 3,
            got: 2
        }
    ));
    let err = bn.set_affine(&[1.0; 3], &[0.0; 4]).unwrap_err();
    assert!(matches!(
        err,
        BnError::ParamLength {
            name: "bias",
            got: 4,
            ..
        }
    ));
    let err = bn.set_running_stats(&[0.0; 3], &[1.0; 5], 9).unwrap_err();
    assert!(matches!(
        err,
        BnError::ParamLength {
            name: "running_var",
            got: 5,
            ..
        }
    ));
    assert!(err.to_string().contains("running_var"));
    let err = bn.set_running_stats(&[0.0; 3], &[1.0, -1.0, 1.0], 9).unwrap_err();
    assert!(matches!(
        err,
        BnError::InvalidStatistic {
            name: "running_var",
            index: 1,
            ..
        }
    ));
    let err = bn
        .set_running_stats(&[f32::NAN, 0.0, 0.0], &[1.0; 3], 9)
        .unwrap_err();
    assert!(matches!(
        err,
        BnError::InvalidStatistic {
            name: "running_mean",
            index: 0,
            ..
        }
    ));
    assert_eq!(state(&bn), before);
}

#[test]
fn backward_misuse() {
    let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(3)).unwrap();
    let mut dx = vec![0.0; 12];
    assert_eq!(
        bn.backward(&[0.0; 12], &[0.0; 12], &mut dx).unwrap_err(),
        BnError::NoForward
    );
    let mut bn = trained_layer();
    let before = state(&bn);
    let err = bn.backward(&[0.0; 12], &[0.0; 10], &mut dx).unwrap_err();
    assert!(
        matches!(
            err,
            BnError::LengthMismatch {
                buffer: "dy",
                got: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let mut short = vec![0.0; 6];
    let err = bn.backward(&[0.0; 12], &[0.0; 12], &mut short).unwrap_err();
    assert!(matches!(err, BnError::LengthMismatch { buffer: "dx", .. }));
    assert_eq!(state(&bn), before);
}

#[test]
fn folding_needs_matching_shapes_and_running_stats() {
    let bn = trained_layer();
    let err = bn.fold_into_linear(&[0.0; 7], 2, None).unwrap_err();
    assert!(matches!(
        err,
        BnError::LengthMismatch {
            buffer: "weight",
            expected: 6,
            ..
        }
    ));
    let err = bn.fold_into_linear(&[0.0; 6], 2, Some(&[0.0; 2])).unwrap_err();
    assert!(matches!(err, BnError::ParamLength { .. }));
    let untracked = BatchNorm::<f32>::new(BatchNormConfig {
        track_running_stats: false,
        ..BatchNormConfig::new(3)
    })
    .unwrap();
    assert!(matches!(
        untracked.inference_affine().unwrap_err(),
        BnError::NotTracking(_)
    ));
}
