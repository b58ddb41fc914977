//! A labelled data set held in memory, and a train/test pair of them.

use super::DataError;

/// Labelled examples in memory: `len()` examples of `dim()` features each, in one flat
/// row-major buffer, and one class label per example.
///
/// # Shapes
///
/// `images()` is `[len, dim]`, `labels()` is `[len]`, every label is in
/// `0..num_classes()`. These hold for every `Dataset`, since the only way to build one
/// checks them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Vec<u8>,
    dim: usize,
    num_classes: usize,
    image_shape: Option<(usize, usize)>,
}

impl Dataset {
    /// Builds a data set from a flat row-major `[labels.len(), dim]` buffer and its labels.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidParameter`] if `dim` is zero or `num_classes` is outside
    /// `1..=256` (labels are bytes), [`DataError::LengthMismatch`] if `images.len()` is
    /// not `labels.len() * dim`, [`DataError::InvalidLabel`] for the first label that is
    /// not below `num_classes`.
    pub fn new(images: Vec<f32>, labels: Vec<u8>, dim: usize, num_classes: usize) -> Result<Self, DataError> {
        if dim == 0 {
            return Err(DataError::InvalidParameter {
                name: "dim",
                value: dim,
                requirement: "must be at least 1",
            });
        }
        check_num_classes(num_classes)?;
        if labels.len().checked_mul(dim) != Some(images.len()) {
            return Err(DataError::LengthMismatch {
                values: images.len(),
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
            images,
            labels,
            dim,
            num_classes,
            image_shape: None,
        })
    }

    /// Records that each example is a `rows × cols` image; `rows * cols` must be `dim`.
    pub(super) fn with_image_shape(mut self, rows: usize, cols: usize) -> Self {
        debug_assert_eq!(rows.checked_mul(cols), Some(self.dim));
        self.image_shape = Some((rows, cols));
        self
    }

    /// All examples, row-major, shape `[len, dim]`.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// One label per example, each in `0..num_classes`.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The features of example `i`, `dim` values.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.dim..(i + 1) * self.dim]
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

    /// Gives back the images buffer and the labels.
    pub fn into_parts(self) -> (Vec<f32>, Vec<u8>) {
        (self.images, self.labels)
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
    fn new_keeps_rows_and_labels() {
        let data = Dataset::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0, 2], 3, 3).unwrap();
        assert_eq!((data.len(), data.dim(), data.num_classes()), (2, 3, 3));
        assert!(!data.is_empty());
        assert_eq!(data.image(1), &[4.0, 5.0, 6.0]);
        assert_eq!(data.image_shape(), None);
        let (images, labels) = data.into_parts();
        assert_eq!((images.len(), labels), (6, vec![0, 2]));
        assert!(Dataset::new(vec![], vec![], 4, 10).unwrap().is_empty());
    }

    #[test]
    fn new_refuses_inconsistent_parts() {
        let err = Dataset::new(vec![0.0; 5], vec![0, 1], 3, 10).unwrap_err();
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
        let err = Dataset::new(vec![0.0; 6], vec![0, 3], 3, 3).unwrap_err();
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
            let err = Dataset::new(vec![], vec![], dim, classes).unwrap_err();
            assert!(matches!(err, DataError::InvalidParameter { .. }), "{err:?}");
        }
        assert!(Dataset::new(vec![0.0], vec![255], 1, 256).is_ok());
    }
}
