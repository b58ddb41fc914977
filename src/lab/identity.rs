//! `identity`: gamma = sqrt(var + eps) and beta = mean make the transform the identity,
//! so BN does not take away what a layer can represent (seed text 001).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;

use super::plot::{BarChart, BarGroup};
use super::report::Section;
use super::stats::fmt;
use super::{Ctx, LabError, fail};
use crate::bn::{BatchNorm, BatchNormConfig, Float, Layout};

const NAME: &str = "identity";
const N: usize = 256;
const C: usize = 64;

/// Data regimes: `x = offset + scale * N(0, 1)`.
const REGIMES: [(&str, f64, f64); 4] = [
    ("N(0, 1)", 0.0, 1.0),
    ("1e4 + N(0, 1)", 1e4, 1.0),
    ("1e-3 * N(0, 1)", 0.0, 1e-3),
    ("1e18 + 1e16 * N(0, 1)", 1e18, 1e16),
];

/// Largest `|y - x| / max|x|` after setting gamma and beta from the batch statistics
/// (computed in f64 from the stored values).
fn identity_error<T: Float>(x64: &[f64]) -> Result<f64, LabError> {
    let err = fail(NAME);
    let x: Vec<T> = x64.iter().map(|&v| T::from_f64(v)).collect();
    let xs: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let mut gamma = Vec::with_capacity(C);
    let mut beta = Vec::with_capacity(C);
    for c in 0..C {
        let col: Vec<f64> = (0..N).map(|n| xs[n * C + c]).collect();
        let m = col.iter().sum::<f64>() / N as f64;
        let v = col.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / N as f64;
        gamma.push(T::from_f64((v + 1e-5).sqrt()));
        beta.push(T::from_f64(m));
    }
    let mut bn = BatchNorm::<T>::new(BatchNormConfig::new(C)).map_err(|e| err(&e))?;
    bn.set_affine(&gamma, &beta).map_err(|e| err(&e))?;
    let mut y = vec![T::default(); x.len()];
    bn.forward(&x, &[N, C], Layout::ChannelsFirst, &mut y)
        .map_err(|e| err(&e))?;
    let scale = xs.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    Ok(y.iter()
        .zip(&xs)
        .map(|(a, b)| (a.to_f64() - b).abs() / scale)
        .fold(0.0, f64::max))
}

pub(crate) fn run(ctx: &Ctx) -> Result<Section, LabError> {
    let bar = ctx.progress(NAME, REGIMES.len() as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.opts.seed.wrapping_add(1));
    let mut f32_err = Vec::new();
    let mut f64_err = Vec::new();
    let mut numbers = Vec::new();
    let mut data = serde_json::Map::new();
    for (label, offset, scale) in REGIMES {
        let x: Vec<f64> = StandardNormal
            .sample_iter(&mut rng)
            .take(N * C)
            .map(|v: f64| offset + scale * v)
            .collect();
        let (e32, e64) = (identity_error::<f32>(&x)?, identity_error::<f64>(&x)?);
        numbers.push((
            format!("{label}: largest error, f32 (relative to max|x|)"),
            fmt(e32),
        ));
        numbers.push((
            format!("{label}: largest error, f64 (relative to max|x|)"),
            fmt(e64),
        ));
        data.insert(label.to_string(), json!({"f32": e32, "f64": e64}));
        f32_err.push(e32);
        f64_err.push(e64);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let worst32 = f32_err.iter().fold(0.0f64, |a, b| a.max(*b));
    let worst64 = f64_err.iter().fold(0.0f64, |a, b| a.max(*b));
    let image = BarChart {
        title: "BN with gamma = sqrt(var + eps), beta = mean: largest error".into(),
        x_label: "input distribution".into(),
        y_label: "max |y - x| / max |x|".into(),
        log_y: true,
        show_values: true,
        categories: REGIMES.iter().map(|r| r.0.to_string()).collect(),
        groups: vec![
            BarGroup {
                name: "f32".into(),
                values: f32_err,
            },
            BarGroup {
                name: "f64".into(),
                values: f64_err,
            },
        ],
    }
    .render(&ctx.plots, "identity-error")?;
    Ok(Section {
        name: NAME.into(),
        title: "gamma and beta can undo the normalization".into(),
        claim: "Setting gamma = sqrt(Var[x] + eps) and beta = E[x] recovers the original activations, so inserting BN does not reduce what the network can represent.".into(),
        source: "Ioffe & Szegedy (2015), section 3, as described in seed texts 001 and 002".into(),
        setup: format!(
            "A batch of {N} x {C} values per distribution, BN in training mode with eps = 1e-5, gamma and beta set from the batch's own mean and biased variance (computed in f64 from the stored values, then stored in the layer's type). The error is the largest |y - x| relative to the largest |x|, in f32 and f64."
        ),
        images: vec![image],
        numbers,
        finding: format!(
            "the identity is recovered to within {} (f32) and {} (f64) of the largest input, i.e. to the type's rounding",
            fmt(worst32),
            fmt(worst64)
        ),
        data: serde_json::Value::Object(data),
        ..Default::default()
    })
}
