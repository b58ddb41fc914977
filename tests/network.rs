//! The network against finite differences, and its numerics and errors.

mod common;

use batchnorm::nn::loss::correct;
use batchnorm::nn::{
    ActivationKind, BiasMode, BnPlacement, Init, Layer, Linear, LossKind, Network, NetworkSpec, NnError,
    ParamKind, Sgd, SgdConfig,
};
use common::TestRng;

fn spec(activation: ActivationKind, bn: BnPlacement, bias: BiasMode) -> NetworkSpec {
    NetworkSpec {
        inputs: 5,
        hidden: vec![6, 4],
        classes: 3,
        activation,
        bn,
        bias,
        init: Init::Glorot,
        init_scale: 1.0,
        ..NetworkSpec::default()
    }
}

/// Gives every BN layer a non-trivial gamma and beta, so their gradients are exercised
/// away from the identity.
fn perturb_bn(net: &mut Network<f64>, rng: &mut TestRng) {
    for layer in net.layers_mut() {
        if let Layer::BatchNorm(bn) = layer {
            let c = bn.num_features();
            let gamma: Vec<f64> = (0..c).map(|_| 0.5 + rng.uniform()).collect();
            let beta: Vec<f64> = rng.normals(c).iter().map(|v| 0.3 * v).collect();
            bn.inner_mut().set_affine(&gamma, &beta).unwrap();
        }
    }
}

fn loss_at(net: &mut Network<f64>, x: &[f64], labels: &[u8], loss: LossKind) -> f64 {
    let logits = net.forward(x, labels.len()).unwrap().to_vec();
    loss.forward(&logits, labels, 3).unwrap()
}

/// Nudges element `j` of parameter number `p` (in `for_each_param` order) by `delta`.
fn nudge(net: &mut Network<f64>, p: usize, j: usize, delta: f64) {
    let mut k = 0;
    net.for_each_param_mut(|_, w, _| {
        if k == p {
            w[j] += delta;
        }
        k += 1;
    });
}

/// Largest relative error between the analytic gradient and a fourth-order central
/// difference, over every parameter element: `|a - n| / max(|a|, |n|, 1e-4)`. The floor
/// keeps gradients that are zero in exact arithmetic (a bias right before BN) from
/// turning rounding noise of ~1e-12 into a large ratio.
fn max_relative_error(spec: &NetworkSpec, loss: LossKind, seed: u64) -> (f64, String) {
    let batch = 8;
    let mut rng = TestRng::new(seed);
    let mut net = Network::<f64>::new(spec, batch, seed).unwrap();
    perturb_bn(&mut net, &mut rng);
    let x = rng.normals(batch * spec.inputs);
    let labels: Vec<u8> = (0..batch).map(|_| rng.range(0, 2) as u8).collect();
    net.forward_backward(&x, &labels, loss).unwrap();
    let mut analytic = Vec::new();
    net.for_each_param(|info, _, g| analytic.push((info, g.to_vec())));

    let h = 1e-4;
    let mut worst = (0.0, String::new());
    for (p, (info, grad)) in analytic.iter().enumerate() {
        for (j, &a) in grad.iter().enumerate() {
            let mut at = |d: f64| {
                nudge(&mut net, p, j, d);
                let l = loss_at(&mut net, &x, &labels, loss);
                nudge(&mut net, p, j, -d);
                l
            };
            let (p2, p1, m1, m2) = (at(2.0 * h), at(h), at(-h), at(-2.0 * h));
            let numeric = (-p2 + 8.0 * p1 - 8.0 * m1 + m2) / (12.0 * h);
            let err = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1e-4);
            if err > worst.0 {
                worst = (
                    err,
                    format!("{}[{j}]: analytic {a:e}, numeric {numeric:e}", info.name()),
                );
            }
        }
    }
    (worst.0, worst.1)
}

