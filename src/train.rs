//! The training loop: mini-batch SGD on a [`Network`], evaluated every K steps,
//! checkpointed and resumable bit-identically.
//!
//! Diagnostics watch from the side through an [`Observer`], which sees the network
//! after each backward pass (gradients present, parameters not yet updated), after each
//! update, and at each evaluation. The command line's `train` is a thin shell over
//! [`Trainer`].
//!
//! Randomness: the weights come from stream 0 of the seed ([`crate::nn::model::INIT_STREAM`]),
//! the paper's random batches from stream [`BATCH_STREAM`], and the permutation of
//! epoch `e` (with `--shuffle`) from stream `EPOCH_STREAM_BASE + e`, all `ChaCha8Rng`.
//! The same seed and settings give bit-identical runs.
//!
//! Evaluations normalize with the paper's population statistics by default
//! ([`EvalStats::Population`]): before each one, forward passes over the training set
//! replace BN's running averages with the mean of the batch means and variances. They
//! change what an evaluation reports and what a checkpoint holds, never the training:
//! running statistics do not enter a training step.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bn::BnError;
use crate::data::{Dataset, Split};
use crate::nn::checkpoint::{self, CheckpointError};
use crate::nn::{LossKind, Network, NetworkSpec, NnError, Real, Sgd, SgdConfig};

/// The ChaCha stream of the seed that draws the paper's random mini-batches.
pub const BATCH_STREAM: u64 = 1;
/// Epoch `e` is shuffled with stream `EPOCH_STREAM_BASE + e`.
pub const EPOCH_STREAM_BASE: u64 = 2;

/// How mini-batches are drawn from the training set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// As in the paper: every step draws `batch_size` examples uniformly at random, with
    /// replacement. The default.
    #[default]
    Random,
    /// Shuffled epochs: each epoch is a fresh permutation cut into consecutive batches;
    /// the last `len % batch_size` examples of each permutation are skipped.
    Epochs,
}

impl fmt::Display for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sampling::Random => "random",
            Sampling::Epochs => "epochs",
        })
    }
}

impl FromStr for Sampling {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "random" => Ok(Sampling::Random),
            "epochs" => Ok(Sampling::Epochs),
            _ => Err(NnError::Parse {
                what: "sampling",
                given: s.into(),
                expected: "random or epochs",
            }),
        }
    }
}

/// Which statistics BatchNorm normalizes with when a run evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalStats {
    /// The population statistics of the paper's inference network (its Algorithm 2),
    /// recomputed before each evaluation over mini-batches of the training set (see
    /// [`Network::estimate_population_stats`]); they replace the running statistics, so
    /// a checkpoint holds the statistics its reported accuracy was measured with. The
    /// default.
    #[default]
    Population,
    /// The exponential running averages that training keeps (momentum 0.1), as
    /// PyTorch's `model.eval()` uses them. They follow the last few dozen batches, so the
    /// accuracy they give moves by up to two points from one evaluation to the next.
    Running,
}

impl fmt::Display for EvalStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvalStats::Population => "population",
            EvalStats::Running => "running",
        })
    }
}

impl FromStr for EvalStats {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "population" => Ok(EvalStats::Population),
            "running" => Ok(EvalStats::Running),
            _ => Err(NnError::Parse {
                what: "evaluation statistics",
                given: s.into(),
                expected: "population or running",
            }),
        }
    }
}

/// Settings of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Total number of SGD steps (a resumed run stops at the same total). Default 50 000.
    pub steps: u64,
    /// Examples per step. Default 60 (the paper's).
    pub batch_size: usize,
    /// The optimizer's settings.
    pub sgd: SgdConfig,
    /// The loss. Default cross-entropy.
    pub loss: LossKind,
    /// How batches are drawn. Default random (the paper's).
    pub sampling: Sampling,
    /// Seed of the weights and of the batches. Default 1.
    pub seed: u64,
    /// Evaluate every this many steps (and at step 0 and at the end); 0 evaluates only
    /// at the end. Default 5000.
    pub eval_every: u64,
    /// Evaluate the training accuracy on the first this many training examples (0: not
    /// at all). Default 10 000.
    pub train_eval_size: usize,
    /// Examples per forward pass in evaluation. Default 1000.
    pub eval_batch: usize,
    /// The BatchNorm statistics evaluations use. Default population.
    pub eval_stats: EvalStats,
    /// Mini-batches of `batch_size` training examples, from the start of the training
    /// set, over which the population statistics are computed; 0 (the default) takes
    /// every whole batch of the training set.
    pub population_batches: usize,
    /// Write a checkpoint here at every evaluation. Default none.
    pub checkpoint: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 50_000,
            batch_size: 60,
            sgd: SgdConfig::default(),
            loss: LossKind::CrossEntropy,
            sampling: Sampling::Random,
            seed: 1,
            eval_every: 5000,
            train_eval_size: 10_000,
            eval_batch: 1000,
            eval_stats: EvalStats::Population,
            population_batches: 0,
            checkpoint: None,
        }
    }
}

