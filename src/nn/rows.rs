//! The one product the `Linear` layers are built on: an output row formed as a
//! weighted sum of rows of a matrix,
//!
//! ```text
//! c[0..n] = init[0..n] + sum over terms (p, v) of v * b[p * ldb .. p * ldb + n]
//! ```
//!
//! The terms are whatever the caller lists, so a sparse operand costs only its nonzero
//! entries (the first layer's input is pixels, half of them exactly zero in
//! Fashion-MNIST), and a dense one is listed whole. With AVX-512 and `f32`, up to 128
//! outputs stay in registers while the terms stream by, so each term costs one
//! fused multiply-add per 16 outputs and `c` is written once.
//!
//! Each output is accumulated in the order of the terms, one fused multiply-add per term,
//! starting from `init` (or 0): the vector and the portable paths give bit-identical
//! results, and so does every machine.

use multiversion::multiversion;

use super::Real;

/// Outputs per pass over the terms: 8 AVX-512 registers of `f32` per output row.
const BLOCK: usize = 128;

/// An element type with a row-combination kernel: `f32` (AVX-512 when the CPU has it)
/// or `f64` (portable).
pub trait RowKernel: Copy {
    /// For each `r < R`: `c[r] = init + sum v[r] * b[p * ldb..][..n]` over `terms`, in
    /// their order. Each row of `b` is loaded once for all `R` outputs.
    ///
    /// # Panics
    /// When a term's row reaches past the end of `b`, or `init` or an output is shorter
    /// than `n`.
    fn combine_rows<const R: usize, I>(
        terms: I,
        b: &[Self],
        ldb: usize,
        init: Option<&[Self]>,
        c: [&mut [Self]; R],
        n: usize,
    ) where
        I: Iterator<Item = (usize, [Self; R])> + Clone;

    /// Bit `k % 64` of `bits[k / 64]` is set when `a[k]` or `b[k]` is nonzero (NaN
    /// counts as nonzero), for `k < a.len()`; the other bits are cleared.
    ///
    /// # Panics
    /// When `b` is shorter than `a`, or `bits` holds fewer than `a.len()` bits.
    fn nonzero_bits(a: &[Self], b: &[Self], bits: &mut [u64]);
}

/// The portable [`RowKernel::nonzero_bits`].
fn nonzero_bits_portable<T: Real>(a: &[T], b: &[T], bits: &mut [u64]) {
    assert!(
        b.len() >= a.len() && bits.len() * 64 >= a.len(),
        "nonzero_bits: short operands"
    );
    bits.fill(0);
    for (k, (&u, &v)) in a.iter().zip(b).enumerate() {
        bits[k / 64] |= u64::from(u != T::ZERO || v != T::ZERO) << (k % 64);
    }
}

/// For each `r < R`: `c[r][..n] = init + Σ v[r] · b[p·ldb ..][..n]` over the terms
/// `(p, v)` (see the module documentation). Computing `R` outputs at once reads each
/// row of `b` once for all of them: the rows of a weight matrix come from L2 cache, and
/// their loads, not the arithmetic, bound a single output row.
///
/// # Shapes
/// `b` is a row-major matrix with row stride `ldb`; `init` (when given) and each `c[r]`
/// hold at least `n` values.
///
/// # Panics
/// When a term's row reaches past the end of `b`, or `init` or an output is shorter
/// than `n`.
#[inline]
pub fn combine_rows<T: Real, const R: usize, I>(
    terms: I,
    b: &[T],
    ldb: usize,
    init: Option<&[T]>,
    c: [&mut [T]; R],
    n: usize,
) where
    I: Iterator<Item = (usize, [T; R])> + Clone,
{
    assert!(
        init.is_none_or(|i| i.len() >= n) && c.iter().all(|c| c.len() >= n),
        "combine_rows: a row is shorter than {n}"
    );
    T::combine_rows(terms, b, ldb, init, c, n)
}

