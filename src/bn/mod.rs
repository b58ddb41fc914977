//! The Batch Normalizing Transform (Ioffe & Szegedy, 2015, Algorithm 1) and its exact
//! backward pass.
//!
//! For each channel `c`, over the `m` values of the mini-batch that belong to it:
//!
//! ```text
//! mean_c = (1/m) sum x            var_c = (1/m) sum (x - mean_c)^2      (biased)
//! x_hat  = (x - mean_c) / sqrt(var_c + eps)
//! y      = gamma_c * x_hat + beta_c
//! ```
//!
//! In training the running statistics move towards the batch statistics (the running
//! variance towards the *unbiased* `m / (m - 1) * var_c`); in evaluation they replace
//! them. The backward pass is the closed form
//!
//! ```text
//! dbeta  = sum dy                 dgamma = sum dy * x_hat
//! dx     = gamma / sqrt(var + eps) * (dy - dbeta / m - x_hat * dgamma / m)
//! ```
//!
//! (with batch statistics; with running statistics `dx = gamma / sqrt(var + eps) * dy`).
//! The forward keeps only the per-channel mean and `1 / sqrt(var + eps)`; the backward
//! takes `x` again, so no tensor-sized buffer is saved.

mod error;
mod float;
mod kernels;

pub use error::BnError;
pub use float::Float;

use kernels::{Coefficients, Geometry, Stats, Workspace};

/// Where the channel axis of an activation tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// `[N, C]`, `[N, C, L]`, `[N, C, H, W]`, `[N, C, D, H, W]` (PyTorch's default).
    #[default]
    ChannelsFirst,
    /// `[N, C]`, `[N, L, C]`, `[N, H, W, C]`, `[N, D, H, W, C]`: the channel axis is
    /// innermost in memory (TensorFlow's default, PyTorch's `channels_last`).
    ChannelsLast,
}

impl Layout {
    /// The name used in files and output: `channels_first` or `channels_last`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::ChannelsFirst => "channels_first",
            Layout::ChannelsLast => "channels_last",
        }
    }

    /// Index of the channel axis in a shape of `rank` dimensions.
    pub fn channel_axis(self, rank: usize) -> usize {
        match self {
            Layout::ChannelsFirst => 1,
            Layout::ChannelsLast => rank - 1,
        }
    }
}

/// How the running statistics follow the batch statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Momentum {
    /// `running = (1 - m) * running + m * batch`, with `m` in `[0, 1]` (PyTorch's
    /// convention; Keras and Flax use `1 - m`).
    Exponential(f64),
    /// The cumulative average of all batches seen: `m = 1 / num_batches_tracked`
    /// (PyTorch's `momentum=None`).
    Cumulative,
}

impl Default for Momentum {
    fn default() -> Self {
        Momentum::Exponential(0.1)
    }
}

/// Configuration of a [`BatchNorm`] layer. Validated by [`BatchNorm::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Number of channels `C` (features). No default: it must be at least 1.
    pub num_features: usize,
    /// Added to the variance before the square root. Default `1e-5`; must be finite and > 0.
    pub eps: f64,
    /// How the running statistics are updated. Default `Exponential(0.1)`.
    pub momentum: Momentum,
    /// Whether the layer has a learnable scale `gamma` (weight) and shift `beta` (bias).
    /// Default `true`.
    pub affine: bool,
    /// Whether the layer keeps running statistics. When `false`, batch statistics are
    /// used in evaluation too (as in PyTorch). Default `true`.
    pub track_running_stats: bool,
}

impl BatchNormConfig {
    /// The default configuration for `num_features` channels.
    pub fn new(num_features: usize) -> Self {
        BatchNormConfig {
            num_features,
            eps: 1e-5,
            momentum: Momentum::default(),
            affine: true,
            track_running_stats: true,
        }
    }

    fn validate(&self) -> Result<(), BnError> {
        if self.num_features == 0 {
            return Err(BnError::ZeroFeatures);
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(BnError::InvalidEps(self.eps));
        }
        if let Momentum::Exponential(m) = self.momentum
            && !(0.0..=1.0).contains(&m)
        {
            return Err(BnError::InvalidMomentum(m));
        }
        Ok(())
    }
}