/// One evaluation, in evaluation mode: BN normalizes with the statistics chosen by
/// [`TrainConfig::eval_stats`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Steps done so far.
    pub step: u64,
    /// Mean mini-batch loss (training mode) over the steps since the last evaluation;
    /// NaN at step 0.
    pub train_loss: f64,
    /// Accuracy on the first `train_eval_size` training examples, if measured.
    pub train_accuracy: Option<f64>,
    /// Mean loss on the test set (NaN when it is empty).
    pub test_loss: f64,
    /// Accuracy on the test set (NaN when it is empty), with the statistics of
    /// `eval_stats`.
    pub test_accuracy: f64,
    /// Accuracy on the test set with BN's running averages, as PyTorch's `model.eval()`
    /// gives it; `None` for a network without BN. With population statistics it is
    /// measured before the population pass replaces the averages. They then go on from
    /// the population statistics, which keep a weight of `(1 - momentum)^k` after `k`
    /// more steps (0.9^k, nothing left after a few hundred), so between close
    /// evaluations it can differ from a run that never computed them.
    pub test_accuracy_running: Option<f64>,
    /// The statistics `test_accuracy` was measured with.
    pub eval_stats: EvalStats,
    /// Seconds spent in training steps so far (evaluations excluded).
    pub train_seconds: f64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// All steps were done.
    Completed,
    /// The loss became NaN or infinite (or BN met non-finite activations) at `step`
    /// (counting from 1); the run stopped before updating with it. With population
    /// statistics, an evaluation after step `step - 1` whose pass over the training set
    /// meets non-finite activations ends the run the same way, without that evaluation.
    Diverged {
        /// The step whose loss was not finite.
        step: u64,
        /// That loss (NaN when BN stopped the forward pass).
        loss: f64,
    },
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSummary {
    /// Steps done in total (including those before a resume).
    pub steps: u64,
    /// Completed or diverged.
    pub outcome: Outcome,
    /// The last evaluation.
    pub last_eval: Option<Evaluation>,
    /// Seconds spent in training steps during this call (evaluations excluded).
    pub train_seconds: f64,
    /// Training steps per second during this call.
    pub steps_per_sec: f64,
}

/// Why a run could not start or continue.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("{name} = {value} is invalid: {requirement}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// The data does not fit the network.
    #[error("the data does not fit the network: {0}")]
    DataMismatch(String),
    /// The network refused a batch.
    #[error(transparent)]
    Network(#[from] NnError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A checkpoint was written by a run with other settings, so resuming from it
    /// would not continue that run.
    #[error("cannot resume from {}: it was saved with {key} = {in_file}, but this run has {key} = {in_run}", .path.display())]
    ResumeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The setting.
        key: &'static str,
        /// Its value in the file.
        in_file: String,
        /// Its value in this run.
        in_run: String,
    },
    /// An observer asked to stop, with its reason.
    #[error("stopped by an observer: {0}")]
    Observer(Box<dyn Error + Send + Sync>),
}

/// Watches a run from the side. Every method has an empty default.
pub trait Observer<T: Real> {
    /// After the backward pass of step `step` (counting from 1): gradients are those of
    /// this step's batch, parameters not yet updated.
    fn after_backward(&mut self, _step: u64, _network: &Network<T>) {}

    /// After the update of step `step`, with its mini-batch loss.
    fn after_step(&mut self, _step: u64, _loss: f64, _network: &Network<T>) {}

    /// After each evaluation (the network is back in training mode).
    ///
    /// # Errors
    /// Any error stops the run with [`TrainError::Observer`].
    fn on_eval(
        &mut self,
        _eval: &Evaluation,
        _network: &Network<T>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        Ok(())
    }
}

/// An observer that watches nothing.
impl<T: Real> Observer<T> for () {}

