//! The BatchNorm kernels: per-channel statistics, normalization, and the two passes of
//! the closed-form backward.
//!
//! # Layout
//! Every supported tensor is viewed as `outer` blocks of `channels * inner` elements, the
//! values of channel `c` in block `o` occupying `[(o * channels + c) * inner, .. + inner)`.
//! Channels-first `[N, C, S..]` is `outer = N`, `inner = prod(S)`; channels-last
//! `[N, S.., C]` is `outer = N * prod(S)`, `inner = 1`.
//!
//! Two traversal orders cover both cases. When `inner` is long, a channel is a set of
//! contiguous *segments* and the loops vectorize along a segment. When `inner` is short,
//! the tensor is a row-major matrix of `outer` rows and `channels * inner` *columns*, and
//! the loops run along a row, vectorized across columns (the reductions one *panel* of
//! columns at a time, so that their per-column accumulators stay in L1).
//!
//! Every pass goes through memory in order, block after block of whole rows, so the
//! training forward reads `x` twice (statistics, then normalization) and the backward
//! reads `x` and `dy` twice. A channel-major order for channels-first tensors (a task
//! per group of channels, its statistics then its normalization while its values are in
//! L2, so that `x` is read from memory once) was measured no faster on 32x64x56x56 and
//! slower on the other shapes of the benchmark: its reads are runs of 0.8 to 25 KB, one
//! per image, a channel's stride apart, and those come from memory more slowly than
//! whole blocks in order (128x256x14x14 train forward 1.8 to 3.2 times the copy, against
//! 1.2 to 1.8, with or without software prefetches of the next run).
//!
//! # Determinism
//! Work is split into chunks whose boundaries depend on the shape only, never on the
//! number of threads, and per-chunk partial results are merged in chunk order. Every sum
//! inside a chunk uses a fixed set of lane accumulators combined in a fixed order, and
//! Rust never contracts `a * b + c` into a fused multiply-add by itself. The results are
//! therefore bit-identical for any thread count and on any x86-64, whatever SIMD width
//! the dispatcher picks.
//!
//! # Precision
//! All arithmetic is in `f64`, whatever the storage type: sums of `f32` data accumulate
//! in `f64`, variances are computed two-pass inside each cache-sized chunk (for `f32`
//! rows of at most 32 columns, one pass over the data shifted by the chunk's first row,
//! with a check that sends far shifts back to two passes; see [`shifted_moments`]) and
//! merged across chunks with Chan's formula, and `y = (x - mean) * a + b` is evaluated
//! in `f64` and rounded once. Subtracting the mean in `f64` is what keeps `x = 1e4 + N(0, 1)`
//! exact in `f32`, where `x * a + b` evaluated in `f32` cancels.

use std::ops::Range;

use multiversion::multiversion;
use rayon::prelude::*;

use super::float::Float;

/// Bytes per block of rows: small enough that the second pass over a block hits L2 (half
/// of the 1 MB of the machine measured). Measured against 256 KB blocks of `f32`:
/// 4096x1024 train forward 1.49 times a copy against 1.57, forward + backward 3.50
/// against 3.95 (medians of 7 runs), the other shapes within the noise; with 1 MB
/// blocks of `f64`, channels-last train forward was 10 to 15 % slower.
const BLOCK_BYTES: usize = 512 * 1024;
/// Below this many elements the kernels run on the calling thread: the cost of waking
/// the pool is larger than the work.
const PARALLEL_MIN_ELEMS: usize = 64 * 1024;
/// A segment at least this long is traversed along its length; shorter ones across columns.
const SEGMENT_MIN: usize = 32;
/// Values per piece of a segment in the segmented statistics: each piece takes its two
/// passes (the second from L1) and is merged into its channel's moments with Chan's
/// formula. The second pass over a short piece overlaps the loads of the next one; over a
/// whole long segment it does not. Measured on two threads, medians of 6 alternating
/// rounds, ratio to a copy: 32x64x56x56 (segments of 3136) train forward 1.27 against
/// 1.36 to 1.37 for whole segments, forward + backward 3.33 to 3.39 against 3.49 to 3.55;
/// the other shapes of the benchmark within the noise. Pieces of 256 were no better; the
/// backward's sums cut into pieces too were no faster.
const SEGMENT_PIECE: usize = 512;
/// Independent accumulators per sum, to hide the latency of the adds.
const LANES: usize = 16;
/// Columns per panel of the reductions of the column traversal for rows wider than
/// [`ONE_PANEL_MAX_COLS`], whose per-column f64 accumulators (two or three of 8 KB) then
/// stay in L1. Element-wise passes run along whole rows: a narrower sweep of rows that
/// are read from memory defeats the prefetchers. Measured against panels of 2048
/// columns (two threads, medians of 4 to 8 alternating rounds, ratio to a copy):
/// 8192x2048 forward + backward 4.75 to 4.94 against 5.55 to 5.63, 2048x4096 4.37
/// against 4.56, 256x4096 within the noise (train forward 1.36 against 1.41, forward +
/// backward 2.83 against 2.77).
const PANEL_COLS: usize = 1024;
/// The widest rows of the column traversal whose reductions run with accumulators sized
/// for [`WIDE_PANEL_COLS`] columns. For rows of 1024 columns these compiled kernels were
/// measured faster than those for [`PANEL_COLS`], with the same single panel per row
/// (4096x1024 forward + backward 3.10 to 3.22 times a copy against 3.44 to 3.46, medians
/// of 6 to 8 alternating rounds), and for rows of 2048 columns slower (8192x2048: 5.44
/// against 4.75, with two panels of 1024 either way). The cause is not known: the loops
/// are the same and differ only in the size of their stack buffers.
const ONE_PANEL_MAX_COLS: usize = 1024;
/// The panel capacity of the reductions for rows of at most [`ONE_PANEL_MAX_COLS`].
const WIDE_PANEL_COLS: usize = 2048;
/// Panel width of the reductions for rows at most this wide, and the widest rows whose
/// coefficients the element-wise passes copy into aligned buffers: these buffers are
/// set up on every block, which should not cost a small tensor more than its data.
const NARROW_PANEL_COLS: usize = 256;
/// Least rows per block of the column traversal, so that the per-block partial results
/// (two f64 per column) stay small next to the block itself when rows are wide.
const MIN_BLOCK_ROWS: usize = 64;

/// Outputs of at least this many bytes are written with streaming stores (see
/// [`write_block`]): half the L3 of the machine measured and more, where the output would
/// not stay cached for its reader anyway. At 4 MB streaming was measured slower: the
/// output then stays in L3, and its write-back is not paid by the pass.
const STREAM_MIN_BYTES: usize = 16 << 20;
/// Elements per tile of a streamed block: 1 or 2 KB, staged in L1. Measured against 4 KB
/// tiles (two threads, medians of 6 alternating rounds, twice): eval forward 2 to 10 %
/// faster on every shape of 16 MB and more (4096x1024 0.88 against 0.95 to 0.97 times a
/// copy), forward + backward faster on most (32x64x56x56 3.18 against 3.43 to 3.46),
/// train forward within the noise. Tiles of 512 bytes were no better.
const TILE: usize = 256;
/// Bytes per cache line.
const LINE_BYTES: usize = 64;
/// Runs of the element-wise passes are split at multiples of this many elements from
/// the start of their row or segment, so that their vector loops start in phase with the
/// row (and the per-column coefficients) whatever the offset of a streamed tile.
const RUN_ALIGN: usize = 8;
/// The largest `|mean| / std` of a channel for which the `f32` element-wise passes of the
/// column traversal fold the center into the shift (see [`Float::FOLD_CENTER`]): the
/// folded form's extra rounding error is at most about `4 * 2^-53 * 2^20 = 2^-31` of the
/// output's scale, against `2^-24` for the final rounding to `f32`.
const FOLD_MAX_Z: f64 = (1u64 << 20) as f64;