/// How many rows of `b` (stride `ldb`) hold `n` values from column `col`: a term's row
/// must be below it.
#[inline(always)]
fn rows_in(b_len: usize, ldb: usize, col: usize, n: usize) -> usize {
    match b_len.checked_sub(col + n) {
        Some(rest) if ldb > 0 => rest / ldb + 1,
        Some(_) => usize::MAX,
        None => 0,
    }
}

#[cold]
#[track_caller]
fn row_out_of_range(p: usize, rows: usize) -> ! {
    panic!("combine_rows: row {p} reaches past the end of b ({rows} rows)")
}

/// The portable kernel: the output rows live in memory, one pass per term.
#[multiversion(targets("x86_64+avx2+fma"))]
fn portable<T: Real, const R: usize, I>(
    terms: I,
    b: &[T],
    ldb: usize,
    init: Option<&[T]>,
    mut c: [&mut [T]; R],
    n: usize,
) where
    I: Iterator<Item = (usize, [T; R])>,
{
    for c in c.iter_mut() {
        match init {
            Some(init) => c[..n].copy_from_slice(&init[..n]),
            None => c[..n].fill(T::ZERO),
        }
    }
    let rows = rows_in(b.len(), ldb, 0, n);
    for (p, v) in terms {
        if p >= rows {
            row_out_of_range(p, rows);
        }
        let row = &b[p * ldb..p * ldb + n];
        for (c, v) in c.iter_mut().zip(v) {
            c[..n]
                .iter_mut()
                .zip(row)
                .for_each(|(c, &w)| *c = v.mul_add(w, *c));
        }
    }
}

impl RowKernel for f64 {
    fn combine_rows<const R: usize, I>(
        terms: I,
        b: &[f64],
        ldb: usize,
        init: Option<&[f64]>,
        c: [&mut [f64]; R],
        n: usize,
    ) where
        I: Iterator<Item = (usize, [f64; R])> + Clone,
    {
        portable(terms, b, ldb, init, c, n);
    }

    fn nonzero_bits(a: &[f64], b: &[f64], bits: &mut [u64]) {
        nonzero_bits_portable(a, b, bits);
    }
}

