//! Element-wise activations: identity, sigmoid, ReLU and tanh.
//!
//! ```text
//! sigmoid(x) = 1 / (1 + e^-x)     d/dx = y (1 - y)
//! relu(x)    = max(x, 0)          d/dx = 1 if x > 0 else 0
//! tanh(x)                         d/dx = 1 - y^2
//! ```
//!
//! Every derivative is written in terms of the output `y`, so the backward pass needs
//! only the buffer the forward pass wrote.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{NnError, Real};

/// Which element-wise function an [`Activation`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    /// `y = x`.
    Identity,
    /// `y = 1 / (1 + e^-x)`, the paper's choice for its MNIST experiment. The default.
    #[default]
    Sigmoid,
    /// `y = max(x, 0)`.
    Relu,
    /// `y = tanh(x)`.
    Tanh,
}

impl ActivationKind {
    /// The name used on the command line: `identity`, `sigmoid`, `relu`, `tanh`.
    pub fn name(self) -> &'static str {
        match self {
            ActivationKind::Identity => "identity",
            ActivationKind::Sigmoid => "sigmoid",
            ActivationKind::Relu => "relu",
            ActivationKind::Tanh => "tanh",
        }
    }

    /// The class name of the matching PyTorch module, for documentation and reports.
    pub fn torch_name(self) -> &'static str {
        match self {
            ActivationKind::Identity => "Identity",
            ActivationKind::Sigmoid => "Sigmoid",
            ActivationKind::Relu => "ReLU",
            ActivationKind::Tanh => "Tanh",
        }
    }
}

impl fmt::Display for ActivationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ActivationKind {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "identity" | "linear" => Ok(ActivationKind::Identity),
            "sigmoid" => Ok(ActivationKind::Sigmoid),
            "relu" => Ok(ActivationKind::Relu),
            "tanh" => Ok(ActivationKind::Tanh),
            _ => Err(NnError::Parse {
                what: "activation",
                given: s.to_string(),
                expected: "identity, sigmoid, relu or tanh",
            }),
        }
    }
}

/// An element-wise activation layer; it has no parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activation {
    kind: ActivationKind,
}

impl Activation {
    /// A layer applying `kind`.
    pub fn new(kind: ActivationKind) -> Self {
        Activation { kind }
    }

    /// The function applied.
    pub fn kind(&self) -> ActivationKind {
        self.kind
    }

    /// `y = f(x)`, element by element.
    ///
    /// # Shapes
    /// `x` and `y` have the same length (any shape).
    pub fn forward<T: Real>(&self, x: &[T], y: &mut [T]) {
        debug_assert_eq!(x.len(), y.len());
        match self.kind {
            ActivationKind::Identity => y.copy_from_slice(x),
            // When e^-x overflows to infinity the quotient is exactly 0, the correct limit.
            ActivationKind::Sigmoid => y
                .iter_mut()
                .zip(x)
                .for_each(|(y, &x)| *y = T::ONE / (T::ONE + (-x).exp())),
            ActivationKind::Relu => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.max(T::ZERO)),
            ActivationKind::Tanh => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.tanh()),
        }
    }

    /// `dx = f'(x) * dy`, with `f'` computed from the forward output `y`.
    ///
    /// # Shapes
    /// `y`, `dy` and `dx` have the same length.
    pub fn backward<T: Real>(&self, y: &[T], dy: &[T], dx: &mut [T]) {
        debug_assert!(y.len() == dy.len() && dy.len() == dx.len());
        match self.kind {
            ActivationKind::Identity => dx.copy_from_slice(dy),
            ActivationKind::Sigmoid => zip_map(y, dy, dx, |y, dy| dy * y * (T::ONE - y)),
            // y > 0 exactly when x > 0; at x = 0 the subgradient 0 is PyTorch's choice.
            ActivationKind::Relu => zip_map(y, dy, dx, |y, dy| if y > T::ZERO { dy } else { T::ZERO }),
            ActivationKind::Tanh => zip_map(y, dy, dx, |y, dy| dy * (T::ONE - y * y)),
        }
    }
}

/// `dx[i] = f(y[i], dy[i])`, generic so that each `f` is inlined and vectorized.
#[inline(always)]
fn zip_map<T: Real>(y: &[T], dy: &[T], dx: &mut [T], f: impl Fn(T, T) -> T) {
    dx.iter_mut()
        .zip(y.iter().zip(dy))
        .for_each(|(dx, (&y, &dy))| *dx = f(y, dy));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_saturates_without_nan() {
        let x = [-1000.0f32, -20.0, 0.0, 20.0, 1000.0];
        let mut y = [0.0f32; 5];
        Activation::new(ActivationKind::Sigmoid).forward(&x, &mut y);
        assert_eq!(y[0], 0.0);
        assert_eq!(y[2], 0.5);
        assert_eq!(y[4], 1.0);
        assert!(y.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn names_round_trip() {
        for kind in [
            ActivationKind::Identity,
            ActivationKind::Sigmoid,
            ActivationKind::Relu,
            ActivationKind::Tanh,
        ] {
            assert_eq!(kind.name().parse::<ActivationKind>(), Ok(kind));
        }
        let err = "gelu".parse::<ActivationKind>().unwrap_err().to_string();
        assert!(err.contains("gelu") && err.contains("sigmoid"), "{err}");
    }
}