/// How a tensor's elements group into channels (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
}

impl Geometry {
    /// Values per channel.
    pub fn per_channel(&self) -> usize {
        self.outer * self.inner
    }

    /// Total number of elements.
    pub fn len(&self) -> usize {
        self.outer * self.row_len()
    }

    /// Elements in one outer row (`channels * inner`).
    fn row_len(&self) -> usize {
        self.channels * self.inner
    }

    fn segmented(&self) -> bool {
        self.inner >= SEGMENT_MIN
    }

    /// Outer rows per block. Blocks are the unit of work of every pass; they depend on
    /// the shape only, never on the number of threads.
    fn rows_per_block<T>(&self) -> usize {
        let rows = BLOCK_BYTES / std::mem::size_of::<T>() / self.row_len();
        if self.segmented() {
            rows.max(1)
        } else {
            rows.max(MIN_BLOCK_ROWS)
        }
    }

    fn block_len<T>(&self) -> usize {
        self.rows_per_block::<T>() * self.row_len()
    }

    fn blocks<T>(&self) -> usize {
        self.outer.div_ceil(self.rows_per_block::<T>())
    }

    /// Reduction columns of a block: one per channel when segmented, else one per
    /// element of a row.
    fn columns(&self) -> usize {
        if self.segmented() {
            self.channels
        } else {
            self.row_len()
        }
    }

    /// Whether the element-wise passes write their output with streaming stores.
    fn streamed<T>(&self) -> bool {
        self.len() * std::mem::size_of::<T>() >= STREAM_MIN_BYTES
    }

    fn parallel(&self) -> bool {
        self.len() >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1
    }
}

/// Per-column values of one panel, aligned to a cache line so that their vector loads
/// and stores never straddle two lines: the accumulators of a block live here rather
/// than in the partial-results buffer, whose slots start at any offset, and so do the
/// coefficients of short rows (`Vec<f64>` is only 16-byte aligned).
#[repr(C, align(64))]
struct Panel<const N: usize>([f64; N]);

impl<const N: usize> Panel<N> {
    fn zeros() -> Self {
        Panel([0.0; N])
    }

    /// `values` copied into the panel when they fit, else `values` as they are.
    fn aligned<'a>(&'a mut self, values: &'a [f64]) -> &'a [f64] {
        match self.0.get_mut(..values.len()) {
            Some(out) => {
                out.copy_from_slice(values);
                out
            }
            None => values,
        }
    }
}

/// The column ranges of the panels of `size` columns of a row of `width` columns.
fn panels(width: usize, size: usize) -> impl Iterator<Item = Range<usize>> {
    (0..width)
        .step_by(size)
        .map(move |start| start..(start + size).min(width))
}

/// Reusable buffers, so that steady-state calls do not allocate.
#[derive(Debug, Default, Clone)]
pub(crate) struct Workspace {
    partial: Vec<f64>,
    columns: Vec<f64>,
    p: Vec<f64>,
    q: Vec<f64>,
    folded: Vec<f64>,
}

/// Per-channel coefficients of an element-wise pass: `(x - center) * scale + shift`, or
/// `x * scale + shift` when the center is `None` (folded into the shift).
pub(crate) struct Coefficients<'a> {
    pub center: Option<&'a [f64]>,
    pub scale: &'a [f64],
    pub shift: &'a [f64],
}

/// Whether the element-wise passes fold the center into the shift (see
/// [`Float::FOLD_CENTER`]): for `f32`, in the column traversal, whose coefficients are
/// read per element, and when every channel's mean is within [`FOLD_MAX_Z`] standard
/// deviations of zero (never with a non-finite statistic).
fn folds<T: Float>(g: Geometry, mean: &[f64], inv_std: &[f64]) -> bool {
    T::FOLD_CENTER && !g.segmented() && mean.iter().zip(inv_std).all(|(m, i)| (m * i).abs() <= FOLD_MAX_Z)
}

/// What the backward pass takes per channel, besides the tensors.
pub(crate) struct Stats<'a> {
    pub mean: &'a [f64],
    pub inv_std: &'a [f64],
    /// `gamma * inv_std`, the coefficient of `dy` in `dx`.
    pub scale: &'a [f64],
    /// Whether the forward used batch statistics, so that `dx` has the terms of the
    /// gradient through the mean and the variance.
    pub batch_stats: bool,
}

impl Stats<'_> {
    /// `p` and `q` of `dx = scale * dy + (x - mean) * p + q` for channel `c`, from its
    /// `sum(dy)` and `sum(dy * (x - mean))` over `m` values.
    #[inline(always)]
    fn dx_terms(&self, c: usize, sdy: f64, sdyxc: f64, m: f64) -> (f64, f64) {
        if !self.batch_stats {
            return (0.0, 0.0);
        }
        let (k, inv) = (self.scale[c], self.inv_std[c]);
        let dgamma = sdyxc * inv;
        (-k * inv * dgamma / m, -k * sdy / m)
    }
}

// The lane loops below take `[T; LANES]` arrays (from `as_chunks`) so that the compiler
// sees the lane count and keeps each accumulator array in vector registers.

#[inline(always)]
fn sum<T: Float>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l].to_f64();
        }
    }
    let mut s = acc.iter().sum::<f64>();
    for v in tail {
        s += v.to_f64();
    }
    s
}

#[inline(always)]
fn sum_sq_dev<T: Float>(x: &[T], mean: f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l].to_f64() - mean;
            acc[l] += d * d;
        }
    }
    let mut s = acc.iter().sum::<f64>();
    for v in tail {
        let d = v.to_f64() - mean;
        s += d * d;
    }
    s
}

/// Sums of `dy` and of `dy * (x - center)` over a segment. Two loops, not one: with both
/// sums in one loop the compiler pairs `a[l]` with `b[l]` in a vector instead of
/// vectorizing across lanes, and the second loop reads the segment from L1.
#[inline(always)]
fn sum_dy_dyxc<T: Float>(x: &[T], dy: &[T], center: f64) -> (f64, f64) {
    let mut b = [0.0f64; LANES];
    let (xs, xt) = x.as_chunks::<LANES>();
    let (ds, dt) = dy.as_chunks::<LANES>();
    for (xc, dc) in xs.iter().zip(ds) {
        for l in 0..LANES {
            b[l] += dc[l].to_f64() * (xc[l].to_f64() - center);
        }
    }
    let mut sb = b.iter().sum::<f64>();
    for (xv, dv) in xt.iter().zip(dt) {
        sb += dv.to_f64() * (xv.to_f64() - center);
    }
    (sum(dy), sb)
}

