//! The `bench` command: times the BatchNorm kernels against a plain copy of the same
//! number of bytes, on the same threads, in the same run.
//!
//! BatchNorm moves bytes and does little arithmetic, so the yardstick is `t_copy`, the
//! time to copy a buffer of the tensor's size: a train or eval forward must at least read
//! `x` and write `y` (one copy's worth of traffic), and forward + backward must also read
//! `x` and `dy` and write `dx`.

use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::bn::{BatchNorm, BatchNormConfig, BnError, Float, Layout};

/// The shapes of the project's benchmark table (`N, C, spatial..`).
pub const DEFAULT_SHAPES: [&[usize]; 6] = [
    &[60, 100],
    &[256, 4096],
    &[4096, 1024],
    &[32, 64, 56, 56],
    &[128, 256, 14, 14],
    &[256, 32, 28, 28],
];

/// Inputs are rotated among enough copies to exceed this many bytes, so that a tensor
/// that fits in cache is not timed hot from the previous repetition.
const ROTATE_BYTES: usize = 96 << 20;

/// Repetitions of one kind in a row (copy or op), the first one untimed: see
/// [`time_against_copy`].
const ROUND: usize = 2;

/// What went wrong in a benchmark.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A shape could not be run.
    #[error("shape {shape}: {source}")]
    Shape {
        /// The shape, as `NxCxHxW`.
        shape: String,
        /// The BatchNorm error.
        source: BnError,
    },
    /// A shape string could not be parsed.
    #[error("bad shape {0:?}: expected dimensions like 32x64x56x56 (N, C, spatial..), at least 2, all > 0")]
    BadShape(String),
    /// The buffers of a shape's benchmark would not fit in memory.
    #[error(
        "shape {shape}: the benchmark needs {needed_gib:.1} GiB of buffers, more than the {available_gib:.1} GiB of memory available"
    )]
    TooLarge {
        /// The shape, as `NxCxHxW`.
        shape: String,
        /// GiB the buffers need.
        needed_gib: f64,
        /// GiB available (`MemAvailable`, or the address space when unknown).
        available_gib: f64,
    },
    /// A shape has more elements than memory can address.
    #[error("shape {0}: more elements than memory can address")]
    Overflow(String),
    /// The thread pool could not be built.
    #[error("cannot start {threads} threads: {message}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The pool's error.
        message: String,
    },
}

/// The operation timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Training forward: batch statistics, running statistics updated.
    TrainForward,
    /// Evaluation forward: running statistics.
    EvalForward,
    /// Training forward followed by the backward pass.
    ForwardBackward,
}

impl Op {
    /// All operations, in table order.
    pub const ALL: [Op; 3] = [Op::TrainForward, Op::EvalForward, Op::ForwardBackward];

    /// The name used in the table and the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Op::TrainForward => "train_forward",
            Op::EvalForward => "eval_forward",
            Op::ForwardBackward => "forward_backward",
        }
    }

    /// Tensor-sized buffers the op must read or write at the least.
    fn min_buffers(self) -> usize {
        match self {
            Op::TrainForward | Op::EvalForward => 2,
            Op::ForwardBackward => 5,
        }
    }
}

/// One row of the benchmark table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The shape in N, C, spatial order, as `32x64x56x56`, for both layouts.
    pub shape: String,
    /// `channels_first` or `channels_last`.
    pub layout: &'static str,
    /// `f32` or `f64`.
    pub dtype: &'static str,
    /// `train_forward`, `eval_forward` or `forward_backward`.
    pub op: &'static str,
    /// Median time of the op.
    pub median_ms: f64,
    /// Median time to copy a buffer of the tensor's size, timed in rounds alternating with the op's.
    pub copy_ms: f64,
    /// `median_ms / copy_ms`.
    pub ratio_to_copy: f64,
    /// Least bytes the op must move, divided by its median time.
    pub gb_per_s: f64,
    /// Threads used.
    pub threads: usize,
    /// Repetitions timed.
    pub reps: usize,
}

/// Parses `32x64x56x56` into `[32, 64, 56, 56]`.
///
/// # Errors
/// [`BenchError::BadShape`] for fewer than two dimensions, a zero, or a non-number.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, BenchError> {
    let dims: Option<Vec<usize>> = s.split(['x', 'X', ',']).map(|d| d.trim().parse().ok()).collect();
    match dims {
        Some(d) if d.len() >= 2 && d.iter().all(|&v| v > 0) => Ok(d),
        _ => Err(BenchError::BadShape(s.to_string())),
    }
}

