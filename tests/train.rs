//! The training loop: determinism, bit-identical resume, checkpoints and divergence,
//! on small synthetic data.

use std::collections::{BTreeMap, HashMap};

use batchnorm::data::{Split, synthetic::gaussian_classes};
use batchnorm::nn::checkpoint::{self, CheckpointError};
use batchnorm::nn::{ActivationKind, BnPlacement, Layer, Network, NetworkSpec, SgdConfig};
use batchnorm::train::{
    EvalStats, Evaluation, Observer, Outcome, Sampling, TrainConfig, TrainError, Trainer,
};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

fn data() -> Split {
    gaussian_classes(300, 50, 8, 3, 11).unwrap()
}

fn spec(bn: BnPlacement) -> NetworkSpec {
    NetworkSpec {
        inputs: 8,
        hidden: vec![12, 10],
        classes: 3,
        bn,
        ..NetworkSpec::default()
    }
}

fn config(steps: u64, sampling: Sampling) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 16,
        sgd: SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            decay_bn: false,
        },
        sampling,
        seed: 5,
        eval_every: 10,
        train_eval_size: 100,
        eval_batch: 64,
        ..TrainConfig::default()
    }
}

/// Every bit of the state a run leaves: parameters, BN statistics and counters, momentum.
fn state_bits(t: &Trainer<f32>) -> Vec<u32> {
    let mut bits = Vec::new();
    t.network()
        .for_each_param(|_, w, _| bits.extend(w.iter().map(|v| v.to_bits())));
    for layer in t.network().layers() {
        if let Layer::BatchNorm(bn) = layer {
            let bn = bn.inner();
            bits.extend(bn.running_mean().unwrap().iter().map(|v| v.to_bits()));
            bits.extend(bn.running_var().unwrap().iter().map(|v| v.to_bits()));
            bits.push(bn.num_batches_tracked() as u32);
        }
    }
    for buf in t.sgd().buffers() {
        bits.extend(buf.iter().map(|v| v.to_bits()));
    }
    bits.push(t.step() as u32);
    bits
}

#[test]
fn resume_continues_bit_identically() {
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    for sampling in [Sampling::Random, Sampling::Epochs] {
        for bn in [BnPlacement::Before, BnPlacement::After, BnPlacement::None] {
            let spec = spec(bn);
            // 45 steps of 16 from 300 examples crosses two epoch boundaries.
            let (mut straight, _) =
                batchnorm::train::train::<f32>(&spec, config(45, sampling), &data, &mut ()).unwrap();

            let path = dir.path().join("half.safetensors");
            let first = TrainConfig {
                checkpoint: Some(path.clone()),
                ..config(22, sampling)
            };
            let (half, _) = batchnorm::train::train::<f32>(&spec, first, &data, &mut ()).unwrap();
            assert_eq!(half.step(), 22);
            let mut resumed = Trainer::<f32>::resume(&spec, config(45, sampling), &path).unwrap();
            assert_eq!(resumed.step(), 22);
            resumed.run(&data, &mut ()).unwrap();
            assert_eq!(
                state_bits(&resumed),
                state_bits(&straight),
                "{sampling}, bn {bn}: resumed run differs"
            );
            // And the check can fail: one more step changes the state.
            straight.run(&data, &mut ()).unwrap();
            let mut longer = Trainer::<f32>::resume(&spec, config(46, sampling), &path).unwrap();
            longer.run(&data, &mut ()).unwrap();
            assert_ne!(state_bits(&longer), state_bits(&straight));
        }
    }
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let data = data();
    let spec = spec(BnPlacement::Before);
    let run = |seed| {
        let cfg = TrainConfig {
            seed,
            ..config(30, Sampling::Random)
        };
        let (t, summary) = batchnorm::train::train::<f32>(&spec, cfg, &data, &mut ()).unwrap();
        (state_bits(&t), summary.last_eval.unwrap().test_accuracy)
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3).0, run(4).0);
}