/// Moments of one block of rows, per reduction column: writes `count, mean[j], m2[j]`
/// into `out` (`1 + 2 * columns` values). Segmented: two-pass per piece of a segment (at
/// most [`SEGMENT_PIECE`] values), merged over the segment and the block's rows;
/// otherwise two-pass per column over the block's rows, one panel at a time (the second
/// pass reads the panel from cache).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn block_moments<T: Float>(block: &[T], g: Geometry, out: &mut [f64]) {
    let width = g.columns();
    let rows = block.len() / g.row_len();
    let (count, rest) = out.split_first_mut().expect("partial buffer holds the count");
    let (mean, m2) = rest.split_at_mut(width);
    mean.fill(0.0);
    m2.fill(0.0);
    if g.segmented() {
        *count = (rows * g.inner) as f64;
        for (o, row) in block.chunks_exact(g.row_len()).enumerate() {
            for (c, seg) in row.chunks_exact(g.inner).enumerate() {
                let mut seen = (o * g.inner) as f64;
                for piece in seg.chunks(SEGMENT_PIECE) {
                    let piece_n = piece.len() as f64;
                    let n = seen + piece_n;
                    let mean_b = sum(piece) / piece_n;
                    let m2_b = sum_sq_dev(piece, mean_b);
                    let delta = mean_b - mean[c];
                    mean[c] += delta * (piece_n / n);
                    m2[c] += m2_b + delta * delta * (seen * piece_n / n);
                    seen = n;
                }
            }
        }
    } else {
        *count = rows as f64;
        if width <= NARROW_PANEL_COLS {
            column_moments::<T, NARROW_PANEL_COLS>(block, width, mean, m2);
        } else if width <= ONE_PANEL_MAX_COLS {
            column_moments::<T, WIDE_PANEL_COLS>(block, width, mean, m2);
        } else {
            column_moments::<T, PANEL_COLS>(block, width, mean, m2);
        }
    }
}

/// Rows of the column traversal's reductions added together before their sum meets the
/// per-column accumulator: a quarter of the loads and stores of accumulators in L1.
const ROW_GROUP: usize = 4;

/// The longest rows (in bytes) whose two-pass moments go [`ROW_GROUP`] rows at a time
/// when a panel spans the whole row of a block of at least half of [`BLOCK_BYTES`];
/// longer ones go a row at a time. Smaller blocks, which come from small tensors and
/// stay in cache, keep the groups (60x100 train forward: 5.2 times the copy grouped,
/// 6.0 a row at a time, medians of 4 runs). Measured on two
/// threads, train forward over a copy, grouped against a row at a time: 32x64x56x56
/// channels-last (256-byte rows) 1.31 against 1.52; 64x128x28x28 (512 bytes) 1.48
/// against 1.31; 128x256x14x14 (1 KB) 1.45 against 1.31; 4096x1024 (4 KB) 1.57 against
/// 1.37. Rows spread over several panels (256x4096) stay grouped: a row at a time, each
/// panel's sweep skips half of every row, and train forward took 1.95 against 1.43.
const GROUPED_ROW_MAX_BYTES: usize = 256;

/// The first `n` values of rows `first..first + ROW_GROUP` of `data`, rows `width` apart.
/// A function, not a closure, so that it is always inlined into the SIMD target of its
/// caller (see [`column_moments`]).
#[inline(always)]
fn group_rows<T>(data: &[T], first: usize, width: usize, n: usize) -> [&[T]; ROW_GROUP] {
    [
        &data[first * width..][..n],
        &data[(first + 1) * width..][..n],
        &data[(first + 2) * width..][..n],
        &data[(first + 3) * width..][..n],
    ]
}

/// The column traversal of [`block_moments`], in panels of `N` columns: one pass over
/// the data shifted by the block's first row for rows of at most [`ONE_PASS_MAX_WIDTH`]
/// columns, where [`Float::ONE_PASS_MOMENTS`] allows it and the shift passes
/// [`shifted_moments`]'s check, else two passes.
///
/// The loops are written out, without closures: a closure that the compiler does not
/// inline is compiled for the baseline target, not for the SIMD target of the
/// multiversioned function that calls this one (measured: the second pass ran in SSE2).
#[inline(always)]
fn column_moments<T: Float, const N: usize>(block: &[T], width: usize, mean: &mut [f64], m2: &mut [f64]) {
    for cols in panels(width, N) {
        let n = cols.len();
        let (mut mean_p, mut m2_p) = (Panel::<N>::zeros(), Panel::<N>::zeros());
        let (mean_p, m2_p) = (&mut mean_p.0[..n], &mut m2_p.0[..n]);
        let panel = &block[cols.start..];
        let one_pass = T::ONE_PASS_MOMENTS && width <= ONE_PASS_MAX_WIDTH;
        if !(one_pass && shifted_moments(panel, width, mean_p, m2_p)) {
            two_pass_moments(panel, width, mean_p, m2_p);
        }
        mean[cols.clone()].copy_from_slice(mean_p);
        m2[cols].copy_from_slice(m2_p);
    }
}

/// The widest rows whose moments [`column_moments`] takes in one pass. On wider ones the
/// one pass was measured slower than two (32x64x56x56 channels-last train forward on
/// one thread: 4.5 ms against 2.9), the second of which reads the block from L2; on
/// narrower ones, where the loops over a group of rows are short, faster (256x32x28x28
/// channels-last on two threads: 1.25 to 1.38 times a copy against 1.45 to 1.57).
const ONE_PASS_MAX_WIDTH: usize = 32;

/// The largest share of `s2` that the shift's term `s1 * s1 / count` may take in
/// [`shifted_moments`].
const SHIFT_MAX_SHARE: f64 = 63.0 / 64.0;