impl RowKernel for f32 {
    fn nonzero_bits(a: &[f32], b: &[f32], bits: &mut [u64]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert!(
                b.len() >= a.len() && bits.len() * 64 >= a.len(),
                "nonzero_bits: short operands"
            );
            // SAFETY: the CPU has AVX-512F (checked above), and the lengths are checked.
            unsafe { avx512::nonzero_bits(a, b, bits) };
            return;
        }
        nonzero_bits_portable(a, b, bits);
    }

    fn combine_rows<const R: usize, I>(
        terms: I,
        b: &[f32],
        ldb: usize,
        init: Option<&[f32]>,
        mut c: [&mut [f32]; R],
        n: usize,
    ) where
        I: Iterator<Item = (usize, [f32; R])> + Clone,
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            for col in (0..n).step_by(BLOCK) {
                let width = BLOCK.min(n - col);
                let init = init.map(|i| &i[col..col + width]);
                let out = c.each_mut().map(|c| &mut c[col..col + width]);
                let terms = terms.clone();
                // SAFETY: the CPU has AVX-512F (checked above); `block` checks every
                // row it reads against `b`, and writes only `out`, whose rows hold
                // `width` values.
                unsafe {
                    match width.div_ceil(16) {
                        1 => avx512::block::<1, R, I>(terms, b, ldb, col, init, out, width),
                        2 => avx512::block::<2, R, I>(terms, b, ldb, col, init, out, width),
                        3 => avx512::block::<3, R, I>(terms, b, ldb, col, init, out, width),
                        4 => avx512::block::<4, R, I>(terms, b, ldb, col, init, out, width),
                        5 => avx512::block::<5, R, I>(terms, b, ldb, col, init, out, width),
                        6 => avx512::block::<6, R, I>(terms, b, ldb, col, init, out, width),
                        7 => avx512::block::<7, R, I>(terms, b, ldb, col, init, out, width),
                        _ => avx512::block::<8, R, I>(terms, b, ldb, col, init, out, width),
                    }
                }
            }
            return;
        }
        portable(terms, b, ldb, init, c, n);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{row_out_of_range, rows_in};

    /// [`RowKernel::nonzero_bits`](super::RowKernel::nonzero_bits), 16 values per
    /// comparison.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `b.len() >= a.len()` and `bits` holds at least
    /// `a.len()` bits.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn nonzero_bits(a: &[f32], b: &[f32], bits: &mut [u64]) {
        let n = a.len();
        let zero = _mm512_setzero_ps();
        for (w, word) in bits.iter_mut().enumerate() {
            let mut m = 0u64;
            for q in 0..4 {
                let start = w * 64 + q * 16;
                if start >= n {
                    break;
                }
                let left = n - start;
                let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                // SAFETY: the mask keeps both loads inside `a[..n]` and `b[..n]`.
                let (va, vb) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(mask, a.as_ptr().add(start)),
                        _mm512_maskz_loadu_ps(mask, b.as_ptr().add(start)),
                    )
                };
                // Unordered: NaN counts as nonzero, as `v != 0.0` does.
                let nz = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(mask, va, zero)
                    | _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(mask, vb, zero);
                m |= u64::from(nz) << (16 * q);
            }
            *word = m;
        }
    }

    /// `n` outputs (`16 * (NV - 1) < n <= 16 * NV`) of `R` rows, starting at column
    /// `col` of `b`, held in `NV` registers per row; the last register is masked to
    /// the row's end.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `init` and every `out` row hold at least `n` values,
    /// and `16 * (NV - 1) < n <= 16 * NV`.
    #[target_feature(enable = "avx512f")]
    // `acc[r][j]` reads as the formula: output row `r`, register `j`.
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn block<const NV: usize, const R: usize, I>(
        terms: I,
        b: &[f32],
        ldb: usize,
        col: usize,
        init: Option<&[f32]>,
        out: [&mut [f32]; R],
        n: usize,
    ) where
        I: Iterator<Item = (usize, [f32; R])>,
    {
        debug_assert!(n > 16 * (NV - 1) && n <= 16 * NV);
        let mask = |j: usize| -> __mmask16 {
            let left = n - 16 * j;
            if left >= 16 { 0xffff } else { (1u16 << left) - 1 }
        };
        let last = mask(NV - 1);
        let mut start = [_mm512_setzero_ps(); NV];
        if let Some(init) = init {
            for (j, a) in start.iter_mut().enumerate() {
                // SAFETY: the mask keeps the load inside `init[..n]`.
                *a = unsafe { _mm512_maskz_loadu_ps(mask(j), init.as_ptr().add(16 * j)) };
            }
        }
        let mut acc = [start; R];
        let rows = rows_in(b.len(), ldb, col, n);
        for (p, v) in terms {
            if p >= rows {
                row_out_of_range(p, rows);
            }
            let row = b.as_ptr().wrapping_add(p * ldb + col);
            let v = v.map(|v| _mm512_set1_ps(v));
            for j in 0..NV {
                // SAFETY: `p < rows` so `b[p * ldb + col..][..n]` exists; the mask
                // keeps the last load inside it.
                let w = unsafe {
                    if j + 1 < NV {
                        _mm512_loadu_ps(row.add(16 * j))
                    } else {
                        _mm512_maskz_loadu_ps(last, row.add(16 * j))
                    }
                };
                for r in 0..R {
                    acc[r][j] = _mm512_fmadd_ps(v[r], w, acc[r][j]);
                }
            }
        }
        for (acc, out) in acc.iter().zip(out) {
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: the mask keeps the store inside `out[..n]`.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(16 * j), mask(j), *a) };
            }
        }
    }
}