#[test]
fn checkpoint_uses_pytorch_names_and_round_trips() {
    let data = data();
    let spec = spec(BnPlacement::Before);
    let (trainer, _) =
        batchnorm::train::train::<f32>(&spec, config(20, Sampling::Random), &data, &mut ()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    trainer.save_checkpoint(&path).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("optimizer."))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0.weight",
            "1.bias",
            "1.num_batches_tracked",
            "1.running_mean",
            "1.running_var",
            "1.weight",
            "3.weight",
            "4.bias",
            "4.num_batches_tracked",
            "4.running_mean",
            "4.running_var",
            "4.weight",
            "6.bias",
            "6.weight"
        ]
    );
    let t = file.tensor("0.weight").unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::F32, &[12, 8][..]));
    let t = file.tensor("1.num_batches_tracked").unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::I64, &[][..]));
    assert_eq!(i64::from_le_bytes(t.data().try_into().unwrap()), 20);
    let t = file.tensor("optimizer.momentum_buffer.6.weight").unwrap();
    assert_eq!(t.shape(), &[3, 10]);

    let mut fresh = Network::<f32>::new(&spec, 16, 99).unwrap();
    let meta = checkpoint::load(&path, &mut fresh, None).unwrap();
    assert_eq!(meta["step"], "20");
    let bits = |n: &Network<f32>| {
        let mut b = Vec::new();
        n.for_each_param(|_, w, _| b.extend(w.iter().map(|v| v.to_bits())));
        for l in n.layers() {
            if let Layer::BatchNorm(bn) = l {
                b.extend(bn.inner().running_var().unwrap().iter().map(|v| v.to_bits()));
            }
        }
        b
    };
    assert_eq!(bits(&fresh), bits(trainer.network()));
}

#[test]
fn bad_checkpoints_give_clear_errors_and_change_nothing() {
    let data = data();
    let spec = spec(BnPlacement::Before);
    let (trainer, _) =
        batchnorm::train::train::<f32>(&spec, config(10, Sampling::Random), &data, &mut ()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    trainer.save_checkpoint(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut net = Network::<f32>::new(&spec, 16, 1).unwrap();
    let before = net.layers().len();

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 7]).unwrap();
    let err = checkpoint::load(&truncated, &mut net, None).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");

    let missing = dir.path().join("nope.safetensors");
    assert!(matches!(
        checkpoint::load(&missing, &mut net, None),
        Err(CheckpointError::Io { .. })
    ));

    let other = NetworkSpec {
        hidden: vec![12, 11],
        ..spec.clone()
    };
    let mut wrong = Network::<f32>::new(&other, 16, 1).unwrap();
    let err = checkpoint::load(&path, &mut wrong, None).unwrap_err();
    assert!(
        matches!(err, CheckpointError::ArchitectureMismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("8-12-10-3") && err.to_string().contains("8-12-11-3"),
        "{err}"
    );

    let mut as_f64 = Network::<f64>::new(&spec, 16, 1).unwrap();
    let err = checkpoint::load(&path, &mut as_f64, None).unwrap_err();
    assert!(matches!(err, CheckpointError::WrongDtype { .. }), "{err}");

    // A state dict without our metadata (as PyTorch would write) but missing a tensor,
    // and one with a wrong shape.
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let rewrite = |skip: &str, reshape: Option<(&str, Vec<usize>)>| {
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = file
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != skip)
            .map(|(n, t)| match &reshape {
                Some((name, shape)) if *name == n => {
                    let data = &t.data()[..shape.iter().product::<usize>() * 4];
                    let v = safetensors::tensor::TensorView::new(t.dtype(), shape.clone(), data).unwrap();
                    (n, v)
                }
                _ => (n, t),
            })
            .collect();
        let out = dir.path().join("edited.safetensors");
        std::fs::write(
            &out,
            safetensors::serialize(tensors, None::<HashMap<String, String>>).unwrap(),
        )
        .unwrap();
        out
    };
    let err = checkpoint::load(&rewrite("4.running_var", None), &mut net, None).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::MissingTensor { name, .. } if name == "4.running_var"),
        "{err}"
    );
    let err = checkpoint::load(&rewrite("", Some(("3.weight", vec![10, 11]))), &mut net, None).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::WrongShape { name, expected, .. } if name == "3.weight" && expected == &[10, 12]),
        "{err}"
    );
    assert_eq!(net.layers().len(), before);

    // Resuming with another seed would not continue the same run.
    let cfg = TrainConfig {
        seed: 6,
        ..config(20, Sampling::Random)
    };
    let err = Trainer::<f32>::resume(&spec, cfg, &path).unwrap_err();
    assert!(
        matches!(err, TrainError::ResumeMismatch { key: "seed", .. }),
        "{err}"
    );
    // A checkpoint without training metadata cannot be resumed from.
    let mut plain = BTreeMap::new();
    plain.insert("note".to_string(), "weights only".to_string());
    checkpoint::save(&path, trainer.network(), None, &plain).unwrap();
    let err = Trainer::<f32>::resume(&spec, config(20, Sampling::Random), &path).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Checkpoint(CheckpointError::MissingOptimizerState { .. })
        ),
        "{err}"
    );
    let no_momentum = TrainConfig {
        sgd: SgdConfig::default(),
        ..config(20, Sampling::Random)
    };
    let err = Trainer::<f32>::resume(&spec, no_momentum, &path).unwrap_err();
    assert!(
        err.to_string().contains("\"seed\"") && err.to_string().contains("missing"),
        "{err}"
    );
}

