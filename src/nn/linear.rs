//! The fully connected layer `y = x Wᵀ + b`, with PyTorch's `[out, in]` weight layout.
//!
//! ```text
//! forward:   y  = x Wᵀ + b          [N, out] = [N, in] · [in, out]
//! backward:  dW = dyᵀ x             [out, in] = [out, N] · [N, in]
//!            db = sum over N of dy  [out]
//!            dx = dy W              [N, in] = [N, out] · [out, in]
//! ```

use super::gemm::{matmul, matmul_a_bt, matmul_at_b};
use super::{NnError, Real};

/// The parameters of a [`Linear`] layer, writable, with their gradients.
#[derive(Debug)]
pub struct LinearParams<'a, T> {
    /// The weight, `[out, in]`.
    pub weight: &'a mut [T],
    /// d loss / d weight, `[out, in]`.
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
/// `weight` is `[out_features, in_features]` (row-major, as PyTorch's `nn.Linear`),
/// `bias` is `[out_features]`; inputs are `[N, in_features]`, outputs `[N, out_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<T> {
    in_features: usize,
    out_features: usize,
    weight: Vec<T>,
    grad_weight: Vec<T>,
    bias: Option<Vec<T>>,
    grad_bias: Vec<T>,
}

impl<T: Real> Linear<T> {
    /// A layer with zero weights (and a zero bias when `bias`); fill the weights with
    /// [`weight_mut`](Self::weight_mut) and an [`Init`](super::Init).
    ///
    /// # Errors
    /// [`NnError::ZeroSize`] when a size is zero.
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Result<Self, NnError> {
        for (what, v) in [("in_features", in_features), ("out_features", out_features)] {
            if v == 0 {
                return Err(NnError::ZeroSize { what: what.into() });
            }
        }
        let len = in_features
            .checked_mul(out_features)
            .ok_or(NnError::InvalidValue {
                name: "in_features * out_features",
                value: f64::INFINITY,
                requirement: "must fit in memory",
            })?;
        Ok(Linear {
            in_features,
            out_features,
            weight: vec![T::ZERO; len],
            grad_weight: vec![T::ZERO; len],
            bias: bias.then(|| vec![T::ZERO; out_features]),
            grad_bias: vec![T::ZERO; if bias { out_features } else { 0 }],
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

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &[T] {
        &self.weight
    }

    /// The weight, writable.
    pub fn weight_mut(&mut self) -> &mut [T] {
        &mut self.weight
    }

    /// The bias, `[out]`, when the layer has one.
    pub fn bias(&self) -> Option<&[T]> {
        self.bias.as_deref()
    }

    /// The bias, writable, when the layer has one.
    pub fn bias_mut(&mut self) -> Option<&mut [T]> {
        self.bias.as_deref_mut()
    }

    /// d loss / d weight from the last backward pass.
    pub fn grad_weight(&self) -> &[T] {
        &self.grad_weight
    }

    /// d loss / d bias from the last backward pass, when the layer has a bias.
    pub fn grad_bias(&self) -> Option<&[T]> {
        self.bias.as_ref().map(|_| &self.grad_bias[..])
    }

    /// Weight, bias and their gradients at once, for an optimizer.
    pub fn params_and_grads_mut(&mut self) -> LinearParams<'_, T> {
        LinearParams {
            weight: &mut self.weight,
            grad_weight: &self.grad_weight,
            bias: self.bias.as_deref_mut().map(|b| (b, &self.grad_bias[..])),
        }
    }

    /// `y = x Wᵀ + b` for a batch of `batch` examples.
    ///
    /// # Shapes
    /// `x` is `[batch, in]`, `y` is `[batch, out]`; the network checks both.
    pub fn forward(&self, x: &[T], batch: usize, y: &mut [T]) {
        let accumulate = match &self.bias {
            Some(b) => {
                y.chunks_exact_mut(self.out_features)
                    .for_each(|row| row.copy_from_slice(b));
                true
            }
            None => false,
        };
        matmul_a_bt(
            batch,
            self.in_features,
            self.out_features,
            x,
            &self.weight,
            y,
            accumulate,
        );
    }

    /// Stores `dW` and `db` from the forward input `x` and `dy`, and writes `dx` when
    /// asked (the first layer of a network does not need it).
    ///
    /// # Shapes
    /// `x` and `dx` are `[batch, in]`, `dy` is `[batch, out]`.
    pub fn backward(&mut self, x: &[T], dy: &[T], batch: usize, dx: Option<&mut [T]>) {
        let (inp, out) = (self.in_features, self.out_features);
        matmul_at_b(out, batch, inp, dy, x, &mut self.grad_weight, false);
        if self.bias.is_some() {
            self.grad_bias.fill(T::ZERO);
            for row in dy.chunks_exact(out) {
                self.grad_bias.iter_mut().zip(row).for_each(|(g, &d)| *g += d);
            }
        }
        if let Some(dx) = dx {
            matmul(batch, out, inp, dy, &self.weight, dx, false);
        }
    }
}
