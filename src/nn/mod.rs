//! The small training stack around the BatchNorm transform: layers with explicit
//! forward and backward passes, losses, initializations, SGD, the fully connected
//! network built from a [`NetworkSpec`], and its checkpoints.
//!
//! Activations are flat row-major `[N, features]` buffers. Each layer file holds one
//! layer and its two passes; [`model::Network`] owns every buffer, sized once for a
//! maximum batch (the layers' working buffers grow once, on the first batch of a size),
//! so a training step allocates nothing (`tests/alloc.rs` counts).

pub mod activation;
pub mod batchnorm;
pub mod checkpoint;
pub mod gemm;
pub mod init;
pub mod linear;
pub mod loss;
pub mod model;
pub mod rows;
pub mod sgd;

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

use thiserror::Error;

use crate::bn::{BnError, Float};

pub use activation::{Activation, ActivationKind};
pub use batchnorm::BatchNormLayer;
pub use init::Init;
pub use linear::{Linear, LinearParams};
pub use loss::LossKind;
pub use model::{BiasMode, BnPlacement, Layer, Network, NetworkSpec, ParamInfo, ParamKind};
pub use sgd::{Sgd, SgdConfig};

/// The element types the network trains in: `f32` (training) and `f64` (gradient
/// checks). Arithmetic is done in the type itself, except for reductions (losses, BN
/// statistics) which accumulate in `f64`.
pub trait Real:
    Float
    + gemm::Gemm
    + rows::RowKernel
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + From<f32>
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// `e^self`.
    fn exp(self) -> Self;
    /// `self * a + b` with a single rounding.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The larger of two values (the other one when one is NaN).
    fn max(self, other: Self) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// `y[i] = 1 / (1 + e^-x[i])`: in `f64` through the library's `exp` (for the
    /// gradient checks), in `f32` through [`activation::sigmoid_f32`] (vectorized; within
    /// 2 ulp of the exact value).
    ///
    /// # Shapes
    /// `x` and `y` have the same length.
    fn sigmoid_into(x: &[Self], y: &mut [Self]);
}

macro_rules! impl_real {
    ($t:ty, $sigmoid:expr) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn sigmoid_into(x: &[Self], y: &mut [Self]) {
                ($sigmoid)(x, y)
            }
        }
    };
}
impl_real!(f32, activation::sigmoid_f32);
// When e^-x overflows to infinity the quotient is exactly 0, the correct limit.
impl_real!(f64, |x: &[f64], y: &mut [f64]| y
    .iter_mut()
    .zip(x)
    .for_each(|(y, &x)| *y = 1.0 / (1.0 + (-x).exp())));

/// Why a network could not be built or run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NnError {
    /// A size in the network specification was zero.
    #[error("{what} must be at least 1, got 0")]
    ZeroSize {
        /// Which size: `"input size"`, `"hidden layer 2"`, `"batch size"`, ...
        what: String,
    },
    /// A numeric setting was out of its range.
    #[error("{name} = {value} is invalid: {requirement}")]
    InvalidValue {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// A string could not be parsed as one of the accepted forms.
    #[error("invalid {what} {given:?}: expected {expected}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The text given.
        given: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// The network's buffers would not fit in memory.
    #[error("the network needs {} for its weights and buffers for batches of {capacity}, more than the {available_gib:.1} GiB of memory available", crate::memory::gib_text(*.needed_gib))]
    TooLarge {
        /// GiB needed (infinite when the sizes overflow).
        needed_gib: f64,
        /// The batch capacity asked for.
        capacity: usize,
        /// GiB available.
        available_gib: f64,
    },
    /// A batch is larger than the buffers the network was built for.
    #[error("batch of {batch} examples exceeds the network's capacity of {capacity}")]
    BatchTooLarge {
        /// The batch given.
        batch: usize,
        /// The capacity the network was built with.
        capacity: usize,
    },
    /// An input buffer does not have `batch × features` elements.
    #[error("{buffer} has {got} elements, but a batch of {batch} × {features} needs {expected}")]
    InputLength {
        /// Which buffer.
        buffer: &'static str,
        /// Examples in the batch.
        batch: usize,
        /// Features per example.
        features: usize,
        /// `batch × features`.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An evaluation or a population-statistics pass asked for more examples than its
    /// data set has.
    #[error("{requested} examples are needed, but the data set has {available}")]
    TooFewExamples {
        /// The examples asked for.
        requested: usize,
        /// The examples in the data set.
        available: usize,
    },
    /// A label is not a class of the network's output.
    #[error("label #{index} is {label}, but the network has {classes} classes")]
    LabelOutOfRange {
        /// Position of the label in the batch.
        index: usize,
        /// The label.
        label: u8,
        /// Number of outputs of the network.
        classes: usize,
    },
    /// `backward` was called without a forward pass in training mode before it.
    #[error("backward needs a forward pass of the same batch first")]
    NoForward,
    /// The BatchNorm transform refused its input (for example non-finite activations).
    #[error("BatchNorm layer {layer}: {source}")]
    BatchNorm {
        /// Index of the layer in the network.
        layer: usize,
        /// The transform's error.
        source: BnError,
    },
}
