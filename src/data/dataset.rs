//! A labelled data set held in memory, and a train/test pair of them.

use std::ops::Range;

use multiversion::multiversion;

use super::DataError;

/// Writes `b as f32 / 255` for every byte `b` of `src` to `dst`, correctly rounded
/// (255 maps to exactly 1.0) and vectorized: a division or a table look-up per pixel
/// was a tenth of a training step.
///
/// The quotient is `q = b · (1/255)` corrected once with its residual `b - 255 q`, an
/// exact fused multiply-add; the unit test checks all 256 bytes against the division.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
fn bytes_to_unit(src: &[u8], dst: &mut [f32]) {
    const INV: f32 = 1.0 / 255.0;
    for (d, &b) in dst.iter_mut().zip(src) {
        let b = f32::from(b);
        let q = b * INV;
        *d = (-255.0f32).mul_add(q, b).mul_add(INV, q);
    }
}

/// How a [`Dataset`] holds its features.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// Bytes `b` standing for `b / 255` in `[0, 1]` (IDX images): a quarter of the
    /// memory of `f32`, converted one example at a time as batches are copied out.
    Bytes(Vec<u8>),
    /// The values themselves (synthetic data).
    Floats(Vec<f32>),
}

impl Features {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Features::Bytes(v) => v.len(),
            Features::Floats(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Features {
    fn from(bytes: Vec<u8>) -> Self {
        Features::Bytes(bytes)
    }
}

impl From<Vec<f32>> for Features {
    fn from(values: Vec<f32>) -> Self {
        Features::Floats(values)
    }
}

/// Labelled examples in memory: `len()` examples of `dim()` features each, in one flat
/// row-major buffer, and one class label per example.
///
/// # Shapes
///
/// `features()` is `[len, dim]`, `labels()` is `[len]`, every label is in
/// `0..num_classes()`. These hold for every `Dataset`, since the only way to build one
/// checks them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Features,
    labels: Vec<u8>,
    dim: usize,
    num_classes: usize,
    image_shape: Option<(usize, usize)>,
}

impl Dataset {
    /// Builds a data set from a flat row-major `[labels.len(), dim]` buffer of bytes
    /// (standing for `byte / 255`) or `f32` values, and its labels.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidParameter`] if `dim` is zero or `num_classes` is outside
    /// `1..=256` (labels are bytes), [`DataError::LengthMismatch`] if the buffer does not
    /// hold `labels.len() * dim` values, [`DataError::InvalidLabel`] for the first label
    /// that is not below `num_classes`.
    pub fn new(
        features: impl Into<Features>,
        labels: Vec<u8>,
        dim: usize,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        let features = features.into();
        if dim == 0 {
            return Err(DataError::InvalidParameter {
                name: "dim",
                value: dim,
                requirement: "must be at least 1",
            });
        }
        check_num_classes(num_classes)?;
        if labels.len().checked_mul(dim) != Some(features.len()) {
            return Err(DataError::LengthMismatch {
                values: features.len(),
                labels: labels.len(),
                dim,
            });
        }
        if let Some((index, value)) = first_invalid_label(&labels, num_classes) {
            return Err(DataError::InvalidLabel {
                index,
                value,
                num_classes,
            });
        }
        Ok(Self {
            features,
            labels,
            dim,
            num_classes,
            image_shape: None,
        })
    }

    /// The first `n` examples (all of them when `n >= len()`), as a new data set.
    pub fn prefix(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let values = ..n * self.dim;
        Dataset {
            features: match &self.features {
                Features::Bytes(v) => Features::Bytes(v[values].to_vec()),
                Features::Floats(v) => Features::Floats(v[values].to_vec()),
            },
            labels: self.labels[..n].to_vec(),
            ..*self
        }
    }

    /// Records that each example is a `rows × cols` image; `rows * cols` must be `dim`.
    pub(super) fn with_image_shape(mut self, rows: usize, cols: usize) -> Self {
        debug_assert_eq!(rows.checked_mul(cols), Some(self.dim));
        self.image_shape = Some((rows, cols));
        self
    }

