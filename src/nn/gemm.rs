//! Matrix products on row-major slices, through one GEMM crate (`gemm`), for the lab's
//! large products (deep activations). The network's `Linear` layers use
//! [`rows`](super::rows) instead: `gemm` allocates its packing buffers on every call, and
//! at the network's sizes (batch 60) the layers' own row kernels are faster and can skip
//! zero inputs. A shape mismatch here is a bug in this crate, not a user error: it
//! panics rather than returning.
//!
//! `gemm` runs on the calling thread (`Parallelism::None`). Products of at least
//! [`PARALLEL_MIN_MACS`] multiply-adds are cut in two along the operand that is cheaper
//! to share and the halves run on the rayon pool, so `--threads 1` keeps everything on
//! one core.

/// Products smaller than this many multiply-adds stay on one thread: below it, the
/// cost of handing half to another thread outweighs the gain. Measured on the paper's
/// network (batch 60, largest product 4.7M multiply-adds): splitting from 1M up gave
/// 1,762 steps/s on 2 threads against 2,248 on one, so its products stay whole.
pub const PARALLEL_MIN_MACS: usize = 1 << 24;

/// An element type with a GEMM kernel: `f32` or `f64`.
pub trait Gemm: Copy + Send + Sync + 'static {
    /// `C = A·B + beta·C` for an `m × k` matrix `A` and a `k × n` matrix `B`, each given
    /// by a pointer and its row and column strides (in elements).
    ///
    /// # Safety
    /// Every element addressed through the pointers and strides must lie in its buffer,
    /// and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        accumulate: bool,
        c: *mut Self,
        rsc: isize,
    );
}

impl Gemm for f32 {
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        accumulate: bool,
        c: *mut f32,
        rsc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract. `gemm` takes column strides
        // before row strides, and computes `dst = alpha * dst + beta * A·B`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c,
                1,
                rsc,
                accumulate,
                a.0,
                a.2,
                a.1,
                b.0,
                b.2,
                b.1,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

impl Gemm for f64 {
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        a: (*const f64, isize, isize),
        b: (*const f64, isize, isize),
        accumulate: bool,
        c: *mut f64,
        rsc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract. `gemm` takes column strides
        // before row strides, and computes `dst = alpha * dst + beta * A·B`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c,
                1,
                rsc,
                accumulate,
                a.0,
                a.2,
                a.1,
                b.0,
                b.2,
                b.1,
                1.0f64,
                1.0f64,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

/// A matrix operand: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Operand<T>(*const T, isize, isize);

/// The output: pointer and row stride (columns are contiguous).
#[derive(Clone, Copy)]
struct Output<T>(*mut T, isize);

// SAFETY: the pointers are only dereferenced by `gemm_raw` on disjoint parts of the
// output (see `gemm`), while the borrows they come from are held by the caller.
unsafe impl<T: Send> Send for Operand<T> {}
unsafe impl<T: Sync> Sync for Operand<T> {}
unsafe impl<T: Send> Send for Output<T> {}
unsafe impl<T: Sync> Sync for Output<T> {}

/// `C = A·B (+ C)`, split in two halves on the rayon pool when large enough.
///
/// # Safety
/// As [`Gemm::gemm_raw`].
unsafe fn gemm<T: Gemm>(m: usize, k: usize, n: usize, a: Operand<T>, b: Operand<T>, acc: bool, c: Output<T>) {
    let macs = m.saturating_mul(k).saturating_mul(n);
    if macs < PARALLEL_MIN_MACS || rayon::current_num_threads() < 2 {
        // SAFETY: forwarded from the caller.
        unsafe { T::gemm_raw(m, k, n, (a.0, a.1, a.2), (b.0, b.1, b.2), acc, c.0, c.1) };
        return;
    }
    // Each half packs the whole of the operand that is not split, so split the larger.
    // The halves write disjoint blocks of C: rows [0, h) and [h, m), or columns.
    if k * n >= m * k {
        let h = n / 2;
        let (b2, c2) = (
            Operand(b.0.wrapping_offset(h as isize * b.2), b.1, b.2),
            Output(c.0.wrapping_add(h), c.1),
        );
        rayon::join(
            // SAFETY: the halves address disjoint columns of C inside the caller's buffers.
            || unsafe { gemm_half(m, k, h, a, b, acc, c) },
            || unsafe { gemm_half(m, k, n - h, a, b2, acc, c2) },
        );
    } else {
        let h = m / 2;
        let (a2, c2) = (
            Operand(a.0.wrapping_offset(h as isize * a.1), a.1, a.2),
            Output(c.0.wrapping_offset(h as isize * c.1), c.1),
        );
        rayon::join(
            // SAFETY: the halves address disjoint rows of C inside the caller's buffers.
            || unsafe { gemm_half(h, k, n, a, b, acc, c) },
            || unsafe { gemm_half(m - h, k, n, a2, b, acc, c2) },
        );
    }
}

/// One half of a split product, on the calling thread.
///
/// # Safety
/// As [`Gemm::gemm_raw`].
unsafe fn gemm_half<T: Gemm>(
    m: usize,
    k: usize,
    n: usize,
    a: Operand<T>,
    b: Operand<T>,
    acc: bool,
    c: Output<T>,
) {
    // SAFETY: forwarded from the caller.
    unsafe { T::gemm_raw(m, k, n, (a.0, a.1, a.2), (b.0, b.1, b.2), acc, c.0, c.1) }
}

fn check(name: &str, len: usize, rows: usize, cols: usize) {
    assert!(
        rows.checked_mul(cols) == Some(len),
        "gemm: {name} has {len} elements, expected {rows} x {cols}"
    );
}

fn stride(v: usize) -> isize {
    isize::try_from(v).expect("gemm: stride overflows isize")
}

/// `C = A·B` (or `C += A·B` when `accumulate`), all row-major.
///
/// # Shapes
/// `a` is `[m, k]`, `b` is `[k, n]`, `c` is `[m, n]`.
///
/// # Panics
/// When a slice's length does not match its shape.
pub fn matmul<T: Gemm>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &mut [T], accumulate: bool) {
    check("A", a.len(), m, k);
    check("B", b.len(), k, n);
    check("C", c.len(), m, n);
    // SAFETY: the lengths were checked against the shapes and strides used below, and
    // `c` is a unique borrow so it aliases neither input.
    unsafe {
        gemm(
            m,
            k,
            n,
            Operand(a.as_ptr(), stride(k), 1),
            Operand(b.as_ptr(), stride(n), 1),
            accumulate,
            Output(c.as_mut_ptr(), stride(n)),
        )
    }
}

/// `C = A·Bᵀ` (or `C += A·Bᵀ` when `accumulate`), all row-major.
///
/// # Shapes
/// `a` is `[m, k]`, `b` is `[n, k]`, `c` is `[m, n]`.
///
/// # Panics
/// When a slice's length does not match its shape.
pub fn matmul_a_bt<T: Gemm>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &mut [T], accumulate: bool) {
    check("A", a.len(), m, k);
    check("B", b.len(), n, k);
    check("C", c.len(), m, n);
    // SAFETY: as in `matmul`; `Bᵀ` is `b` read with swapped strides.
    unsafe {
        gemm(
            m,
            k,
            n,
            Operand(a.as_ptr(), stride(k), 1),
            Operand(b.as_ptr(), 1, stride(k)),
            accumulate,
            Output(c.as_mut_ptr(), stride(n)),
        )
    }
}

