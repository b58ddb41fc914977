//! `batchnorm train`: flags (over an optional JSON configuration file) to a
//! [`Trainer`] run, with metrics to a JSONL or CSV file and a progress bar.

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use batchnorm::data::{self, Split};
use batchnorm::nn::{ActivationKind, BiasMode, BnPlacement, Init, LossKind, Network, NetworkSpec, Real};
use batchnorm::train::{EvalStats, Evaluation, Observer, Outcome, Sampling, TrainConfig, Trainer};

use super::CliError;

/// Flags of `batchnorm train`. Every model and training flag overrides the same setting
/// of `--config`; unset ones keep the file's value or the default.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// JSON file with `{"network": {...}, "train": {...}}` (fields as in `NetworkSpec`
    /// and `TrainConfig`; flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "W,W,..")]
    hidden: Option<Vec<usize>>,
    /// Hidden activation: sigmoid, relu, tanh or identity.
    #[arg(long)]
    activation: Option<ActivationKind>,
    /// BatchNorm placement: none, before (the activation, as in the paper) or after.
    #[arg(long)]
    bn: Option<BnPlacement>,
    /// Weight initialization: normal:STD, lecun, glorot or he.
    #[arg(long)]
    init: Option<Init>,
    /// Multiplier on the initialization's standard deviation.
    #[arg(long, value_name = "X")]
    init_scale: Option<f64>,
    /// Linear biases: auto (none right before BN), all or none.
    #[arg(long)]
    bias: Option<BiasMode>,
    /// Loss: crossentropy or mse.
    #[arg(long)]
    loss: Option<LossKind>,
    /// Examples per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Total SGD steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f64>,
    /// L2 weight decay.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Do not apply weight decay to BatchNorm's gamma and beta.
    #[arg(long)]
    no_decay_bn: bool,
    /// Seed of the weights and the batches.
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate every K steps (0: only at the end).
    #[arg(long, value_name = "K")]
    eval_every: Option<u64>,
    /// Training examples used for the training accuracy (0: skip it).
    #[arg(long, value_name = "N")]
    train_eval_size: Option<usize>,
    /// BatchNorm statistics for evaluation: population (the paper's: recomputed over the
    /// training set before each evaluation) or running (the moving averages, as
    /// PyTorch's eval mode) [default: population].
    #[arg(long, value_name = "STATS")]
    eval_stats: Option<EvalStats>,
    /// Mini-batches (of --batch-size, from the start of the training set) for the
    /// population statistics; 0 takes the whole training set [default: 0].
    #[arg(long, value_name = "N")]
    population_batches: Option<usize>,
    /// Shuffled epochs instead of the paper's random draws of a batch per step.
    #[arg(long)]
    shuffle: bool,
    /// MNIST-format data folder, or `synthetic[:TRAIN,TEST,DIM,CLASSES]` for Gaussian
    /// classes (default sizes 6000,1000,784,10).
    #[arg(long, value_name = "DIR", default_value = data::DEFAULT_DATA_DIR)]
    data: String,
    /// Append one line per evaluation here: JSON lines, or CSV when the name ends in .csv.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Write a checkpoint (safetensors, PyTorch names) here at every evaluation.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Continue the run saved in this checkpoint, bit-identically.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Worker threads for the BatchNorm kernels (default: all cores).
    #[arg(long, value_name = "N", value_parser = super::parse_threads)]
    threads: Option<usize>,
    /// Element type of the network: f32 or f64.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f64"])]
    dtype: String,
    /// No progress bar and no summary line.
    #[arg(long)]
    quiet: bool,
}

/// The `--config` file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RunFile {
    network: NetworkSpec,
    train: TrainConfig,
}

fn usage(message: String) -> CliError {
    CliError::Usage(message)
}