#[test]
fn whole_network_gradients_match_finite_differences() {
    let mut seed = 1;
    for bn in [BnPlacement::None, BnPlacement::Before, BnPlacement::After] {
        for activation in [
            ActivationKind::Sigmoid,
            ActivationKind::Relu,
            ActivationKind::Tanh,
            ActivationKind::Identity,
        ] {
            for loss in [LossKind::CrossEntropy, LossKind::Mse] {
                seed += 1;
                let spec = spec(activation, bn, BiasMode::All);
                let (err, at) = max_relative_error(&spec, loss, seed);
                assert!(
                    err < 1e-6,
                    "bn {bn}, {activation}, {loss}: relative error {err:e} at {at}"
                );
            }
        }
    }
}

#[test]
fn every_parameter_kind_is_checked() {
    let net = Network::<f64>::new(
        &spec(ActivationKind::Sigmoid, BnPlacement::Before, BiasMode::All),
        4,
        0,
    )
    .unwrap();
    let mut kinds = Vec::new();
    net.for_each_param(|info, _, _| kinds.push(info.kind));
    for kind in [
        ParamKind::LinearWeight,
        ParamKind::LinearBias,
        ParamKind::BnWeight,
        ParamKind::BnBias,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing from {kinds:?}");
    }
}

#[test]
fn a_bias_before_batchnorm_gets_zero_gradient() {
    let spec = spec(ActivationKind::Sigmoid, BnPlacement::Before, BiasMode::All);
    let mut net = Network::<f64>::new(&spec, 8, 3).unwrap();
    let mut rng = TestRng::new(3);
    let x = rng.normals(8 * 5);
    net.forward_backward(&x, &[0, 1, 2, 0, 1, 2, 0, 1], LossKind::CrossEntropy)
        .unwrap();
    let mut checked = 0;
    net.for_each_param(|info, _, g| {
        if info.kind == ParamKind::LinearBias && info.layer == 0 {
            assert!(g.iter().all(|v| v.abs() < 1e-15), "{g:?}");
            checked += 1;
        }
    });
    assert_eq!(checked, 1);
}

#[test]
fn layer_names_follow_nn_sequential() {
    let net = Network::<f32>::new(
        &NetworkSpec {
            bn: BnPlacement::Before,
            ..NetworkSpec::default()
        },
        60,
        1,
    )
    .unwrap();
    let names: Vec<&str> = net.layers().iter().map(|l| l.torch_name()).collect();
    assert_eq!(
        names,
        [
            "Linear",
            "BatchNorm1d",
            "Sigmoid",
            "Linear",
            "BatchNorm1d",
            "Sigmoid",
            "Linear",
            "BatchNorm1d",
            "Sigmoid",
            "Linear"
        ]
    );
    let mut params = Vec::new();
    net.for_each_param(|info, _, _| params.push((info.name(), info.shape())));
    assert_eq!(params[0], ("0.weight".to_string(), vec![100, 784]));
    assert_eq!(params[1], ("1.weight".to_string(), vec![100]));
    assert_eq!(params.last().unwrap(), &("9.bias".to_string(), vec![10]));
    assert_eq!(net.width(0), 784);
    assert_eq!(net.width(10), 10);
}

