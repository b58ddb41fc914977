//! `deep-linear`: the deep linear network of the Deep Learning book, section 8.7.1
//! (seed text 003). In a chain of scalar weights the first-order prediction of a
//! gradient step's effect misses terms up to order `l`, which grow or vanish
//! exponentially with depth; normalizing between layers removes them.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde_json::json;

use super::plot::{LineChart, Series, SeriesStyle};
use super::report::Section;
use super::stats::fmt;
use super::{Ctx, LabError, fail};
use crate::bn::{BatchNorm, BatchNormConfig, Layout};

const NAME: &str = "deep-linear";
const BATCH: usize = 64;
/// The step is sized so that the first-order prediction is this change of the objective.
const PREDICTED: f64 = -0.1;

/// Weight regimes: `w_i ~ N(center, spread^2)`.
const REGIMES: [(f64, &str); 3] = [
    (0.9, "w around 0.9"),
    (1.0, "w around 1.0"),
    (1.1, "w around 1.1"),
];
const SPREAD: f64 = 0.05;

/// The objective `f(w) = mean_b(y_b * x_b)` of a chain `y = x w_1 ... w_l`, with or
/// without normalization (BN without scale and shift, batch statistics) after each of
/// the first `l - 1` weights, and its gradient.
fn objective(w: &[f64], x: &[f64], normalize: bool) -> Result<(f64, Vec<f64>), LabError> {
    let err = fail(NAME);
    let l = w.len();
    let n = x.len() as f64;
    // h[i]: input of weight i.
    let mut h = vec![x.to_vec()];
    let mut bns = Vec::new();
    for &wi in &w[..l - 1] {
        let z: Vec<f64> = h.last().expect("input").iter().map(|v| v * wi).collect();
        if normalize {
            let mut bn = BatchNorm::<f64>::new(BatchNormConfig {
                affine: false,
                ..BatchNormConfig::new(1)
            })
            .map_err(|e| err(&e))?;
            let mut out = vec![0.0; z.len()];
            bn.forward(&z, &[z.len(), 1], Layout::ChannelsFirst, &mut out)
                .map_err(|e| err(&e))?;
            bns.push((bn, z));
            h.push(out);
        } else {
            h.push(z);
        }
    }
    let last = h.last().expect("input");
    let f = last.iter().zip(x).map(|(a, b)| a * w[l - 1] * b).sum::<f64>() / n;
    // Backward: df/dy_b = x_b / n.
    let mut grad = vec![0.0; l];
    let mut dh: Vec<f64> = x.iter().map(|v| v / n * w[l - 1]).collect();
    grad[l - 1] = last.iter().zip(x).map(|(a, b)| a * b / n).sum();
    for i in (0..l - 1).rev() {
        let dz = if normalize {
            let (bn, z) = &mut bns[i];
            let mut dz = vec![0.0; dh.len()];
            bn.backward(z, &dh, &mut dz).map_err(|e| err(&e))?;
            dz
        } else {
            dh.clone()
        };
        grad[i] = dz.iter().zip(&h[i]).map(|(d, v)| d * v).sum();
        dh = dz.iter().map(|d| d * w[i]).collect();
    }
    Ok((f, grad))
}

/// A fixed learning rate, for the second view: the step then grows with the gradient.
const FIXED_LR: f64 = 1e-3;

/// One gradient step, with learning rate `lr` or, when `None`, sized for a first-order
/// change of `PREDICTED`: returns `(actual change, higher-order part relative to the
/// first-order prediction)`.
fn step(w: &[f64], x: &[f64], normalize: bool, lr: Option<f64>) -> Result<(f64, f64), LabError> {
    let (f0, g) = objective(w, x, normalize)?;
    let gg: f64 = g.iter().map(|v| v * v).sum();
    let eps = lr.unwrap_or(-PREDICTED / gg);
    let predicted = -eps * gg;
    let w1: Vec<f64> = w.iter().zip(&g).map(|(wi, gi)| wi - eps * gi).collect();
    let (f1, _) = objective(&w1, x, normalize)?;
    let actual = f1 - f0;
    Ok((actual, (actual - predicted) / predicted.abs()))
}