fn settings(args: &TrainArgs) -> Result<(NetworkSpec, TrainConfig), CliError> {
    let RunFile {
        network: mut spec,
        train: mut config,
    } = match &args.config {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|source| CliError::Io {
                path: path.display().to_string(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?
        }
        None => RunFile::default(),
    };
    macro_rules! set {
        ($field:expr, $flag:expr) => {
            if let Some(v) = $flag.clone() {
                $field = v;
            }
        };
    }
    set!(spec.hidden, args.hidden);
    set!(spec.activation, args.activation);
    set!(spec.bn, args.bn);
    set!(spec.init, args.init);
    set!(spec.init_scale, args.init_scale);
    set!(spec.bias, args.bias);
    set!(config.loss, args.loss);
    set!(config.batch_size, args.batch_size);
    set!(config.steps, args.steps);
    set!(config.sgd.lr, args.lr);
    set!(config.sgd.momentum, args.momentum);
    set!(config.sgd.weight_decay, args.weight_decay);
    set!(config.seed, args.seed);
    set!(config.eval_every, args.eval_every);
    set!(config.train_eval_size, args.train_eval_size);
    set!(config.eval_stats, args.eval_stats);
    set!(config.population_batches, args.population_batches);
    if args.no_decay_bn {
        config.sgd.decay_bn = false;
    }
    if args.shuffle {
        config.sampling = Sampling::Epochs;
    }
    if args.checkpoint.is_some() {
        config.checkpoint = args.checkpoint.clone();
    }
    Ok((spec, config))
}

fn load_data(source: &str, seed: u64) -> Result<Split, CliError> {
    let Some(rest) = source.strip_prefix("synthetic") else {
        return Ok(data::load_dir(Path::new(source))?);
    };
    let sizes = match rest.strip_prefix(':') {
        None if rest.is_empty() => vec![6000, 1000, 784, 10],
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| usage(format!("--data {source}: {e}")))?,
        None => return Ok(data::load_dir(Path::new(source))?),
    };
    let [train, test, dim, classes] = sizes[..] else {
        return Err(usage(format!(
            "--data {source}: expected synthetic:TRAIN,TEST,DIM,CLASSES (four numbers)"
        )));
    };
    Ok(data::synthetic::gaussian_classes(
        train, test, dim, classes, seed,
    )?)
}

/// The columns of a CSV metrics file.
const CSV_HEADER: &str =
    "step,train_loss,train_accuracy,test_loss,test_accuracy,test_accuracy_running,eval_stats,train_seconds";

/// Writes evaluations as JSON lines or CSV rows.
struct Metrics {
    out: BufWriter<File>,
    csv: bool,
    path: PathBuf,
}

impl Metrics {
    fn open(path: &Path, append: bool) -> Result<Self, CliError> {
        let io = |source| CliError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(io)?;
        let empty = file.metadata().map_err(io)?.len() == 0;
        let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let mut metrics = Metrics {
            out: BufWriter::new(file),
            csv,
            path: path.into(),
        };
        if csv && empty {
            writeln!(metrics.out, "{CSV_HEADER}").map_err(io)?;
        } else if csv {
            // Rows appended under another header would be read as the wrong columns.
            let mut first = String::new();
            BufReader::new(File::open(path).map_err(io)?)
                .read_line(&mut first)
                .map_err(io)?;
            if first.trim_end() != CSV_HEADER {
                return Err(usage(format!(
                    "--metrics {}: its header is `{}`, not this version's `{CSV_HEADER}`; name a new file to continue the run",
                    path.display(),
                    first.trim_end()
                )));
            }
        }
        Ok(metrics)
    }

    fn write(&mut self, e: &Evaluation) -> std::io::Result<()> {
        if self.csv {
            let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            writeln!(
                self.out,
                "{},{},{},{},{},{},{},{}",
                e.step,
                e.train_loss,
                opt(e.train_accuracy),
                e.test_loss,
                e.test_accuracy,
                opt(e.test_accuracy_running),
                e.eval_stats,
                e.train_seconds
            )?;
        } else {
            let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
            writeln!(self.out, "{line}")?;
        }
        // Flushed at every evaluation so a crashed or interrupted run keeps its curve.
        self.out.flush()
    }
}