/// Bytes of the buffers [`bench_shape`] allocates for a tensor of `len` elements of
/// `elem` bytes (the rotated inputs and outputs, `dy` and `dx`), `None` on overflow.
fn buffer_bytes(len: usize, elem: usize) -> Option<usize> {
    let bytes = len.checked_mul(elem)?;
    let copies = rotated_copies(bytes);
    bytes.checked_mul(2 * copies + 2)
}

/// Copies of the input and output that [`bench_shape`] rotates among.
fn rotated_copies(bytes: usize) -> usize {
    (ROTATE_BYTES / bytes.max(1)).clamp(1, 64)
}

/// Refuses a shape whose benchmark buffers (the rotated inputs and outputs, `dy` and `dx`)
/// would not fit in the memory available, before any is allocated: an allocation that
/// fails aborts the process, and one that the kernel overcommits ends in the OOM killer.
///
/// # Errors
/// [`BenchError::Overflow`] when the element count overflows, [`BenchError::TooLarge`]
/// when the buffers need more than `MemAvailable` (when `/proc/meminfo` is readable).
pub fn check_shape<T: Float>(shape: &[usize]) -> Result<(), BenchError> {
    let name = shape_name(shape);
    let elem = std::mem::size_of::<T>();
    let needed = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|len| buffer_bytes(len, elem))
        .ok_or_else(|| BenchError::Overflow(name.clone()))?;
    crate::memory::check(Some(needed)).map_err(|short| BenchError::TooLarge {
        shape: name,
        needed_gib: short.needed_gib,
        available_gib: short.available_gib,
    })
}

/// Formats `[32, 64, 56, 56]` as `32x64x56x56`.
pub fn shape_name(shape: &[usize]) -> String {
    shape
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

/// What one timed repetition runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    Copy,
    Op,
}