/// One pass over the rows of a panel of `mean.len()` columns, rows `width` apart: sums
/// of `d = x - k` and `d * d` per column, `k` the column's value in the first row, and
/// from them `mean = k + s1 / count` and `m2 = s2 - s1 * s1 / count`. Returns false,
/// leaving `mean` and `m2` meaningless, when some column has `m2 < s2 / 64`, that is a
/// mean about 8 standard deviations or more from `k`: the subtraction would cancel more
/// than 6 bits, and the caller goes back to two passes. Otherwise the relative error of
/// `m2` is at most about `64 * count * 2^-53`, at most `2^-30` for a block's at most
/// `BLOCK_BYTES / 4` rows, far below the `2^-24` of an `f32` result.
#[inline(always)]
fn shifted_moments<T: Float>(panel: &[T], width: usize, mean: &mut [f64], m2: &mut [f64]) -> bool {
    let (n, count) = (mean.len(), panel.len().div_ceil(width));
    let whole = count - count % ROW_GROUP;
    let first = &panel[..n];
    let (s1, s2) = (mean, m2);
    s1.fill(0.0);
    s2.fill(0.0);
    for start in (0..whole).step_by(ROW_GROUP) {
        let [r0, r1, r2, r3] = group_rows(panel, start, width, n);
        for j in 0..n {
            let k = first[j].to_f64();
            let (d0, d1) = (r0[j].to_f64() - k, r1[j].to_f64() - k);
            let (d2, d3) = (r2[j].to_f64() - k, r3[j].to_f64() - k);
            s1[j] += (d0 + d1) + (d2 + d3);
            s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    }
    for r in whole..count {
        let r0 = &panel[r * width..][..n];
        for j in 0..n {
            let d = r0[j].to_f64() - first[j].to_f64();
            s1[j] += d;
            s2[j] += d * d;
        }
    }
    let inv = 1.0 / count as f64;
    let mut cancels = false;
    for j in 0..n {
        let shift_sq = s1[j] * s1[j] * inv;
        cancels |= shift_sq > SHIFT_MAX_SHARE * s2[j];
        s1[j] = first[j].to_f64() + s1[j] * inv;
        s2[j] -= shift_sq;
    }
    !cancels
}

/// Two passes over the rows of a panel of `mean.len()` columns, rows `width` apart: the
/// means, then the sums of squared deviations from them, the second pass reading the
/// panel from cache. Overwrites `mean` and `m2`.
#[inline(always)]
fn two_pass_moments<T: Float>(panel: &[T], width: usize, mean: &mut [f64], m2: &mut [f64]) {
    mean.fill(0.0);
    m2.fill(0.0);
    let (n, count) = (mean.len(), panel.len().div_ceil(width));
    let grouped = n < width
        || width * std::mem::size_of::<T>() <= GROUPED_ROW_MAX_BYTES
        || std::mem::size_of_val(panel) < BLOCK_BYTES / 2;
    let whole = if grouped { count - count % ROW_GROUP } else { 0 };
    let inv = 1.0 / count as f64;
    // Every slice of the loops below has length `n`, which lets the compiler drop the
    // bounds checks and vectorize them.
    for first in (0..whole).step_by(ROW_GROUP) {
        let [r0, r1, r2, r3] = group_rows(panel, first, width, n);
        for j in 0..n {
            mean[j] += (r0[j].to_f64() + r1[j].to_f64()) + (r2[j].to_f64() + r3[j].to_f64());
        }
    }
    for r in whole..count {
        let r0 = &panel[r * width..][..n];
        for j in 0..n {
            mean[j] += r0[j].to_f64();
        }
    }
    for m in mean.iter_mut() {
        *m *= inv;
    }
    for first in (0..whole).step_by(ROW_GROUP) {
        let [r0, r1, r2, r3] = group_rows(panel, first, width, n);
        for j in 0..n {
            let m = mean[j];
            let (d0, d1) = (r0[j].to_f64() - m, r1[j].to_f64() - m);
            let (d2, d3) = (r2[j].to_f64() - m, r3[j].to_f64() - m);
            m2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    }
    for r in whole..count {
        let r0 = &panel[r * width..][..n];
        for j in 0..n {
            let d = r0[j].to_f64() - mean[j];
            m2[j] += d * d;
        }
    }
}

/// Chan's merge of one block's per-column moments into the running ones. Every column
/// of a block has the same count, so the weights are scalars and the loop vectorizes.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn merge_block(n_a: f64, mean_a: &mut [f64], m2_a: &mut [f64], n_b: f64, mean_b: &[f64], m2_b: &[f64]) {
    let n = n_a + n_b;
    let (wb, wab) = (n_b / n, n_a * n_b / n);
    for j in 0..mean_a.len() {
        let delta = mean_b[j] - mean_a[j];
        mean_a[j] += delta * wb;
        m2_a[j] += m2_b[j] + delta * delta * wab;
    }
}

/// Per-column sums of `dy` and `dy * (x - center)` over one block of rows: writes
/// `sum_dy[j], sum_dyxc[j]` into `out` (`2 * columns` values). `center` is per channel
/// when segmented, per column otherwise.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn block_grad_sums<T: Float>(x: &[T], dy: &[T], g: Geometry, center: &[f64], out: &mut [f64]) {
    let width = g.columns();
    let (sdy, sdyxc) = out.split_at_mut(width);
    sdy.fill(0.0);
    sdyxc.fill(0.0);
    let rows = || x.chunks_exact(g.row_len()).zip(dy.chunks_exact(g.row_len()));
    if g.segmented() {
        for (xr, dr) in rows() {
            for (c, (xs, ds)) in xr.chunks_exact(g.inner).zip(dr.chunks_exact(g.inner)).enumerate() {
                let (a, b) = sum_dy_dyxc(xs, ds, center[c]);
                sdy[c] += a;
                sdyxc[c] += b;
            }
        }
    } else {
        if width <= NARROW_PANEL_COLS {
            column_grad_sums::<T, NARROW_PANEL_COLS>(x, dy, width, center, sdy, sdyxc);
        } else if width <= ONE_PANEL_MAX_COLS {
            column_grad_sums::<T, WIDE_PANEL_COLS>(x, dy, width, center, sdy, sdyxc);
        } else {
            column_grad_sums::<T, PANEL_COLS>(x, dy, width, center, sdy, sdyxc);
        }
    }
}

/// The column traversal of [`block_grad_sums`], in panels of `N` columns. Rows wider than
/// a panel are added [`ROW_GROUP`] at a time before they meet the accumulators (256x4096
/// forward + backward: 20 % faster); rows within one panel one at a time (on
/// 32x64x56x56 channels-last, grouping measured no faster, and on 4096x1024 slower:
/// forward + backward 3.76 times a copy grouped, 3.35 not, medians of 8 runs). Written
/// out, without closures, as [`column_moments`] is.
#[inline(always)]
fn column_grad_sums<T: Float, const N: usize>(
    x: &[T],
    dy: &[T],
    width: usize,
    center: &[f64],
    sdy: &mut [f64],
    sdyxc: &mut [f64],
) {
    let count = x.len() / width;
    let whole = if width > N { count - count % ROW_GROUP } else { 0 };
    for cols in panels(width, N) {
        let n = cols.len();
        let [mut a_p, mut b_p, mut center_p] = [(); 3].map(|_| Panel::<N>::zeros());
        let (a_p, b_p) = (&mut a_p.0[..n], &mut b_p.0[..n]);
        let center_p = &mut center_p.0[..n];
        center_p.copy_from_slice(&center[cols.clone()]);
        let center_p = &*center_p;
        let (xp, dp) = (&x[cols.start..], &dy[cols.start..]);
        for first in (0..whole).step_by(ROW_GROUP) {
            let [x0, x1, x2, x3] = group_rows(xp, first, width, n);
            let [d0, d1, d2, d3] = group_rows(dp, first, width, n);
            for j in 0..n {
                let m = center_p[j];
                let (e0, e1, e2, e3) = (d0[j].to_f64(), d1[j].to_f64(), d2[j].to_f64(), d3[j].to_f64());
                a_p[j] += (e0 + e1) + (e2 + e3);
                let (t0, t1) = (e0 * (x0[j].to_f64() - m), e1 * (x1[j].to_f64() - m));
                let (t2, t3) = (e2 * (x2[j].to_f64() - m), e3 * (x3[j].to_f64() - m));
                b_p[j] += (t0 + t1) + (t2 + t3);
            }
        }
        for r in whole..count {
            let (x0, d0) = (&xp[r * width..][..n], &dp[r * width..][..n]);
            for j in 0..n {
                let e = d0[j].to_f64();
                a_p[j] += e;
                b_p[j] += e * (x0[j].to_f64() - center_p[j]);
            }
        }
        sdy[cols.clone()].copy_from_slice(a_p);
        sdyxc[cols].copy_from_slice(b_p);
    }
}

/// The streamed copy of [`write_block`] for elements of type `$t`, with the widest
/// streaming stores of the SIMD target of the multiversioned function that expands it
/// (with 16-byte ones, streaming was measured no faster than cached stores). A macro,
/// not a function: `match_target!` picks the target of the function it is written in.
macro_rules! streaming_copy {
    ($t:ty) => {
        |src: &[$t], dst: &mut [$t]| {
            multiversion::target::match_target! {
                "x86_64+avx512f" => streaming::copy_lines_avx512(src, dst),
                "x86_64+avx2" => streaming::copy_lines_avx(src, dst),
                _ => streaming::copy_lines(src, dst),
            }
        }
    };
}