/// A network, its optimizer and the state of the batch stream: everything a resumed run
/// needs.
#[derive(Clone, Debug)]
pub struct Trainer<T: Real> {
    config: TrainConfig,
    network: Network<T>,
    sgd: Sgd<T>,
    step: u64,
    rng: ChaCha8Rng,
    /// The current epoch's permutation (with [`Sampling::Epochs`]) and its epoch.
    perm: Vec<u32>,
    perm_epoch: Option<u64>,
    /// The examples of the current batch, and their labels.
    picks: Vec<usize>,
    labels: Vec<u8>,
}

fn invalid(name: &'static str, value: impl ToString, requirement: &'static str) -> TrainError {
    TrainError::InvalidConfig {
        name,
        value: value.to_string(),
        requirement,
    }
}

impl<T: Real> Trainer<T> {
    /// A fresh run: the network of `spec` initialized from `config.seed`.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a zero batch or evaluation batch size;
    /// [`TrainError::Network`] for an invalid specification or optimizer setting.
    pub fn new(spec: &NetworkSpec, config: TrainConfig) -> Result<Self, TrainError> {
        if config.batch_size == 0 {
            return Err(invalid("batch_size", 0, "must be at least 1"));
        }
        if config.eval_batch == 0 {
            return Err(invalid("eval_batch", 0, "must be at least 1"));
        }
        let capacity = config.batch_size.max(config.eval_batch);
        let network = Network::new(spec, capacity, config.seed)?;
        let sgd = Sgd::new(config.sgd, &network)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(BATCH_STREAM);
        Ok(Trainer {
            picks: vec![0; config.batch_size],
            labels: vec![0; config.batch_size],
            config,
            network,
            sgd,
            step: 0,
            rng,
            perm: Vec::new(),
            perm_epoch: None,
        })
    }

