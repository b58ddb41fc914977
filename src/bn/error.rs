//! Errors of the BatchNorm transform.

use thiserror::Error;

/// Why a BatchNorm call was refused. Whenever one of these is returned, the layer's
/// parameters, running statistics and counter are exactly as they were before the call.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BnError {
    /// `num_features` was zero.
    #[error("num_features must be at least 1, got 0")]
    ZeroFeatures,
    /// The per-channel buffers of `num_features` channels would not fit in memory.
    #[error(
        "num_features = {num_features} needs {} of per-channel buffers, more than the {available_gib:.1} GiB of memory available",
        crate::memory::gib_text(*.needed_gib)
    )]
    TooManyFeatures {
        /// The channels asked for.
        num_features: usize,
        /// GiB needed (infinite when the size overflows).
        needed_gib: f64,
        /// GiB available.
        available_gib: f64,
    },
    /// `eps` was zero, negative, NaN or infinite.
    #[error("eps must be finite and positive, got {0}")]
    InvalidEps(f64),
    /// The momentum was outside `[0, 1]` or NaN.
    #[error("momentum must be a number in [0, 1] (or cumulative averaging), got {0}")]
    InvalidMomentum(f64),
    /// The input had fewer than two dimensions.
    #[error("input must have at least 2 dimensions ([N, C, ...]), got shape {shape:?}")]
    RankTooLow {
        /// The shape given.
        shape: Vec<usize>,
    },
    /// The channel axis of the input does not match `num_features`.
    #[error(
        "input shape {shape:?} ({layout}) has {got} channels, but this BatchNorm has num_features = {expected}"
    )]
    ChannelMismatch {
        /// `num_features` of the layer.
        expected: usize,
        /// The size of the channel axis of the input.
        got: usize,
        /// The shape given.
        shape: Vec<usize>,
        /// The layout given.
        layout: &'static str,
    },
    /// The product of the shape overflows `usize`.
    #[error("the number of elements of shape {shape:?} overflows usize")]
    ShapeOverflow {
        /// The shape given.
        shape: Vec<usize>,
    },
    /// A buffer's length differs from the number of elements its shape implies.
    #[error("{buffer} has {got} elements, but shape {shape:?} needs {expected}")]
    LengthMismatch {
        /// Which buffer: `"x"`, `"y"`, `"dy"`, `"dx"`, ...
        buffer: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length given.
        got: usize,
        /// The shape in force.
        shape: Vec<usize>,
    },
    /// Batch statistics need at least two values per channel.
    #[error(
        "expected more than 1 value per channel when training, got input shape {shape:?} ({per_channel} value per channel)"
    )]
    TooFewValues {
        /// Values per channel in the input.
        per_channel: usize,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// The input held NaN or infinity (or values whose variance overflows) in training.
    #[error(
        "input of shape {shape:?} has non-finite values in channel {channel} (mean {mean}, variance {var}); refusing to update the running statistics"
    )]
    NonFinite {
        /// The first channel found with a non-finite statistic.
        channel: usize,
        /// Its batch mean.
        mean: f64,
        /// Its batch variance.
        var: f64,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// A parameter or statistics vector has the wrong length.
    #[error("{name} must have num_features = {expected} elements, got {got}")]
    ParamLength {
        /// Which vector: `"weight"`, `"running_var"`, ...
        name: &'static str,
        /// `num_features`.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A running variance given was negative or not finite, or a running mean not finite.
    #[error("{name}[{index}] = {value} is not valid (running statistics must be finite, variances >= 0)")]
    InvalidStatistic {
        /// Which vector.
        name: &'static str,
        /// The index of the bad element.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// The operation needs `affine = true` (weight and bias).
    #[error("this BatchNorm has affine = false: it has no {0}")]
    NotAffine(&'static str),
    /// The operation needs running statistics (`track_running_stats = true`).
    #[error("this BatchNorm does not track running statistics (track_running_stats = false), so {0}")]
    NotTracking(&'static str),
    /// `backward` was called without a preceding `forward`.
    #[error("backward called before forward: there are no saved statistics")]
    NoForward,
}
