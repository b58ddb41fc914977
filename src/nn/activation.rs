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

use multiversion::multiversion;
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
            ActivationKind::Sigmoid => T::sigmoid_into(x, y),
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

/// `y[i] = 1 / (1 + e^-x[i])` in `f32`, within 2 ulp of the exact value (and within
/// `f32::MIN_POSITIVE` of it where it is smaller than that, below x = -87), written so
/// that the compiler vectorizes it: the library's `expf` is a call per value, and was
/// a tenth of a training step.
///
/// `e^-x` is `2^n · e^r` with `n = round(-x / ln 2)` and `|r| <= ln 2 / 2`, `e^r` by
/// the degree-7 polynomial of Cephes' `expf` (`r` reduced with `ln 2` split in two so
/// the reduction is exact). `-x` is clamped to `[-87, 88]`, where `2^n` is a normal
/// number; below x = -88 the result is 0, above 87 it is 1. NaN stays NaN.
///
/// # Shapes
/// `x` and `y` have the same length.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
pub fn sigmoid_f32(x: &[f32], y: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with few enough bits that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
    debug_assert_eq!(x.len(), y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        let t = (-x).clamp(-87.0, 88.0);
        let biased = t * LOG2E + ROUND;
        let n = biased - ROUND;
        let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, t));
        let p = P.iter().fold(0.0, |p, &c| p.mul_add(r, c));
        let e = (p * r).mul_add(r, r) + 1.0;
        // `biased` holds the integer `n` in [-126, 127] in its low bits, added to those
        // of ROUND: its bits give 2^n's exponent without a float-to-int conversion
        // (which does not vectorize).
        let scale = f32::from_bits(biased.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
        let s = 1.0 / (1.0 + e * scale);
        *y = if x < -88.0 { 0.0 } else { s };
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
    fn fast_f32_sigmoid_is_within_two_ulp() {
        let x: Vec<f32> = (-2_000_000..=2_000_000)
            .map(|i| i as f32 * 5e-5)
            .chain([
                -1e30,
                -100.0,
                -88.5,
                -87.0,
                87.0,
                88.5,
                100.0,
                1e30,
                f32::MIN_POSITIVE,
            ])
            .collect();
        let mut y = vec![0.0f32; x.len()];
        sigmoid_f32(&x, &mut y);
        for (&x, &y) in x.iter().zip(&y) {
            let exact = 1.0 / (1.0 + (-f64::from(x)).exp());
            let err = (f64::from(y) - exact).abs();
            let tiny = f64::from(f32::MIN_POSITIVE);
            let ok = err <= 2.0 * f64::from(f32::EPSILON) * exact || (exact < tiny && err < tiny);
            assert!(ok, "x = {x}: {y} vs {exact}");
        }
        let mut nan = [0.0f32];
        sigmoid_f32(&[f32::NAN], &mut nan);
        assert!(nan[0].is_nan());
    }

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
