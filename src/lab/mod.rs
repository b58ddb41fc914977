//! The lab: experiments that measure the claims made about BatchNorm, and their report.
//!
//! Each experiment states a claim and its source, runs, and returns a report
//! [`Section`] with its plots, key numbers and a finding computed from
//! the data. [`run`] runs a list of them and writes `index.html` and `results.json`.

pub mod plot;
pub mod report;
mod stats;

mod covariate_shift;
mod deep_activations;
mod deep_linear;
mod identity;
mod training;

use std::cell::OnceCell;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use thiserror::Error;

use crate::data::{self, DataError, Split};
use report::{Report, ReportFiles, Section};

/// Why the lab stopped.
#[derive(Debug, Error)]
pub enum LabError {
    /// An experiment name that does not exist.
    #[error("unknown experiment {0:?}; the experiments are: {list}", list = NAMES.join(", "))]
    UnknownExperiment(String),
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A chart could not be drawn.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// A layer refused its input (a bug in an experiment, reported rather than hidden).
    #[error("experiment {experiment}: {message}")]
    Experiment {
        /// The experiment.
        experiment: &'static str,
        /// What failed.
        message: String,
    },
}

/// The experiments, in report order.
pub const NAMES: [&str; 9] = [
    "deep-activations",
    "paper-fig1",
    "learning-rate",
    "initialization",
    "regularization",
    "placement",
    "deep-linear",
    "covariate-shift",
    "identity",
];

/// How to run the lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Folder of the report (`index.html`, `results.json`, `plots/`).
    pub out: PathBuf,
    /// A seconds-long version of every experiment (for tests and a first look).
    pub quick: bool,
    /// Folder of the MNIST-format data; `None` for [`data::DEFAULT_DATA_DIR`].
    pub data: Option<PathBuf>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            out: PathBuf::from("report"),
            quick: false,
            data: None,
            seed: 1,
            progress: true,
        }
    }
}

/// What an experiment gets: the options, where to draw, the data, and progress bars.
pub(crate) struct Ctx<'a> {
    pub opts: &'a LabOptions,
    pub plots: PathBuf,
    data: OnceCell<(Split, String)>,
}

impl Ctx<'_> {
    /// A progress bar of `len` steps for an experiment (hidden when progress is off).
    pub fn progress(&self, name: &str, len: u64) -> ProgressBar {
        if !self.opts.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar
    }

    /// The image data and a description of where it came from. In quick mode, when the
    /// default folder is missing, a small synthetic set stands in (and says so).
    pub fn data(&self) -> Result<&(Split, String), LabError> {
        if let Some(d) = self.data.get() {
            return Ok(d);
        }
        let dir = self
            .opts
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(data::DEFAULT_DATA_DIR));
        let loaded = match data::load_dir(&dir) {
            Ok(split) => (split, format!("MNIST-format images from {}", dir.display())),
            Err(e) if self.opts.quick && self.opts.data.is_none() => {
                let split = data::synthetic::gaussian_classes(6000, 1000, 784, 10, self.opts.seed)?;
                (
                    split,
                    format!("synthetic Gaussian classes (784-d, 10 classes): {e}"),
                )
            }
            Err(e) => return Err(e.into()),
        };
        Ok(self.data.get_or_init(|| loaded))
    }

    /// `quick` value in quick mode, `full` otherwise.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.opts.quick { quick } else { full }
    }
}

/// One finished experiment, for the summary table.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Experiment name.
    pub name: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The finding.
    pub finding: String,
}

fn run_one(name: &str, ctx: &Ctx) -> Result<Section, LabError> {
    match name {
        "deep-activations" => deep_activations::run(ctx),
        "paper-fig1" => training::paper_fig1(ctx),
        "learning-rate" => training::learning_rate(ctx),
        "initialization" => training::initialization(ctx),
        "regularization" => training::regularization(ctx),
        "placement" => training::placement(ctx),
        "deep-linear" => deep_linear::run(ctx),
        "covariate-shift" => covariate_shift::run(ctx),
        "identity" => identity::run(ctx),
        other => Err(LabError::UnknownExperiment(other.to_string())),
    }
}

/// Runs the named experiments (all of them when `names` is empty), in report order, and
/// writes the report into `opts.out`.
///
/// # Errors
/// [`LabError::UnknownExperiment`] before anything runs when a name is unknown; any
/// experiment's error otherwise (the report is then not written).
pub fn run(names: &[String], opts: &LabOptions) -> Result<(ReportFiles, Vec<Summary>), LabError> {
    for n in names {
        if !NAMES.contains(&n.as_str()) {
            return Err(LabError::UnknownExperiment(n.clone()));
        }
    }
    let selected: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| names.is_empty() || names.iter().any(|m| m == n))
        .collect();
    let ctx = Ctx {
        opts,
        plots: opts.out.join("plots"),
        data: OnceCell::new(),
    };
    let mut report = Report::new(
        "BatchNorm lab",
        format!(
            "Each section tests one claim made about Batch Normalization (Ioffe & Szegedy, 2015) \
             and its later critics, states what was measured, and says what was found, \
             including when the claim does not hold. Generated by `batchnorm lab{}` \
             (batchnorm {}, seed {}).",
            if opts.quick { " --quick" } else { "" },
            env!("CARGO_PKG_VERSION"),
            opts.seed
        ),
    );
    let mut summaries = Vec::new();
    for name in selected {
        let start = Instant::now();
        let mut section = run_one(name, &ctx)?;
        section.time_seconds = start.elapsed().as_secs_f64();
        summaries.push(Summary {
            name: name.to_string(),
            seconds: section.time_seconds,
            finding: section.finding.clone(),
        });
        report.sections.push(section);
    }
    let files = report.write(&opts.out)?;
    Ok((files, summaries))
}

/// The summary table printed at the end of a lab run.
pub fn summary_table(summaries: &[Summary]) -> String {
    let mut s = format!("{:<18} {:>8}  finding\n", "experiment", "time s");
    for r in summaries {
        s.push_str(&format!("{:<18} {:>8.1}  {}\n", r.name, r.seconds, r.finding));
    }
    let total: f64 = summaries.iter().map(|r| r.seconds).sum();
    s.push_str(&format!("{:<18} {:>8.1}\n", "total", total));
    s
}

/// Wraps an error of a layer or step inside an experiment.
pub(crate) fn fail(experiment: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LabError {
    move |e| LabError::Experiment {
        experiment,
        message: e.to_string(),
    }
}
