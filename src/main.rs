//! The `batchnorm` command line: a thin shell over the library.

use clap::Parser;

/// BatchNorm, exact and fast, and a lab that measures what is claimed about it.
#[derive(Parser, Debug)]
#[command(name = "batchnorm", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("batchnorm {}: see --help", env!("CARGO_PKG_VERSION"));
}
