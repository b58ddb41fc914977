//! Losses on the logits `z` of a batch of `N` examples with `K` classes, averaged
//! over the batch like PyTorch's defaults.
//!
//! ```text
//! cross-entropy  L = (1/N) sum_i [ logsumexp(z_i) - z_i[label_i] ]
//!                dL/dz_i = (softmax(z_i) - onehot(label_i)) / N
//! mse            L = (1/(N K)) sum_i sum_k (z_ik - onehot(label_i)_k)^2
//!                dL/dz_ik = 2 (z_ik - onehot_k) / (N K)
//! ```
//!
//! The cross-entropy subtracts each row's maximum before exponentiating, so logits of
//! any finite size give a finite loss. Sums are accumulated in `f64`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{NnError, Real};

/// Which loss to train with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Softmax cross-entropy (`nn.CrossEntropyLoss`). The default.
    #[default]
    #[serde(alias = "cross-entropy", alias = "ce")]
    CrossEntropy,
    /// Mean squared error against one-hot targets (`nn.MSELoss` on `one_hot(labels)`).
    Mse,
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossKind::CrossEntropy => "crossentropy",
            LossKind::Mse => "mse",
        })
    }
}

impl FromStr for LossKind {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "crossentropy" | "cross-entropy" | "ce" => Ok(LossKind::CrossEntropy),
            "mse" => Ok(LossKind::Mse),
            _ => Err(NnError::Parse {
                what: "loss",
                given: s.to_string(),
                expected: "crossentropy (or ce) or mse",
            }),
        }
    }
}

fn check_labels(labels: &[u8], classes: usize) -> Result<(), NnError> {
    match labels.iter().position(|&l| usize::from(l) >= classes) {
        Some(index) => Err(NnError::LabelOutOfRange {
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}

fn check_logits<T>(logits: &[T], labels: &[u8], classes: usize) -> Result<(), NnError> {
    let expected = labels.len() * classes;
    if logits.len() != expected || classes == 0 {
        return Err(NnError::InputLength {
            buffer: "logits",
            batch: labels.len(),
            features: classes,
            expected,
            got: logits.len(),
        });
    }
    check_labels(labels, classes)
}

/// `logsumexp` of one row, stable for any finite logits.
fn logsumexp<T: Real>(row: &[T]) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
    max + row.iter().map(|v| (v.to_f64() - max).exp()).sum::<f64>().ln()
}

impl LossKind {
    /// The mean loss of the batch.
    ///
    /// # Shapes
    /// `logits` is `[N, classes]` with `N = labels.len()`.
    ///
    /// # Errors
    /// [`NnError::InputLength`] when the logits do not match; [`NnError::LabelOutOfRange`]
    /// for a label `>= classes`.
    pub fn forward<T: Real>(self, logits: &[T], labels: &[u8], classes: usize) -> Result<f64, NnError> {
        check_logits(logits, labels, classes)?;
        let n = labels.len() as f64;
        let rows = logits.chunks_exact(classes).zip(labels);
        Ok(match self {
            LossKind::CrossEntropy => {
                rows.map(|(row, &l)| logsumexp(row) - row[usize::from(l)].to_f64())
                    .sum::<f64>()
                    / n
            }
            LossKind::Mse => {
                let sum: f64 = rows
                    .map(|(row, &l)| {
                        row.iter()
                            .enumerate()
                            .map(|(k, v)| {
                                let d = v.to_f64() - f64::from(u8::from(k == usize::from(l)));
                                d * d
                            })
                            .sum::<f64>()
                    })
                    .sum();
                sum / (n * classes as f64)
            }
        })
    }

    /// d loss / d logits, written to `dlogits`.
    ///
    /// # Shapes
    /// `logits` and `dlogits` are `[N, classes]` with `N = labels.len()`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`NnError::InputLength`] for `dlogits`.
    pub fn backward<T: Real>(
        self,
        logits: &[T],
        labels: &[u8],
        classes: usize,
        dlogits: &mut [T],
    ) -> Result<(), NnError> {
        check_logits(logits, labels, classes)?;
        check_logits(dlogits, labels, classes)?;
        let n = labels.len() as f64;
        let rows = logits
            .chunks_exact(classes)
            .zip(dlogits.chunks_exact_mut(classes))
            .zip(labels);
        for ((row, grad), &label) in rows {
            let label = usize::from(label);
            match self {
                LossKind::CrossEntropy => {
                    let lse = logsumexp(row);
                    for (k, (g, v)) in grad.iter_mut().zip(row).enumerate() {
                        let p = (v.to_f64() - lse).exp();
                        *g = T::from_f64((p - f64::from(u8::from(k == label))) / n);
                    }
                }
                LossKind::Mse => {
                    let scale = 2.0 / (n * classes as f64);
                    for (k, (g, v)) in grad.iter_mut().zip(row).enumerate() {
                        *g = T::from_f64(scale * (v.to_f64() - f64::from(u8::from(k == label))));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Number of rows whose largest logit is at the label (the first maximum on ties, as
/// `argmax` in PyTorch). A row holding NaN counts as wrong.
///
/// # Shapes
/// `logits` is `[labels.len(), classes]`.
pub fn correct<T: Real>(logits: &[T], labels: &[u8], classes: usize) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, label)| {
            let mut best = 0;
            for (k, v) in row.iter().enumerate() {
                if v.to_f64().is_nan() {
                    return false;
                }
                if *v > row[best] {
                    best = k;
                }
            }
            best == usize::from(**label)
        })
        .count()
}
