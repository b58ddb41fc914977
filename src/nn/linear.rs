//! The fully connected layer `y = x Wᵀ + b`. The weight is stored transposed,
//! `Wt = Wᵀ` of shape `[in, out]` (rows padded to 16 values, see [`RowMatrix`]), so
//! that every product below forms an output row as a sum of contiguous rows
//! ([`combine_rows`]); checkpoints still use PyTorch's `[out, in]`.
//!
//! ```text
//! forward:   y[n]   = b + sum_k x[n, k] Wt[k]      [N, out] = [N, in] · [in, out]
//! backward:  dWt[k] = sum_n x[n, k] dy[n]          [in, out] = [in, N] · [N, out]
//!            db = sum over N of dy                 [out]
//!            dxᵀ[k] = sum_j Wt[k, j] dyᵀ[j]        [in, N] = [in, out] · [out, N]
//! ```
//!
//! A layer built with `sparse_input` (the network's first, whose input is pixels) lists
//! the nonzero inputs of each example in the forward pass and sums only their rows, in
//! both products: a zero input adds nothing to `y` and nothing to `dWt`.

use super::rows::{RowMatrix, combine_rows, transpose};
use multiversion::multiversion;

use super::{NnError, Real};

/// The parameters of a [`Linear`] layer, writable, with their gradients.
#[derive(Debug)]
pub struct LinearParams<'a, T> {
    /// The weight, stored transposed and padded (see [`Linear`]).
    pub weight: &'a mut [T],
    /// d loss / d weight, stored as the weight.
    pub grad_weight: &'a [T],
    /// The bias and its gradient, `[out]` each, when the layer has a bias.
    pub bias: Option<(&'a mut [T], &'a [T])>,
}

/// A fully connected layer with an optional bias.
///
/// A bias directly before a BatchNorm is redundant: the normalization subtracts it out
/// again (its gradient is exactly zero), so networks with BN before the activation are
/// built without one by default.
///
/// # Shapes
/// The weight is stored transposed, `[in_features, weight_stride]` row-major: row `k`
/// holds `W[0..out, k]` of PyTorch's `nn.Linear.weight`, then zeros up to the stride.
/// `bias` is `[out_features]`; inputs are `[N, in_features]`, outputs `[N, out_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<T> {
    in_features: usize,
    out_features: usize,
    weight: RowMatrix<T>,
    grad_weight: RowMatrix<T>,
    bias: Option<Vec<T>>,
    grad_bias: Vec<T>,
    sparse_input: bool,
    /// Boxed: it is larger than the rest of the layer and only the products use it.
    scratch: Box<Scratch<T>>,
}

/// Working buffers of the products, grown to the largest batch seen, so that a step
/// of a batch seen before allocates nothing.
#[derive(Clone, Debug, PartialEq)]
struct Scratch<T> {
    /// With a sparse input: bit `k % 64` of word `k / 64` is set when input `k` is
    /// nonzero in either example of the pair at hand.
    pair_bits: Vec<u64>,
    /// With a sparse input: bit `n % 64` of word `(n / 64) * in + k` is set when input
    /// `k` of example `n` is nonzero.
    columns: Vec<u64>,
    /// `dy` `[N, out]` with aligned rows, the operand of `dWt`.
    dy: RowMatrix<T>,
    /// `dyᵀ` `[out, N]` and `dxᵀ` `[in, N]` of the input gradient.
    dy_t: RowMatrix<T>,
    dx_t: RowMatrix<T>,
    /// The output row of the missing partner when a count is odd.
    spare: Vec<T>,
    /// `in` zeros: the partner of an odd last example of a sparse input.
    zeros: Vec<T>,
}

/// Grows `v` to at least `len` values.
fn at_least<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) {
    if v.len() < len {
        v.resize(len, zero);
    }
}

/// Grows `m` to at least `rows` rows.
fn rows_at_least<T: Real>(m: &mut RowMatrix<T>, rows: usize) {
    if m.rows() < rows {
        m.resize_rows(rows);
    }
}

/// The examples whose input `k` or `k + 1` is nonzero, from the bit words of both
/// inputs (see `Scratch::columns`), with their two values: the terms of `dWt[k]` and
/// `dWt[k + 1]` (`k + 1` may be past the last input, standing for zeros).
#[derive(Clone)]
struct ColumnTerms<'a, T> {
    columns: &'a [u64],
    word: usize,
    bits: u64,
    x: &'a [T],
    k: usize,
    inp: usize,
}

