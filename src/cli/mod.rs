//! Command-line parsing and dispatch. Each subcommand lives in its own file and turns
//! its flags into a call of the library.

mod bench;
mod lab;
mod train;

use clap::{Parser, Subcommand};
use thiserror::Error;

/// BatchNorm, exact and fast, and a lab that measures what is claimed about it.
#[derive(Parser, Debug)]
#[command(name = "batchnorm", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Train a fully connected classifier (Fashion-MNIST by default) with or without BN.
    Train(Box<train::TrainArgs>),
    /// Run the lab: every experiment, or the ones named, into an HTML report.
    Lab(lab::LabArgs),
    /// Time the BatchNorm kernels against a copy of the same bytes.
    Bench(bench::BenchArgs),
}

/// Why a command failed; printed as `error: ...`.
#[derive(Debug, Error)]
pub enum CliError {
    /// A flag or configuration value is invalid.
    #[error("{0}")]
    Usage(String),
    /// The network or a setting was refused.
    #[error(transparent)]
    Nn(#[from] batchnorm::nn::NnError),
    /// The data could not be loaded or generated.
    #[error(transparent)]
    Data(#[from] batchnorm::data::DataError),
    /// The lab failed.
    #[error(transparent)]
    Lab(#[from] batchnorm::lab::LabError),
    /// The benchmark failed.
    #[error(transparent)]
    Bench(#[from] batchnorm::bench::BenchError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] batchnorm::train::TrainError),
    /// A file of the command (configuration, metrics) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Runs the parsed command.
///
/// # Errors
/// Whatever the subcommand reports.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Lab(args) => lab::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// The most threads `--threads` accepts: far more than any machine this runs on has cores,
/// and few enough that a typo does not start a hundred thousand threads.
const MAX_THREADS: usize = 1024;

/// Parses a `--threads` value: a whole number up to [`MAX_THREADS`].
fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("expected a whole number of threads, got {s:?}"))?;
    if n > MAX_THREADS {
        return Err(format!("{n} threads is more than the {MAX_THREADS} allowed"));
    }
    Ok(n)
}
