//! The fully connected network: a sequence of layers built from a [`NetworkSpec`],
//! with every activation and gradient buffer allocated once, at construction.
//!
//! Layer `i` reads buffer `i` and writes buffer `i + 1`; the backward pass fills the
//! matching gradient buffers. The buffers stay readable after each pass, so diagnostics
//! can look at any layer's input, output or gradients ([`Network::layer_output`], ...)
//! without the layers knowing about them.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bn::Momentum;
use crate::data::Dataset;

use super::loss::{self, LossKind};
use super::rows::transpose;
use super::{Activation, ActivationKind, BatchNormLayer, Init, Linear, NnError, Real};

/// The ChaCha stream of the seed that initializes the weights; the training loop draws
/// its batches from other streams, so changing one never shifts the other.
pub const INIT_STREAM: u64 = 0;

/// Where BatchNorm goes in each hidden layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnPlacement {
    /// No BatchNorm: `Linear → activation`.
    #[default]
    None,
    /// `Linear → BN → activation`, as in the paper (normalizing `x = Wu`).
    Before,
    /// `Linear → activation → BN`.
    After,
}

impl fmt::Display for BnPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BnPlacement::None => "none",
            BnPlacement::Before => "before",
            BnPlacement::After => "after",
        })
    }
}

impl FromStr for BnPlacement {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "none" => Ok(BnPlacement::None),
            "before" => Ok(BnPlacement::Before),
            "after" => Ok(BnPlacement::After),
            _ => Err(NnError::Parse {
                what: "BatchNorm placement",
                given: s.to_string(),
                expected: "none, before or after",
            }),
        }
    }
}

/// Which `Linear` layers get a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BiasMode {
    /// Every layer except a `Linear` directly followed by BN, whose bias BN would
    /// cancel. The default.
    #[default]
    Auto,
    /// Every `Linear` layer (PyTorch's `nn.Linear` default).
    All,
    /// No `Linear` layer.
    None,
}

impl fmt::Display for BiasMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BiasMode::Auto => "auto",
            BiasMode::All => "all",
            BiasMode::None => "none",
        })
    }
}

impl FromStr for BiasMode {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "auto" => Ok(BiasMode::Auto),
            "all" | "true" | "yes" => Ok(BiasMode::All),
            "none" | "false" | "no" => Ok(BiasMode::None),
            _ => Err(NnError::Parse {
                what: "bias mode",
                given: s.to_string(),
                expected: "auto (no bias right before BN), all or none",
            }),
        }
    }
}

/// A fully connected classifier: `inputs → hidden[0] → … → classes`.
///
/// Hidden layer `j` is `Linear` followed by the activation and, depending on `bn`, a
/// BatchNorm before or after the activation; the output layer is a plain `Linear`
/// whose outputs are the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSpec {
    /// Features per example. Default 784 (28 × 28 images).
    pub inputs: usize,
    /// Width of each hidden layer. Default `[100, 100, 100]` (the paper's MNIST net).
    pub hidden: Vec<usize>,
    /// Number of classes (outputs), at most 256. Default 10.
    pub classes: usize,
    /// The hidden activation. Default sigmoid.
    pub activation: ActivationKind,
    /// Where BatchNorm goes. Default none.
    pub bn: BnPlacement,
    /// Which `Linear` layers have a bias. Default auto.
    pub bias: BiasMode,
    /// The weight initialization. Default LeCun normal.
    pub init: Init,
    /// A multiplier on the initialization's standard deviation. Default 1.
    pub init_scale: f64,
    /// BatchNorm's `eps`. Default `1e-5` (PyTorch's).
    pub bn_eps: f64,
    /// BatchNorm's running-statistics momentum. Default 0.1 (PyTorch's).
    pub bn_momentum: f64,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            inputs: 784,
            hidden: vec![100, 100, 100],
            classes: 10,
            activation: ActivationKind::Sigmoid,
            bn: BnPlacement::None,
            bias: BiasMode::Auto,
            init: Init::Lecun,
            init_scale: 1.0,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }
}