/// `y = (x - center) * scale + shift` over one block. Coefficients are per channel when
/// segmented, per column otherwise.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn block_affine<T: Float>(x: &[T], y: &mut [T], g: Geometry, coef: &Coefficients, stream: bool) {
    let (center, scale, shift) = (coef.center, coef.scale, coef.shift);
    let stream = stream.then_some(streaming_copy!(T));
    if g.segmented() {
        write_block(y, stream, |offset, out| {
            for_each_run(offset, out.len(), g.inner, |seg, cols, at| {
                let c = seg % g.channels;
                // Subtracting a folded center of 0.0 is exact.
                let (m, a, b) = (center.map_or(0.0, |m| m[c]), scale[c], shift[c]);
                let xs = &x[seg * g.inner..][cols.clone()];
                for (o, v) in out[at..at + cols.len()].iter_mut().zip(xs) {
                    *o = T::from_f64((v.to_f64() - m) * a + b);
                }
            });
        });
    } else {
        let width = g.row_len();
        let mut buf = [(); 3].map(|_| Panel::<NARROW_PANEL_COLS>::zeros());
        let [b0, b1, b2] = &mut buf;
        let center = center.map(|m| b0.aligned(&m[..width]));
        let (scale, shift) = (b1.aligned(&scale[..width]), b2.aligned(&shift[..width]));
        if groups_rows::<T>(stream.is_some(), center.is_some(), width) {
            map_row_groups([x], [scale, shift], y, width, stream, |[a, b], [v]| v * a + b);
            return;
        }
        write_block(y, stream, |offset, out| {
            for_each_run(offset, out.len(), width, |row, cols, at| {
                let xr = &x[row * width..][cols.clone()];
                let out = out[at..at + cols.len()].iter_mut().zip(xr);
                let coefs = scale[cols.clone()].iter().zip(&shift[cols.clone()]);
                match center {
                    Some(center) => {
                        for ((o, v), (m, (a, b))) in out.zip(center[cols].iter().zip(coefs)) {
                            *o = T::from_f64((v.to_f64() - m) * a + b);
                        }
                    }
                    None => {
                        for ((o, v), (a, b)) in out.zip(coefs) {
                            *o = T::from_f64(v.to_f64() * a + b);
                        }
                    }
                }
            });
        });
    }
}

/// Whether an element-wise pass of the column traversal runs through [`map_row_groups`]:
/// folded, and rows wider than [`NARROW_PANEL_COLS`]; when streamed, rows of at least
/// [`STREAMED_GROUP_MIN_COLS`] that are whole cache lines (so that every row of a block
/// starts at the same offset within a line). Other streamed blocks go a tile at a time
/// through [`write_block`].
#[inline(always)]
fn groups_rows<T>(stream: bool, centered: bool, width: usize) -> bool {
    let whole_lines = (width * std::mem::size_of::<T>()).is_multiple_of(LINE_BYTES);
    !centered && width > NARROW_PANEL_COLS && (!stream || (width >= STREAMED_GROUP_MIN_COLS && whole_lines))
}

/// The narrowest streamed rows that [`map_row_groups`] takes a group at a time: from here
/// on, the per-column coefficients (two or three `f64` per column, 32 KB or more) no
/// longer stay in L1 from one row to the next. Measured on two threads, medians of 4
/// alternating rounds, ratio to a copy, grouped against a row at a time: 2048x4096 eval
/// forward 0.99 against 1.38 to 1.91, forward + backward 4.4 to 4.5 against 5.4 to 6.3;
/// 8192x2048 forward + backward 5.1 to 5.4 against 5.6 to 7.2. On 4096x1024, whose
/// coefficients stay in L1, a row at a time was faster (forward + backward 3.45 against
/// 3.60).
const STREAMED_GROUP_MIN_COLS: usize = 2048;

/// `out = f(coefs[..][j], inputs[..])` over whole rows of `width` elements, for the
/// element-wise passes of the column traversal when they need no center (folded) and
/// rows are wide ([`groups_rows`]): per column `j`, the coefficients `coefs[c][j]` are
/// loaded once for [`ROW_GROUP`] rows rather than once per element. Rows wider than
/// [`NARROW_PANEL_COLS`] have coefficients that do not stay in L1 from one row to the
/// next (measured on 256x4096: eval forward 8 % faster, forward + backward 7 %);
/// narrower ones keep them there and run faster one row at a time (60x100: forward +
/// backward 5.3 us one row at a time, 9.9 us grouped).
///
/// Without `stream` the output is written in place. With it, the whole cache lines of a
/// group of rows are computed a quarter [`TILE`] of columns at a time into a buffer in
/// L1 and streamed to memory from there (see [`write_block`]); the partial lines at the
/// ends of each row, which it shares with its neighbours, are written in place. Rows are
/// whole lines ([`groups_rows`]), so each row of the block has the same partial lines.
#[inline(always)]
fn map_row_groups<T: Float, const I: usize, const C: usize>(
    inputs: [&[T]; I],
    coefs: [&[f64]; C],
    out: &mut [T],
    width: usize,
    stream: Option<impl Fn(&[T], &mut [T])>,
    f: impl Fn([f64; C], [f64; I]) -> f64 + Copy,
) {
    const COLS: usize = TILE / ROW_GROUP;
    let coefs = coefs.map(|c| &c[..width]);
    let group = ROW_GROUP * width;
    let whole = out.len() / group * group;
    let line = LINE_BYTES / std::mem::size_of::<T>();
    let head = out.as_ptr().align_offset(LINE_BYTES).min(width);
    let lines_end = head + (width - head) / line * line;
    let (out_groups, out_rest) = out.split_at_mut(whole);
    let mut tile = Tile::<T>::new();
    for (g, og) in out_groups.chunks_exact_mut(group).enumerate() {
        let (o0, og) = og.split_at_mut(width);
        let (o1, og) = og.split_at_mut(width);
        let (o2, og) = og.split_at_mut(width);
        let mut outs = [o0, o1, o2, &mut og[..width]];
        let ins = inputs.map(|s| {
            let s = &s[g * group..][..group];
            [0, 1, 2, 3].map(|r| &s[r * width..][..width])
        });
        let Some(copy_lines) = &stream else {
            map_group(coefs, ins, outs.each_mut().map(|o| &mut **o), 0..width, f);
            continue;
        };
        for cols in [0..head, lines_end..width] {
            map_group(coefs, ins, outs.each_mut().map(|o| &mut o[cols.clone()]), cols, f);
        }
        for start in (head..lines_end).step_by(COLS) {
            let cols = start..(start + COLS).min(lines_end);
            let n = cols.len();
            let (t0, t) = tile.0.split_at_mut(COLS);
            let (t1, t) = t.split_at_mut(COLS);
            let (t2, t3) = t.split_at_mut(COLS);
            let mut staged = [t0, t1, t2, t3].map(|t| &mut t[..n]);
            map_group(coefs, ins, staged.each_mut().map(|t| &mut **t), cols.clone(), f);
            for (t, o) in staged.iter().zip(&mut outs) {
                copy_lines(t, &mut o[cols.clone()]);
            }
        }
    }
    for (r, or) in out_rest.chunks_exact_mut(width).enumerate() {
        let ins = inputs.map(|s| &s[whole + r * width..][..width]);
        for j in 0..width {
            or[j] = T::from_f64(f(coefs.map(|c| c[j]), ins.map(|i| i[j].to_f64())));
        }
    }
    if stream.is_some() {
        streaming::fence();
    }
}