#[test]
fn the_same_seed_gives_the_same_weights_and_steps() {
    let spec = NetworkSpec {
        inputs: 20,
        hidden: vec![16, 16],
        bn: BnPlacement::After,
        ..NetworkSpec::default()
    };
    let run = |seed| {
        let mut net = Network::<f32>::new(&spec, 10, seed).unwrap();
        let mut sgd = Sgd::new(
            SgdConfig {
                momentum: 0.9,
                weight_decay: 1e-3,
                ..SgdConfig::default()
            },
            &net,
        )
        .unwrap();
        let mut rng = TestRng::new(5);
        for _ in 0..5 {
            let x: Vec<f32> = rng.normals(10 * 20).iter().map(|&v| v as f32).collect();
            let labels: Vec<u8> = (0..10).map(|_| rng.range(0, 9) as u8).collect();
            net.forward_backward(&x, &labels, LossKind::CrossEntropy).unwrap();
            sgd.step(&mut net);
        }
        let mut bits = Vec::new();
        net.for_each_param(|_, w, _| bits.extend(w.iter().map(|v| v.to_bits())));
        bits
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let logits = [1.0e4f32, 0.0, -1.0e4, 3.0e38, -3.0e38, 0.0];
    let loss = LossKind::CrossEntropy;
    assert_eq!(loss.forward(&logits[..3], &[0], 3).unwrap(), 0.0);
    assert_eq!(loss.forward(&logits[..3], &[1], 3).unwrap(), 1.0e4);
    let l = loss.forward(&logits[3..], &[1], 3).unwrap();
    assert!((l - 6.0e38).abs() / 6.0e38 < 1e-6, "{l}");
    let mut d = [0.0f32; 3];
    loss.backward(&logits[..3], &[1], 3, &mut d).unwrap();
    assert_eq!(d, [1.0, -1.0, 0.0]);
    // The ordinary case against a value computed by hand: log(1 + e + e^2) - 1.
    let l = loss.forward(&[0.0f64, 1.0, 2.0], &[1], 3).unwrap();
    let want = (1.0 + 1f64.exp() + 2f64.exp()).ln() - 1.0;
    assert!((l - want).abs() < 1e-15, "{l} vs {want}");
    assert!(loss.forward(&[0.0f64; 3], &[3], 3).is_err());
    // Row 1 misses its one-hot target by 1 in one of 2 x 2 entries.
    assert_eq!(
        LossKind::Mse
            .forward(&[1.0f64, 0.0, 0.0, 0.0], &[0, 1], 2)
            .unwrap(),
        0.25
    );
}

#[test]
fn accuracy_counts_argmax_and_rejects_nan() {
    let logits = [0.1f32, 0.9, 2.0, -1.0, f32::NAN, 0.0];
    assert_eq!(correct(&logits, &[1, 0, 1], 2), 2);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let spec = spec(ActivationKind::Relu, BnPlacement::Before, BiasMode::Auto);
    let mut net = Network::<f32>::new(&spec, 4, 0).unwrap();
    assert!(matches!(
        net.forward(&[0.0; 25], 5),
        Err(NnError::BatchTooLarge {
            batch: 5,
            capacity: 4
        })
    ));
    assert!(matches!(
        net.forward(&[0.0; 7], 2),
        Err(NnError::InputLength { .. })
    ));
    // BN cannot normalize a training batch of one example.
    let err = net.forward(&[0.0; 5], 1).unwrap_err();
    assert!(matches!(err, NnError::BatchNorm { layer: 1, .. }), "{err}");
    // NaN activations in training are refused by BN, not propagated silently.
    assert!(matches!(
        net.forward(&[f32::NAN; 10], 2),
        Err(NnError::BatchNorm { .. })
    ));
    assert!(matches!(net.backward(&[0.0; 6]), Err(NnError::NoForward)));
    net.forward(&[1.0; 10], 2).unwrap();
    assert!(matches!(
        net.loss_backward(&[0, 7], LossKind::CrossEntropy),
        Err(NnError::LabelOutOfRange { .. })
    ));
    let zero = NetworkSpec {
        hidden: vec![3, 0],
        ..spec.clone()
    };
    let err = Network::<f32>::new(&zero, 4, 0).unwrap_err().to_string();
    assert!(err.contains("hidden layer 2"), "{err}");
    let bad_eps = NetworkSpec { bn_eps: -1.0, ..spec };
    assert!(Network::<f32>::new(&bad_eps, 4, 0).is_err());
    assert!(
        Sgd::new(
            SgdConfig {
                lr: f64::NAN,
                ..SgdConfig::default()
            },
            &net
        )
        .is_err()
    );
}

/// The sparse first layer (zero inputs skipped, examples and inputs in pairs) and the
/// dense one against the definition, with PyTorch's `[out, in]` weight, odd and even
/// sizes, and inputs half of which are exactly zero. Skipping a zero term changes no
/// sum, so both layers agree exactly.
#[test]
fn sparse_and_dense_linear_layers_match_the_definition() {
    let mut rng = TestRng::new(11);
    for (batch, inp, out) in [(1, 5, 3), (7, 13, 100), (60, 33, 17), (65, 8, 130)] {
        let w: Vec<f32> = (0..out * inp).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..out).map(|_| rng.normal() as f32).collect();
        let x: Vec<f32> = (0..batch * inp)
            .map(|i| {
                if i % 3 == 0 || rng.normal() > 0.3 {
                    0.0
                } else {
                    rng.normal() as f32
                }
            })
            .collect();
        let dy: Vec<f32> = (0..batch * out).map(|_| rng.normal() as f32).collect();
        let mut results = Vec::new();
        for sparse in [true, false] {
            let mut l = Linear::<f32>::new(inp, out, true, sparse).unwrap();
            l.set_weight_torch(&w);
            l.bias_mut().unwrap().copy_from_slice(&b);
            let mut y = vec![f32::NAN; batch * out];
            l.forward(&x, batch, &mut y);
            let mut dx = vec![f32::NAN; batch * inp];
            l.backward(&x, &dy, batch, Some(&mut dx));
            let ld = l.weight_stride();
            let grad: Vec<f32> = (0..out * inp)
                .map(|j| l.grad_weight()[(j % inp) * ld + j / inp])
                .collect();
            for n in 0..batch {
                for o in 0..out {
                    let want: f64 = f64::from(b[o])
                        + (0..inp)
                            .map(|k| f64::from(x[n * inp + k]) * f64::from(w[o * inp + k]))
                            .sum::<f64>();
                    let got = f64::from(y[n * out + o]);
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "y[{n}, {o}]: {got} vs {want}"
                    );
                }
                for k in 0..inp {
                    let want: f64 = (0..out)
                        .map(|o| f64::from(dy[n * out + o]) * f64::from(w[o * inp + k]))
                        .sum();
                    let got = f64::from(dx[n * inp + k]);
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "dx[{n}, {k}]");
                }
            }
            for o in 0..out {
                for k in 0..inp {
                    let want: f64 = (0..batch)
                        .map(|n| f64::from(dy[n * out + o]) * f64::from(x[n * inp + k]))
                        .sum();
                    let got = f64::from(grad[o * inp + k]);
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "dW[{o}, {k}]");
                }
            }
            results.push((y, dx, grad, l.grad_bias().unwrap().to_vec()));
        }
        assert!(
            results[0] == results[1],
            "sparse and dense differ at {batch} x {inp} -> {out}"
        );
    }
}