    /// A run continued from a checkpoint written by [`save_checkpoint`](Self::save_checkpoint)
    /// (or at an evaluation): weights, BN statistics, momentum buffers, step and batch
    /// stream are restored, so the rest of the run is bit-identical to an uninterrupted one.
    /// The evaluation statistics may differ from the checkpointed run's: the training is
    /// the same either way, but a run resumed with running statistics from a checkpoint
    /// that holds population statistics starts its running averages from those.
    ///
    /// # Errors
    /// As [`new`](Self::new); [`TrainError::Checkpoint`] for an unreadable file or one of
    /// another architecture; [`TrainError::ResumeMismatch`] when the file was written
    /// with another seed, batch size or sampling.
    pub fn resume(spec: &NetworkSpec, config: TrainConfig, path: &Path) -> Result<Self, TrainError> {
        let mut trainer = Trainer::new(spec, config)?;
        let meta = checkpoint::load(path, &mut trainer.network, Some(&mut trainer.sgd))?;
        let get = |key: &'static str| {
            meta.get(key).ok_or_else(|| {
                TrainError::Checkpoint(CheckpointError::BadMetadata {
                    path: path.into(),
                    key: key.into(),
                    reason: "missing: the file was not written by a training run".into(),
                })
            })
        };
        let expected = trainer.resume_keys();
        for (key, in_run) in &expected {
            let in_file = get(key)?;
            if in_file != in_run {
                return Err(TrainError::ResumeMismatch {
                    path: path.into(),
                    key,
                    in_file: in_file.clone(),
                    in_run: in_run.clone(),
                });
            }
        }
        let parse_err = |key: &'static str| {
            move |_| {
                TrainError::Checkpoint(CheckpointError::BadMetadata {
                    path: path.into(),
                    key: key.into(),
                    reason: "not a non-negative integer".into(),
                })
            }
        };
        trainer.step = get("step")?.parse().map_err(parse_err("step"))?;
        let word_pos: u128 = get("rng_word_pos")?.parse().map_err(parse_err("rng_word_pos"))?;
        trainer.rng.set_word_pos(word_pos);
        Ok(trainer)
    }

    /// The settings that must agree between a checkpoint and the run resuming from it.
    fn resume_keys(&self) -> [(&'static str, String); 3] {
        [
            ("seed", self.config.seed.to_string()),
            ("batch_size", self.config.batch_size.to_string()),
            ("sampling", self.config.sampling.to_string()),
        ]
    }

    /// Writes the network, the momentum buffers, the step and the batch stream's state.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] when the file cannot be written (a previous file at
    /// `path` is then intact).
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let mut meta: BTreeMap<String, String> = self
            .resume_keys()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        meta.insert("step".into(), self.step.to_string());
        meta.insert("rng_word_pos".into(), self.rng.get_word_pos().to_string());
        meta.insert(
            "train_config".into(),
            serde_json::to_string(&self.config).unwrap_or_default(),
        );
        checkpoint::save(path, &self.network, Some(&self.sgd), &meta)?;
        Ok(())
    }

    /// The network.
    pub fn network(&self) -> &Network<T> {
        &self.network
    }

    /// The network, writable (for experiments that intervene).
    pub fn network_mut(&mut self) -> &mut Network<T> {
        &mut self.network
    }

    /// The optimizer.
    pub fn sgd(&self) -> &Sgd<T> {
        &self.sgd
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    fn check_data(&self, data: &Split) -> Result<(), TrainError> {
        let spec = self.network.spec();
        for (name, set) in [("training", &data.train), ("test", &data.test)] {
            if set.dim() != spec.inputs {
                return Err(TrainError::DataMismatch(format!(
                    "the {name} set has {} features per example, the network {} inputs",
                    set.dim(),
                    spec.inputs
                )));
            }
            if set.num_classes() > spec.classes {
                return Err(TrainError::DataMismatch(format!(
                    "the {name} set has {} classes, the network {} outputs",
                    set.num_classes(),
                    spec.classes
                )));
            }
        }
        let (n, b) = (data.train.len(), self.config.batch_size);
        if n == 0 {
            return Err(TrainError::DataMismatch("the training set is empty".into()));
        }
        if self.config.sampling == Sampling::Epochs && n < b {
            return Err(TrainError::DataMismatch(format!(
                "shuffled epochs need at least one full batch, but the training set has {n} examples for a batch size of {b}"
            )));
        }
        if self.config.eval_stats == EvalStats::Population && self.network.has_running_stats() {
            let k = self.population_batches(n).max(1);
            if n < b.saturating_mul(k) {
                return Err(TrainError::DataMismatch(format!(
                    "population statistics over {k} batches of {b} need {} training examples, but the training set has {n} (lower population_batches or evaluate with the running statistics)",
                    b.saturating_mul(k)
                )));
            }
        }
        if u32::try_from(n).is_err() {
            return Err(TrainError::DataMismatch(format!(
                "{n} training examples is too many"
            )));
        }
        Ok(())
    }

    /// Mini-batches of the population-statistics pass over `n` training examples:
    /// `population_batches`, or every whole batch when it is 0.
    fn population_batches(&self, n: usize) -> usize {
        match self.config.population_batches {
            0 => n / self.config.batch_size,
            k => k,
        }
    }

    /// Fills the network's input and `self.labels` with the batch of the next step.
    fn draw_batch(&mut self, train: &Dataset) -> Result<(), NnError> {
        let (b, n) = (self.config.batch_size, train.len());
        match self.config.sampling {
            Sampling::Random => {
                for (pick, label) in self.picks.iter_mut().zip(&mut self.labels) {
                    *pick = self.rng.random_range(0..n);
                    *label = train.labels()[*pick];
                }
            }
            Sampling::Epochs => {
                let per_epoch = (n / b) as u64;
                let (epoch, pos) = (self.step / per_epoch, (self.step % per_epoch) as usize);
                if self.perm_epoch != Some(epoch) {
                    // Reuses the buffer: only the first epoch allocates.
                    self.perm.clear();
                    self.perm.extend(0..n as u32);
                    let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
                    rng.set_stream(EPOCH_STREAM_BASE.wrapping_add(epoch));
                    self.perm.shuffle(&mut rng);
                    self.perm_epoch = Some(epoch);
                }
                let perm = &self.perm[pos * b..(pos + 1) * b];
                for ((pick, label), &i) in self.picks.iter_mut().zip(&mut self.labels).zip(perm) {
                    *pick = i as usize;
                    *label = train.labels()[*pick];
                }
            }
        }
        train.gather(&self.picks, self.network.input_mut(b)?);
        Ok(())
    }

    fn evaluate(
        &mut self,
        data: &Split,
        train_loss: f64,
        train_seconds: f64,
    ) -> Result<Evaluation, TrainError> {
        let loss = self.config.loss;
        let bn = self.network.has_running_stats();
        let mut running = None;
        if self.config.eval_stats == EvalStats::Population && bn {
            running = Some(self.network.evaluate(&data.test, data.test.len(), loss)?.accuracy);
            let batches = self.population_batches(data.train.len());
            let b = self.config.batch_size;
            self.network.estimate_population_stats(&data.train, b, batches)?;
        }
        let test = self.network.evaluate(&data.test, data.test.len(), loss)?;
        let test_accuracy_running = match self.config.eval_stats {
            EvalStats::Population => running,
            EvalStats::Running => bn.then_some(test.accuracy),
        };
        let k = self.config.train_eval_size.min(data.train.len());
        let train_accuracy = if k > 0 {
            Some(self.network.evaluate(&data.train, k, loss)?.accuracy)
        } else {
            None
        };
        Ok(Evaluation {
            step: self.step,
            train_loss,
            train_accuracy,
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            test_accuracy_running,
            eval_stats: self.config.eval_stats,
            train_seconds,
        })
    }

    fn checkpoint_and_report(
        &mut self,
        eval: &Evaluation,
        observer: &mut dyn Observer<T>,
    ) -> Result<(), TrainError> {
        if let Some(path) = &self.config.checkpoint {
            self.save_checkpoint(path)?;
        }
        observer
            .on_eval(eval, &self.network)
            .map_err(TrainError::Observer)
    }

    /// Trains until `config.steps` steps are done in total, or the loss diverges.
    ///
    /// # Errors
    /// [`TrainError::DataMismatch`] when the data does not fit the network or the
    /// sampling; [`TrainError::Checkpoint`] when a checkpoint cannot be written;
    /// [`TrainError::Observer`] when the observer stops the run. A divergence is not an
    /// error: it ends the run with [`Outcome::Diverged`].
    pub fn run(&mut self, data: &Split, observer: &mut dyn Observer<T>) -> Result<TrainSummary, TrainError> {
        self.check_data(data)?;
        self.network.set_training(true);
        let mut train_seconds = 0.0;
        let mut last_eval = None;
        if self.step == 0 {
            let eval = self.evaluate(data, f64::NAN, 0.0)?;
            self.checkpoint_and_report(&eval, observer)?;
            last_eval = Some(eval);
        }
        let start_step = self.step;
        let (mut window_loss, mut window_steps) = (0.0, 0u64);
        let mut outcome = Outcome::Completed;
        let mut clock = Instant::now();
        while self.step < self.config.steps {
            self.draw_batch(&data.train)?;
            let b = self.config.batch_size;
            let forward = self.network.forward_filled(b);
            let loss = match forward {
                Ok(_) => self.network.loss_backward(&self.labels, self.config.loss)?,
                Err(NnError::BatchNorm {
                    source: BnError::NonFinite { .. },
                    ..
                }) => f64::NAN,
                Err(e) => return Err(e.into()),
            };
            if !loss.is_finite() {
                outcome = Outcome::Diverged {
                    step: self.step + 1,
                    loss,
                };
                break;
            }
            observer.after_backward(self.step + 1, &self.network);
            self.sgd.step(&mut self.network);
            self.step += 1;
            window_loss += loss;
            window_steps += 1;
            observer.after_step(self.step, loss, &self.network);
            let every = self.config.eval_every;
            if (every > 0 && self.step.is_multiple_of(every)) || self.step == self.config.steps {
                train_seconds += clock.elapsed().as_secs_f64();
                let eval = match self.evaluate(data, window_loss / window_steps as f64, train_seconds) {
                    Ok(eval) => eval,
                    // The population pass met non-finite activations (or statistics):
                    // the update left the weights diverged, and the next step's loss
                    // would say so. The network is as the update left it.
                    Err(TrainError::Network(NnError::BatchNorm {
                        source: BnError::NonFinite { .. } | BnError::InvalidStatistic { .. },
                        ..
                    })) => {
                        outcome = Outcome::Diverged {
                            step: self.step + 1,
                            loss: f64::NAN,
                        };
                        break;
                    }
                    Err(e) => return Err(e),
                };
                self.checkpoint_and_report(&eval, observer)?;
                last_eval = Some(eval);
                (window_loss, window_steps) = (0.0, 0);
                clock = Instant::now();
            }
        }
        train_seconds += clock.elapsed().as_secs_f64();
        let done = self.step - start_step;
        Ok(TrainSummary {
            steps: self.step,
            outcome,
            last_eval,
            train_seconds,
            steps_per_sec: if train_seconds > 0.0 {
                done as f64 / train_seconds
            } else {
                0.0
            },
        })
    }
}

/// Builds a network from `spec` and trains it on `data`: the whole run in one call.
///
/// # Errors
/// As [`Trainer::new`] and [`Trainer::run`].
pub fn train<T: Real>(
    spec: &NetworkSpec,
    config: TrainConfig,
    data: &Split,
    observer: &mut dyn Observer<T>,
) -> Result<(Trainer<T>, TrainSummary), TrainError> {
    let mut trainer = Trainer::new(spec, config)?;
    let summary = trainer.run(data, observer)?;
    Ok((trainer, summary))
}
