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
    /// Whether the element-wise passes may fold a channel's center into its shift,
    /// evaluating `x * a + (b - m * a)` rather than `(x - m) * a + b` (both in `f64`),
    /// which reads one coefficient less per element where coefficients are per column.
    /// True for `f32`, whose outputs keep 24 bits, far fewer than the `f64` arithmetic's
    /// 53; the kernels fold only channels whose mean is within `2^20` standard
    /// deviations of zero, where the folded form's extra error is at most `2^-31` of the
    /// output's scale. False for `f64`, where no such margin exists.
    const FOLD_CENTER: bool;
    /// Whether the column traversal may compute a block's moments in one pass over the
    /// data shifted by the block's first row (for narrow rows, and where the shift is
    /// not far from the mean; two passes otherwise). True for `f32`: the one pass's
    /// error stays near `2^-53` times the number of rows, far below `f32`'s `2^-24`.
    /// False for `f64`, whose results keep the two-pass error.
    const ONE_PASS_MOMENTS: bool;
    /// Widens to `f64` (exact for both types).
    fn to_f64(self) -> f64;
    /// Rounds an `f64` to the nearest value of this type.
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    const DTYPE: &'static str = "f32";
    const FOLD_CENTER: bool = true;
    const ONE_PASS_MOMENTS: bool = true;
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
    const FOLD_CENTER: bool = false;
    const ONE_PASS_MOMENTS: bool = false;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}