impl NetworkSpec {
    /// Checks the sizes and the initialization scale (BN settings are checked by the
    /// BN layers themselves).
    ///
    /// # Errors
    /// [`NnError::ZeroSize`] for a zero size, [`NnError::InvalidValue`] for more than 256
    /// classes or an `init_scale` that is negative or not finite.
    pub fn validate(&self) -> Result<(), NnError> {
        if self.inputs == 0 {
            return Err(NnError::ZeroSize {
                what: "the input size".into(),
            });
        }
        if let Some(j) = self.hidden.iter().position(|&h| h == 0) {
            return Err(NnError::ZeroSize {
                what: format!("hidden layer {} (counting from 1)", j + 1),
            });
        }
        if self.classes == 0 {
            return Err(NnError::ZeroSize {
                what: "the number of classes".into(),
            });
        }
        if self.classes > 256 {
            return Err(NnError::InvalidValue {
                name: "classes",
                value: self.classes as f64,
                requirement: "labels are bytes, so at most 256 classes",
            });
        }
        if !(self.init_scale.is_finite() && self.init_scale >= 0.0) {
            return Err(NnError::InvalidValue {
                name: "init_scale",
                value: self.init_scale,
                requirement: "must be finite and >= 0",
            });
        }
        Ok(())
    }
}

/// Refuses a network whose buffers would not fit in the memory available, before any is
/// allocated. The estimate counts each weight four times (the weights, their gradient,
/// the momentum, the initialization's draw) and each activation twice per layer of
/// a hidden width (values and gradients of the `Linear`, BN and activation outputs).
fn check_memory<T: Real>(spec: &NetworkSpec, capacity: usize) -> Result<(), NnError> {
    let widths: Vec<usize> = std::iter::once(spec.inputs)
        .chain(spec.hidden.iter().copied())
        .chain(std::iter::once(spec.classes))
        .collect();
    let weights = widths
        .windows(2)
        .try_fold(0usize, |acc, w| acc.checked_add(w[0].checked_mul(w[1])?));
    let per_example = widths
        .iter()
        .try_fold(0usize, |acc, &w| acc.checked_add(w.checked_mul(3)?));
    let values = weights.zip(per_example).and_then(|(weights, per_example)| {
        weights
            .checked_mul(4)?
            .checked_add(per_example.checked_mul(capacity)?.checked_mul(2)?)
    });
    let needed = values.and_then(|v| v.checked_mul(std::mem::size_of::<T>()));
    crate::memory::check(needed).map_err(|short| NnError::TooLarge {
        needed_gib: short.needed_gib,
        capacity,
        available_gib: short.available_gib,
    })
}

/// One layer of a [`Network`].
#[derive(Clone, Debug)]
pub enum Layer<T: Real> {
    /// A fully connected layer.
    Linear(Linear<T>),
    /// BatchNorm over the features (boxed: its scratch space makes it the largest).
    BatchNorm(Box<BatchNormLayer<T>>),
    /// An element-wise activation.
    Activation(Activation),
}

impl<T: Real> Layer<T> {
    /// The class name of the matching PyTorch module (`Linear`, `BatchNorm1d`, `Sigmoid`, ...).
    pub fn torch_name(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "Linear",
            Layer::BatchNorm(_) => "BatchNorm1d",
            Layer::Activation(a) => a.kind().torch_name(),
        }
    }
}

/// What a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A `Linear` weight, `[out, in]`.
    LinearWeight,
    /// A `Linear` bias, `[out]`.
    LinearBias,
    /// BatchNorm's gamma, `[C]`.
    BnWeight,
    /// BatchNorm's beta, `[C]`.
    BnBias,
}

/// A parameter's place in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Index of its layer.
    pub layer: usize,
    /// What it is.
    pub kind: ParamKind,
    /// Number of rows (outputs) of the layer.
    pub rows: usize,
    /// Number of columns: the layer's inputs for a `Linear` weight, 1 otherwise.
    pub cols: usize,
}

