//! The element types the transform runs on.

use std::fmt::{Debug, Display};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: `f32` or `f64`.
///
/// Every reduction and every per-element formula of the transform is evaluated in `f64`
/// and rounded once to `Self` on output, so that `f32` data keeps its full precision
/// even when the mean of a channel is many orders of magnitude larger than its spread.
pub trait Float:
    sealed::Sealed + Copy + Send + Sync + Default + PartialEq + PartialOrd + Debug + Display + 'static
{
    /// The name of the type as used in metadata and output: `"f32"` or `"f64"`.
    const DTYPE: &'static str;
    /// Widens to `f64` (exact for both types).
    fn to_f64(self) -> f64;
    /// Rounds an `f64` to the nearest value of this type.
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    const DTYPE: &'static str = "f32";
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    const DTYPE: &'static str = "f64";
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}