/// The columns `cols` of one group of [`ROW_GROUP`] rows of [`map_row_groups`], written
/// into `outs`, which hold these columns only (each `cols.len()` long).
#[inline(always)]
fn map_group<T: Float, const I: usize, const C: usize>(
    coefs: [&[f64]; C],
    ins: [[&[T]; ROW_GROUP]; I],
    outs: [&mut [T]; ROW_GROUP],
    cols: Range<usize>,
    f: impl Fn([f64; C], [f64; I]) -> f64,
) {
    let n = cols.len();
    let c = coefs.map(|c| &c[cols.clone()]);
    let ins = ins.map(|rows| rows.map(|r| &r[cols.clone()]));
    let [o0, o1, o2, o3] = outs.map(|o| &mut o[..n]);
    for j in 0..n {
        let c = c.map(|c| c[j]);
        o0[j] = T::from_f64(f(c, ins.map(|i| i[0][j].to_f64())));
        o1[j] = T::from_f64(f(c, ins.map(|i| i[1][j].to_f64())));
        o2[j] = T::from_f64(f(c, ins.map(|i| i[2][j].to_f64())));
        o3[j] = T::from_f64(f(c, ins.map(|i| i[3][j].to_f64())));
    }
}

/// `dx = k * dy + (x - center) * p + q` over one block (`coef` holds center, p, q).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn block_grad_input<T: Float>(
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    g: Geometry,
    k: &[f64],
    coef: &Coefficients,
    stream: bool,
) {
    let (center, p, q) = (coef.center, coef.scale, coef.shift);
    let stream = stream.then_some(streaming_copy!(T));
    if g.segmented() {
        write_block(dx, stream, |offset, out| {
            for_each_run(offset, out.len(), g.inner, |seg, cols, at| {
                let c = seg % g.channels;
                // Subtracting a folded center of 0.0 is exact.
                let (kc, m, pc, qc) = (k[c], center.map_or(0.0, |m| m[c]), p[c], q[c]);
                let (xs, gs) = (
                    &x[seg * g.inner..][cols.clone()],
                    &dy[seg * g.inner..][cols.clone()],
                );
                for ((o, v), d) in out[at..at + cols.len()].iter_mut().zip(xs).zip(gs) {
                    *o = T::from_f64(kc * d.to_f64() + ((v.to_f64() - m) * pc + qc));
                }
            });
        });
    } else {
        let width = g.row_len();
        let mut buf = [(); 4].map(|_| Panel::<NARROW_PANEL_COLS>::zeros());
        let [b0, b1, b2, b3] = &mut buf;
        let (k, center) = (b0.aligned(&k[..width]), center.map(|m| b1.aligned(&m[..width])));
        let (p, q) = (b2.aligned(&p[..width]), b3.aligned(&q[..width]));
        if groups_rows::<T>(stream.is_some(), center.is_some(), width) {
            map_row_groups([x, dy], [k, p, q], dx, width, stream, |[kc, pc, qc], [v, d]| {
                kc * d + (v * pc + qc)
            });
            return;
        }
        write_block(dx, stream, |offset, out| {
            for_each_run(offset, out.len(), width, |row, cols, at| {
                let (xr, gr) = (&x[row * width..][cols.clone()], &dy[row * width..][cols.clone()]);
                let coefs = k[cols.clone()].iter().zip(&p[cols.clone()]).zip(&q[cols.clone()]);
                let outs = out[at..at + cols.len()].iter_mut().zip(xr).zip(gr);
                match center {
                    Some(center) => {
                        for ((((o, v), d), m), ((kc, pc), qc)) in outs.zip(&center[cols]).zip(coefs) {
                            *o = T::from_f64(kc * d.to_f64() + ((v.to_f64() - m) * pc + qc));
                        }
                    }
                    None => {
                        for (((o, v), d), ((kc, pc), qc)) in outs.zip(coefs) {
                            *o = T::from_f64(kc * d.to_f64() + (v.to_f64() * pc + qc));
                        }
                    }
                }
            });
        });
    }
}

/// Splits the elements `offset..offset + len` of a block into pieces that stay within one
/// run of `run_len` elements (a segment or a row), and calls `f(run, within, at)` for each:
/// the run's index in the block, the piece's range within the run, and its position in
/// `0..len`. A piece that starts off a multiple of [`RUN_ALIGN`] within its run ends at
/// the next one, so that the vectorized loops over the pieces stay in phase with the run.
#[inline(always)]
fn for_each_run(offset: usize, len: usize, run_len: usize, mut f: impl FnMut(usize, Range<usize>, usize)) {
    let (mut at, end) = (offset, offset + len);
    while at < end {
        let (run, start) = (at / run_len, at % run_len);
        let aligned_end = if start.is_multiple_of(RUN_ALIGN) {
            run_len
        } else {
            start.next_multiple_of(RUN_ALIGN)
        };
        let stop = aligned_end.min(run_len).min(start + end - at);
        f(run, start..stop, at - offset);
        at += stop - start;
    }
}

/// Writes one block of an element-wise pass: `fill(offset, out)` computes the block's
/// elements `offset..offset + out.len()` into `out`.
///
/// Without `stream`, `fill` writes the block in place. With it (a streaming copy of
/// whole lines, from [`streaming`]), the block's whole cache
/// lines are computed a tile at a time into a buffer in L1 and written to memory with
/// streaming stores, which skip the read-for-ownership of a cached store: the output of
/// a tensor larger than the caches is not read back soon, and the read of its old
/// contents would be a third of the traffic of the pass. The values are the same either
/// way; only the stores differ. Partial lines at the ends are written in place, so that
/// a line shared with the next block is never streamed.
#[inline(always)]
fn write_block<T: Float>(
    out: &mut [T],
    stream: Option<impl Fn(&[T], &mut [T])>,
    mut fill: impl FnMut(usize, &mut [T]),
) {
    let Some(copy_lines) = stream else {
        fill(0, out);
        return;
    };
    let line = LINE_BYTES / std::mem::size_of::<T>();
    let head = out.as_ptr().align_offset(LINE_BYTES).min(out.len());
    fill(0, &mut out[..head]);
    let lines_end = head + (out.len() - head) / line * line;
    let mut tile = Tile::<T>::new();
    let mut at = head;
    while at < lines_end {
        let n = TILE.min(lines_end - at);
        fill(at, &mut tile.0[..n]);
        copy_lines(&tile.0[..n], &mut out[at..at + n]);
        at += n;
    }
    fill(lines_end, &mut out[lines_end..]);
    streaming::fence();
}

/// A cache-line-aligned buffer of [`TILE`] elements, the staging area of streamed stores.
#[repr(C, align(64))]
struct Tile<T>([T; TILE]);

impl<T: Float> Tile<T> {
    fn new() -> Self {
        Tile([T::default(); TILE])
    }
}

/// Streaming (non-temporal) stores. Everything else in the kernels is safe code.
mod streaming {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::{
        __m128i, __m256i, __m512i, _mm_load_si128, _mm_stream_si128, _mm256_load_si256, _mm256_stream_si256,
        _mm512_load_si512, _mm512_stream_si512,
    };

    use super::LINE_BYTES;

    /// The bytes in `src`, after checking what every streamed copy relies on: `src` and
    /// `dst` have the same length, a whole number of cache lines, and start on one.
    fn checked_bytes<T>(src: &[T], dst: &[T]) -> usize {
        let bytes = std::mem::size_of_val(src);
        assert!(
            dst.len() == src.len()
                && bytes.is_multiple_of(LINE_BYTES)
                && src.as_ptr().addr().is_multiple_of(LINE_BYTES)
                && dst.as_ptr().addr().is_multiple_of(LINE_BYTES),
            "streamed copies are whole aligned cache lines"
        );
        bytes
    }