/// `C = Aᵀ·B` (or `C += Aᵀ·B` when `accumulate`), all row-major.
///
/// # Shapes
/// `a` is `[k, m]`, `b` is `[k, n]`, `c` is `[m, n]`.
///
/// # Panics
/// When a slice's length does not match its shape.
pub fn matmul_at_b<T: Gemm>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &mut [T], accumulate: bool) {
    check("A", a.len(), k, m);
    check("B", b.len(), k, n);
    check("C", c.len(), m, n);
    // SAFETY: as in `matmul`; `Aᵀ` is `a` read with swapped strides.
    unsafe {
        gemm(
            m,
            k,
            n,
            Operand(a.as_ptr(), 1, stride(m)),
            Operand(b.as_ptr(), stride(n), 1),
            accumulate,
            Output(c.as_mut_ptr(), stride(n)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop, on explicit index functions.
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: impl Fn(usize, usize) -> f64,
        b: impl Fn(usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a(i, p) * b(p, j)).sum();
            }
        }
        c
    }

    #[test]
    fn split_products_match_the_definition() {
        // Large enough to be split in two on the pool, once along each dimension.
        for (m, k, n) in [(257, 300, 231), (1201, 300, 51)] {
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
            assert!(m * k * n >= PARALLEL_MIN_MACS);
            let mut c = vec![f64::NAN; m * n];
            matmul(m, k, n, &a, &b, &mut c, false);
            let want = naive(m, k, n, |i, p| a[i * k + p], |p, j| b[p * n + j]);
            c.iter()
                .zip(&want)
                .for_each(|(g, w)| assert!((g - w).abs() < 1e-10));
        }
    }

    #[test]
    fn three_products_match_the_definition() {
        let (m, k, n) = (3, 5, 4);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        let mut c = vec![f64::NAN; m * n];
        matmul(m, k, n, &a, &b, &mut c, false);
        let want = naive(m, k, n, |i, p| a[i * k + p], |p, j| b[p * n + j]);
        c.iter()
            .zip(&want)
            .for_each(|(g, w)| assert!((g - w).abs() < 1e-12));

        // B stored as [n, k].
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.53).sin()).collect();
        matmul_a_bt(m, k, n, &a, &bt, &mut c, false);
        let want = naive(m, k, n, |i, p| a[i * k + p], |p, j| bt[j * k + p]);
        c.iter()
            .zip(&want)
            .for_each(|(g, w)| assert!((g - w).abs() < 1e-12));

        // A stored as [k, m]; accumulate on top of a known C.
        let at: Vec<f64> = (0..k * m).map(|i| (i as f64 * 0.29).cos()).collect();
        let mut c = vec![1.0; m * n];
        matmul_at_b(m, k, n, &at, &b, &mut c, true);
        let want = naive(m, k, n, |i, p| at[p * m + i], |p, j| b[p * n + j]);
        c.iter()
            .zip(&want)
            .for_each(|(g, w)| assert!((g - (w + 1.0)).abs() < 1e-12));
    }
}