/// Per BN layer, the paper's population statistics (Algorithm 2) computed here from
/// the layer inputs of training-mode forward passes over consecutive batches: the mean
/// of the batch means and `m / (m - 1)` times the mean of the biased batch variances.
fn algorithm_2_stats(
    net: &mut Network<f64>,
    set: &batchnorm::data::Dataset,
    batch: usize,
    batches: usize,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let bn_layers: Vec<usize> = (0..net.layers().len())
        .filter(|&i| matches!(net.layers()[i], Layer::BatchNorm(_)))
        .collect();
    let mut sums: Vec<(Vec<f64>, Vec<f64>)> = bn_layers
        .iter()
        .map(|&i| (vec![0.0; net.width(i)], vec![0.0; net.width(i)]))
        .collect();
    let mut x = vec![0.0; batch * set.dim()];
    for k in 0..batches {
        set.copy_examples(k * batch..(k + 1) * batch, &mut x);
        net.forward(&x, batch).unwrap();
        for (&i, (mean_sum, var_sum)) in bn_layers.iter().zip(&mut sums) {
            let c = net.width(i);
            let a = net.layer_input(i);
            for f in 0..c {
                let column = (0..batch).map(|r| a[r * c + f]);
                let mean = column.clone().sum::<f64>() / batch as f64;
                let var = column.map(|v| (v - mean) * (v - mean)).sum::<f64>() / batch as f64;
                mean_sum[f] += mean;
                var_sum[f] += var;
            }
        }
    }
    let m = batch as f64;
    sums.into_iter()
        .map(|(mean_sum, var_sum)| {
            let mean = mean_sum.iter().map(|s| s / batches as f64).collect();
            let var = var_sum
                .iter()
                .map(|s| s / batches as f64 * m / (m - 1.0))
                .collect();
            (mean, var)
        })
        .collect()
}