    // SAFETY (the three copies below): `checked_bytes` ensures that `src` and `dst` hold
    // `bytes` bytes each, so every offset stays inside them, and that both start 64-byte
    // aligned, so each access of `W <= 64` bytes at a multiple of `W` is aligned as the
    // aligned loads and streaming stores require. The needed instructions are enabled:
    // SSE2 is part of x86_64, the others by `target_feature`. The weakly ordered stores
    // are made visible by `fence` before the block's closure returns, that is before
    // any other thread can synchronize with this one.

    /// Copies `src` into `dst` with 64-byte streaming stores (see [`checked_bytes`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) fn copy_lines_avx512<T>(src: &[T], dst: &mut [T]) {
        let (s, d) = (src.as_ptr().cast::<__m512i>(), dst.as_mut_ptr().cast::<__m512i>());
        for i in 0..checked_bytes(src, dst) / 64 {
            // SAFETY: see above.
            unsafe { _mm512_stream_si512(d.add(i), _mm512_load_si512(s.add(i))) };
        }
    }

    /// Copies `src` into `dst` with 32-byte streaming stores (see [`checked_bytes`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    pub(super) fn copy_lines_avx<T>(src: &[T], dst: &mut [T]) {
        let (s, d) = (src.as_ptr().cast::<__m256i>(), dst.as_mut_ptr().cast::<__m256i>());
        for i in 0..checked_bytes(src, dst) / 32 {
            // SAFETY: see above.
            unsafe { _mm256_stream_si256(d.add(i), _mm256_load_si256(s.add(i))) };
        }
    }

    /// Copies `src` into `dst` with 16-byte streaming stores (see [`checked_bytes`]).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn copy_lines<T>(src: &[T], dst: &mut [T]) {
        let (s, d) = (src.as_ptr().cast::<__m128i>(), dst.as_mut_ptr().cast::<__m128i>());
        for i in 0..checked_bytes(src, dst) / 16 {
            // SAFETY: see above.
            unsafe { _mm_stream_si128(d.add(i), _mm_load_si128(s.add(i))) };
        }
    }

    /// Orders the streaming stores before every later store, so that whoever
    /// synchronizes with this thread afterwards sees them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) fn fence() {
        // SAFETY: `sfence` has no preconditions; SSE is part of x86_64.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }

    /// Ordinary stores where there are no streaming ones.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn copy_lines<T: Copy>(src: &[T], dst: &mut [T]) {
        dst.copy_from_slice(src);
    }

    /// Nothing to order without streaming stores.
    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub(super) fn fence() {}
}

/// `out[c] = 1 / sqrt(var[c] + eps)`, vectorized: square roots and divisions are most
/// of the per-channel work of a small tensor.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn inv_std_into(var: &[f64], eps: f64, out: &mut [f64]) {
    for (o, v) in out.iter_mut().zip(var) {
        *o = 1.0 / (v + eps).sqrt();
    }
}

/// `1 / sqrt(var[c] + eps)` per channel, written into `out`.
pub(crate) fn inv_std(var: &[f64], eps: f64, out: &mut Vec<f64>) {
    out.resize(var.len(), 0.0);
    inv_std_into(var, eps, out);
}