impl<'a, T: Real> ColumnTerms<'a, T> {
    fn new(columns: &'a [u64], x: &'a [T], k: usize, inp: usize) -> Self {
        let mut terms = ColumnTerms {
            columns,
            word: 0,
            bits: 0,
            x,
            k,
            inp,
        };
        terms.bits = terms.word_bits(0).unwrap_or(0);
        terms
    }

    /// Word `word` of inputs `k` and `k + 1`, or'ed; `None` past the last word.
    #[inline(always)]
    fn word_bits(&self, word: usize) -> Option<u64> {
        let at = word * self.inp + self.k;
        let first = *self.columns.get(at)?;
        let second = if self.k + 1 < self.inp {
            self.columns[at + 1]
        } else {
            0
        };
        Some(first | second)
    }
}

impl<T: Real> Iterator for ColumnTerms<'_, T> {
    type Item = (usize, [T; 2]);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, [T; 2])> {
        while self.bits == 0 {
            self.word += 1;
            self.bits = self.word_bits(self.word)?;
        }
        let n = self.word * 64 + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        let row = &self.x[n * self.inp..(n + 1) * self.inp];
        Some((n, [row[self.k], row.get(self.k + 1).copied().unwrap_or(T::ZERO)]))
    }
}

/// Sets bit `n % 64` of `columns[(n / 64) * inp + k]` for every nonzero `x[n, k]` of
/// `x` (`[rows, inp]`), on zeroed `columns`. Written so that each example's row is one
/// vectorized pass over a contiguous run of words.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn mark_nonzero<T: Real>(x: &[T], inp: usize, columns: &mut [u64]) {
    for (n, row) in x.chunks_exact(inp).enumerate() {
        let bit = 1u64 << (n % 64);
        let words = &mut columns[(n / 64) * inp..][..inp];
        for (w, &v) in words.iter_mut().zip(row) {
            *w |= if v != T::ZERO { bit } else { 0 };
        }
    }
}

/// The rows `2i` and `2i + 1` of a `[rows, width]` buffer (stride `ld`) for each pair
/// `i`; when `rows` is odd the last pair's second row is `spare`.
fn row_pairs<'a, T>(
    buf: &'a mut [T],
    rows: usize,
    ld: usize,
    width: usize,
    spare: &'a mut [T],
) -> impl Iterator<Item = [&'a mut [T]; 2]> {
    let mut chunks = buf[..rows * ld - (ld - width)].chunks_mut(ld).peekable();
    let mut spare = Some(spare);
    std::iter::from_fn(move || {
        let first = chunks.next()?;
        let second = chunks.next().or_else(|| spare.take())?;
        Some([first, second])
    })
}

/// The inputs `k` of a pair of examples that are nonzero in either, from the pair's
/// bit words, with both values: the terms of the pair's outputs.
#[derive(Clone)]
struct PairTerms<'a, T> {
    bits: &'a [u64],
    word: usize,
    cur: u64,
    first: &'a [T],
    second: &'a [T],
}

impl<T: Real> Iterator for PairTerms<'_, T> {
    type Item = (usize, [T; 2]);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, [T; 2])> {
        while self.cur == 0 {
            self.word += 1;
            self.cur = *self.bits.get(self.word)?;
        }
        let k = self.word * 64 + self.cur.trailing_zeros() as usize;
        self.cur &= self.cur - 1;
        Some((k, [self.first[k], self.second[k]]))
    }
}

/// The sparse forward pass of the pairs of examples of `x` (`[rows, inp]`) into `y`
/// (`[rows, out]`; an odd last row is paired with `zeros` and the partner's output goes
/// to `spare`): each pair sums only the weight rows of the inputs nonzero in either
/// example, found 16 at a time (`bits` holds the pair's bit words).
#[allow(clippy::too_many_arguments)]
fn forward_sparse_pairs<T: Real>(
    x: &[T],
    inp: usize,
    w: &[T],
    ld: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    out: usize,
    spare: &mut [T],
    zeros: &[T],
    bits: &mut [u64],
) {
    let rows = x.len() / inp;
    for (y, x) in row_pairs(y, rows, out, out, spare).zip(x.chunks(2 * inp)) {
        let (first, second) = x.split_at(inp);
        let second = if second.is_empty() { &zeros[..inp] } else { second };
        T::nonzero_bits(first, second, bits);
        let terms = PairTerms {
            bits,
            word: 0,
            cur: bits[0],
            first,
            second,
        };
        combine_rows(terms, w, ld, bias, y, out);
    }
}