    /// All examples as stored, row-major, shape `[len, dim]`.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// One label per example, each in `0..num_classes`.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Writes the features of example `i` to `dst` as `f32` or `f64` (a byte `b`
    /// becomes `b as f32 / 255`, then is widened).
    ///
    /// # Shapes
    ///
    /// `dst` is `[dim]`.
    ///
    /// # Panics
    ///
    /// If `i >= len()` or `dst.len() != dim()`.
    pub fn copy_example<T: From<f32>>(&self, i: usize, dst: &mut [T]) {
        self.copy_examples(i..i + 1, dst);
    }

    /// Writes the features of examples `range` to `dst`, row-major, converted as
    /// [`copy_example`](Self::copy_example) does.
    ///
    /// # Shapes
    ///
    /// `dst` is `[range.len(), dim]`.
    ///
    /// # Panics
    ///
    /// If `range` reaches past `len()` or `dst.len() != range.len() * dim()`.
    pub fn copy_examples<T: From<f32>>(&self, range: Range<usize>, dst: &mut [T]) {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "examples {range:?} of a data set of {}",
            self.len()
        );
        let values = range.start * self.dim..range.end * self.dim;
        assert_eq!(dst.len(), values.len(), "destination for examples {range:?}");
        match &self.features {
            Features::Bytes(v) => {
                // In cache-sized pieces through `f32`, so that the conversion is
                // vectorized whatever `T` is.
                let mut unit = [0.0f32; 256];
                for (d, b) in dst.chunks_mut(unit.len()).zip(v[values].chunks(unit.len())) {
                    bytes_to_unit(b, &mut unit[..b.len()]);
                    d.iter_mut().zip(&unit).for_each(|(d, &u)| *d = T::from(u));
                }
            }
            Features::Floats(v) => dst.iter_mut().zip(&v[values]).for_each(|(d, &x)| *d = T::from(x)),
        }
    }

    /// Writes the features of the examples `indices`, in that order, to `dst`, row-major,
    /// converted as [`copy_example`](Self::copy_example) does: a random mini-batch.
    /// The rows of the examples a few places ahead are prefetched, since random
    /// examples are rarely in cache and a batch copied one example at a time waits for
    /// memory once per example.
    ///
    /// # Shapes
    ///
    /// `dst` is `[indices.len(), dim]`.
    ///
    /// # Panics
    ///
    /// If an index is not below `len()` or `dst` has another length.
    pub fn gather<T: From<f32>>(&self, indices: &[usize], dst: &mut [T]) {
        const AHEAD: usize = 4;
        assert_eq!(
            dst.len(),
            indices.len() * self.dim,
            "destination for {} examples",
            indices.len()
        );
        for &i in &indices[..indices.len().min(AHEAD)] {
            self.prefetch(i);
        }
        for (j, (&i, row)) in indices.iter().zip(dst.chunks_exact_mut(self.dim)).enumerate() {
            if let Some(&ahead) = indices.get(j + AHEAD) {
                self.prefetch(ahead);
            }
            self.copy_example(i, row);
        }
    }

    /// Asks the CPU to bring example `i` into cache (a hint: it does nothing elsewhere
    /// than on x86-64, or when `i` is out of range).
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let (ptr, len) = match &self.features {
                Features::Bytes(v) => (v.as_ptr(), self.dim),
                Features::Floats(v) => (v.as_ptr().cast::<u8>(), self.dim * 4),
            };
            if i < self.len() {
                for line in (0..len).step_by(64) {
                    // SAFETY: a prefetch never faults, and the address is inside the
                    // buffer (`i < len()`, `line < len`).
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.add(i * len + line).cast()) };
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features of one example (`rows * cols` for images).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes; every label is below it.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// `(rows, cols)` of one image when the examples are images (loaded from IDX files),
    /// `None` for data without a spatial shape.
    pub fn image_shape(&self) -> Option<(usize, usize)> {
        self.image_shape
    }

    /// Gives back the features and the labels.
    pub fn into_parts(self) -> (Features, Vec<u8>) {
        (self.features, self.labels)
    }
}

/// A training set and a test set. Those built by [`load_dir`](super::load_dir) and
/// [`gaussian_classes`](super::synthetic::gaussian_classes) share `dim` and
/// `num_classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The examples to fit on.
    pub train: Dataset,
    /// The held-out examples to evaluate on.
    pub test: Dataset,
}

