//! The memory floor of the kernels' pass structure: plain loops that move the same
//! tensors as train forward and forward + backward, timed against the same copy as
//! `batchnorm bench`, in the same run.
//!
//! ```sh
//! cargo run --release --example memory_floor -- 25     # tensor size in MB (default 25)
//! ```
//!
//! Each op is the least work its passes need: `f32` sums with no conversion, and outputs
//! written with streaming stores from registers. `train_passes` reads `x` (the
//! statistics), then reads it again and writes `y` (the normalization);
//! `fwd_bwd_passes` adds a read of `x` and `dy` (the backward's sums) and a read of
//! both with a write of `dx`. The BatchNorm kernels do more per element (every value
//! widened to `f64`, per-channel coefficients), so their ratio to the copy sits at or
//! above these; how far above is what is left to gain without changing the passes.
//!
//! Needs x86-64 with AVX2 (AVX-512 used where present).

use std::time::Instant;

use rayon::prelude::*;

/// Inputs and outputs rotate among enough copies to exceed this many bytes, as in
/// `batchnorm bench`.
const ROTATE_BYTES: usize = 96 << 20;
/// Timed repetitions of each op.
const REPS: usize = 40;

/// A cache-line-aligned `f32` buffer of `len` values, filled with `fill(i)`.
struct Aligned {
    storage: Vec<f32>,
    offset: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: impl Fn(usize) -> f32) -> Self {
        let mut storage = vec![0.0f32; len + 16];
        let offset = storage.as_ptr().align_offset(64);
        for (i, v) in storage[offset..offset + len].iter_mut().enumerate() {
            *v = fill(i);
        }
        Aligned { storage, offset, len }
    }

    fn get(&self) -> &[f32] {
        &self.storage[self.offset..self.offset + self.len]
    }

    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    // SAFETY (all functions below): callers check the target features at run time
    // (`supported`); every load and store stays inside its slice (each loop runs while a
    // whole step fits), and the streaming stores are aligned because every output chunk
    // starts 64-byte aligned (the buffers are aligned and chunks are multiples of 16
    // values). The sums leave out a tail of fewer than one step (at most 31 values per
    // chunk), which does not matter to a timing.

    pub fn supported() -> bool {
        is_x86_feature_detected!("avx2")
    }

    fn avx512() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn sum512(x: &[f32]) -> f32 {
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let p = x.as_ptr();
        let mut i = 0;
        while i + 32 <= x.len() {
            // SAFETY: see the module note.
            unsafe {
                a = _mm512_add_ps(a, _mm512_loadu_ps(p.add(i)));
                b = _mm512_add_ps(b, _mm512_loadu_ps(p.add(i + 16)));
            }
            i += 32;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(a, b))
    }

    #[target_feature(enable = "avx2")]
    unsafe fn sum256(x: &[f32]) -> f32 {
        let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let p = x.as_ptr();
        let mut i = 0;
        while i + 16 <= x.len() {
            // SAFETY: see the module note.
            unsafe {
                a = _mm256_add_ps(a, _mm256_loadu_ps(p.add(i)));
                b = _mm256_add_ps(b, _mm256_loadu_ps(p.add(i + 8)));
            }
            i += 16;
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a, b)) };
        lanes.iter().sum()
    }

    /// `y = x * a + d * b` with streaming stores (`d` may be empty: then `y = x * a`).
    #[target_feature(enable = "avx512f")]
    unsafe fn map512(x: &[f32], d: &[f32], y: &mut [f32], a: f32, b: f32) {
        let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
        let (px, pd, py) = (x.as_ptr(), d.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= y.len() {
            // SAFETY: see the module note.
            unsafe {
                let mut v = _mm512_mul_ps(va, _mm512_loadu_ps(px.add(i)));
                if !d.is_empty() {
                    v = _mm512_add_ps(v, _mm512_mul_ps(vb, _mm512_loadu_ps(pd.add(i))));
                }
                _mm512_stream_ps(py.add(i), v);
            }
            i += 16;
        }
        _mm_sfence();
    }

    #[target_feature(enable = "avx2")]
    unsafe fn map256(x: &[f32], d: &[f32], y: &mut [f32], a: f32, b: f32) {
        let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let (px, pd, py) = (x.as_ptr(), d.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= y.len() {
            // SAFETY: see the module note.
            unsafe {
                let mut v = _mm256_mul_ps(va, _mm256_loadu_ps(px.add(i)));
                if !d.is_empty() {
                    v = _mm256_add_ps(v, _mm256_mul_ps(vb, _mm256_loadu_ps(pd.add(i))));
                }
                _mm256_stream_ps(py.add(i), v);
            }
            i += 8;
        }
        _mm_sfence();
    }

    pub fn sum(x: &[f32]) -> f32 {
        // SAFETY: the features are checked here and by `supported` in `main`.
        unsafe { if avx512() { sum512(x) } else { sum256(x) } }
    }

    pub fn map(x: &[f32], d: &[f32], y: &mut [f32], a: f32, b: f32) {
        // SAFETY: as in `sum`; the alignment of `y` is the caller's (see the note).
        unsafe {
            if avx512() {
                map512(x, d, y, a, b)
            } else {
                map256(x, d, y, a, b)
            }
        }
    }
}

/// Per-thread chunks of the same bounds for every buffer: a multiple of 16 values.
fn chunk_len(len: usize) -> usize {
    len.div_ceil(rayon::current_num_threads()).next_multiple_of(16)
}

fn par_sum(x: &[f32]) -> f32 {
    x.par_chunks(chunk_len(x.len())).map(simd::sum).sum()
}

fn par_map(x: &[f32], d: Option<&[f32]>, y: &mut [f32], a: f32, b: f32) {
    let size = chunk_len(y.len());
    let ys = y.par_chunks_mut(size).zip(x.par_chunks(size));
    match d {
        Some(d) => ys
            .zip(d.par_chunks(size))
            .for_each(|((yc, xc), dc)| simd::map(xc, dc, yc, a, b)),
        None => ys.for_each(|(yc, xc)| simd::map(xc, &[], yc, a, b)),
    }
}

fn par_copy(x: &[f32], y: &mut [f32]) {
    let size = chunk_len(y.len());
    y.par_chunks_mut(size)
        .zip(x.par_chunks(size))
        .for_each(|(yc, xc)| yc.copy_from_slice(xc));
}

/// Other architectures: no streaming stores here, so no floor to measure.
#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub fn supported() -> bool {
        false
    }
    pub fn sum(x: &[f32]) -> f32 {
        x.iter().sum()
    }
    pub fn map(x: &[f32], _d: &[f32], y: &mut [f32], a: f32, _b: f32) {
        y.iter_mut().zip(x).for_each(|(o, v)| *o = v * a);
    }
}