/// Runs `f(i, chunk)` over the chunks of `out`, in parallel when the tensor is large.
fn for_each_chunk<T: Send>(parallel: bool, out: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if parallel {
        out.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// The per-column form of per-channel vectors for the column traversal (each value
/// repeated `inner` times; an empty vector stays empty), written one after another into
/// `columns`; segmented traversals, and column traversals with `inner == 1`, use the
/// per-channel vectors as they are.
fn column_form<'a, const N: usize>(
    g: Geometry,
    per_channel: [&'a [f64]; N],
    columns: &'a mut Vec<f64>,
) -> [&'a [f64]; N] {
    // One value per channel is already one per column when `inner` is 1.
    if g.segmented() || g.inner == 1 {
        return per_channel;
    }
    columns.clear();
    let mut ends = [0; N];
    for (values, end) in per_channel.iter().zip(&mut ends) {
        columns.extend(values.iter().flat_map(|&v| std::iter::repeat_n(v, g.inner)));
        *end = columns.len();
    }
    let columns: &'a [f64] = columns;
    std::array::from_fn(|i| &columns[if i == 0 { 0 } else { ends[i - 1] }..ends[i]])
}

/// Per-channel means and biased variances of `x`, written into `mean` and `var`.
pub(crate) fn moments<T: Float>(
    x: &[T],
    g: Geometry,
    ws: &mut Workspace,
    mean: &mut Vec<f64>,
    var: &mut Vec<f64>,
) {
    let width = g.columns();
    let stride = 1 + 2 * width;
    let block_len = g.block_len::<T>();
    ws.partial.resize(g.blocks::<T>() * stride, 0.0);
    for_each_chunk(g.parallel(), &mut ws.partial, stride, |i, slot| {
        let start = i * block_len;
        let end = (start + block_len).min(x.len());
        block_moments(&x[start..end], g, slot);
    });
    // Merge the blocks in order, into the first one.
    let (first, rest) = ws.partial.split_at_mut(stride);
    let (n_acc, acc) = first.split_first_mut().expect("at least one block");
    let (mean_acc, m2_acc) = acc.split_at_mut(width);
    for part in rest.chunks_exact(stride) {
        let (mean_b, m2_b) = part[1..].split_at(width);
        merge_block(*n_acc, mean_acc, m2_acc, part[0], mean_b, m2_b);
        *n_acc += part[0];
    }
    mean.clear();
    var.clear();
    let n = *n_acc;
    if width == g.channels {
        mean.extend_from_slice(mean_acc);
        var.extend(m2_acc.iter().map(|m2| m2 / n));
        return;
    }
    // Column traversal with `inner > 1`: merge the `inner` columns of each channel.
    for (means, m2s) in mean_acc.chunks_exact(g.inner).zip(m2_acc.chunks_exact(g.inner)) {
        let (mut count, mut mu, mut m2) = (0.0, 0.0, 0.0);
        for (&mean_b, &m2_b) in means.iter().zip(m2s) {
            let total = count + n;
            let delta = mean_b - mu;
            mu += delta * (n / total);
            m2 += m2_b + delta * delta * (count * n / total);
            count = total;
        }
        mean.push(mu);
        var.push(m2 / count);
    }
}

/// `y = (x - center[c]) * scale[c] + shift[c]`, element-wise (`x * scale[c] + shift[c]`
/// without a center). `inv_std` is the channel's `1 / sqrt(var + eps)` for the statistics
/// whose mean is the center, which decides whether the center is folded into the shift
/// (see [`folds`]).
pub(crate) fn affine<T: Float>(
    x: &[T],
    y: &mut [T],
    g: Geometry,
    coef: &Coefficients,
    inv_std: &[f64],
    ws: &mut Workspace,
) {
    let (center, shift) = match coef.center {
        Some(center) if folds::<T>(g, center, inv_std) => {
            ws.folded.clear();
            let folded = center.iter().zip(coef.scale).zip(coef.shift);
            ws.folded.extend(folded.map(|((m, a), b)| b - m * a));
            (None, &ws.folded[..])
        }
        center => (center, coef.shift),
    };
    let cols = column_form(g, [center.unwrap_or(&[]), coef.scale, shift], &mut ws.columns);
    let coef = Coefficients {
        center: center.map(|_| cols[0]),
        scale: cols[1],
        shift: cols[2],
    };
    let block_len = g.block_len::<T>();
    let stream = g.streamed::<T>();
    for_each_chunk(g.parallel(), y, block_len, |i, out| {
        let start = i * block_len;
        block_affine(&x[start..start + out.len()], out, g, &coef, stream);
    });
}

/// The backward pass: writes `dx = scale * dy + (x - mean) * p + q` and the per-channel
/// `sum(dy)` and `sum(dy * (x - mean))` into `sdy` and `sdyxc`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    g: Geometry,
    stats: &Stats,
    ws: &mut Workspace,
    sdy: &mut [f64],
    sdyxc: &mut [f64],
) {
    grad_sums(x, dy, g, stats.mean, ws, sdy, sdyxc);
    let m = g.per_channel() as f64;
    let fold = folds::<T>(g, stats.mean, stats.inv_std);
    ws.p.clear();
    ws.q.clear();
    for c in 0..g.channels {
        let (p, q) = stats.dx_terms(c, sdy[c], sdyxc[c], m);
        ws.p.push(p);
        ws.q.push(if fold { q - stats.mean[c] * p } else { q });
    }
    let cols = column_form(g, [stats.scale, stats.mean, &ws.p, &ws.q], &mut ws.columns);
    let coef = Coefficients {
        center: (!fold).then_some(cols[1]),
        scale: cols[2],
        shift: cols[3],
    };
    let block_len = g.block_len::<T>();
    let stream = g.streamed::<T>();
    for_each_chunk(g.parallel(), dx, block_len, |i, out| {
        let s = i * block_len;
        let e = s + out.len();
        block_grad_input(&x[s..e], &dy[s..e], out, g, cols[0], &coef, stream);
    });
}

/// Per-channel `sum(dy)` and `sum(dy * (x - center[c]))`, written into `sdy` and `sdyxc`.
fn grad_sums<T: Float>(
    x: &[T],
    dy: &[T],
    g: Geometry,
    center: &[f64],
    ws: &mut Workspace,
    sdy: &mut [f64],
    sdyxc: &mut [f64],
) {
    let width = g.columns();
    let block_len = g.block_len::<T>();
    let centers = column_form(g, [center], &mut ws.columns)[0];
    ws.partial.resize(g.blocks::<T>() * 2 * width, 0.0);
    for_each_chunk(g.parallel(), &mut ws.partial, 2 * width, |i, slot| {
        let start = i * block_len;
        let end = (start + block_len).min(x.len());
        block_grad_sums(&x[start..end], &dy[start..end], g, centers, slot);
    });
    let (first, rest) = ws.partial.split_at_mut(2 * width);
    for part in rest.chunks_exact(2 * width) {
        for (a, b) in first.iter_mut().zip(part) {
            *a += b;
        }
    }
    let (col_dy, col_dyxc) = first.split_at(width);
    let per = width / g.channels;
    for c in 0..g.channels {
        sdy[c] = col_dy[c * per..(c + 1) * per].iter().sum();
        sdyxc[c] = col_dyxc[c * per..(c + 1) * per].iter().sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values in `[-0.5, 0.5)`.
    fn spread(i: usize) -> f32 {
        ((i * 7919 + 13) % 1009) as f32 / 1009.0 - 0.5
    }

    /// The one pass over shifted data gives the two passes' moments to 1e-12 (relative)
    /// when the shift is near the mean, here 1000 + N(0, 0.3)-like values over 2051 rows
    /// of a panel narrower than its rows.
    #[test]
    fn shifted_moments_agree_with_two_passes() {
        let (rows, width, n) = (2051, 40, 37);
        let data: Vec<f32> = (0..rows * width).map(|i| 1000.0 + spread(i)).collect();
        let [mut mean1, mut m21, mut mean2, mut m22] = [(); 4].map(|_| vec![0.0; n]);
        assert!(shifted_moments(&data, width, &mut mean1, &mut m21));
        two_pass_moments(&data, width, &mut mean2, &mut m22);
        for j in 0..n {
            assert!(
                (mean1[j] - mean2[j]).abs() <= 1e-12 * mean2[j].abs(),
                "column {j}"
            );
            assert!(
                (m21[j] - m22[j]).abs() <= 1e-12 * m22[j],
                "column {j}: {} vs {}",
                m21[j],
                m22[j]
            );
        }
    }

    /// A first row far from the mean (so that the shift's term would be more than 63/64
    /// of the sum of squares) is refused, and the block's moments are the two passes'
    /// bit for bit.
    #[test]
    fn a_far_shift_falls_back_to_two_passes() {
        let (rows, width) = (300, 5);
        let data: Vec<f32> = (0..rows * width)
            .map(|i| if i == 2 { 1.0e4 } else { spread(i) })
            .collect();
        let [mut mean, mut m2] = [(); 2].map(|_| vec![0.0; width]);
        assert!(!shifted_moments(&data, width, &mut mean, &mut m2));
        let [mut mean2, mut m22] = [(); 2].map(|_| vec![0.0; width]);
        two_pass_moments(&data, width, &mut mean2, &mut m22);
        column_moments::<f32, NARROW_PANEL_COLS>(&data, width, &mut mean, &mut m2);
        assert_eq!((mean, m2), (mean2, m22));
    }

    /// Streamed and in-place writes of a block give the same bits, for outputs starting
    /// at every offset within a cache line and lengths that end anywhere in one, with the
    /// center subtracted and folded.
    #[test]
    fn streamed_blocks_equal_in_place_ones() {
        let geometries = [
            Geometry {
                outer: 7,
                channels: 3,
                inner: 301,
            },
            Geometry {
                outer: 100,
                channels: 37,
                inner: 1,
            },
            Geometry {
                outer: 90,
                channels: 5,
                inner: 3,
            },
            // Wide rows, streamed a row at a time and written in place a group of rows
            // at a time when folded (with a tail of 3 rows and of 1 row).
            Geometry {
                outer: 11,
                channels: 400,
                inner: 1,
            },
            Geometry {
                outer: 9,
                channels: 300,
                inner: 1,
            },
            // Streamed a group of rows at a time (whole lines of at least
            // `STREAMED_GROUP_MIN_COLS`), with a tail of 2 rows.
            Geometry {
                outer: 6,
                channels: STREAMED_GROUP_MIN_COLS + 16,
                inner: 1,
            },
        ];
        for g in geometries {
            let len = g.len();
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1009) as f32 * 0.01 - 5.0)
                .collect();
            let dy: Vec<f32> = (0..len).map(|i| ((i * 31) % 997) as f32 * 0.001 - 0.5).collect();
            let per_column = |k: f64| (0..g.columns()).map(|j| k + j as f64 * 0.37).collect::<Vec<_>>();
            let [center, scale, shift, k] = [0.1, 1.3, -0.7, 0.9].map(per_column);
            for (center, offset) in [Some(&center[..]), None]
                .into_iter()
                .flat_map(|m| (0..16).map(move |o| (m, o)))
            {
                let coef = Coefficients {
                    center,
                    scale: &scale,
                    shift: &shift,
                };
                let mut streamed = vec![0.0f32; len + offset];
                let mut in_place = vec![0.0f32; len + offset];
                block_affine(&x, &mut streamed[offset..], g, &coef, true);
                block_affine(&x, &mut in_place[offset..], g, &coef, false);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&streamed), bits(&in_place), "{g:?} affine, offset {offset}");
                block_grad_input(&x, &dy, &mut streamed[offset..], g, &k, &coef, true);
                block_grad_input(&x, &dy, &mut in_place[offset..], g, &k, &coef, false);
                assert_eq!(
                    bits(&streamed),
                    bits(&in_place),
                    "{g:?} grad input, offset {offset}"
                );
            }
        }
    }
}
