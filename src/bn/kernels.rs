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
//! the loops run along a row, vectorized across columns.
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
//! in `f64`, variances are computed two-pass inside each cache-sized chunk and merged
//! across chunks with Chan's formula, and `y = (x - mean) * a + b` is evaluated in `f64`
//! and rounded once. Subtracting the mean in `f64` is what keeps `x = 1e4 + N(0, 1)`
//! exact in `f32`, where `x * a + b` evaluated in `f32` cancels.

use multiversion::multiversion;
use rayon::prelude::*;

use super::float::Float;

/// Elements per chunk: small enough that the second pass over a chunk hits L1/L2.
const CHUNK_ELEMS: usize = 16 * 1024;
/// Below this many elements the kernels run on the calling thread: the cost of waking
/// the pool is larger than the work.
const PARALLEL_MIN_ELEMS: usize = 64 * 1024;
/// A segment at least this long is traversed along its length; shorter ones across columns.
const SEGMENT_MIN: usize = 32;
/// Independent accumulators per sum, to hide the latency of the adds.
const LANES: usize = 16;

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
        self.outer * self.channels * self.inner
    }

    fn segmented(&self) -> bool {
        self.inner >= SEGMENT_MIN
    }

    /// Segments of one channel processed by one task, in segmented order.
    fn segments_per_chunk(&self) -> usize {
        (CHUNK_ELEMS / self.inner).max(1)
    }

    /// Rows processed by one task, in column order.
    fn rows_per_chunk(&self) -> usize {
        (CHUNK_ELEMS / (self.channels * self.inner)).max(1)
    }

    fn parallel(&self) -> bool {
        self.len() >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1
    }
}

/// Count, mean and sum of squared deviations of a set of values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Moments {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// Chan et al.'s pairwise update: exact in exact arithmetic, stable in floating point.
    fn merge(self, other: Moments) -> Moments {
        if self.n == 0.0 {
            return other;
        }
        if other.n == 0.0 {
            return self;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * (other.n / n),
            m2: self.m2 + other.m2 + delta * delta * (self.n * other.n / n),
        }
    }

    /// The biased (population) variance.
    pub fn variance(&self) -> f64 {
        self.m2 / self.n
    }
}

/// Reusable buffers, so that steady-state calls do not allocate.
#[derive(Debug, Default, Clone)]
pub(crate) struct Workspace {
    partial: Vec<f64>,
    columns: Vec<f64>,
}

/// Per-channel coefficients of an element-wise pass `out = (x - center) * scale + shift`
/// (forward) or `out = (x - center) * scale + shift + k * dy` (backward).
pub(crate) struct Coefficients<'a> {
    pub center: &'a [f64],
    pub scale: &'a [f64],
    pub shift: &'a [f64],
}

#[inline(always)]
fn sum<T: Float>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
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
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
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

/// Sums of `dy` and of `dy * (x - center)`.
#[inline(always)]
fn sum_dy_dyxc<T: Float>(x: &[T], dy: &[T], center: f64) -> (f64, f64) {
    let mut a = [0.0f64; LANES];
    let mut b = [0.0f64; LANES];
    let xs = x.chunks_exact(LANES);
    let ds = dy.chunks_exact(LANES);
    let (xt, dt) = (xs.remainder(), ds.remainder());
    for (xc, dc) in xs.zip(ds) {
        for l in 0..LANES {
            let g = dc[l].to_f64();
            a[l] += g;
            b[l] += g * (xc[l].to_f64() - center);
        }
    }
    let mut sa = a.iter().sum::<f64>();
    let mut sb = b.iter().sum::<f64>();
    for (xv, dv) in xt.iter().zip(dt) {
        let g = dv.to_f64();
        sa += g;
        sb += g * (xv.to_f64() - center);
    }
    (sa, sb)
}

/// Two-pass moments of a contiguous run of values of one channel.
#[inline(always)]
fn segment_moments<T: Float>(x: &[T]) -> Moments {
    let n = x.len() as f64;
    let mean = sum(x) / n;
    Moments {
        n,
        mean,
        m2: sum_sq_dev(x, mean),
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn segmented_chunk_moments<T: Float>(x: &[T], g: Geometry, c: usize, first: usize, count: usize) -> Moments {
    let mut m = Moments::default();
    for o in first..first + count {
        let start = (o * g.channels + c) * g.inner;
        m = m.merge(segment_moments(&x[start..start + g.inner]));
    }
    m
}

/// Column moments of a block of rows: writes `count, mean[j], m2[j]` into `out`
/// (`1 + 2 * width` values).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn column_chunk_moments<T: Float>(rows: &[T], width: usize, out: &mut [f64]) {
    let nrows = rows.len() / width;
    let (count, rest) = out.split_first_mut().expect("partial buffer holds the count");
    let (mean, m2) = rest.split_at_mut(width);
    *count = nrows as f64;
    mean.fill(0.0);
    m2.fill(0.0);
    for row in rows.chunks_exact(width) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v.to_f64();
        }
    }
    let inv = 1.0 / nrows as f64;
    for m in mean.iter_mut() {
        *m *= inv;
    }
    for row in rows.chunks_exact(width) {
        for ((s, m), v) in m2.iter_mut().zip(mean.iter()).zip(row) {
            let d = v.to_f64() - m;
            *s += d * d;
        }
    }
}