/// Writes the transpose of the `[rows, cols]` matrix `a` (row stride `lda`) to `at`
/// (`[cols, rows]`, row stride `ldat`).
///
/// # Panics
/// When a matrix reaches past the end of its slice.
pub fn transpose<T: Copy>(a: &[T], rows: usize, cols: usize, lda: usize, at: &mut [T], ldat: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * lda + cols <= a.len() && (cols - 1) * ldat + rows <= at.len(),
        "transpose: a [{rows}, {cols}] (stride {lda}) in {} values, its transpose (stride {ldat}) in {}",
        a.len(),
        at.len()
    );
    // Tiles of 16 x 16 through a local array: each side is read or written as
    // contiguous runs (one bounds check per run), and the transposition itself happens
    // in registers or L1 at fixed indices.
    const TILE: usize = 16;
    let mut tile = [[a[0]; TILE]; TILE];
    for r0 in (0..rows).step_by(TILE) {
        let nr = TILE.min(rows - r0);
        for c0 in (0..cols).step_by(TILE) {
            let nc = TILE.min(cols - c0);
            for r in 0..nr {
                let src = &a[(r0 + r) * lda + c0..][..nc];
                for (c, &v) in src.iter().enumerate() {
                    tile[c][r] = v;
                }
            }
            for (c, t) in tile[..nc].iter().enumerate() {
                let dst = &mut at[(c0 + c) * ldat + r0..][..nr];
                // A whole tile row is a fixed-size move, not a call to `memcpy`.
                match <&mut [T; TILE]>::try_from(&mut *dst) {
                    Ok(full) => *full = *t,
                    Err(_) => dst.copy_from_slice(&t[..nr]),
                }
            }
        }
    }
}

/// Sixteen values on a 64-byte boundary: the unit of [`RowMatrix`]'s storage.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
struct Chunk<T>([T; 16]);

/// A row-major matrix whose rows start on 64-byte boundaries: the row stride is the
/// column count rounded up to 16 values, and the padding holds zeros. Reading a row
/// with 16-wide vector loads then never splits a load across two cache lines (with
/// 100 columns, unaligned rows made every product about half as fast).
#[derive(Clone, Debug, PartialEq)]
pub struct RowMatrix<T> {
    chunks: Vec<Chunk<T>>,
    rows: usize,
    cols: usize,
}

