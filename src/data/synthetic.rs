//! Synthetic Gaussian data, for experiments that need no images.
//!
//! Everything is drawn from [`ChaCha8Rng`] seeded with [`SeedableRng::seed_from_u64`]
//! and sampled with `rand_distr`'s `StandardNormal`, both value-stable within their major
//! versions, so the same seed gives bit-identical data from run to run.

use std::collections::TryReserveError;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::dataset::check_num_classes;
use super::{DataError, Dataset, Split};

/// ChaCha streams of one seed are independent; giving each part its own stream keeps
/// the test set the same whatever `n_train` is.
const MEANS_STREAM: u64 = 0;
const TRAIN_STREAM: u64 = 1;
const TEST_STREAM: u64 = 2;

/// A classification problem of `classes` Gaussian blobs in `dim` dimensions.
///
/// Each class `c` has a mean `mu_c` whose coordinates are drawn from N(0, 1); example `i`
/// has label `i % classes` (so classes are balanced) and features `mu_label + z` with
/// `z` ~ N(0, I). Two means lie about `sqrt(2 * dim)` apart against a noise of 1 along
/// the line joining them, so the problem gets easier as `dim` grows. Training and test
/// sets share the means but not the noise.
///
/// # Shapes
///
/// `train` is `[n_train, dim]` and `test` is `[n_test, dim]`, as
/// [`Features::Floats`](super::Features::Floats); either count may be zero.
///
/// # Errors
///
/// [`DataError::InvalidParameter`] if `dim` is zero, `classes` is outside `1..=256`, or
/// `n_train * dim` or `n_test * dim` cannot be allocated.
pub fn gaussian_classes(
    n_train: usize,
    n_test: usize,
    dim: usize,
    classes: usize,
    seed: u64,
) -> Result<Split, DataError> {
    if dim == 0 {
        return Err(DataError::InvalidParameter {
            name: "dim",
            value: dim,
            requirement: "must be at least 1",
        });
    }
    check_num_classes(classes)?;
    let means: Vec<f32> = normals(checked_len(classes, dim, "dim", dim)?, seed, MEANS_STREAM)
        .map_err(|_| too_large("dim", dim))?;
    let blobs = |n: usize, stream: u64, name: &'static str| -> Result<Dataset, DataError> {
        let mut images: Vec<f32> =
            normals(checked_len(n, dim, name, n)?, seed, stream).map_err(|_| too_large(name, n))?;
        // `classes <= 256`, so every label fits in a byte.
        let labels: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
        for (row, &label) in images.chunks_exact_mut(dim).zip(&labels) {
            let mean = &means[usize::from(label) * dim..][..dim];
            row.iter_mut().zip(mean).for_each(|(x, m)| *x += m);
        }
        Dataset::new(images, labels, dim, classes)
    };
    Ok(Split {
        train: blobs(n_train, TRAIN_STREAM, "n_train")?,
        test: blobs(n_test, TEST_STREAM, "n_test")?,
    })
}

/// A `rows × cols` row-major matrix of independent N(0, 1) values, as `f64` or `f32`
/// (an `f32` value is the `f64` value of the same seed, rounded).
///
/// # Errors
///
/// [`DataError::InvalidParameter`] if `rows * cols` values cannot be allocated.
pub fn gaussian_matrix<T>(rows: usize, cols: usize, seed: u64) -> Result<Vec<T>, DataError>
where
    StandardNormal: Distribution<T>,
{
    normals(checked_len(rows, cols, "rows", rows)?, seed, 0).map_err(|_| too_large("rows", rows))
}

/// `a * b`, or an error blaming parameter `name` (of value `value`) if it overflows.
fn checked_len(a: usize, b: usize, name: &'static str, value: usize) -> Result<usize, DataError> {
    a.checked_mul(b).ok_or_else(|| too_large(name, value))
}

fn too_large(name: &'static str, value: usize) -> DataError {
    DataError::InvalidParameter {
        name,
        value,
        requirement: "the data it implies does not fit in memory",
    }
}