/// `dWt[k]` for the `inp` inputs in pairs, into `grads` (stride `ld`; an odd last
/// input's partner goes to `spare`), from the bit words of the inputs (`columns`, see
/// `Scratch::columns`), the input `x` and `dy` (stride `ld`).
#[allow(clippy::too_many_arguments)]
fn grad_sparse_pairs<T: Real>(
    grads: &mut [T],
    inp: usize,
    ld: usize,
    out: usize,
    spare: &mut [T],
    columns: &[u64],
    x: &[T],
    dy: &[T],
) {
    for (i, g) in row_pairs(grads, inp, ld, out, spare).enumerate() {
        let terms = ColumnTerms::new(columns, x, 2 * i, inp);
        combine_rows(terms, dy, ld, None, g, out);
    }
}

impl<T: Real> Linear<T> {
    /// A layer with zero weights (and a zero bias when `bias`); fill the weights with
    /// [`weight_mut`](Self::weight_mut) and an [`Init`](super::Init).
    ///
    /// # Errors
    /// [`NnError::ZeroSize`] when a size is zero.
    ///
    /// With `sparse_input`, the products skip the inputs that are exactly zero: worth it
    /// when many are (image pixels), a little slower than dense otherwise.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        sparse_input: bool,
    ) -> Result<Self, NnError> {
        for (what, v) in [("in_features", in_features), ("out_features", out_features)] {
            if v == 0 {
                return Err(NnError::ZeroSize { what: what.into() });
            }
        }
        if in_features
            .checked_mul(out_features.next_multiple_of(16))
            .is_none()
        {
            return Err(NnError::InvalidValue {
                name: "in_features * out_features",
                value: f64::INFINITY,
                requirement: "must fit in memory",
            });
        }
        Ok(Linear {
            in_features,
            out_features,
            weight: RowMatrix::new(in_features, out_features),
            grad_weight: RowMatrix::new(in_features, out_features),
            bias: bias.then(|| vec![T::ZERO; out_features]),
            grad_bias: vec![T::ZERO; if bias { out_features } else { 0 }],
            sparse_input,
            scratch: Box::new(Scratch {
                pair_bits: Vec::new(),
                columns: Vec::new(),
                dy: RowMatrix::new(0, out_features),
                dy_t: RowMatrix::new(out_features, 0),
                dx_t: RowMatrix::new(in_features, 0),
                spare: Vec::new(),
                zeros: Vec::new(),
            }),
        })
    }

    /// Number of inputs per example.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Number of outputs per example.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Distance between two rows of the stored weight: `out_features` rounded up to 16.
    pub fn weight_stride(&self) -> usize {
        self.weight.stride()
    }

    /// The weight, stored transposed and padded: `[in, weight_stride]` (see [`Linear`]).
    pub fn weight(&self) -> &[T] {
        self.weight.as_slice()
    }

    /// The weight, writable; keep the padding zero.
    pub fn weight_mut(&mut self) -> &mut [T] {
        self.weight.as_mut_slice()
    }

    /// Sets the weight from PyTorch's `[out, in]` layout.
    ///
    /// # Panics
    /// When `w` does not have `out * in` values.
    pub fn set_weight_torch(&mut self, w: &[T]) {
        let (inp, out, ld) = (self.in_features, self.out_features, self.weight.stride());
        assert_eq!(w.len(), out * inp, "weight of [{out}, {inp}]");
        transpose(w, out, inp, inp, self.weight.as_mut_slice(), ld);
    }

    /// The bias, `[out]`, when the layer has one.
    pub fn bias(&self) -> Option<&[T]> {
        self.bias.as_deref()
    }

    /// The bias, writable, when the layer has one.
    pub fn bias_mut(&mut self) -> Option<&mut [T]> {
        self.bias.as_deref_mut()
    }

    /// d loss / d weight from the last backward pass, stored as the weight.
    pub fn grad_weight(&self) -> &[T] {
        self.grad_weight.as_slice()
    }

    /// d loss / d bias from the last backward pass, when the layer has a bias.
    pub fn grad_bias(&self) -> Option<&[T]> {
        self.bias.as_ref().map(|_| &self.grad_bias[..])
    }

    /// Weight, bias and their gradients at once, for an optimizer.
    pub fn params_and_grads_mut(&mut self) -> LinearParams<'_, T> {
        LinearParams {
            weight: self.weight.as_mut_slice(),
            grad_weight: self.grad_weight.as_slice(),
            bias: self.bias.as_deref_mut().map(|b| (b, &self.grad_bias[..])),
        }
    }

    /// `y = x Wᵀ + b` for a batch of `batch` examples.
    ///
    /// # Shapes
    /// `x` is `[batch, in]`, `y` is `[batch, out]`; the network checks both.
    pub fn forward(&mut self, x: &[T], batch: usize, y: &mut [T]) {
        let (inp, out, ld) = (self.in_features, self.out_features, self.weight.stride());
        let x = &x[..batch * inp];
        let (w, bias) = (self.weight.as_slice(), self.bias.as_deref());
        let s = &mut self.scratch;
        at_least(&mut s.spare, out, T::ZERO);
        // Examples go in pairs; an odd last one is paired with zeros.
        let x_pair = |i: usize, k: usize| {
            let second = x.get((2 * i + 1) * inp + k).copied().unwrap_or(T::ZERO);
            [x[2 * i * inp + k], second]
        };
        if !self.sparse_input {
            for (i, y) in row_pairs(y, batch, out, out, &mut s.spare).enumerate() {
                combine_rows((0..inp).map(|k| (k, x_pair(i, k))), w, ld, bias, y, out);
            }
            return;
        }
        at_least(&mut s.pair_bits, inp.div_ceil(64), 0);
        at_least(&mut s.zeros, inp, T::ZERO);
        let (y, spare) = (&mut y[..batch * out], &mut s.spare[..out]);
        forward_sparse_pairs(x, inp, w, ld, bias, y, out, spare, &s.zeros, &mut s.pair_bits);
    }

    /// Stores `dW` and `db` from the forward input `x` and `dy`, and writes `dx` when
    /// asked (the first layer of a network does not need it).
    ///
    /// # Shapes
    /// `x` and `dx` are `[batch, in]`, `dy` is `[batch, out]`.
    pub fn backward(&mut self, x: &[T], dy: &[T], batch: usize, dx: Option<&mut [T]>) {
        let (inp, out, ld) = (self.in_features, self.out_features, self.weight.stride());
        let (x, dy) = (&x[..batch * inp], &dy[..batch * out]);
        let s = &mut self.scratch;
        at_least(&mut s.spare, out.max(batch), T::ZERO);
        rows_at_least(&mut s.dy, batch);
        let dy_rows = s.dy.as_mut_slice();
        for (d, row) in dy_rows.chunks_exact_mut(ld).zip(dy.chunks_exact(out)) {
            d[..out].copy_from_slice(row);
        }
        let dy_rows = &s.dy.as_slice()[..batch * ld];
        // Inputs go in pairs too: `dWt[k]` and `dWt[k + 1]` share the rows of `dy`.
        if self.sparse_input {
            let words = batch.div_ceil(64);
            at_least(&mut s.columns, inp * words, 0);
            let columns = &mut s.columns[..inp * words];
            columns.fill(0);
            mark_nonzero(x, inp, columns);
            let columns = &s.columns[..inp * words];
            let spare = &mut s.spare[..out];
            grad_sparse_pairs(
                self.grad_weight.as_mut_slice(),
                inp,
                ld,
                out,
                spare,
                columns,
                x,
                dy_rows,
            );
        } else {
            let grads = row_pairs(self.grad_weight.as_mut_slice(), inp, ld, out, &mut s.spare);
            for (i, g) in grads.enumerate() {
                let k = 2 * i;
                let terms = (0..batch).map(|n| {
                    let row = &x[n * inp..(n + 1) * inp];
                    (n, [row[k], row.get(k + 1).copied().unwrap_or(T::ZERO)])
                });
                combine_rows(terms, dy_rows, ld, None, g, out);
            }
        }
        if self.bias.is_some() {
            self.grad_bias.fill(T::ZERO);
            for row in dy.chunks_exact(out) {
                self.grad_bias.iter_mut().zip(row).for_each(|(g, &d)| *g += d);
            }
        }
        if let Some(dx) = dx {
            if s.dy_t.cols() != batch {
                s.dy_t = RowMatrix::new(out, batch);
                s.dx_t = RowMatrix::new(inp, batch);
            }
            let ldt = s.dy_t.stride();
            transpose(dy, batch, out, out, s.dy_t.as_mut_slice(), ldt);
            let (w, dy_t) = (self.weight.as_slice(), s.dy_t.as_slice());
            let dx_t = row_pairs(s.dx_t.as_mut_slice(), inp, ldt, batch, &mut s.spare);
            for (i, dx_t) in dx_t.enumerate() {
                let (k, zeros) = (2 * i, [T::ZERO; 1]);
                let second = if k + 1 < inp {
                    &w[(k + 1) * ld..]
                } else {
                    &zeros[..]
                };
                let terms = (0..out).map(|j| (j, [w[k * ld + j], second.get(j).copied().unwrap_or(T::ZERO)]));
                combine_rows(terms, dy_t, ldt, None, dx_t, batch);
            }
            transpose(s.dx_t.as_slice(), inp, batch, ldt, &mut dx[..batch * inp], inp);
        }
    }
}