/// Every BN layer's running mean, running variance and batch count.
fn running_stats(net: &Network<f64>) -> Vec<(Vec<f64>, Vec<f64>, u64)> {
    net.layers()
        .iter()
        .filter_map(|layer| match layer {
            Layer::BatchNorm(bn) => {
                let bn = bn.inner();
                Some((
                    bn.running_mean()?.to_vec(),
                    bn.running_var()?.to_vec(),
                    bn.num_batches_tracked(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn population_stats_are_the_papers_algorithm_2() {
    let data = batchnorm::data::synthetic::gaussian_classes(120, 10, 5, 3, 4).unwrap();
    let mut rng = TestRng::new(21);
    for bn in [BnPlacement::Before, BnPlacement::After] {
        let mut net = Network::<f64>::new(&spec(ActivationKind::Tanh, bn, BiasMode::All), 40, 3).unwrap();
        perturb_bn(&mut net, &mut rng);
        // A few training forwards leave running averages that are not the population's.
        let mut x = vec![0.0; 20 * 5];
        for k in 0..5 {
            data.train.copy_examples(k * 20..(k + 1) * 20, &mut x);
            net.forward(&x, 20).unwrap();
        }
        let before = running_stats(&net);
        let mut params = Vec::new();
        net.for_each_param(|_, w, _| params.extend_from_slice(w));

        let (batch, batches) = (20, 6);
        let expected = algorithm_2_stats(&mut net.clone(), &data.train, batch, batches);
        net.set_training(false);
        net.estimate_population_stats(&data.train, batch, batches)
            .unwrap();
        assert!(!net.is_training(), "bn {bn}: the mode in force was not restored");
        let after = running_stats(&net);
        assert_eq!(after.len(), 2);
        for (layer, ((mean, var, count), (want_mean, want_var))) in after.iter().zip(&expected).enumerate() {
            for (got, want) in mean.iter().zip(want_mean).chain(var.iter().zip(want_var)) {
                assert!(
                    (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "bn {bn}, BN layer {layer}: {got} against Algorithm 2's {want}"
                );
            }
            assert_eq!(*count, before[layer].2, "the batch count changed");
            assert_ne!(mean, &before[layer].0, "the running mean was not replaced");
        }
        let mut params_after = Vec::new();
        net.for_each_param(|_, w, _| params_after.extend_from_slice(w));
        assert_eq!(params, params_after, "bn {bn}: parameters changed");
        for layer in net.layers() {
            if let Layer::BatchNorm(b) = layer {
                assert_eq!(
                    b.inner().config().momentum,
                    batchnorm::bn::Momentum::Exponential(0.1)
                );
            }
        }
        // The next training forward updates with the exponential momentum again:
        // 0.9 of the population mean plus 0.1 of the batch mean (a cumulative average
        // would weigh the batch 1 / count instead).
        data.train.copy_examples(20..40, &mut x);
        net.set_training(true);
        net.forward(&x, 20).unwrap();
        let first_bn = (0..net.layers().len())
            .find(|&i| matches!(net.layers()[i], Layer::BatchNorm(_)))
            .unwrap();
        let (c, input) = (net.width(first_bn), net.layer_input(first_bn));
        for f in 0..c {
            let batch_mean = (0..20).map(|r| input[r * c + f]).sum::<f64>() / 20.0;
            let want = 0.9 * after[0].0[f] + 0.1 * batch_mean;
            let got = running_stats(&net)[0].0[f];
            assert!(
                (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "{got} against {want}"
            );
        }
        assert_eq!(running_stats(&net)[0].2, before[0].2 + 1);
    }
}

#[test]
fn population_variance_overflowing_f32_is_an_error_that_changes_nothing() {
    let data = batchnorm::data::synthetic::gaussian_classes(100, 10, 5, 3, 4).unwrap();
    let spec = NetworkSpec {
        activation: ActivationKind::Identity,
        ..spec(ActivationKind::Identity, BnPlacement::Before, BiasMode::Auto)
    };
    let mut net = Network::<f32>::new(&spec, 20, 1).unwrap();
    // Batch statistics are computed in f64, so activations near 1e20 give a finite
    // variance (1e40) that overflows the f32 running variance.
    net.for_each_param_mut(|info, w, _| {
        if info.layer == 0 {
            w.iter_mut().for_each(|v| *v *= 1e20);
        }
    });
    let state = |net: &Network<f32>| {
        let mut all = Vec::new();
        for layer in net.layers() {
            if let Layer::BatchNorm(bn) = layer {
                let bn = bn.inner();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                all.push((
                    bits(bn.running_mean().unwrap()),
                    bits(bn.running_var().unwrap()),
                    bn.num_batches_tracked(),
                    bn.config().momentum,
                ));
            }
        }
        all
    };
    let before = state(&net);
    let err = net.estimate_population_stats(&data.train, 20, 5).unwrap_err();
    assert!(
        matches!(
            err,
            NnError::BatchNorm {
                source: batchnorm::bn::BnError::InvalidStatistic { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(state(&net), before);
}

#[test]
fn failed_population_pass_keeps_the_statistics() {
    use batchnorm::data::Dataset;
    let spec = spec(ActivationKind::Sigmoid, BnPlacement::Before, BiasMode::Auto);
    let mut net = Network::<f64>::new(&spec, 10, 1).unwrap();
    let mut rng = TestRng::new(2);
    // A few training forwards, so the statistics are not the initial 0 and 1.
    for _ in 0..3 {
        let x = rng.normals(10 * 5);
        net.forward(&x, 10).unwrap();
    }
    let before = running_stats(&net);
    // The third batch of 10 holds a NaN: the first two update the statistics, then
    // BatchNorm refuses the third and everything must be put back.
    let mut values: Vec<f32> = rng.normals(40 * 5).iter().map(|&v| v as f32).collect();
    values[25 * 5 + 2] = f32::NAN;
    let set = Dataset::new(values, vec![0; 40], 5, 3).unwrap();
    let err = net.estimate_population_stats(&set, 10, 4).unwrap_err();
    assert!(matches!(err, NnError::BatchNorm { layer: 1, .. }), "{err:?}");
    assert_eq!(running_stats(&net), before);
    assert!(net.is_training());
    for layer in net.layers() {
        if let Layer::BatchNorm(bn) = layer {
            assert_eq!(
                bn.inner().config().momentum,
                batchnorm::bn::Momentum::Exponential(0.1)
            );
        }
    }

    let err = net.estimate_population_stats(&set, 10, 0).unwrap_err();
    assert!(matches!(err, NnError::ZeroSize { .. }), "{err:?}");
    let err = net.estimate_population_stats(&set, 10, 5).unwrap_err();
    assert!(
        matches!(
            err,
            NnError::TooFewExamples {
                requested: 50,
                available: 40
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("50 examples are needed"), "{err}");
    let err = net.estimate_population_stats(&set, 11, 1).unwrap_err();
    assert!(matches!(err, NnError::BatchTooLarge { .. }), "{err:?}");
    let err = net.estimate_population_stats(&set, 1, 2).unwrap_err();
    assert!(
        matches!(err, NnError::BatchNorm { .. }),
        "a batch of one: {err:?}"
    );
    assert_eq!(running_stats(&net), before);

    // Without BatchNorm there is nothing to estimate: no pass, no error.
    let plain = NetworkSpec {
        bn: BnPlacement::None,
        ..spec
    };
    let mut net = Network::<f64>::new(&plain, 10, 1).unwrap();
    assert!(!net.has_running_stats());
    net.estimate_population_stats(&set, 10, 4).unwrap();
}