/// `len` N(0, 1) values from stream `stream` of `seed`.
fn normals<T>(len: usize, seed: u64, stream: u64) -> Result<Vec<T>, TryReserveError>
where
    StandardNormal: Distribution<T>,
{
    let mut values = Vec::new();
    // A size typed by a user must not abort the process on allocation failure.
    values.try_reserve_exact(len)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    values.extend(StandardNormal.sample_iter(&mut rng).take(len));
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Features;

    fn floats(set: &Dataset) -> &[f32] {
        match set.features() {
            Features::Floats(values) => values,
            Features::Bytes(_) => panic!("synthetic data is stored as f32"),
        }
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn same_seed_gives_identical_data() {
        let a = gaussian_classes(50, 20, 7, 3, 42).unwrap();
        let b = gaussian_classes(50, 20, 7, 3, 42).unwrap();
        assert_eq!(bits(floats(&a.train)), bits(floats(&b.train)));
        assert_eq!(bits(floats(&a.test)), bits(floats(&b.test)));
        let c = gaussian_classes(50, 20, 7, 3, 43).unwrap();
        assert_ne!(bits(floats(&a.train)), bits(floats(&c.train)));
        let m: Vec<f64> = gaussian_matrix(4, 5, 9).unwrap();
        assert_eq!(m, gaussian_matrix::<f64>(4, 5, 9).unwrap());
        assert_ne!(m, gaussian_matrix::<f64>(4, 5, 10).unwrap());
    }

    #[test]
    fn shapes_and_labels() {
        let split = gaussian_classes(10, 4, 3, 3, 0).unwrap();
        assert_eq!(
            (split.train.len(), split.train.dim(), split.train.num_classes()),
            (10, 3, 3)
        );
        assert_eq!(floats(&split.train).len(), 30);
        assert_eq!(split.train.labels(), &[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(split.test.labels(), &[0, 1, 2, 0]);
        assert!(floats(&split.train).iter().all(|v| v.is_finite()));
        let empty = gaussian_classes(0, 0, 3, 2, 0).unwrap();
        assert!(empty.train.is_empty() && empty.test.is_empty());
    }

    #[test]
    fn test_set_does_not_depend_on_train_size() {
        let small = gaussian_classes(5, 30, 4, 2, 1).unwrap();
        let large = gaussian_classes(500, 30, 4, 2, 1).unwrap();
        assert_eq!(bits(floats(&small.test)), bits(floats(&large.test)));
        assert_eq!(bits(floats(&small.train)), bits(&floats(&large.train)[..20]));
    }

    #[test]
    fn classes_are_separable_by_their_means() {
        let (dim, classes) = (64, 5);
        let split = gaussian_classes(500, 500, dim, classes, 3).unwrap();
        let mut means = vec![0.0f64; classes * dim];
        for (row, &label) in floats(&split.train).chunks(dim).zip(split.train.labels()) {
            for (m, &x) in means[usize::from(label) * dim..][..dim].iter_mut().zip(row) {
                *m += f64::from(x) / 100.0;
            }
        }
        let nearest = |row: &[f32]| {
            (0..classes)
                .map(|c| {
                    let d: f64 = row
                        .iter()
                        .zip(&means[c * dim..][..dim])
                        .map(|(&x, m)| (f64::from(x) - m).powi(2))
                        .sum();
                    (d, c)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, c)| c as u8)
                .unwrap()
        };
        let correct = (0..split.test.len())
            .filter(|&i| nearest(&floats(&split.test)[i * dim..][..dim]) == split.test.labels()[i])
            .count();
        // Means ~11 apart against unit noise: a nearest-mean rule makes essentially no mistakes.
        assert!(correct >= 495, "{correct} of 500");
    }

    #[test]
    fn matrix_is_standard_normal() {
        let n = 200_000;
        let values: Vec<f64> = gaussian_matrix(n / 100, 100, 5).unwrap();
        assert_eq!(values.len(), n);
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors are 0.0022 for the mean and 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        let singles: Vec<f32> = gaussian_matrix(n / 100, 100, 5).unwrap();
        assert!(singles.iter().zip(&values).all(|(&s, &d)| s == d as f32));
    }

    #[test]
    fn bad_sizes_are_errors() {
        for (dim, classes) in [(0, 2), (3, 0), (3, 257)] {
            let err = gaussian_classes(4, 4, dim, classes, 0).unwrap_err();
            assert!(matches!(err, DataError::InvalidParameter { .. }), "{err:?}");
        }
        let err = gaussian_classes(usize::MAX, 1, 2, 2, 0).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidParameter { name: "n_train", .. }),
            "{err:?}"
        );
        let err = gaussian_classes(1, usize::MAX / 2, 1, 2, 0).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidParameter { name: "n_test", .. }),
            "{err:?}"
        );
        assert!(gaussian_matrix::<f64>(usize::MAX, 2, 0).is_err());
        assert!(gaussian_matrix::<f64>(usize::MAX / 4, 1, 0).is_err());
    }
}