impl ParamInfo {
    /// The PyTorch `state_dict` suffix: `weight` or `bias`.
    pub fn suffix(&self) -> &'static str {
        match self.kind {
            ParamKind::LinearWeight | ParamKind::BnWeight => "weight",
            ParamKind::LinearBias | ParamKind::BnBias => "bias",
        }
    }

    /// The `nn.Sequential` state-dict name, e.g. `3.weight`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.layer, self.suffix())
    }

    /// Values as stored put in PyTorch's order, that of [`shape`](Self::shape). A
    /// `Linear` weight is stored transposed with padded rows, `[cols, rows rounded up to
    /// 16]` (see [`Linear`]); everything else as is.
    ///
    /// # Panics
    /// When `stored` is too short.
    pub fn to_torch_order<T: Copy + Default>(&self, stored: &[T]) -> Vec<T> {
        if self.kind != ParamKind::LinearWeight {
            return stored.to_vec();
        }
        let mut torch = vec![T::default(); self.rows * self.cols];
        transpose(
            stored,
            self.cols,
            self.rows,
            self.rows.next_multiple_of(16),
            &mut torch,
            self.cols,
        );
        torch
    }

    /// The inverse of [`to_torch_order`](Self::to_torch_order): writes `torch` (in the
    /// order of [`shape`](Self::shape)) to `stored`, whose padding is left as it is.
    ///
    /// # Panics
    /// When a slice is too short.
    pub fn from_torch_order<T: Copy>(&self, torch: &[T], stored: &mut [T]) {
        if self.kind == ParamKind::LinearWeight {
            let ld = self.rows.next_multiple_of(16);
            transpose(torch, self.rows, self.cols, self.cols, stored, ld);
        } else {
            stored.copy_from_slice(torch);
        }
    }

    /// The tensor shape in PyTorch: `[out, in]` for a `Linear` weight, `[C]` otherwise.
    pub fn shape(&self) -> Vec<usize> {
        match self.kind {
            ParamKind::LinearWeight => vec![self.rows, self.cols],
            _ => vec![self.rows],
        }
    }

    /// Whether it belongs to a BatchNorm layer (gamma or beta).
    pub fn is_batchnorm(&self) -> bool {
        matches!(self.kind, ParamKind::BnWeight | ParamKind::BnBias)
    }
}

/// Loss and accuracy over a data set, in evaluation mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    /// Mean loss per example.
    pub loss: f64,
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
}

/// A network with its buffers for batches of up to `capacity` examples.
///
/// # Shapes
/// Inputs are `[batch, inputs]` row-major, logits `[batch, classes]`. Layer `i` reads
/// `[batch, width(i)]` and writes `[batch, width(i + 1)]`.
#[derive(Clone, Debug)]
pub struct Network<T: Real> {
    spec: NetworkSpec,
    layers: Vec<Layer<T>>,
    /// `widths[i]` is the feature count of layer `i`'s input; the last is `classes`.
    widths: Vec<usize>,
    capacity: usize,
    /// `acts[i]` is layer `i`'s input; `acts[len]` the logits.
    acts: Vec<Vec<T>>,
    /// `grads[i]` is d loss / d `acts[i]`; `grads[0]` stays unused since the first layer
    /// (always `Linear`) needs no input gradient.
    grads: Vec<Vec<T>>,
    /// Examples in the last forward pass.
    batch: usize,
    /// Whether the last forward pass ran in training mode with nothing after it but
    /// backward passes (so a backward pass is meaningful).
    backward_ready: bool,
    training: bool,
}