/// ` (population statistics; running averages A)` after a test accuracy measured with
/// population statistics, empty otherwise.
fn running_note(eval: &Evaluation) -> String {
    match (eval.eval_stats, eval.test_accuracy_running) {
        (EvalStats::Population, Some(running)) => {
            format!(" (population statistics; running averages {running:.4})")
        }
        _ => String::new(),
    }
}

/// The command's observer: metrics file and progress bar.
struct Report {
    metrics: Option<Metrics>,
    bar: ProgressBar,
    smoothed_loss: f64,
    last_accuracy: f64,
}

impl<T: Real> Observer<T> for Report {
    fn after_step(&mut self, step: u64, loss: f64, _network: &Network<T>) {
        self.smoothed_loss = if self.smoothed_loss.is_nan() {
            loss
        } else {
            0.99 * self.smoothed_loss + 0.01 * loss
        };
        // Drawing is rate-limited by indicatif, but formatting the message is not.
        if step.is_multiple_of(100) {
            self.bar.set_position(step);
            self.bar.set_message(format!(
                "loss {:.4}  test acc {:.4}",
                self.smoothed_loss, self.last_accuracy
            ));
        }
    }

    fn on_eval(
        &mut self,
        eval: &Evaluation,
        _network: &Network<T>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.last_accuracy = eval.test_accuracy;
        self.bar.set_position(eval.step);
        if let Some(m) = &mut self.metrics {
            m.write(eval)
                .map_err(|e| format!("writing metrics to {}: {e}", m.path.display()))?;
        }
        if !self.bar.is_hidden() {
            self.bar.println(format!(
                "step {:>7}  train loss {:.4}  train acc {}  test acc {:.4}{}",
                eval.step,
                eval.train_loss,
                eval.train_accuracy.map_or("-".into(), |a| format!("{a:.4}")),
                eval.test_accuracy,
                running_note(eval)
            ));
        }
        Ok(())
    }
}

fn train_typed<T: Real>(
    args: &TrainArgs,
    spec: &NetworkSpec,
    config: TrainConfig,
    data: &Split,
) -> Result<(), CliError> {
    let mut trainer = match &args.resume {
        Some(path) => Trainer::<T>::resume(spec, config.clone(), path)?,
        None => Trainer::<T>::new(spec, config.clone())?,
    };
    let metrics = match &args.metrics {
        Some(path) => Some(Metrics::open(path, args.resume.is_some())?),
        None => None,
    };
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.steps);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}")
        {
            bar.set_style(style);
        }
        bar.set_position(trainer.step());
        bar
    };
    let mut report = Report {
        metrics,
        bar,
        smoothed_loss: f64::NAN,
        last_accuracy: f64::NAN,
    };
    let summary = trainer.run(data, &mut report)?;
    report.bar.finish_and_clear();
    if !args.quiet {
        let acc = summary.last_eval.map_or(f64::NAN, |e| e.test_accuracy);
        let note = summary.last_eval.as_ref().map_or(String::new(), running_note);
        match summary.outcome {
            Outcome::Completed => eprintln!(
                "done: {} steps, test accuracy {acc:.4}{note}, {:.0} steps/s",
                summary.steps, summary.steps_per_sec
            ),
            Outcome::Diverged { step, loss } => {
                eprintln!("diverged at step {step} (loss {loss}); last test accuracy {acc:.4}")
            }
        }
    }
    Ok(())
}

/// Runs `batchnorm train`.
pub fn run(args: TrainArgs) -> Result<(), CliError> {
    let (mut spec, config) = settings(&args)?;
    if let Some(threads) = args.threads {
        if threads == 0 {
            return Err(usage("--threads must be at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| usage(format!("--threads {threads}: {e}")))?;
    }
    let data = load_data(&args.data, config.seed)?;
    // The data decides the input and output sizes.
    spec.inputs = data.train.dim();
    spec.classes = data.train.num_classes();
    match args.dtype.as_str() {
        "f64" => train_typed::<f64>(&args, &spec, config, &data),
        _ => train_typed::<f32>(&args, &spec, config, &data),
    }
}