pub(crate) fn run(ctx: &Ctx) -> Result<Section, LabError> {
    let depths: Vec<usize> = (2..=50).collect();
    let bar = ctx.progress(NAME, (depths.len() * REGIMES.len()) as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.opts.seed.wrapping_add(3));
    let x: Vec<f64> = StandardNormal
        .sample_iter(&mut rng)
        .take(BATCH)
        .map(|v: f64| 1.0 + 0.5 * v)
        .collect();
    let mut plain_series = Vec::new();
    let mut norm_series = Vec::new();
    let mut fixed_series = Vec::new();
    let mut data = serde_json::Map::new();
    let mut numbers = Vec::new();
    let mut at_depth = Vec::new();
    for &(center, label) in &REGIMES {
        let normal = Normal::new(center, SPREAD).map_err(|e| fail(NAME)(&e))?;
        let mut plain = Vec::new();
        let mut norm = Vec::new();
        let mut fixed = Vec::new();
        let mut fixed_norm = Vec::new();
        let mut rows = Vec::new();
        for &l in &depths {
            let w: Vec<f64> = normal.sample_iter(&mut rng).take(l).collect();
            let (act_p, rel_p) = step(&w, &x, false, None)?;
            let (act_n, rel_n) = step(&w, &x, true, None)?;
            let (_, rel_f) = step(&w, &x, false, Some(FIXED_LR))?;
            let (_, rel_fn) = step(&w, &x, true, Some(FIXED_LR))?;
            plain.push((l as f64, rel_p.abs()));
            norm.push((l as f64, rel_n.abs()));
            fixed.push((l as f64, rel_f.abs()));
            fixed_norm.push((l as f64, rel_fn.abs()));
            rows.push(json!({
                "depth": l, "actual_change": act_p, "higher_order_relative": rel_p,
                "normalized_actual_change": act_n, "normalized_higher_order_relative": rel_n,
                "fixed_lr_higher_order_relative": rel_f, "fixed_lr_normalized_higher_order_relative": rel_fn,
            }));
            if l == 50 {
                at_depth.push((label, act_p, rel_p, act_n, rel_n, rel_f, rel_fn));
            }
            bar.inc(1);
        }
        plain_series.push(Series::new(
            format!("plain chain, {label}"),
            plain,
            SeriesStyle::LineAndPoints,
        ));
        norm_series.push(Series::new(
            format!("normalized, {label}"),
            norm,
            SeriesStyle::Line,
        ));
        fixed_series.push(Series::new(
            format!("plain chain, {label}"),
            fixed,
            SeriesStyle::LineAndPoints,
        ));
        fixed_series.push(Series::new(
            format!("normalized, {label}"),
            fixed_norm,
            SeriesStyle::Line,
        ));
        data.insert(label.to_string(), serde_json::Value::Array(rows));
    }
    bar.finish_and_clear();
    for (label, act_p, rel_p, act_n, rel_n, rel_f, rel_fn) in &at_depth {
        numbers.push((
            format!("depth 50, {label}, learning rate {FIXED_LR}: higher-order part / prediction"),
            fmt(*rel_f),
        ));
        numbers.push((
            format!(
                "depth 50, {label}, learning rate {FIXED_LR}, normalized: higher-order part / prediction"
            ),
            fmt(*rel_fn),
        ));
        numbers.push((
            format!("depth 50, {label}: actual change (predicted -0.1)"),
            fmt(*act_p),
        ));
        numbers.push((
            format!("depth 50, {label}: higher-order part / prediction"),
            fmt(*rel_p),
        ));
        numbers.push((
            format!("depth 50, {label}, normalized: actual change"),
            fmt(*act_n),
        ));
        numbers.push((
            format!("depth 50, {label}, normalized: higher-order part / prediction"),
            fmt(*rel_n),
        ));
    }
    let mut series = plain_series;
    series.extend(norm_series);
    let image = LineChart {
        title: "Higher-order terms of one gradient step, relative to the first-order prediction".into(),
        x_label: "depth l".into(),
        y_label: "|actual - predicted| / |predicted|".into(),
        log_y: true,
        series,
        ..Default::default()
    }
    .render(&ctx.plots, "deep-linear-higher-order")?;
    let fixed_image = LineChart {
        title: format!("The same with a fixed learning rate of {FIXED_LR}"),
        x_label: "depth l".into(),
        y_label: "|actual - predicted| / |predicted|".into(),
        log_y: true,
        series: fixed_series,
        ..Default::default()
    }
    .render(&ctx.plots, "deep-linear-fixed-lr")?;
    let (_, _, grow, _, norm_grow, fixed_grow, fixed_norm) = at_depth[2];
    let (_, _, shrink, _, _, fixed_shrink, _) = at_depth[0];
    let finding = format!(
        "at depth 50 a step predicted to change f by -0.1 misses by {}x the prediction with weights around 1.1 and {}x around 0.9 (normalized: {}x); with a fixed learning rate of {FIXED_LR} the miss is {}x around 1.1 and {}x around 0.9 (normalized: {}x)",
        fmt(grow.abs()),
        fmt(shrink.abs()),
        fmt(norm_grow.abs()),
        fmt(fixed_grow.abs()),
        fmt(fixed_shrink.abs()),
        fmt(fixed_norm.abs()),
    );
    Ok(Section {
        name: NAME.into(),
        title: "The deep linear network: higher-order effects of a gradient step".into(),
        claim: "In a deep chain y = x w1 w2 ... wl, a gradient step changes y by terms of every order up to l, which the first-order prediction ignores and which grow or vanish exponentially with depth; normalizing between layers removes them, since the output then depends on the last weight only.".into(),
        source: "Goodfellow, Bengio & Courville, Deep Learning, section 8.7.1, as retold in seed text 003".into(),
        setup: format!(
            "Objective f(w) = mean over a batch of {BATCH} inputs x ~ N(1, 0.5^2) of y * x, with y = x w1 ... wl, for depths 2 to 50. Weights are drawn from N(c, {SPREAD}^2) for c = 0.9, 1.0, 1.1. The learning rate is set to 0.1 / |g|^2 so that the first-order Taylor prediction of the change of f is exactly -0.1 (the book's choice); the step is taken and the actual change measured. The second chart uses a fixed learning rate of {FIXED_LR} instead, so that the step grows with the gradient. The normalized network applies BatchNorm (batch statistics, no scale or shift) after each of w1 .. w(l-1)."
        ),
        images: vec![image, fixed_image],
        numbers,
        finding,
        data: serde_json::Value::Object(data),
        ..Default::default()
    })
}