impl<T: Real> Network<T> {
    /// Builds the network of `spec` for batches of up to `capacity` examples, in
    /// training mode, with weights drawn from stream [`INIT_STREAM`] of `seed`.
    ///
    /// # Errors
    /// [`NnError::ZeroSize`] for a zero capacity, any error of
    /// [`NetworkSpec::validate`], and [`NnError::BatchNorm`] for invalid BN settings.
    pub fn new(spec: &NetworkSpec, capacity: usize, seed: u64) -> Result<Self, NnError> {
        spec.validate()?;
        if capacity == 0 {
            return Err(NnError::ZeroSize {
                what: "the batch capacity".into(),
            });
        }
        check_memory::<T>(spec, capacity)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(INIT_STREAM);
        let mut layers = Vec::new();
        let mut widths = vec![spec.inputs];
        let mut linear = |layers: &mut Vec<Layer<T>>, inp: usize, out: usize, bias: bool| {
            // The first layer's input is the data: pixels, often zero.
            let mut l = Linear::new(inp, out, bias, layers.is_empty())?;
            // Drawn in PyTorch's `[out, in]` order, whatever the storage.
            let mut torch = vec![T::ZERO; inp * out];
            Init::fill(&mut torch, spec.init.std(inp, out) * spec.init_scale, &mut rng);
            l.set_weight_torch(&torch);
            layers.push(Layer::Linear(l));
            Ok::<_, NnError>(())
        };
        let bn = |layers: &[Layer<T>], width: usize| {
            BatchNormLayer::new(width, spec.bn_eps, spec.bn_momentum)
                .map(|l| Layer::BatchNorm(Box::new(l)))
                .map_err(|source| NnError::BatchNorm {
                    layer: layers.len(),
                    source,
                })
        };
        let act = Layer::Activation(Activation::new(spec.activation));
        let mut prev = spec.inputs;
        for &h in &spec.hidden {
            let bias = match spec.bias {
                BiasMode::Auto => spec.bn != BnPlacement::Before,
                BiasMode::All => true,
                BiasMode::None => false,
            };
            linear(&mut layers, prev, h, bias)?;
            match spec.bn {
                BnPlacement::None => layers.push(act.clone()),
                BnPlacement::Before => {
                    layers.push(bn(&layers, h)?);
                    layers.push(act.clone());
                }
                BnPlacement::After => {
                    layers.push(act.clone());
                    layers.push(bn(&layers, h)?);
                }
            }
            widths.extend(std::iter::repeat_n(h, layers.len() + 1 - widths.len()));
            prev = h;
        }
        linear(&mut layers, prev, spec.classes, spec.bias != BiasMode::None)?;
        widths.push(spec.classes);

        let buffer = |w: usize| {
            w.checked_mul(capacity)
                .map(|len| vec![T::ZERO; len])
                .ok_or(NnError::InvalidValue {
                    name: "batch capacity",
                    value: capacity as f64,
                    requirement: "its buffers must fit in memory",
                })
        };
        let acts = widths.iter().map(|&w| buffer(w)).collect::<Result<Vec<_>, _>>()?;
        let mut grads = vec![Vec::new()];
        for &w in &widths[1..] {
            grads.push(buffer(w)?);
        }
        Ok(Network {
            spec: spec.clone(),
            layers,
            widths,
            capacity,
            acts,
            grads,
            batch: 0,
            backward_ready: false,
            training: true,
        })
    }

    /// The specification the network was built from.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// The layers, in order (their index is their `nn.Sequential` index).
    pub fn layers(&self) -> &[Layer<T>] {
        &self.layers
    }

    /// The layers, writable (to set weights or statistics).
    pub fn layers_mut(&mut self) -> &mut [Layer<T>] {
        &mut self.layers
    }

    /// The largest batch the buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Examples in the last forward pass.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Features of layer `i`'s input; `width(layers().len())` is the number of classes.
    ///
    /// # Panics
    /// When `i > layers().len()`.
    pub fn width(&self, i: usize) -> usize {
        self.widths[i]
    }