fn main() {
    if !simd::supported() {
        eprintln!("memory_floor: needs an x86-64 CPU with AVX2");
        std::process::exit(2);
    }
    let mb: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 25,
        Some(Ok(v)) if (1..=4096).contains(&v) => v,
        Some(_) => {
            eprintln!("usage: memory_floor [SIZE_MB], SIZE_MB from 1 to 4096 (default 25)");
            std::process::exit(2);
        }
    };
    let len = (mb << 20) / 4 / 16 * 16;
    let copies = (ROTATE_BYTES / (len * 4)).clamp(2, 64);
    let xs: Vec<Aligned> = (0..copies)
        .map(|k| Aligned::new(len, |i| ((i * 7919 + k * 104_729) % 1000) as f32 * 1e-3 - 0.5))
        .collect();
    let mut ys: Vec<Aligned> = (0..copies).map(|_| Aligned::new(len, |_| 1.0)).collect();
    let dy = Aligned::new(len, |i| ((i * 31) % 997) as f32 * 1e-3 - 0.5);
    let mut dx = Aligned::new(len, |_| 1.0);

    let names = ["copy", "read", "map", "train_passes", "fwd_bwd_passes"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut sink = 0.0f32;
    for rep in 0..REPS + 2 {
        for (op, t) in times.iter_mut().enumerate() {
            let k = (rep * names.len() + op) % copies;
            let (x, y) = (xs[k].get(), ys[k].get_mut());
            let start = Instant::now();
            match op {
                0 => par_copy(x, y),
                1 => sink += par_sum(x),
                2 => par_map(x, None, y, 1.5, 0.0),
                3 => {
                    let s = par_sum(x);
                    par_map(x, None, y, s, 0.0);
                }
                _ => {
                    let s = par_sum(x);
                    par_map(x, None, y, s, 0.0);
                    let g = par_sum(x) + par_sum(dy.get());
                    par_map(x, Some(dy.get()), dx.get_mut(), g, 0.5);
                }
            }
            // The first two rounds warm up.
            if rep >= 2 {
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    std::hint::black_box(sink);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!(
        "{mb} MB, {} threads, medians of {REPS}",
        rayon::current_num_threads()
    );
    println!("{:<16} {:>10} {:>8}", "op", "median ms", "x copy");
    for (name, m) in names.iter().zip(&medians) {
        println!("{name:<16} {m:>10.3} {:>8.2}", m / medians[0]);
    }
}
