//! Weight initializations. Every scheme draws each weight from a centred Gaussian
//! `N(0, std^2)`; they differ in `std`. Biases start at zero.
//!
//! ```text
//! normal:S   std = S
//! lecun      std = sqrt(1 / fan_in)
//! glorot     std = sqrt(2 / (fan_in + fan_out))     (Xavier normal)
//! he         std = sqrt(2 / fan_in)                 (Kaiming normal, for ReLU)
//! ```
//!
//! Values are drawn in `f64` and rounded once, so an `f32` and an `f64` network built
//! from the same seed start from the same weights up to rounding.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{NnError, Real};

/// A weight initialization scheme. Written as `normal:STD`, `lecun`, `glorot` or `he`
/// (also in configuration files).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Init {
    /// A fixed standard deviation.
    Normal(f64),
    /// LeCun normal, `N(0, 1 / fan_in)`. The default.
    #[default]
    Lecun,
    /// Glorot (Xavier) normal, `N(0, 2 / (fan_in + fan_out))`.
    Glorot,
    /// He (Kaiming) normal, `N(0, 2 / fan_in)`.
    He,
}

impl Init {
    /// The standard deviation for a layer with `fan_in` inputs and `fan_out` outputs.
    pub fn std(self, fan_in: usize, fan_out: usize) -> f64 {
        match self {
            Init::Normal(std) => std,
            Init::Lecun => (1.0 / fan_in as f64).sqrt(),
            Init::Glorot => (2.0 / (fan_in + fan_out) as f64).sqrt(),
            Init::He => (2.0 / fan_in as f64).sqrt(),
        }
    }

    /// Fills `weights` with independent `N(0, std^2)` values.
    pub fn fill<T: Real, R: Rng + ?Sized>(weights: &mut [T], std: f64, rng: &mut R) {
        for w in weights {
            let z: f64 = StandardNormal.sample(rng);
            *w = T::from_f64(z * std);
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Normal(std) => write!(f, "normal:{std}"),
            Init::Lecun => f.write_str("lecun"),
            Init::Glorot => f.write_str("glorot"),
            Init::He => f.write_str("he"),
        }
    }
}

impl FromStr for Init {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, NnError> {
        let bad = || NnError::Parse {
            what: "initialization",
            given: s.to_string(),
            expected: "normal:STD (STD a finite number >= 0), lecun, glorot, xavier or he",
        };
        match s {
            "lecun" => Ok(Init::Lecun),
            "glorot" | "xavier" => Ok(Init::Glorot),
            "he" | "kaiming" => Ok(Init::He),
            _ => {
                let std: f64 = s
                    .strip_prefix("normal:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if std.is_finite() && std >= 0.0 {
                    Ok(Init::Normal(std))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl TryFrom<String> for Init {
    type Error = NnError;

    fn try_from(s: String) -> Result<Self, NnError> {
        s.parse()
    }
}

impl From<Init> for String {
    fn from(init: Init) -> String {
        init.to_string()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn parses_every_form_and_rejects_others() {
        assert_eq!("normal:0.01".parse::<Init>(), Ok(Init::Normal(0.01)));
        assert_eq!("lecun".parse::<Init>(), Ok(Init::Lecun));
        assert_eq!("xavier".parse::<Init>(), Ok(Init::Glorot));
        assert_eq!("he".parse::<Init>(), Ok(Init::He));
        for bad in ["normal:", "normal:-1", "normal:nan", "normal", "uniform", ""] {
            assert!(bad.parse::<Init>().is_err(), "{bad}");
        }
        assert_eq!(
            Init::Normal(0.5).to_string().parse::<Init>(),
            Ok(Init::Normal(0.5))
        );
    }

    #[test]
    fn sample_std_matches_the_scheme() {
        let mut w = vec![0.0f64; 100_000];
        let std = Init::Glorot.std(784, 100);
        Init::fill(&mut w, std, &mut ChaCha8Rng::seed_from_u64(3));
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        // The sample variance of 1e5 normals is within 1.5% of the truth (5 sigma).
        assert!((var.sqrt() / std - 1.0).abs() < 0.015, "{} vs {std}", var.sqrt());
        assert!((Init::Lecun.std(100, 7) - 0.1).abs() < 1e-15);
        assert!((Init::He.std(50, 7) - 0.2).abs() < 1e-15);
    }
}