pub(super) fn check_num_classes(num_classes: usize) -> Result<(), DataError> {
    if (1..=256).contains(&num_classes) {
        Ok(())
    } else {
        Err(DataError::InvalidParameter {
            name: "num_classes",
            value: num_classes,
            requirement: "must be in 1..=256 (labels are bytes)",
        })
    }
}

/// Position and value of the first label not below `num_classes`.
pub(super) fn first_invalid_label(labels: &[u8], num_classes: usize) -> Option<(usize, u8)> {
    labels
        .iter()
        .enumerate()
        .find(|&(_, &v)| usize::from(v) >= num_classes)
        .map(|(i, &v)| (i, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_keeps_the_first_examples() {
        let data = Dataset::new(vec![1u8, 2, 3, 4, 5, 6], vec![0, 2, 1], 2, 3).unwrap();
        let two = data.prefix(2);
        assert_eq!((two.len(), two.dim(), two.num_classes()), (2, 2, 3));
        assert_eq!(two.features(), &Features::Bytes(vec![1, 2, 3, 4]));
        assert_eq!(two.labels(), &[0, 2]);
        assert_eq!(data.prefix(10), data);
    }

    #[test]
    fn bytes_become_correctly_rounded_quotients() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut unit = vec![f32::NAN; 256];
        bytes_to_unit(&bytes, &mut unit);
        for (&b, &u) in bytes.iter().zip(&unit) {
            assert_eq!(u.to_bits(), (f32::from(b) / 255.0).to_bits(), "byte {b}");
        }
    }

    #[test]
    fn new_keeps_rows_and_labels() {
        let data = Dataset::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0, 2], 3, 3).unwrap();
        assert_eq!((data.len(), data.dim(), data.num_classes()), (2, 3, 3));
        assert!(!data.is_empty());
        let mut row = [0.0f64; 3];
        data.copy_example(1, &mut row);
        assert_eq!(row, [4.0, 5.0, 6.0]);
        assert_eq!(data.image_shape(), None);
        let (images, labels) = data.into_parts();
        assert_eq!((images.len(), labels), (6, vec![0, 2]));
        assert!(Dataset::new(Vec::<f32>::new(), vec![], 4, 10).unwrap().is_empty());
    }

    #[test]
    fn bytes_are_scaled_when_copied_out() {
        let data = Dataset::new(vec![0u8, 1, 127, 255, 254, 2], vec![1, 0, 1], 2, 2).unwrap();
        assert_eq!(data.features(), &Features::Bytes(vec![0, 1, 127, 255, 254, 2]));
        let mut rows = [f32::NAN; 4];
        data.copy_examples(1..3, &mut rows);
        assert_eq!(rows, [127.0 / 255.0, 1.0, 254.0 / 255.0, 2.0 / 255.0]);
        // f64 rows hold the f32 values exactly.
        let mut row = [f64::NAN; 2];
        data.copy_example(0, &mut row);
        assert_eq!(row, [0.0, f64::from(1.0f32 / 255.0)]);
        data.copy_examples(3..3, &mut [0.0f32; 0]);
    }

    #[test]
    #[should_panic(expected = "examples 2..4")]
    fn copying_past_the_end_panics() {
        let data = Dataset::new(vec![0u8; 6], vec![0; 3], 2, 2).unwrap();
        data.copy_examples(2..4, &mut [0.0f32; 4]);
    }

    #[test]
    fn new_refuses_inconsistent_parts() {
        let err = Dataset::new(vec![0.0f32; 5], vec![0, 1], 3, 10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LengthMismatch {
                    values: 5,
                    labels: 2,
                    dim: 3
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("need 6"), "{err}");
        let err = Dataset::new(vec![0.0f32; 6], vec![0, 3], 3, 3).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::InvalidLabel {
                    index: 1,
                    value: 3,
                    num_classes: 3
                }
            ),
            "{err:?}"
        );
        for (dim, classes) in [(0, 10), (3, 0), (3, 257)] {
            let err = Dataset::new(Vec::<u8>::new(), vec![], dim, classes).unwrap_err();
            assert!(matches!(err, DataError::InvalidParameter { .. }), "{err:?}");
        }
        assert!(Dataset::new(vec![0.0f32], vec![255], 1, 256).is_ok());
    }
}