/// Medians of alternating timings of the copy and the op: rounds of [`ROUND`] copies then
/// [`ROUND`] ops, the first call of each round untimed (it warms up after the other kind
/// and pays the other kind's write-backs), at least `min_reps` ops timed, and more until
/// `budget` is spent (at most 2000). `run(i, turn)` runs one repetition; `i` counts all
/// calls, copies and ops together, so that with buffers rotated by `i` no two calls in a
/// row use the same ones. Returns the median of the op, the median of the copy (ms), and
/// the repetitions of each.
///
/// Timing the copy alongside the op, rather than once per shape, exposes both to the same
/// phases of a noisy machine. Timing each in rounds of its own kind, rather than one copy
/// then one op, keeps what one leaves behind out of the other's time: a copy leaves its
/// output dirty in the caches, and the write-back of those lines, part of the copy's own
/// cost, lands in whatever runs next (measured: 15 to 30 % of a 16 MB op that followed a
/// copy directly). In rounds, each timed repetition follows one of its own kind and pays
/// for its own write-backs, as it does when it runs in a loop.
fn time_against_copy(
    budget: Duration,
    min_reps: usize,
    mut run: impl FnMut(usize, Turn),
) -> (f64, f64, usize) {
    let mut calls = 0;
    let mut timed = |turn| {
        let t = Instant::now();
        run(calls, turn);
        calls += 1;
        t.elapsed().as_secs_f64()
    };
    let (mut op_times, mut copy_times) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while op_times.len() < min_reps || (start.elapsed() < budget && op_times.len() < 2000) {
        for (turn, times) in [(Turn::Copy, &mut copy_times), (Turn::Op, &mut op_times)] {
            timed(turn);
            times.extend((1..ROUND).map(|_| timed(turn)));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    let reps = op_times.len();
    (median(op_times), median(copy_times), reps)
}

/// Benchmarks one shape, layout and type: returns one row per op.
///
/// `shape` is in N, C, spatial order whatever the layout.
///
/// # Errors
/// [`BenchError::Shape`] when the BatchNorm refuses the shape; those of [`check_shape`].
pub fn bench_shape<T: Float>(
    shape: &[usize],
    layout: Layout,
    budget: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let name = shape_name(shape);
    let wrap = |source| BenchError::Shape {
        shape: name.clone(),
        source,
    };
    let c = shape[1];
    check_shape::<T>(shape)?;
    let len: usize = shape.iter().product();
    let mem_shape: Vec<usize> = match layout {
        Layout::ChannelsFirst => shape.to_vec(),
        Layout::ChannelsLast => {
            let mut s = vec![shape[0]];
            s.extend_from_slice(&shape[2..]);
            s.push(c);
            s
        }
    };
    let bytes = len * std::mem::size_of::<T>();
    let copies = rotated_copies(bytes);
    let inputs: Vec<Vec<T>> = (0..copies)
        .map(|k| {
            (0..len)
                .map(|i| T::from_f64(((i * 7919 + k * 104_729) % 1000) as f64 * 1e-3 - 0.5))
                .collect()
        })
        .collect();
    let dy: Vec<T> = (0..len)
        .map(|i| T::from_f64(((i * 31) % 997) as f64 * 1e-3 - 0.5))
        .collect();
    // Filled with ones rather than zeros: zeroed buffers come from the allocator as
    // untouched pages, whose first-write faults would land in the timed repetitions.
    let one = T::from_f64(1.0);
    let mut out: Vec<Vec<T>> = (0..copies).map(|_| vec![one; len]).collect();
    let mut dx = vec![one; len];
    let threads = rayon::current_num_threads();

    let mut bn = BatchNorm::<T>::new(BatchNormConfig::new(c)).map_err(wrap)?;
    let mut rows = Vec::new();
    for op in Op::ALL {
        progress(op.name());
        bn.set_training(op != Op::EvalForward);
        let mut failure = None;
        let (median_ms, copy_ms, reps) = time_against_copy(budget, 10, |i, turn| {
            let k = i % copies;
            if turn == Turn::Copy {
                parallel_copy(&inputs[k], &mut out[k]);
                return;
            }
            let r = bn
                .forward(&inputs[k], &mem_shape, layout, &mut out[k])
                .and_then(|_| {
                    if op == Op::ForwardBackward {
                        bn.backward(&inputs[k], &dy, &mut dx)
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = r {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            return Err(wrap(e));
        }
        rows.push(Row {
            shape: name.clone(),
            layout: layout.name(),
            dtype: T::DTYPE,
            op: op.name(),
            median_ms,
            copy_ms,
            ratio_to_copy: median_ms / copy_ms,
            gb_per_s: (op.min_buffers() * bytes) as f64 / (median_ms * 1e-3) / 1e9,
            threads,
            reps,
        });
    }
    Ok(rows)
}

/// Copies `src` into `dst` on the current pool's threads, one contiguous block each.
///
/// Each block goes through `copy_from_slice`, that is glibc's `memcpy`: `rep movsb` up to
/// its `rep_movsb_stop_threshold` (1 MB on the machines measured), then a loop of vector
/// loads and stores, which are ordinary (cached) stores below its
/// `x86_non_temporal_threshold` and streaming stores above. That threshold is derived from
/// the L3 size the CPU reports (`ld.so --list-diagnostics` shows both), so whether a copy of
/// a large tensor pays a read-for-ownership of `dst` depends on the machine.
fn parallel_copy<T: Float>(src: &[T], dst: &mut [T]) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    if threads == 1 || src.len() < 1 << 14 {
        dst.copy_from_slice(src);
        return;
    }
    let block = src.len().div_ceil(threads);
    dst.par_chunks_mut(block)
        .zip(src.par_chunks(block))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Runs `f` on a pool of `threads` threads (0: rayon's default, one per core).
///
/// # Errors
/// [`BenchError::Threads`] when the pool cannot be built.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R, BenchError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| BenchError::Threads {
            threads,
            message: e.to_string(),
        })?;
    Ok(pool.install(f))
}

/// Formats rows as the table the command prints.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<15} {:<14} {:<5} {:<16} {:>10} {:>8} {:>10} {:>8}\n",
        "shape", "layout", "dtype", "op", "median ms", "GB/s", "t_copy ms", "x copy"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<15} {:<14} {:<5} {:<16} {:>10.4} {:>8.1} {:>10.4} {:>8.2}\n",
            r.shape, r.layout, r.dtype, r.op, r.median_ms, r.gb_per_s, r.copy_ms, r.ratio_to_copy
        ));
    }
    s
}