    /// Whether BatchNorm layers use batch statistics (training) or running ones.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Switches every BatchNorm layer to training or evaluation mode.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
        for layer in &mut self.layers {
            if let Layer::BatchNorm(bn) = layer {
                bn.inner_mut().set_training(training);
            }
        }
    }

    /// The input of layer `i` in the last forward pass, `[batch, width(i)]`.
    ///
    /// # Panics
    /// When `i > layers().len()`.
    pub fn layer_input(&self, i: usize) -> &[T] {
        &self.acts[i][..self.batch * self.widths[i]]
    }

    /// The output of layer `i` in the last forward pass, `[batch, width(i + 1)]`.
    ///
    /// # Panics
    /// When `i >= layers().len()`.
    pub fn layer_output(&self, i: usize) -> &[T] {
        self.layer_input(i + 1)
    }

    /// The logits of the last forward pass, `[batch, classes]`.
    pub fn logits(&self) -> &[T] {
        self.layer_input(self.layers.len())
    }

    /// d loss / d (input of layer `i`) from the last backward pass; `None` for layer 0,
    /// whose input gradient is never computed.
    ///
    /// # Panics
    /// When `i > layers().len()`.
    pub fn layer_input_grad(&self, i: usize) -> Option<&[T]> {
        (i > 0).then(|| &self.grads[i][..self.batch * self.widths[i]])
    }

    /// d loss / d (output of layer `i`) from the last backward pass.
    ///
    /// # Panics
    /// When `i >= layers().len()`.
    pub fn layer_output_grad(&self, i: usize) -> &[T] {
        &self.grads[i + 1][..self.batch * self.widths[i + 1]]
    }

    /// The input buffer for a batch of `batch` examples, to fill before
    /// [`forward_filled`](Self::forward_filled) (saves a copy over [`forward`](Self::forward)).
    ///
    /// # Errors
    /// [`NnError::BatchTooLarge`] or [`NnError::ZeroSize`] for a bad batch size.
    pub fn input_mut(&mut self, batch: usize) -> Result<&mut [T], NnError> {
        self.check_batch(batch)?;
        Ok(&mut self.acts[0][..batch * self.widths[0]])
    }

    fn check_batch(&self, batch: usize) -> Result<(), NnError> {
        if batch == 0 {
            return Err(NnError::ZeroSize {
                what: "the batch size".into(),
            });
        }
        if batch > self.capacity {
            return Err(NnError::BatchTooLarge {
                batch,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// The forward pass of `x`; returns the logits.
    ///
    /// # Shapes
    /// `x` is `[batch, inputs]`; the logits are `[batch, classes]`.
    ///
    /// # Errors
    /// [`NnError::InputLength`], [`NnError::BatchTooLarge`], and [`NnError::BatchNorm`]
    /// when BatchNorm refuses its input (non-finite activations in training, or a
    /// training batch of one).
    pub fn forward(&mut self, x: &[T], batch: usize) -> Result<&[T], NnError> {
        let expected = batch.saturating_mul(self.widths[0]);
        if x.len() != expected {
            return Err(NnError::InputLength {
                buffer: "x",
                batch,
                features: self.widths[0],
                expected,
                got: x.len(),
            });
        }
        self.input_mut(batch)?.copy_from_slice(x);
        self.forward_filled(batch)
    }

    /// The forward pass of the first `batch` rows of the input buffer (see
    /// [`input_mut`](Self::input_mut)); returns the logits.
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_filled(&mut self, batch: usize) -> Result<&[T], NnError> {
        self.check_batch(batch)?;
        self.batch = batch;
        self.backward_ready = false;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let (lo, hi) = self.acts.split_at_mut(i + 1);
            let x = &lo[i][..batch * self.widths[i]];
            let y = &mut hi[0][..batch * self.widths[i + 1]];
            match layer {
                Layer::Linear(l) => l.forward(x, batch, y),
                Layer::BatchNorm(bn) => bn
                    .forward(x, batch, y)
                    .map_err(|source| NnError::BatchNorm { layer: i, source })?,
                Layer::Activation(a) => a.forward(x, y),
            }
        }
        self.backward_ready = self.training;
        Ok(self.logits())
    }

    /// The backward pass of the last forward pass, from d loss / d logits: fills every
    /// parameter gradient and the gradient buffers.
    ///
    /// # Shapes
    /// `dlogits` is `[batch, classes]` for the batch of the last forward pass.
    ///
    /// # Errors
    /// [`NnError::NoForward`] unless the last forward pass ran in training mode;
    /// [`NnError::InputLength`] for a wrong `dlogits` length.
    pub fn backward(&mut self, dlogits: &[T]) -> Result<(), NnError> {
        let last = self.layers.len();
        let n = self.batch * self.widths[last];
        if !self.backward_ready {
            return Err(NnError::NoForward);
        }
        if dlogits.len() != n {
            return Err(NnError::InputLength {
                buffer: "dlogits",
                batch: self.batch,
                features: self.widths[last],
                expected: n,
                got: dlogits.len(),
            });
        }
        self.grads[last][..n].copy_from_slice(dlogits);
        self.backward_filled()
    }

    fn backward_filled(&mut self) -> Result<(), NnError> {
        let batch = self.batch;
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            let x = &self.acts[i][..batch * self.widths[i]];
            let (lo, hi) = self.grads.split_at_mut(i + 1);
            let dy = &hi[0][..batch * self.widths[i + 1]];
            let dx = (i > 0).then(|| &mut lo[i][..batch * self.widths[i]]);
            match (layer, dx) {
                (Layer::Linear(l), dx) => l.backward(x, dy, batch, dx),
                (Layer::BatchNorm(bn), Some(dx)) => bn
                    .backward(x, dy, dx)
                    .map_err(|source| NnError::BatchNorm { layer: i, source })?,
                (Layer::Activation(a), Some(dx)) => {
                    a.backward(&self.acts[i + 1][..batch * self.widths[i + 1]], dy, dx)
                }
                // The first layer is always `Linear` (see `new`).
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// Forward pass, loss and backward pass on one batch (in the current mode, which
    /// must be training); returns the mean loss.
    ///
    /// # Shapes
    /// `x` is `[labels.len(), inputs]`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward) and [`LossKind::forward`].
    pub fn forward_backward(&mut self, x: &[T], labels: &[u8], loss: LossKind) -> Result<f64, NnError> {
        self.forward(x, labels.len())?;
        self.loss_backward(labels, loss)
    }

    /// Loss and backward pass after a forward pass of `labels.len()` examples; returns
    /// the mean loss.
    ///
    /// # Errors
    /// [`NnError::NoForward`] when the last forward pass had another batch size or ran
    /// in evaluation mode; the loss's errors.
    pub fn loss_backward(&mut self, labels: &[u8], loss: LossKind) -> Result<f64, NnError> {
        if labels.len() != self.batch || !self.backward_ready {
            return Err(NnError::NoForward);
        }
        let last = self.layers.len();
        let n = self.batch * self.widths[last];
        let logits = &self.acts[last][..n];
        let value = loss.forward(logits, labels, self.spec.classes)?;
        loss.backward(logits, labels, self.spec.classes, &mut self.grads[last][..n])?;
        self.backward_filled()?;
        Ok(value)
    }

    /// [`NnError::InputLength`] unless the examples of `set` have the network's input size.
    fn check_examples(&self, set: &Dataset) -> Result<(), NnError> {
        let dim = self.widths[0];
        if set.dim() != dim {
            return Err(NnError::InputLength {
                buffer: "example",
                batch: 1,
                features: dim,
                expected: dim,
                got: set.dim(),
            });
        }
        Ok(())
    }

    /// Mean loss and accuracy on the first `n` examples of `set`, in evaluation mode and
    /// in chunks of the capacity, each converted into the input buffer as it is needed;
    /// the mode in force before is restored.
    ///
    /// # Errors
    /// [`NnError::InputLength`] when the examples do not have the network's input size,
    /// [`NnError::TooFewExamples`] when `n > set.len()`; the loss's label errors. No
    /// examples give NaN loss and accuracy.
    pub fn evaluate(&mut self, set: &Dataset, n: usize, loss: LossKind) -> Result<EvalResult, NnError> {
        self.check_examples(set)?;
        if n > set.len() {
            return Err(NnError::TooFewExamples {
                requested: n,
                available: set.len(),
            });
        }
        let was_training = self.training;
        self.set_training(false);
        let result = self.evaluate_chunks(set, n, loss);
        self.set_training(was_training);
        result
    }

    fn evaluate_chunks(&mut self, set: &Dataset, n: usize, loss: LossKind) -> Result<EvalResult, NnError> {
        let classes = self.spec.classes;
        let (mut loss_sum, mut correct) = (0.0, 0);
        for start in (0..n).step_by(self.capacity) {
            let end = n.min(start + self.capacity);
            set.copy_examples(start..end, self.input_mut(end - start)?);
            let labels = &set.labels()[start..end];
            let logits = self.forward_filled(labels.len())?;
            loss_sum += loss.forward(logits, labels, classes)? * labels.len() as f64;
            correct += loss::correct(logits, labels, classes);
        }
        Ok(EvalResult {
            loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
        })
    }

    /// Whether any BatchNorm layer keeps running statistics (the statistics that
    /// evaluation mode normalizes with).
    pub fn has_running_stats(&self) -> bool {
        self.layers.iter().any(|layer| match layer {
            Layer::BatchNorm(bn) => bn.inner().running_mean().is_some(),
            _ => false,
        })
    }

    /// Replaces the running statistics of every BatchNorm layer with the population
    /// statistics of the paper's inference network (its Algorithm 2): forward passes in
    /// training mode over `batches` consecutive mini-batches of `batch` examples from the
    /// start of `set`, after which each layer holds the mean of its batch means and the
    /// mean of its unbiased batch variances (`m / (m - 1)` times the mean biased one).
    ///
    /// This is the job of PyTorch's `torch.optim.swa_utils.update_bn`. The running
    /// averages that training keeps weigh the last few dozen batches (momentum 0.1), so
    /// they move with every step; these weigh every batch equally. Parameters, momentum
    /// and `num_batches_tracked` are unchanged, and so is the mode in force before. The
    /// BatchNorm layers are copied first, to be put back whole if the pass fails.
    ///
    /// A network without such layers is left as it is, with no pass.
    ///
    /// # Errors
    /// [`NnError::ZeroSize`] for no batches; [`NnError::TooFewExamples`] when
    /// `batch * batches > set.len()`; [`NnError::InputLength`] when the examples do not
    /// have the network's input size; [`NnError::BatchTooLarge`]; [`NnError::BatchNorm`]
    /// for a batch of one example or non-finite activations. On error every layer keeps
    /// the statistics it had.
    pub fn estimate_population_stats(
        &mut self,
        set: &Dataset,
        batch: usize,
        batches: usize,
    ) -> Result<(), NnError> {
        if !self.has_running_stats() {
            return Ok(());
        }
        if batches == 0 {
            return Err(NnError::ZeroSize {
                what: "number of batches for the population statistics".into(),
            });
        }
        self.check_examples(set)?;
        self.check_batch(batch)?;
        let needed = batch.saturating_mul(batches);
        if needed > set.len() {
            return Err(NnError::TooFewExamples {
                requested: needed,
                available: set.len(),
            });
        }
        // The tracking layers as they are, put back whole if anything fails.
        let originals: Vec<(usize, BatchNormLayer<T>)> = (self.layers.iter().enumerate())
            .filter_map(|(i, layer)| match layer {
                Layer::BatchNorm(bn) if bn.inner().running_mean().is_some() => Some((i, (**bn).clone())),
                _ => None,
            })
            .collect();
        let was_training = self.training;
        let pass = self.population_pass(set, batch, batches, &originals);
        self.set_training(was_training);
        self.backward_ready = false;
        // Each layer as it was, with the statistics of the pass.
        let kept = pass.and_then(|()| {
            (originals.iter())
                .map(|(i, original)| {
                    let mut kept = original.clone();
                    let (bn, count) = (self.bn_inner(*i), original.inner().num_batches_tracked());
                    let (mean, var) = (bn.running_mean().unwrap_or(&[]), bn.running_var().unwrap_or(&[]));
                    let set = kept.inner_mut().set_running_stats(mean, var, count);
                    set.map_err(|source| NnError::BatchNorm { layer: *i, source })?;
                    Ok((*i, kept))
                })
                .collect::<Result<Vec<_>, NnError>>()
        });
        let (layers, result) = match kept {
            Ok(kept) => (kept, Ok(())),
            Err(e) => (originals, Err(e)),
        };
        for (i, layer) in layers {
            self.layers[i] = Layer::BatchNorm(Box::new(layer));
        }
        result
    }

    /// The forward passes of [`estimate_population_stats`](Self::estimate_population_stats),
    /// on the layers of `tracking` reset to a cumulative average; leaves the network in
    /// training mode.
    fn population_pass(
        &mut self,
        set: &Dataset,
        batch: usize,
        batches: usize,
        tracking: &[(usize, BatchNormLayer<T>)],
    ) -> Result<(), NnError> {
        for &(i, _) in tracking {
            let Layer::BatchNorm(bn) = &mut self.layers[i] else {
                unreachable!("layer {i} is a BatchNorm layer");
            };
            let bn = bn.inner_mut();
            bn.reset_running_stats();
            let set = bn.set_momentum(Momentum::Cumulative);
            set.map_err(|source| NnError::BatchNorm { layer: i, source })?;
        }
        self.set_training(true);
        for k in 0..batches {
            set.copy_examples(k * batch..(k + 1) * batch, self.input_mut(batch)?);
            self.forward_filled(batch)?;
        }
        Ok(())
    }

    /// The core transform of BatchNorm layer `i`.
    fn bn_inner(&self, i: usize) -> &crate::bn::BatchNorm<T> {
        match &self.layers[i] {
            Layer::BatchNorm(bn) => bn.inner(),
            _ => unreachable!("layer {i} is a BatchNorm layer"),
        }
    }

    /// Calls `f` on every parameter with its gradient, in `state_dict` order.
    pub fn for_each_param(&self, mut f: impl FnMut(ParamInfo, &[T], &[T])) {
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                Layer::Linear(l) => {
                    let (rows, cols) = (l.out_features(), l.in_features());
                    let info = |kind, cols| ParamInfo {
                        layer: i,
                        kind,
                        rows,
                        cols,
                    };
                    f(info(ParamKind::LinearWeight, cols), l.weight(), l.grad_weight());
                    if let (Some(b), Some(g)) = (l.bias(), l.grad_bias()) {
                        f(info(ParamKind::LinearBias, 1), b, g);
                    }
                }
                Layer::BatchNorm(bn) => {
                    let bn = bn.inner();
                    let info = |kind| ParamInfo {
                        layer: i,
                        kind,
                        rows: bn.num_features(),
                        cols: 1,
                    };
                    if let (Some(w), Some(gw), Some(b), Some(gb)) =
                        (bn.weight(), bn.grad_weight(), bn.bias(), bn.grad_bias())
                    {
                        f(info(ParamKind::BnWeight), w, gw);
                        f(info(ParamKind::BnBias), b, gb);
                    }
                }
                Layer::Activation(_) => {}
            }
        }
    }

    /// Calls `f` on every parameter (writable) with its gradient, in `state_dict` order.
    pub fn for_each_param_mut(&mut self, mut f: impl FnMut(ParamInfo, &mut [T], &[T])) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            match layer {
                Layer::Linear(l) => {
                    let (rows, cols) = (l.out_features(), l.in_features());
                    let info = |kind, cols| ParamInfo {
                        layer: i,
                        kind,
                        rows,
                        cols,
                    };
                    let p = l.params_and_grads_mut();
                    f(info(ParamKind::LinearWeight, cols), p.weight, p.grad_weight);
                    if let Some((b, gb)) = p.bias {
                        f(info(ParamKind::LinearBias, 1), b, gb);
                    }
                }
                Layer::BatchNorm(bn) => {
                    let rows = bn.num_features();
                    let info = |kind| ParamInfo {
                        layer: i,
                        kind,
                        rows,
                        cols: 1,
                    };
                    if let Some(p) = bn.inner_mut().params_and_grads_mut() {
                        f(info(ParamKind::BnWeight), p.weight, p.grad_weight);
                        f(info(ParamKind::BnBias), p.bias, p.grad_bias);
                    }
                }
                Layer::Activation(_) => {}
            }
        }
    }
}