#[test]
fn a_huge_learning_rate_diverges_without_panicking() {
    let data = data();
    for bn in [BnPlacement::None, BnPlacement::Before] {
        let spec = NetworkSpec {
            activation: ActivationKind::Identity,
            ..spec(bn)
        };
        let cfg = TrainConfig {
            sgd: SgdConfig {
                lr: 1e30,
                ..SgdConfig::default()
            },
            ..config(200, Sampling::Random)
        };
        let (trainer, summary) = batchnorm::train::train::<f32>(&spec, cfg, &data, &mut ()).unwrap();
        assert!(
            matches!(summary.outcome, Outcome::Diverged { step, .. } if step == trainer.step() + 1),
            "bn {bn}: {:?}",
            summary.outcome
        );
    }
}

#[test]
fn divergence_found_by_an_evaluation_ends_the_run_as_diverged() {
    let data = data();
    let spec = NetworkSpec {
        activation: ActivationKind::Identity,
        ..spec(BnPlacement::Before)
    };
    // Evaluating after every step: the population pass meets the diverged weights
    // before the next step's loss does, and must end the run the same way.
    let outcome = |eval_stats| {
        let cfg = TrainConfig {
            sgd: SgdConfig {
                lr: 1e30,
                ..SgdConfig::default()
            },
            eval_every: 1,
            eval_stats,
            ..config(200, Sampling::Random)
        };
        let (trainer, summary) = batchnorm::train::train::<f32>(&spec, cfg, &data, &mut ()).unwrap();
        (trainer.step(), summary.outcome)
    };
    let (steps, population) = outcome(EvalStats::Population);
    assert!(
        matches!(population, Outcome::Diverged { step, .. } if step == steps + 1 && step < 200),
        "{population:?} after {steps} steps"
    );
    let (running_steps, running) = outcome(EvalStats::Running);
    assert_eq!(running_steps, steps);
    assert!(matches!(running, Outcome::Diverged { step, .. } if step == steps + 1));
}

/// Counts the observer's calls and checks that gradients are present after backward.
#[derive(Default)]
struct Counter {
    backward: u64,
    steps: u64,
    evals: Vec<Evaluation>,
}

impl Observer<f32> for Counter {
    fn after_backward(&mut self, step: u64, network: &Network<f32>) {
        self.backward += 1;
        assert_eq!(step, self.steps + 1);
        let mut any = false;
        network.for_each_param(|_, _, g| any |= g.iter().any(|&v| v != 0.0));
        assert!(any, "no gradient at step {step}");
    }

    fn after_step(&mut self, step: u64, _loss: f64, _network: &Network<f32>) {
        self.steps = step;
    }

    fn on_eval(
        &mut self,
        eval: &Evaluation,
        _network: &Network<f32>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.evals.push(*eval);
        Ok(())
    }
}

