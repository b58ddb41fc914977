//! Stochastic gradient descent with momentum and weight decay, as PyTorch's
//! `torch.optim.SGD` (no dampening, no Nesterov):
//!
//! ```text
//! g = grad + weight_decay * w
//! v = momentum * v + g          (v starts at 0, so the first v is g)
//! w = w - lr * v
//! ```

use serde::{Deserialize, Serialize};

use super::{Network, NnError, Real};

/// SGD settings, validated by [`Sgd::new`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate. Default 0.5 (the rate of the MNIST comparison); must be finite and >= 0.
    pub lr: f64,
    /// Momentum coefficient. Default 0; must be in `[0, 1)`.
    pub momentum: f64,
    /// L2 weight decay. Default 0; must be finite and >= 0.
    pub weight_decay: f64,
    /// Whether weight decay applies to BatchNorm's gamma and beta too. Default true
    /// (as `SGD(model.parameters())` in PyTorch).
    pub decay_bn: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
            decay_bn: true,
        }
    }
}

impl SgdConfig {
    /// Checks the ranges documented on the fields.
    ///
    /// # Errors
    /// [`NnError::InvalidValue`] naming the first bad field.
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |name, value, requirement| {
            Err(NnError::InvalidValue {
                name,
                value,
                requirement,
            })
        };
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", self.lr, "must be finite and >= 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", self.momentum, "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay, "must be finite and >= 0");
        }
        Ok(())
    }
}

/// The optimizer: its settings and one momentum buffer per parameter.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    config: SgdConfig,
    /// One buffer per parameter, in the network's `for_each_param` order; empty when
    /// momentum is 0, since it is then never read.
    buffers: Vec<Vec<T>>,
}

impl<T: Real> Sgd<T> {
    /// An optimizer for `network`, with zero momentum buffers.
    ///
    /// # Errors
    /// As [`SgdConfig::validate`].
    pub fn new(config: SgdConfig, network: &Network<T>) -> Result<Self, NnError> {
        config.validate()?;
        let mut buffers = Vec::new();
        if config.momentum != 0.0 {
            network.for_each_param(|_, p, _| buffers.push(vec![T::ZERO; p.len()]));
        }
        Ok(Sgd { config, buffers })
    }

    /// The settings.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Changes the learning rate (for schedules).
    ///
    /// # Errors
    /// [`NnError::InvalidValue`] for a negative or non-finite rate.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), NnError> {
        SgdConfig { lr, ..self.config }.validate()?;
        self.config.lr = lr;
        Ok(())
    }

    /// The momentum buffers, one per parameter in `for_each_param` order (none when
    /// momentum is 0).
    pub fn buffers(&self) -> &[Vec<T>] {
        &self.buffers
    }

    /// The momentum buffers, writable (for loading a checkpoint).
    pub fn buffers_mut(&mut self) -> &mut [Vec<T>] {
        &mut self.buffers
    }

    /// One update of every parameter from the gradients of the last backward pass.
    pub fn step(&mut self, network: &mut Network<T>) {
        let lr = T::from_f64(self.config.lr);
        let mu = T::from_f64(self.config.momentum);
        let use_momentum = self.config.momentum != 0.0;
        let mut buffers = self.buffers.iter_mut();
        network.for_each_param_mut(|info, w, g| {
            let decay = if info.is_batchnorm() && !self.config.decay_bn {
                0.0
            } else {
                self.config.weight_decay
            };
            let wd = T::from_f64(decay);
            match (use_momentum, decay != 0.0) {
                (false, false) => w.iter_mut().zip(g).for_each(|(w, &g)| *w = *w - lr * g),
                (false, true) => w
                    .iter_mut()
                    .zip(g)
                    .for_each(|(w, &g)| *w = *w - lr * (g + wd * *w)),
                (true, _) => {
                    // Built with one buffer per parameter when momentum is on.
                    let Some(v) = buffers.next() else { return };
                    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                        *v = mu * *v + (g + wd * *w);
                        *w = *w - lr * *v;
                    }
                }
            }
        });
    }
}
