//! `batchnorm lab`: runs the experiments and writes the report.

use std::path::PathBuf;
use std::time::Instant;

use batchnorm::lab::{self, LabOptions};
use clap::Args;

use super::CliError;

/// Flags of `batchnorm lab`.
#[derive(Args, Debug)]
pub struct LabArgs {
    /// Experiments to run (default: all): deep-activations, paper-fig1, learning-rate,
    /// initialization, regularization, placement, deep-linear, covariate-shift, identity.
    names: Vec<String>,
    /// A seconds-long version of every experiment.
    #[arg(long)]
    quick: bool,
    /// Folder of the report.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Folder of MNIST-format data (default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Runs the lab and prints the summary table.
pub fn run(args: LabArgs) -> Result<(), CliError> {
    let opts = LabOptions {
        out: args.out,
        quick: args.quick,
        data: args.data,
        seed: args.seed,
        progress: !args.quiet,
    };
    let start = Instant::now();
    let (files, summaries) = lab::run(&args.names, &opts)?;
    println!("{}", lab::summary_table(&summaries));
    println!(
        "report: {} ({:.1} s)",
        files.index.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
