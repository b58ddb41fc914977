//! The BatchNorm layer of a fully connected network: the core transform
//! ([`crate::bn::BatchNorm`]) applied to `[N, C]` activations, one channel per feature.
//!
//! All arithmetic is the core type's (exact `f64` statistics, closed-form backward);
//! this wrapper only fixes the shape and layout and names the layer's errors.

use crate::bn::{BatchNorm, BatchNormConfig, BnError, Layout, Momentum};

use super::Real;

/// BatchNorm over the features of `[N, C]` activations.
///
/// # Shapes
/// Inputs, outputs and gradients are `[batch, num_features]`.
#[derive(Clone, Debug)]
pub struct BatchNormLayer<T: Real> {
    bn: BatchNorm<T>,
}

impl<T: Real> BatchNormLayer<T> {
    /// An affine layer with running statistics, `eps` and exponential `momentum` as in
    /// PyTorch's `BatchNorm1d(num_features, eps, momentum)`.
    ///
    /// # Errors
    /// The core's validation errors: [`BnError::ZeroFeatures`], [`BnError::InvalidEps`],
    /// [`BnError::InvalidMomentum`].
    pub fn new(num_features: usize, eps: f64, momentum: f64) -> Result<Self, BnError> {
        let config = BatchNormConfig {
            eps,
            momentum: Momentum::Exponential(momentum),
            ..BatchNormConfig::new(num_features)
        };
        Ok(BatchNormLayer {
            bn: BatchNorm::new(config)?,
        })
    }

    /// The core transform, for its getters (gamma, beta, running statistics, ...).
    pub fn inner(&self) -> &BatchNorm<T> {
        &self.bn
    }

    /// The core transform, writable (to set parameters or statistics).
    pub fn inner_mut(&mut self) -> &mut BatchNorm<T> {
        &mut self.bn
    }

    /// Number of features.
    pub fn num_features(&self) -> usize {
        self.bn.num_features()
    }

    /// Normalizes `x`: with batch statistics in training mode (updating the running
    /// statistics), with the running statistics in evaluation mode.
    ///
    /// # Shapes
    /// `x` and `y` are `[batch, num_features]`.
    ///
    /// # Errors
    /// The core's: notably [`BnError::NonFinite`] when training on NaN or infinite
    /// activations (a diverged network) and [`BnError::TooFewValues`] for a training
    /// batch of one example.
    pub fn forward(&mut self, x: &[T], batch: usize, y: &mut [T]) -> Result<(), BnError> {
        let shape = [batch, self.bn.num_features()];
        self.bn.forward(x, &shape, Layout::ChannelsFirst, y)
    }

    /// Writes `dx` and stores d loss / d gamma and d loss / d beta.
    ///
    /// # Shapes
    /// `x` (the forward input), `dy` and `dx` are `[batch, num_features]`.
    ///
    /// # Errors
    /// [`BnError::NoForward`] before any forward; [`BnError::LengthMismatch`] when the
    /// buffers do not match the last forward.
    pub fn backward(&mut self, x: &[T], dy: &[T], dx: &mut [T]) -> Result<(), BnError> {
        self.bn.backward(x, dy, dx)
    }
}