/// Column sums of `dy` and `dy * (x - center[j])` over a block of rows: writes
/// `sum_dy[j], sum_dyxc[j]` into `out` (`2 * width` values).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn column_chunk_grad_sums<T: Float>(x: &[T], dy: &[T], center: &[f64], out: &mut [f64]) {
    let width = center.len();
    let (sdy, sdyxc) = out.split_at_mut(width);
    sdy.fill(0.0);
    sdyxc.fill(0.0);
    for (xr, dr) in x.chunks_exact(width).zip(dy.chunks_exact(width)) {
        for j in 0..width {
            let g = dr[j].to_f64();
            sdy[j] += g;
            sdyxc[j] += g * (xr[j].to_f64() - center[j]);
        }
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn affine_run<T: Float>(x: &[T], y: &mut [T], center: f64, scale: f64, shift: f64) {
    for (o, v) in y.iter_mut().zip(x) {
        *o = T::from_f64((v.to_f64() - center) * scale + shift);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn affine_rows<T: Float>(x: &[T], y: &mut [T], center: &[f64], scale: &[f64], shift: &[f64]) {
    let width = center.len();
    for (yr, xr) in y.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
        for j in 0..width {
            yr[j] = T::from_f64((xr[j].to_f64() - center[j]) * scale[j] + shift[j]);
        }
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn grad_run<T: Float>(x: &[T], dy: &[T], dx: &mut [T], k: f64, center: f64, p: f64, q: f64) {
    for ((o, v), g) in dx.iter_mut().zip(x).zip(dy) {
        *o = T::from_f64(k * g.to_f64() + ((v.to_f64() - center) * p + q));
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn grad_rows<T: Float>(x: &[T], dy: &[T], dx: &mut [T], k: &[f64], center: &[f64], p: &[f64], q: &[f64]) {
    let width = center.len();
    let rows = dx
        .chunks_exact_mut(width)
        .zip(x.chunks_exact(width))
        .zip(dy.chunks_exact(width));
    for ((dr, xr), gr) in rows {
        for j in 0..width {
            dr[j] = T::from_f64(k[j] * gr[j].to_f64() + ((xr[j].to_f64() - center[j]) * p[j] + q[j]));
        }
    }
}

/// Runs `f(i, chunk)` over the chunks of `out`, in parallel when the tensor is large.
fn for_each_chunk<T: Send>(parallel: bool, out: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if parallel {
        out.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Expands per-channel values to per-column values (`inner` columns per channel),
/// writing `channels * inner` values per input slice into `columns`.
fn expand_columns(g: Geometry, per_channel: &[&[f64]], columns: &mut Vec<f64>) {
    let width = g.channels * g.inner;
    columns.clear();
    for values in per_channel {
        for &v in values.iter() {
            columns.extend(std::iter::repeat_n(v, g.inner));
        }
    }
    debug_assert_eq!(columns.len(), width * per_channel.len());
}

/// Per-channel moments of `x`, written into `out` (one per channel).
pub(crate) fn moments<T: Float>(x: &[T], g: Geometry, ws: &mut Workspace, out: &mut Vec<Moments>) {
    out.clear();
    let par = g.parallel();
    if g.segmented() {
        let per = g.segments_per_chunk();
        let chunks = g.outer.div_ceil(per);
        // One partial per (channel, chunk): [n, mean, m2].
        ws.partial.resize(g.channels * chunks * 3, 0.0);
        for_each_chunk(par, &mut ws.partial, 3, |i, slot| {
            let (c, k) = (i / chunks, i % chunks);
            let first = k * per;
            let m = segmented_chunk_moments(x, g, c, first, per.min(g.outer - first));
            slot.copy_from_slice(&[m.n, m.mean, m.m2]);
        });
        for c in 0..g.channels {
            let parts = &ws.partial[c * chunks * 3..(c + 1) * chunks * 3];
            let m = parts.chunks_exact(3).fold(Moments::default(), |acc, p| {
                acc.merge(Moments {
                    n: p[0],
                    mean: p[1],
                    m2: p[2],
                })
            });
            out.push(m);
        }
    } else {
        let width = g.channels * g.inner;
        let rows = g.rows_per_chunk();
        let stride = 1 + 2 * width;
        ws.partial.resize(g.outer.div_ceil(rows) * stride, 0.0);
        for_each_chunk(par, &mut ws.partial, stride, |i, slot| {
            let start = i * rows * width;
            let end = ((i + 1) * rows).min(g.outer) * width;
            column_chunk_moments(&x[start..end], width, slot);
        });
        for c in 0..g.channels {
            let mut m = Moments::default();
            for part in ws.partial.chunks_exact(stride) {
                for j in c * g.inner..(c + 1) * g.inner {
                    m = m.merge(Moments {
                        n: part[0],
                        mean: part[1 + j],
                        m2: part[1 + width + j],
                    });
                }
            }
            out.push(m);
        }
    }
}

/// `y = (x - center[c]) * scale[c] + shift[c]`, element-wise.
pub(crate) fn affine<T: Float>(x: &[T], y: &mut [T], g: Geometry, coef: &Coefficients, ws: &mut Workspace) {
    let par = g.parallel();
    if g.segmented() {
        for_each_chunk(par, y, g.inner, |i, out| {
            let c = i % g.channels;
            let start = i * g.inner;
            affine_run(
                &x[start..start + g.inner],
                out,
                coef.center[c],
                coef.scale[c],
                coef.shift[c],
            );
        });
    } else {
        let width = g.channels * g.inner;
        expand_columns(g, &[coef.center, coef.scale, coef.shift], &mut ws.columns);
        let (center, rest) = ws.columns.split_at(width);
        let (scale, shift) = rest.split_at(width);
        let rows = g.rows_per_chunk();
        for_each_chunk(par, y, rows * width, |i, out| {
            let start = i * rows * width;
            affine_rows(&x[start..start + out.len()], out, center, scale, shift);
        });
    }
}

/// Per-channel `sum(dy)` and `sum(dy * (x - center[c]))`, written into `sdy` and `sdyxc`.
pub(crate) fn grad_sums<T: Float>(
    x: &[T],
    dy: &[T],
    g: Geometry,
    center: &[f64],
    ws: &mut Workspace,
    sdy: &mut [f64],
    sdyxc: &mut [f64],
) {
    let par = g.parallel();
    if g.segmented() {
        let per = g.segments_per_chunk();
        let chunks = g.outer.div_ceil(per);
        ws.partial.resize(g.channels * chunks * 2, 0.0);
        for_each_chunk(par, &mut ws.partial, 2, |i, slot| {
            let (c, k) = (i / chunks, i % chunks);
            let (mut a, mut b) = (0.0, 0.0);
            for o in k * per..((k + 1) * per).min(g.outer) {
                let s = (o * g.channels + c) * g.inner;
                let (da, db) = segment_grad_sums(&x[s..s + g.inner], &dy[s..s + g.inner], center[c]);
                a += da;
                b += db;
            }
            slot.copy_from_slice(&[a, b]);
        });
        for c in 0..g.channels {
            let parts = &ws.partial[c * chunks * 2..(c + 1) * chunks * 2];
            sdy[c] = parts.chunks_exact(2).map(|p| p[0]).sum();
            sdyxc[c] = parts.chunks_exact(2).map(|p| p[1]).sum();
        }
    } else {
        let width = g.channels * g.inner;
        let rows = g.rows_per_chunk();
        expand_columns(g, &[center], &mut ws.columns);
        let centers = &ws.columns;
        ws.partial.resize(g.outer.div_ceil(rows) * 2 * width, 0.0);
        for_each_chunk(par, &mut ws.partial, 2 * width, |i, slot| {
            let start = i * rows * width;
            let end = ((i + 1) * rows).min(g.outer) * width;
            column_chunk_grad_sums(&x[start..end], &dy[start..end], centers, slot);
        });
        for c in 0..g.channels {
            let (mut a, mut b) = (0.0, 0.0);
            for part in ws.partial.chunks_exact(2 * width) {
                for j in c * g.inner..(c + 1) * g.inner {
                    a += part[j];
                    b += part[width + j];
                }
            }
            sdy[c] = a;
            sdyxc[c] = b;
        }
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn segment_grad_sums<T: Float>(x: &[T], dy: &[T], center: f64) -> (f64, f64) {
    sum_dy_dyxc(x, dy, center)
}

/// `dx = k[c] * dy + (x - center[c]) * p[c] + q[c]`, element-wise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn grad_input<T: Float>(
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    g: Geometry,
    k: &[f64],
    coef: &Coefficients,
    ws: &mut Workspace,
) {
    let par = g.parallel();
    if g.segmented() {
        for_each_chunk(par, dx, g.inner, |i, out| {
            let c = i % g.channels;
            let s = i * g.inner;
            grad_run(
                &x[s..s + g.inner],
                &dy[s..s + g.inner],
                out,
                k[c],
                coef.center[c],
                coef.scale[c],
                coef.shift[c],
            );
        });
    } else {
        let width = g.channels * g.inner;
        expand_columns(g, &[k, coef.center, coef.scale, coef.shift], &mut ws.columns);
        let (kc, rest) = ws.columns.split_at(width);
        let (cc, rest) = rest.split_at(width);
        let (pc, qc) = rest.split_at(width);
        let rows = g.rows_per_chunk();
        for_each_chunk(par, dx, rows * width, |i, out| {
            let s = i * rows * width;
            let e = s + out.len();
            grad_rows(&x[s..e], &dy[s..e], out, kc, cc, pc, qc);
        });
    }
}