/// Gamma and beta of a layer, writable, with their gradients from the last backward pass.
#[derive(Debug)]
pub struct AffineParams<'a, T> {
    /// Gamma, `[C]`.
    pub weight: &'a mut [T],
    /// d loss / d gamma, `[C]`.
    pub grad_weight: &'a [T],
    /// Beta, `[C]`.
    pub bias: &'a mut [T],
    /// d loss / d beta, `[C]`.
    pub grad_bias: &'a [T],
}

/// What the last forward pass left for the backward pass.
#[derive(Debug, Clone, Default)]
struct Saved {
    /// Geometry and shape of the input; `None` before the first forward.
    geometry: Option<Geometry>,
    shape: Vec<usize>,
    /// Whether batch statistics were used (so `dx` has the mean and variance terms).
    batch_stats: bool,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

/// Per-channel scratch vectors, reused across calls.
#[derive(Debug, Clone, Default)]
struct Scratch {
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    d: Vec<f64>,
    e: Vec<f64>,
    ws: Workspace,
}

/// A BatchNorm layer over `num_features` channels, for `f32` or `f64` data.
///
/// # Shapes
/// Inputs are flat buffers with a shape of rank 2 to 5 (any rank >= 2 works) and a
/// [`Layout`]: channels-first `[N, C, ..]` or channels-last `[N, .., C]`. The output and
/// gradients have the input's shape and layout.
///
/// # State
/// `weight` (gamma, initialized to 1) and `bias` (beta, 0) when `affine`;
/// `running_mean` (0), `running_var` (1) and `num_batches_tracked` (0) when
/// `track_running_stats`. The layer starts in training mode.
///
/// # Errors
/// Every method that takes user input validates it before touching any state: on error
/// the parameters, running statistics and counter are unchanged.
///
/// # Example
/// ```
/// use batchnorm::bn::{BatchNorm, BatchNormConfig, Layout};
///
/// let mut bn = BatchNorm::<f32>::new(BatchNormConfig::new(2))?;
/// // Two channels, three examples: [N = 3, C = 2].
/// let x = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
/// let mut y = [0.0; 6];
/// bn.forward(&x, &[3, 2], Layout::ChannelsFirst, &mut y)?;
/// assert!((y[0] + 1.2247).abs() < 1e-3 && y[2].abs() < 1e-6);
///
/// let dy = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
/// let mut dx = [0.0; 6];
/// bn.backward(&x, &dy, &mut dx)?;
/// assert_eq!(bn.grad_bias().unwrap()[0], 1.0);
/// assert_eq!(bn.num_batches_tracked(), 1);
/// # Ok::<(), batchnorm::bn::BnError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchNorm<T: Float = f32> {
    config: BatchNormConfig,
    training: bool,
    weight: Vec<T>,
    bias: Vec<T>,
    grad_weight: Vec<T>,
    grad_bias: Vec<T>,
    running_mean: Vec<T>,
    running_var: Vec<T>,
    num_batches_tracked: u64,
    saved: Saved,
    scratch: Scratch,
}

impl<T: Float> BatchNorm<T> {
    /// Creates a layer in training mode with gamma = 1, beta = 0, running mean 0 and
    /// running variance 1.
    ///
    /// # Errors
    /// [`BnError::ZeroFeatures`], [`BnError::InvalidEps`] or [`BnError::InvalidMomentum`]
    /// when the configuration is invalid; [`BnError::TooManyFeatures`] when the
    /// per-channel buffers would not fit in the memory available.
    pub fn new(config: BatchNormConfig) -> Result<Self, BnError> {
        config.validate()?;
        let c = config.num_features;
        // Six vectors of `T` (parameters, their gradients, running statistics) and about
        // eight of `f64` (saved statistics and scratch) per channel.
        let per_channel = 6 * std::mem::size_of::<T>() + 8 * std::mem::size_of::<f64>();
        crate::memory::check(c.checked_mul(per_channel)).map_err(|short| BnError::TooManyFeatures {
            num_features: c,
            needed_gib: short.needed_gib,
            available_gib: short.available_gib,
        })?;
        let (params, stats) = (
            if config.affine { c } else { 0 },
            if config.track_running_stats { c } else { 0 },
        );
        Ok(BatchNorm {
            config,
            training: true,
            weight: vec![T::from_f64(1.0); params],
            bias: vec![T::from_f64(0.0); params],
            grad_weight: vec![T::from_f64(0.0); params],
            grad_bias: vec![T::from_f64(0.0); params],
            running_mean: vec![T::from_f64(0.0); stats],
            running_var: vec![T::from_f64(1.0); stats],
            num_batches_tracked: 0,
            saved: Saved::default(),
            scratch: Scratch::default(),
        })
    }