#[test]
fn observer_sees_every_step_and_evaluation() {
    let data = data();
    let mut counter = Counter::default();
    let (_, summary) = batchnorm::train::train::<f32>(
        &spec(BnPlacement::Before),
        config(25, Sampling::Random),
        &data,
        &mut counter,
    )
    .unwrap();
    assert_eq!((counter.backward, counter.steps), (25, 25));
    let steps: Vec<u64> = counter.evals.iter().map(|e| e.step).collect();
    assert_eq!(steps, [0, 10, 20, 25]);
    assert!(
        summary.last_eval.unwrap().test_accuracy > 0.5,
        "{:?}",
        summary.last_eval
    );
}

/// Parameters and momentum buffers only: what training computes.
fn trained_bits(t: &Trainer<f32>) -> Vec<u32> {
    let mut bits = Vec::new();
    t.network()
        .for_each_param(|_, w, _| bits.extend(w.iter().map(|v| v.to_bits())));
    for buf in t.sgd().buffers() {
        bits.extend(buf.iter().map(|v| v.to_bits()));
    }
    bits
}

#[test]
fn evaluation_statistics_change_evaluations_not_training() {
    let data = data();
    let spec = spec(BnPlacement::Before);
    let run = |eval_stats| {
        let cfg = TrainConfig {
            eval_stats,
            ..config(40, Sampling::Random)
        };
        let mut watch = Counter::default();
        let mut trainer = Trainer::<f32>::new(&spec, cfg).unwrap();
        trainer.run(&data, &mut watch).unwrap();
        (trainer, watch.evals)
    };
    let (mut population, pop_evals) = run(EvalStats::Population);
    let (running, run_evals) = run(EvalStats::Running);
    // Both runs report the accuracy with the running averages; at the first evaluation no
    // population pass has replaced them yet, so it is the same in both.
    for e in &run_evals {
        assert_eq!(
            (e.eval_stats, e.test_accuracy_running),
            (EvalStats::Running, Some(e.test_accuracy))
        );
    }
    assert!(
        pop_evals
            .iter()
            .all(|e| e.eval_stats == EvalStats::Population && e.test_accuracy_running.is_some())
    );
    assert_eq!(
        pop_evals[0].test_accuracy_running,
        Some(run_evals[0].test_accuracy)
    );
    assert_eq!(trained_bits(&population), trained_bits(&running));
    let losses = |e: &[Evaluation]| e.iter().map(|e| e.train_loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(losses(&pop_evals), losses(&run_evals));
    assert_ne!(
        state_bits(&population),
        state_bits(&running),
        "the evaluations used the same statistics"
    );
    // The statistics left in the network (and in a checkpoint) are those the last
    // evaluation used: a fresh estimate over the whole batches of the training set.
    let left = state_bits(&population);
    population
        .network_mut()
        .estimate_population_stats(&data.train, 16, 300 / 16)
        .unwrap();
    assert_eq!(state_bits(&population), left);
    let last = pop_evals.last().unwrap();
    let again = population
        .network_mut()
        .evaluate(&data.test, data.test.len(), batchnorm::nn::LossKind::CrossEntropy)
        .unwrap();
    assert_eq!(again.accuracy, last.test_accuracy);
}

#[test]
fn too_few_examples_for_the_population_statistics_is_a_clear_error() {
    let data = data();
    let cfg = TrainConfig {
        population_batches: 19,
        ..config(5, Sampling::Random)
    };
    // 19 batches of 16 need 304 of the 300 examples.
    let mut trainer = Trainer::<f32>::new(&spec(BnPlacement::Before), cfg.clone()).unwrap();
    let err = trainer.run(&data, &mut ()).unwrap_err();
    assert!(matches!(err, TrainError::DataMismatch(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("19 batches of 16 need 304"), "{text}");
    assert_eq!(trainer.step(), 0);
    // Without BN there are no statistics to estimate, and the run goes ahead; there is
    // no accuracy with running averages either.
    let mut plain = Trainer::<f32>::new(&spec(BnPlacement::None), cfg.clone()).unwrap();
    let last = plain.run(&data, &mut ()).unwrap().last_eval.unwrap();
    assert_eq!(last.test_accuracy_running, None);
    // 18 batches fit.
    let fits = TrainConfig {
        population_batches: 18,
        ..cfg
    };
    Trainer::<f32>::new(&spec(BnPlacement::Before), fits)
        .unwrap()
        .run(&data, &mut ())
        .unwrap();
}