impl<T: Real> RowMatrix<T> {
    /// A zero `[rows, cols]` matrix.
    pub fn new(rows: usize, cols: usize) -> Self {
        let mut m = RowMatrix {
            chunks: Vec::new(),
            rows: 0,
            cols,
        };
        m.resize_rows(rows);
        m
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between the starts of two rows, in values: `cols` rounded up to 16.
    pub fn stride(&self) -> usize {
        self.cols.next_multiple_of(16)
    }

    /// Grows or shrinks to `rows` rows; new rows are zero.
    pub fn resize_rows(&mut self, rows: usize) {
        self.chunks
            .resize(rows * self.stride() / 16, Chunk([T::ZERO; 16]));
        self.rows = rows;
    }

    /// Every value, padding included: `[rows, stride]`.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: a `Chunk<T>` is 16 `T`s with nothing between them or between chunks
        // (`repr(C)`, and 16 values of 4 or 8 bytes are a multiple of the alignment).
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast(), self.chunks.len() * 16) }
    }

    /// Every value, padding included, writable: `[rows, stride]`.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as `as_slice`, through a unique borrow.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast(), self.chunks.len() * 16) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terms in a fixed order over rows of a random-looking matrix, dense and sparse,
    /// for widths around the register blocks and one or two output rows: the AVX-512
    /// path must equal the portable one bit for bit, and both the definition up to
    /// rounding.
    #[test]
    fn vector_and_portable_paths_agree() {
        for n in [1, 15, 16, 17, 100, 128, 129, 300] {
            let ldb = n + 3;
            let rows = 40;
            let b: Vec<f32> = (0..rows * ldb).map(|i| ((i as f32) * 0.37).sin()).collect();
            let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let terms: Vec<(usize, [f32; 2])> = (0..rows)
                .filter(|p| p % 3 != 1)
                .map(|p| (p, [(p as f32 * 0.7).sin(), (p as f32 * 1.3).cos()]))
                .collect();
            for init in [None, Some(&init[..])] {
                let (mut f0, mut f1) = (vec![f32::NAN; n], vec![f32::NAN; n + 5]);
                combine_rows(terms.iter().copied(), &b, ldb, init, [&mut f0, &mut f1], n);
                let (mut s0, mut s1) = (vec![f32::NAN; n], vec![f32::NAN; n + 5]);
                portable(terms.iter().copied(), &b, ldb, init, [&mut s0, &mut s1], n);
                assert_eq!((&f0, &f1[..n]), (&s0, &s1[..n]), "n = {n}");
                assert!(f1[n..].iter().all(|v| v.is_nan()), "wrote past n = {n}");
                let mut one = vec![f32::NAN; n];
                combine_rows(
                    terms.iter().map(|&(p, v)| (p, [v[1]])),
                    &b,
                    ldb,
                    init,
                    [&mut one],
                    n,
                );
                assert_eq!(one, f1[..n], "n = {n}, one row");
                for (j, &got) in f0.iter().enumerate() {
                    let want: f64 = init.map_or(0.0, |i| f64::from(i[j]))
                        + terms
                            .iter()
                            .map(|&(p, v)| f64::from(v[0]) * f64::from(b[p * ldb + j]))
                            .sum::<f64>();
                    assert!((f64::from(got) - want).abs() < 1e-5, "n = {n}, j = {j}");
                }
            }
        }
    }

    #[test]
    fn nonzero_bits_match_the_portable_ones() {
        for n in [1, 15, 16, 17, 63, 64, 65, 100, 784] {
            let a: Vec<f32> = (0..n).map(|k| if k % 3 == 0 { k as f32 } else { 0.0 }).collect();
            let mut b: Vec<f32> = (0..n).map(|k| if k % 5 == 1 { -1.0 } else { 0.0 }).collect();
            b[n - 1] = f32::NAN;
            let words = n.div_ceil(64);
            let (mut fast, mut slow) = (vec![u64::MAX; words], vec![u64::MAX; words]);
            f32::nonzero_bits(&a, &b, &mut fast);
            nonzero_bits_portable(&a, &b, &mut slow);
            assert_eq!(fast, slow, "n = {n}");
            for k in 0..n {
                let set = fast[k / 64] >> (k % 64) & 1 == 1;
                assert_eq!(set, a[k] != 0.0 || b[k] != 0.0, "n = {n}, k = {k}");
            }
            if n % 64 != 0 {
                assert_eq!(fast[words - 1] >> (n % 64), 0, "bits past n = {n}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "reaches past the end")]
    fn a_row_past_the_end_panics() {
        let b = [1.0f32; 10];
        let mut c = [0.0f32; 4];
        combine_rows([(2, [1.0f32])].into_iter(), &b, 4, None, [&mut c], 4);
    }

    #[test]
    fn transpose_swaps_indices() {
        let (rows, cols) = (19, 35);
        let a: Vec<u32> = (0..rows * cols).map(|i| i as u32).collect();
        let mut at = vec![0; rows * cols];
        transpose(&a, rows, cols, cols, &mut at, rows);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(at[c * rows + r], a[r * cols + c]);
            }
        }
        // Padded strides on both sides: the transpose of the top-left 7 x 5 corner.
        let mut at = vec![0; 5 * 9];
        transpose(&a, 7, 5, cols, &mut at, 9);
        for r in 0..7 {
            for c in 0..5 {
                assert_eq!(at[c * 9 + r], a[r * cols + c]);
            }
        }
    }

    #[test]
    fn row_matrix_rows_are_aligned_and_padded() {
        let mut m = RowMatrix::<f32>::new(3, 100);
        assert_eq!((m.rows(), m.cols(), m.stride()), (3, 100, 112));
        assert_eq!(m.as_slice().len(), 3 * 112);
        assert_eq!(m.as_slice().as_ptr() as usize % 64, 0);
        m.as_mut_slice()[112] = 2.0;
        let copy = m.clone();
        assert_eq!(copy.as_slice().as_ptr() as usize % 64, 0);
        assert_eq!(copy.as_slice()[112], 2.0);
        m.resize_rows(5);
        assert_eq!(m.as_slice().len(), 5 * 112);
        assert_eq!(RowMatrix::<f64>::new(2, 16).stride(), 16);
    }
}