    /// The configuration the layer was built with.
    pub fn config(&self) -> &BatchNormConfig {
        &self.config
    }

    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.config.num_features
    }

    /// Changes how the running statistics follow the batch statistics from the next
    /// training forward pass on.
    ///
    /// With [`Momentum::Cumulative`] after [`reset_running_stats`](Self::reset_running_stats),
    /// training forward passes over a sequence of mini-batches leave the paper's
    /// population statistics (its Algorithm 2): the mean of the batch means and the mean
    /// of the unbiased batch variances.
    ///
    /// # Errors
    /// [`BnError::InvalidMomentum`] for an exponential momentum outside `[0, 1]`; the
    /// layer is unchanged then.
    pub fn set_momentum(&mut self, momentum: Momentum) -> Result<(), BnError> {
        BatchNormConfig {
            momentum,
            ..self.config
        }
        .validate()?;
        self.config.momentum = momentum;
        Ok(())
    }

    /// Sets the running mean to 0, the running variance to 1 and the batch counter to 0,
    /// as a new layer has them (PyTorch's `reset_running_stats`). Nothing happens when
    /// the layer keeps no running statistics.
    pub fn reset_running_stats(&mut self) {
        self.running_mean.fill(T::from_f64(0.0));
        self.running_var.fill(T::from_f64(1.0));
        self.num_batches_tracked = 0;
    }

    /// Switches to training (`true`: batch statistics, running statistics updated) or
    /// evaluation (`false`: running statistics used, when tracked).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Gamma, the per-channel scale; `None` when `affine` is false.
    pub fn weight(&self) -> Option<&[T]> {
        self.config.affine.then_some(&self.weight[..])
    }

    /// Beta, the per-channel shift; `None` when `affine` is false.
    pub fn bias(&self) -> Option<&[T]> {
        self.config.affine.then_some(&self.bias[..])
    }

    /// Mutable gamma and beta with their gradients from the last backward pass, for an
    /// optimizer; `None` when `affine` is false.
    pub fn params_and_grads_mut(&mut self) -> Option<AffineParams<'_, T>> {
        self.config.affine.then_some(AffineParams {
            weight: &mut self.weight[..],
            grad_weight: &self.grad_weight[..],
            bias: &mut self.bias[..],
            grad_bias: &self.grad_bias[..],
        })
    }

    /// Gradient of the loss with respect to gamma, from the last backward pass.
    pub fn grad_weight(&self) -> Option<&[T]> {
        self.config.affine.then_some(&self.grad_weight[..])
    }

    /// Gradient of the loss with respect to beta, from the last backward pass.
    pub fn grad_bias(&self) -> Option<&[T]> {
        self.config.affine.then_some(&self.grad_bias[..])
    }

    /// Sets gamma and beta.
    ///
    /// # Errors
    /// [`BnError::NotAffine`] when `affine` is false; [`BnError::ParamLength`] when a
    /// vector's length is not `num_features` (nothing is changed then).
    pub fn set_affine(&mut self, weight: &[T], bias: &[T]) -> Result<(), BnError> {
        if !self.config.affine {
            return Err(BnError::NotAffine("weight and bias"));
        }
        self.check_len("weight", weight.len())?;
        self.check_len("bias", bias.len())?;
        self.weight.copy_from_slice(weight);
        self.bias.copy_from_slice(bias);
        Ok(())
    }

    /// The running mean; `None` when `track_running_stats` is false.
    pub fn running_mean(&self) -> Option<&[T]> {
        self.config.track_running_stats.then_some(&self.running_mean[..])
    }

    /// The running (unbiased) variance; `None` when `track_running_stats` is false.
    pub fn running_var(&self) -> Option<&[T]> {
        self.config.track_running_stats.then_some(&self.running_var[..])
    }

    /// Number of training batches whose statistics entered the running statistics.
    pub fn num_batches_tracked(&self) -> u64 {
        self.num_batches_tracked
    }

    /// Sets the running statistics and the batch counter (for example when loading a
    /// checkpoint).
    ///
    /// # Errors
    /// [`BnError::NotTracking`] when the layer keeps no running statistics;
    /// [`BnError::ParamLength`] for a wrong length; [`BnError::InvalidStatistic`] for a
    /// non-finite mean or a negative or non-finite variance. Nothing is changed on error.
    pub fn set_running_stats(
        &mut self,
        mean: &[T],
        var: &[T],
        num_batches_tracked: u64,
    ) -> Result<(), BnError> {
        if !self.config.track_running_stats {
            return Err(BnError::NotTracking("it has no running statistics to set"));
        }
        self.check_len("running_mean", mean.len())?;
        self.check_len("running_var", var.len())?;
        for (index, v) in mean.iter().enumerate() {
            if !v.to_f64().is_finite() {
                return Err(BnError::InvalidStatistic {
                    name: "running_mean",
                    index,
                    value: v.to_f64(),
                });
            }
        }
        for (index, v) in var.iter().enumerate() {
            let value = v.to_f64();
            if !(value.is_finite() && value >= 0.0) {
                return Err(BnError::InvalidStatistic {
                    name: "running_var",
                    index,
                    value,
                });
            }
        }
        self.running_mean.copy_from_slice(mean);
        self.running_var.copy_from_slice(var);
        self.num_batches_tracked = num_batches_tracked;
        Ok(())
    }

    fn check_len(&self, name: &'static str, got: usize) -> Result<(), BnError> {
        if got != self.config.num_features {
            return Err(BnError::ParamLength {
                name,
                expected: self.config.num_features,
                got,
            });
        }
        Ok(())
    }

    /// Whether the next forward pass normalizes with batch statistics.
    pub fn uses_batch_stats(&self) -> bool {
        self.training || !self.config.track_running_stats
    }

    /// Checks a shape against the layer and returns its geometry.
    fn geometry(&self, shape: &[usize], layout: Layout) -> Result<Geometry, BnError> {
        if shape.len() < 2 {
            return Err(BnError::RankTooLow {
                shape: shape.to_vec(),
            });
        }
        let axis = layout.channel_axis(shape.len());
        if shape[axis] != self.config.num_features {
            return Err(BnError::ChannelMismatch {
                expected: self.config.num_features,
                got: shape[axis],
                shape: shape.to_vec(),
                layout: layout.name(),
            });
        }
        let overflow = || BnError::ShapeOverflow {
            shape: shape.to_vec(),
        };
        let product = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let (outer, inner) = match layout {
            Layout::ChannelsFirst => (shape[0], product(&shape[2..]).ok_or_else(overflow)?),
            Layout::ChannelsLast => (product(&shape[..shape.len() - 1]).ok_or_else(overflow)?, 1),
        };
        let g = Geometry {
            outer,
            channels: shape[axis],
            inner,
        };
        outer
            .checked_mul(inner)
            .and_then(|v| v.checked_mul(g.channels))
            .ok_or_else(overflow)?;
        Ok(g)
    }

    /// The forward pass: `y = gamma * (x - mean) / sqrt(var + eps) + beta`, per channel.
    ///
    /// In training mode (or whenever `track_running_stats` is false) `mean` and `var`
    /// are the batch statistics, and in training the running statistics are updated and
    /// `num_batches_tracked` incremented. In evaluation they are the running statistics.
    ///
    /// # Shapes
    /// `x` and `y` hold `prod(shape)` elements; `shape` has rank >= 2 and its channel
    /// axis (1 for channels-first, last for channels-last) equals `num_features`.
    ///
    /// # Errors
    /// [`BnError::RankTooLow`], [`BnError::ChannelMismatch`], [`BnError::ShapeOverflow`],
    /// [`BnError::LengthMismatch`]; with batch statistics [`BnError::TooFewValues`] when
    /// a channel has fewer than 2 values; in training [`BnError::NonFinite`] when the
    /// input holds NaN or infinity. On error the state is unchanged and `y` is not written.
    pub fn forward(&mut self, x: &[T], shape: &[usize], layout: Layout, y: &mut [T]) -> Result<(), BnError> {
        let g = self.geometry(shape, layout)?;
        check_buffer("x", x.len(), g.len(), shape)?;
        check_buffer("y", y.len(), g.len(), shape)?;
        let batch_stats = self.uses_batch_stats();
        let c = self.config.num_features;
        let eps = self.config.eps;
        let s = &mut self.scratch;
        // a = mean, e = var, b = 1 / sqrt(var + eps); c = gamma * b, d = beta.
        if batch_stats {
            if g.per_channel() < 2 {
                return Err(BnError::TooFewValues {
                    per_channel: g.per_channel(),
                    shape: shape.to_vec(),
                });
            }
            kernels::moments(x, g, &mut s.ws, &mut s.a, &mut s.e);
            if self.training
                && let Some(channel) = (0..c).find(|&i| !(s.a[i].is_finite() && s.e[i].is_finite()))
            {
                return Err(BnError::NonFinite {
                    channel,
                    mean: s.a[channel],
                    var: s.e[channel],
                    shape: shape.to_vec(),
                });
            }
        } else {
            s.a.clear();
            s.e.clear();
            s.a.extend(self.running_mean.iter().map(|v| v.to_f64()));
            s.e.extend(self.running_var.iter().map(|v| v.to_f64()));
        }
        kernels::inv_std(&s.e, eps, &mut s.b);
        s.c.clear();
        s.d.clear();
        if self.config.affine {
            s.c.extend(self.weight.iter().zip(&s.b).map(|(w, i)| w.to_f64() * i));
            s.d.extend(self.bias.iter().map(|v| v.to_f64()));
        } else {
            s.c.extend_from_slice(&s.b);
            s.d.resize(c, 0.0);
        }
        let coef = Coefficients {
            center: Some(&s.a),
            scale: &s.c,
            shift: &s.d,
        };
        kernels::affine(x, y, g, &coef, &s.b, &mut s.ws);

        if self.training && self.config.track_running_stats {
            self.num_batches_tracked += 1;
            let m = match self.config.momentum {
                Momentum::Exponential(m) => m,
                Momentum::Cumulative => 1.0 / self.num_batches_tracked as f64,
            };
            let n = g.per_channel() as f64;
            let unbias = n / (n - 1.0);
            let stats = self.running_mean.iter_mut().zip(self.running_var.iter_mut());
            for ((rm, rv), (mean, var)) in stats.zip(s.a.iter().zip(&s.e)) {
                *rm = T::from_f64((1.0 - m) * rm.to_f64() + m * mean);
                *rv = T::from_f64((1.0 - m) * rv.to_f64() + m * var * unbias);
            }
        }
        let saved = &mut self.saved;
        saved.geometry = Some(g);
        saved.shape.clear();
        saved.shape.extend_from_slice(shape);
        saved.batch_stats = batch_stats;
        std::mem::swap(&mut saved.mean, &mut s.a);
        std::mem::swap(&mut saved.inv_std, &mut s.b);
        Ok(())
    }

    /// The backward pass of the last [`forward`](Self::forward): writes `dx` and stores
    /// the gradients of gamma and beta (read them with [`grad_weight`](Self::grad_weight)
    /// and [`grad_bias`](Self::grad_bias); they are overwritten, not accumulated).
    ///
    /// `x` must be the input of that forward pass: the layer keeps only per-channel
    /// statistics, not a copy of the input.
    ///
    /// # Shapes
    /// `x`, `dy` and `dx` have the shape of the last forward's input.
    ///
    /// # Errors
    /// [`BnError::NoForward`] before any forward; [`BnError::LengthMismatch`] when a
    /// buffer does not match the saved shape. On error nothing is written.
    pub fn backward(&mut self, x: &[T], dy: &[T], dx: &mut [T]) -> Result<(), BnError> {
        let g = self.saved.geometry.ok_or(BnError::NoForward)?;
        let shape = &self.saved.shape;
        check_buffer("x", x.len(), g.len(), shape)?;
        check_buffer("dy", dy.len(), g.len(), shape)?;
        check_buffer("dx", dx.len(), g.len(), shape)?;
        let c = self.config.num_features;
        let saved = &self.saved;
        let s = &mut self.scratch;
        // c = gamma * inv_std, the coefficient of dy in dx; a = sum(dy) (dbeta),
        // b = sum(dy * (x - mean)) (dgamma / inv_std).
        s.c.clear();
        if self.config.affine {
            s.c.extend(
                self.weight
                    .iter()
                    .zip(&saved.inv_std)
                    .map(|(w, i)| w.to_f64() * i),
            );
        } else {
            s.c.extend_from_slice(&saved.inv_std);
        }
        s.a.resize(c, 0.0);
        s.b.resize(c, 0.0);
        let stats = Stats {
            mean: &saved.mean,
            inv_std: &saved.inv_std,
            scale: &s.c,
            batch_stats: saved.batch_stats,
        };
        kernels::backward(x, dy, dx, g, &stats, &mut s.ws, &mut s.a, &mut s.b);
        if self.config.affine {
            let grads = self.grad_weight.iter_mut().zip(self.grad_bias.iter_mut());
            for ((gw, gb), ((sdy, sdyxc), inv)) in grads.zip(s.a.iter().zip(&s.b).zip(&saved.inv_std)) {
                *gw = T::from_f64(sdyxc * inv);
                *gb = T::from_f64(*sdy);
            }
        }
        Ok(())
    }

    /// The per-channel affine map `y = a * x + b` that this layer computes in evaluation
    /// mode: `a = gamma / sqrt(running_var + eps)`, `b = beta - running_mean * a`.
    ///
    /// # Errors
    /// [`BnError::NotTracking`] when the layer keeps no running statistics (its
    /// evaluation output then depends on the batch, so it is not a fixed map).
    pub fn inference_affine(&self) -> Result<(Vec<T>, Vec<T>), BnError> {
        let (a, b) = self.inference_affine_f64()?;
        Ok((
            a.into_iter().map(T::from_f64).collect(),
            b.into_iter().map(T::from_f64).collect(),
        ))
    }

    fn inference_affine_f64(&self) -> Result<(Vec<f64>, Vec<f64>), BnError> {
        if !self.config.track_running_stats {
            return Err(BnError::NotTracking(
                "evaluation uses batch statistics and is not an affine map",
            ));
        }
        let c = self.config.num_features;
        let mut a = Vec::with_capacity(c);
        let mut b = Vec::with_capacity(c);
        for i in 0..c {
            let (gamma, beta) = if self.config.affine {
                (self.weight[i].to_f64(), self.bias[i].to_f64())
            } else {
                (1.0, 0.0)
            };
            let scale = gamma / (self.running_var[i].to_f64() + self.config.eps).sqrt();
            a.push(scale);
            b.push(beta - self.running_mean[i].to_f64() * scale);
        }
        Ok((a, b))
    }

    /// Folds this layer's evaluation-mode map into a preceding linear layer
    /// `z = x W^T + bias`, returning `(W', bias')` such that `x W'^T + bias'` equals
    /// `BN(z)` in evaluation mode, to within rounding.
    ///
    /// # Shapes
    /// `weight` is `[out, in]` row-major with `out = num_features`; `bias`, when given,
    /// is `[out]`. The folded bias is always present.
    ///
    /// # Errors
    /// [`BnError::NotTracking`] as for [`inference_affine`](Self::inference_affine);
    /// [`BnError::LengthMismatch`] when `weight.len()` is not `out * in_features`;
    /// [`BnError::ParamLength`] when `bias` has the wrong length.
    pub fn fold_into_linear(
        &self,
        weight: &[T],
        in_features: usize,
        bias: Option<&[T]>,
    ) -> Result<(Vec<T>, Vec<T>), BnError> {
        let out = self.config.num_features;
        let shape = [out, in_features];
        let expected = out.checked_mul(in_features).ok_or(BnError::ShapeOverflow {
            shape: shape.to_vec(),
        })?;
        check_buffer("weight", weight.len(), expected, &shape)?;
        if let Some(b) = bias {
            self.check_len("linear bias", b.len())?;
        }
        let (a, b) = self.inference_affine_f64()?;
        let mut w = Vec::with_capacity(expected);
        let mut folded_bias = Vec::with_capacity(out);
        for o in 0..out {
            let scale = a[o];
            let row = &weight[o * in_features..(o + 1) * in_features];
            w.extend(row.iter().map(|v| T::from_f64(v.to_f64() * scale)));
            let lin_b = bias.map_or(0.0, |bb| bb[o].to_f64());
            folded_bias.push(T::from_f64(lin_b * scale + b[o]));
        }
        Ok((w, folded_bias))
    }
}

fn check_buffer(buffer: &'static str, got: usize, expected: usize, shape: &[usize]) -> Result<(), BnError> {
    if got != expected {
        return Err(BnError::LengthMismatch {
            buffer,
            expected,
            got,
            shape: shape.to_vec(),
        });
    }
    Ok(())
}
