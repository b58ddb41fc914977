//! `batchnorm bench`: times the kernels against a copy of the same bytes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use batchnorm::bench::{self, DEFAULT_SHAPES};
use batchnorm::bn::Layout;
use clap::{Args, ValueEnum};

use super::CliError;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayoutArg {
    ChannelsFirst,
    ChannelsLast,
    Both,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DtypeArg {
    F32,
    F64,
}

/// Flags of `batchnorm bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Shapes in N, C, spatial order, e.g. `--shape 32x64x56x56` (repeatable; default:
    /// the six shapes of the project's table).
    #[arg(long = "shape")]
    shapes: Vec<String>,
    /// Memory layout (shapes are given as N, C, spatial either way).
    #[arg(long, value_enum, default_value = "both")]
    layout: LayoutArg,
    /// Element type.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
    /// Threads (default: one per core).
    #[arg(long, default_value_t = 0, value_parser = super::parse_threads)]
    threads: usize,
    /// Time spent on each op, in milliseconds (at least 10 repetitions).
    #[arg(long, default_value_t = 400)]
    budget_ms: u64,
    /// Also write one JSON object per row to this file (`-` for standard output).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the benchmark and prints the table.
pub fn run(args: BenchArgs) -> Result<(), CliError> {
    let shapes: Vec<Vec<usize>> = if args.shapes.is_empty() {
        DEFAULT_SHAPES.iter().map(|s| s.to_vec()).collect()
    } else {
        args.shapes
            .iter()
            .map(|s| bench::parse_shape(s))
            .collect::<Result<_, _>>()?
    };
    // Every shape is checked before any is run.
    for shape in &shapes {
        match args.dtype {
            DtypeArg::F32 => bench::check_shape::<f32>(shape)?,
            DtypeArg::F64 => bench::check_shape::<f64>(shape)?,
        }
    }
    // The JSON file is opened before the run, so that a bad path fails at once rather
    // than after the benchmark; an existing file is left as it is until the rows are in.
    let json_file = match &args.json {
        Some(path) if path.as_os_str() != "-" => {
            let existed = path.exists();
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| CliError::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
            Some((path.clone(), existed))
        }
        _ => None,
    };
    let result = run_rows(&args, &shapes);
    if let (Err(_), Some((path, false))) = (&result, &json_file) {
        // Nothing to keep of a file this run created.
        let _ = std::fs::remove_file(path);
    }
    let rows = result?;
    print!("{}", bench::table(&rows));
    if let Some(path) = args.json {
        let mut text = String::new();
        for r in &rows {
            text.push_str(&serde_json::to_string(r).expect("rows serialize"));
            text.push('\n');
        }
        if path.as_os_str() == "-" {
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| CliError::Io {
                    path: "-".into(),
                    source: e,
                })?;
        } else {
            std::fs::write(&path, text).map_err(|e| CliError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        }
    }
    Ok(())
}

/// Runs every shape and layout of the benchmark, with progress on standard error.
fn run_rows(args: &BenchArgs, shapes: &[Vec<usize>]) -> Result<Vec<bench::Row>, CliError> {
    let layouts: &[Layout] = match args.layout {
        LayoutArg::ChannelsFirst => &[Layout::ChannelsFirst],
        LayoutArg::ChannelsLast => &[Layout::ChannelsLast],
        LayoutArg::Both => &[Layout::ChannelsFirst, Layout::ChannelsLast],
    };
    let budget = Duration::from_millis(args.budget_ms);
    // On a terminal the progress line is rewritten in place; in a log, one line per item.
    let terminal = std::io::stderr().is_terminal();
    bench::with_threads(args.threads, || -> Result<Vec<bench::Row>, CliError> {
        let mut rows = Vec::new();
        for shape in shapes {
            for &layout in layouts {
                // [N, C] is the same tensor in both layouts.
                if shape.len() == 2 && layout == Layout::ChannelsLast && layouts.len() == 2 {
                    continue;
                }
                let name = bench::shape_name(shape);
                let progress = |op: &str| {
                    let line = format!("{name:<16} {:<15} {op:<18}", layout.name());
                    if terminal {
                        eprint!("\r{line}");
                    } else {
                        eprintln!("{}", line.trim_end());
                    }
                };
                let r = match args.dtype {
                    DtypeArg::F32 => bench::bench_shape::<f32>(shape, layout, budget, progress)?,
                    DtypeArg::F64 => bench::bench_shape::<f64>(shape, layout, budget, progress)?,
                };
                rows.extend(r);
            }
        }
        if terminal {
            eprint!("\r{:60}\r", "");
        }
        Ok(rows)
    })?
}
