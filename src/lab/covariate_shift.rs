//! `covariate-shift`: is reducing internal covariate shift what BN does? Three
//! measurements after Santurkar et al. (2018), the open question of seed text 003.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::plot::{BarChart, BarGroup, LineChart, Series, SeriesStyle};
use super::report::Section;
use super::stats::{fmt, percentile};
use super::training::{RunConfig, paper_spec, train_run};
use super::{Ctx, LabError, fail};
use crate::data::Split;
use crate::nn::{BnPlacement, Layer, LossKind, Network, ParamKind};

const NAME: &str = "covariate-shift";
const LR: f64 = 0.5;
const BATCH: usize = 60;
/// Step sizes along the gradient, as multiples of the learning rate.
const ETAS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// Loads a random batch into the network's input; returns its labels.
fn load_batch(
    net: &mut Network<f32>,
    data: &Split,
    rng: &mut ChaCha8Rng,
    labels: &mut [u8],
) -> Result<(), LabError> {
    let err = fail(NAME);
    let dim = data.train.dim();
    let input = net.input_mut(labels.len()).map_err(|e| err(&e))?;
    for (row, label) in input.chunks_exact_mut(dim).zip(labels.iter_mut()) {
        let i = rng.random_range(0..data.train.len());
        data.train.copy_example(i, row);
        *label = data.train.labels()[i];
    }
    Ok(())
}

/// The weight gradient of each Linear layer, with the layer's index.
type LayerGrads = Vec<(usize, Vec<f64>)>;

/// Loss and weight gradients on the batch in the input buffer.
fn grads(net: &mut Network<f32>, labels: &[u8]) -> Result<(f64, LayerGrads), LabError> {
    let err = fail(NAME);
    net.forward_filled(labels.len()).map_err(|e| err(&e))?;
    let loss = net
        .loss_backward(labels, LossKind::CrossEntropy)
        .map_err(|e| err(&e))?;
    let mut out = Vec::new();
    net.for_each_param(|info, _, g| {
        if info.kind == ParamKind::LinearWeight {
            out.push((info.layer, g.iter().map(|v| f64::from(*v)).collect()));
        }
    });
    Ok((loss, out))
}

/// Moves every parameter of layers `< upto` by `-step * grad`.
fn move_params(net: &mut Network<f32>, upto: usize, step: f64) {
    net.for_each_param_mut(|info, p, g| {
        if info.layer < upto {
            for (v, d) in p.iter_mut().zip(g) {
                *v -= (step * f64::from(*d)) as f32;
            }
        }
    });
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn flat(gs: &[(usize, Vec<f64>)]) -> Vec<f64> {
    gs.iter().flat_map(|(_, g)| g.iter().copied()).collect()
}

/// Per-layer internal covariate shift at the current parameters: for each Linear layer,
/// `||G - G'|| / ||G||` and `cos(G, G')`, where `G'` is its gradient after all earlier
/// layers took their SGD step on the same batch.
fn ics(net: &Network<f32>, labels: &[u8]) -> Result<Vec<(f64, f64)>, LabError> {
    let mut base = net.clone();
    let (_, g) = grads(&mut base, labels)?;
    let mut out = Vec::new();
    for (layer, gl) in &g {
        let mut shifted = base.clone();
        move_params(&mut shifted, *layer, LR);
        let (_, g2) = grads(&mut shifted, labels)?;
        let gl2 = &g2.iter().find(|(l, _)| l == layer).expect("same layers").1;
        let diff: Vec<f64> = gl.iter().zip(gl2).map(|(a, b)| a - b).collect();
        let dot: f64 = gl.iter().zip(gl2).map(|(a, b)| a * b).sum();
        out.push((norm(&diff) / norm(gl), dot / (norm(gl) * norm(gl2))));
    }
    Ok(out)
}

/// Loss variation and gradient change along the gradient direction, over `ETAS`.
fn landscape(net: &Network<f32>, labels: &[u8]) -> Result<(f64, f64), LabError> {
    let mut base = net.clone();
    let (l0, g0) = grads(&mut base, labels)?;
    let g0 = flat(&g0);
    let (mut lo, mut hi, mut change) = (l0, l0, 0.0f64);
    for eta in ETAS {
        let mut moved = base.clone();
        move_params(&mut moved, usize::MAX, eta * LR);
        let (l, g) = grads(&mut moved, labels)?;
        let g = flat(&g);
        if !l.is_finite() {
            return Ok((f64::INFINITY, f64::INFINITY));
        }
        lo = lo.min(l);
        hi = hi.max(l);
        let d: Vec<f64> = g.iter().zip(&g0).map(|(a, b)| a - b).collect();
        change = change.max(norm(&d) / norm(&g0));
    }
    Ok((hi - lo, change))
}

/// Trains with BN whose output gets, every step, noise of random mean and scale per
/// unit: `y' = s * y + m`, `s ~ U(0.5, 2)`, `m ~ U(-1, 1)`. Done exactly by setting
/// gamma' = s gamma, beta' = s beta + m for the step and scaling their gradients by `s`.
fn noisy_bn_accuracy(
    ctx: &Ctx,
    data: &Split,
    steps: usize,
    bar: &indicatif::ProgressBar,
) -> Result<f64, LabError> {
    let err = fail(NAME);
    let spec = paper_spec(data.train.dim(), BnPlacement::Before);
    let mut net = Network::<f32>::new(&spec, 1000, ctx.opts.seed).map_err(|e| err(&e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.opts.seed ^ 0x0015_e000);
    let mut labels = vec![0u8; BATCH];
    for _ in 0..steps {
        load_batch(&mut net, data, &mut rng, &mut labels)?;
        let mut saved = Vec::new();
        for (i, layer) in net.layers_mut().iter_mut().enumerate() {
            if let Layer::BatchNorm(bn) = layer {
                let inner = bn.inner_mut();
                let (g0, b0) = (
                    inner.weight().expect("affine").to_vec(),
                    inner.bias().expect("affine").to_vec(),
                );
                let s: Vec<f32> = g0.iter().map(|_| rng.random_range(0.5..2.0)).collect();
                let m: Vec<f32> = g0.iter().map(|_| rng.random_range(-1.0..1.0)).collect();
                let g1: Vec<f32> = g0.iter().zip(&s).map(|(g, s)| g * s).collect();
                let b1: Vec<f32> = b0.iter().zip(&s).zip(&m).map(|((b, s), m)| b * s + m).collect();
                inner.set_affine(&g1, &b1).map_err(|e| err(&e))?;
                saved.push((i, g0, b0, s));
            }
        }
        net.forward_filled(BATCH).map_err(|e| err(&e))?;
        net.loss_backward(&labels, LossKind::CrossEntropy)
            .map_err(|e| err(&e))?;
        for (i, g0, b0, _) in &saved {
            if let Layer::BatchNorm(bn) = &mut net.layers_mut()[*i] {
                bn.inner_mut().set_affine(g0, b0).map_err(|e| err(&e))?;
            }
        }
        net.for_each_param_mut(|info, p, g| {
            let scale = saved
                .iter()
                .find(|s| s.0 == info.layer && info.is_batchnorm())
                .map(|s| &s.3);
            for (c, (v, d)) in p.iter_mut().zip(g).enumerate() {
                let s = scale.map_or(1.0, |s| s[c]);
                *v -= (LR * f64::from(*d * s)) as f32;
            }
        });
        bar.inc(1);
    }
    net.evaluate(&data.test, data.test.len(), LossKind::CrossEntropy)
        .map(|r| r.accuracy)
        .map_err(|e| err(&e))
}

pub(crate) fn run(ctx: &Ctx) -> Result<Section, LabError> {
    let (data, source) = ctx.data()?;
    let steps = ctx.pick(3_000, 200);
    let every = steps / 6;
    let bar = ctx.progress(NAME, (steps * 5) as u64);
    let mut probe_rng = ChaCha8Rng::seed_from_u64(ctx.opts.seed ^ 0x1c5);
    let mut probe = vec![0u8; BATCH];
    let mut measured = Vec::new();
    for bn in [BnPlacement::None, BnPlacement::Before] {
        let cfg = RunConfig {
            spec: paper_spec(data.train.dim(), bn),
            lr: LR,
            batch: BATCH,
            steps,
            eval_every: every,
            seed: ctx.opts.seed,
            train_subset: None,
            eval_train: false,
        };
        let mut shift = Vec::new();
        let mut land = Vec::new();
        let curve = train_run(NAME, &cfg, data, &bar, |step, net| {
            load_batch(net, data, &mut probe_rng, &mut probe)?;
            shift.push((step, ics(net, &probe)?));
            land.push((step, landscape(net, &probe)?));
            Ok(())
        })?;
        measured.push((bn, curve, shift, land));
    }
    let noisy = noisy_bn_accuracy(ctx, data, steps, &bar)?;
    let none_bn = measured[0].1.final_test_acc();
    let with_bn = measured[1].1.final_test_acc();
    bar.inc(steps as u64 * 2);
    bar.finish_and_clear();

    let label = |bn: BnPlacement| {
        if bn == BnPlacement::None {
            "without BN"
        } else {
            "with BN"
        }
    };
    let mut ics_series = Vec::new();
    let mut cos_series = Vec::new();
    let mut land_series = Vec::new();
    let mut grad_series = Vec::new();
    let mut numbers = Vec::new();
    let mut data_json = serde_json::Map::new();
    for (bn, _, shift, land) in &measured {
        let layers = shift.first().map_or(0, |s| s.1.len());
        for l in 0..layers {
            let pts: Vec<(f64, f64)> = shift.iter().map(|(s, v)| (*s as f64, v[l].0)).collect();
            ics_series.push(Series::new(
                format!("{}, linear {}", label(*bn), l + 1),
                pts,
                SeriesStyle::LineAndPoints,
            ));
            let pts: Vec<(f64, f64)> = shift.iter().map(|(s, v)| (*s as f64, v[l].1)).collect();
            cos_series.push(Series::new(
                format!("{}, linear {}", label(*bn), l + 1),
                pts,
                SeriesStyle::LineAndPoints,
            ));
        }
        land_series.push(Series::new(
            label(*bn),
            land.iter().map(|(s, v)| (*s as f64, v.0)).collect(),
            SeriesStyle::LineAndPoints,
        ));
        grad_series.push(Series::new(
            label(*bn),
            land.iter().map(|(s, v)| (*s as f64, v.1)).collect(),
            SeriesStyle::LineAndPoints,
        ));
        let all_ics: Vec<f64> = shift.iter().flat_map(|(_, v)| v.iter().map(|x| x.0)).collect();
        let all_cos: Vec<f64> = shift.iter().flat_map(|(_, v)| v.iter().map(|x| x.1)).collect();
        let lv: Vec<f64> = land.iter().map(|v| v.1.0).collect();
        let gc: Vec<f64> = land.iter().map(|v| v.1.1).collect();
        numbers.push((
            format!("{}: median ||G - G'|| / ||G||", label(*bn)),
            fmt(percentile(&all_ics, 50.0)),
        ));
        numbers.push((
            format!("{}: median cos(G, G')", label(*bn)),
            fmt(percentile(&all_cos, 50.0)),
        ));
        numbers.push((
            format!("{}: median loss variation along the gradient", label(*bn)),
            fmt(percentile(&lv, 50.0)),
        ));
        numbers.push((
            format!(
                "{}: median relative gradient change along the gradient",
                label(*bn)
            ),
            fmt(percentile(&gc, 50.0)),
        ));
        data_json.insert(
            label(*bn).to_string(),
            json!({"ics": shift, "loss_variation_and_gradient_change": land}),
        );
    }
    numbers.push(("final test accuracy without BN".into(), fmt(none_bn)));
    numbers.push(("final test accuracy with BN".into(), fmt(with_bn)));
    numbers.push(("final test accuracy with noisy BN".into(), fmt(noisy)));
    data_json.insert(
        "accuracy".into(),
        json!({"none": none_bn, "bn": with_bn, "noisy_bn": noisy}),
    );

    let line = |title: &str, y: &str, log_y: bool, series: Vec<Series>| LineChart {
        title: title.into(),
        x_label: "training step".into(),
        y_label: y.into(),
        log_y,
        series,
        ..Default::default()
    };
    let images = vec![
        line(
            "Internal covariate shift: ||G - G'|| / ||G|| per layer",
            "relative change of the layer's gradient",
            true,
            ics_series,
        )
        .render(&ctx.plots, "covariate-shift-ics")?,
        line(
            "Internal covariate shift: cos(G, G') per layer",
            "cosine",
            false,
            cos_series,
        )
        .render(&ctx.plots, "covariate-shift-cos")?,
        line(
            "Loss variation along the gradient (step 0.25 to 4 x lr)",
            "max - min loss",
            true,
            land_series,
        )
        .render(&ctx.plots, "covariate-shift-loss-landscape")?,
        line(
            "Gradient predictiveness: largest ||g(step) - g|| / ||g||",
            "relative gradient change",
            true,
            grad_series,
        )
        .render(&ctx.plots, "covariate-shift-gradient-predictiveness")?,
        BarChart {
            title: "Accuracy with noise injected after BN".into(),
            x_label: "network".into(),
            y_label: "final test accuracy".into(),
            show_values: true,
            categories: vec!["no BN".into(), "BN".into(), "noisy BN".into()],
            groups: vec![BarGroup {
                name: format!("{steps} steps"),
                values: vec![none_bn, with_bn, noisy],
            }],
            ..Default::default()
        }
        .render(&ctx.plots, "covariate-shift-noisy-bn")?,
    ];
    let med = |i: usize, k: usize| -> f64 {
        let v: Vec<f64> = match k {
            0 => measured[i]
                .2
                .iter()
                .flat_map(|(_, v)| v.iter().map(|x| x.0))
                .collect(),
            _ => measured[i].3.iter().map(|v| v.1.1).collect(),
        };
        percentile(&v, 50.0)
    };
    let finding = format!(
        "median gradient shift ||G - G'||/||G|| is {} with BN vs {} without; noisy BN reaches {} test accuracy (BN {}, no BN {}); gradient change along the gradient {} with BN vs {} without",
        fmt(med(1, 0)),
        fmt(med(0, 0)),
        fmt(noisy),
        fmt(with_bn),
        fmt(none_bn),
        fmt(med(1, 1)),
        fmt(med(0, 1)),
    );
    Ok(Section {
        name: NAME.into(),
        title: "Is internal covariate shift what BN fixes?".into(),
        claim: "The BN paper attributes its success to reducing internal covariate shift. Santurkar et al. argue instead that BN does not reduce it (and works even with shift injected on purpose), but makes the loss landscape smoother and the gradients more predictive.".into(),
        source: "Seed text 003's open question; Santurkar, Tsipras, Ilyas & Madry (2018), \"How Does Batch Normalization Help Optimization?\"".into(),
        setup: format!(
            "The paper's sigmoid network, SGD with learning rate {LR}, batch {BATCH}, {steps} steps, with and without BN (seed {}). Every {every} steps, on a fresh probe batch: for each Linear layer, its weight gradient G, and G' after all earlier layers took their SGD step on that batch; and along the gradient direction, at steps of 0.25 to 4 times the learning rate, the range of the loss and the largest relative change of the gradient. Noisy BN: after every BN, each unit's output y becomes s y + m with s ~ U(0.5, 2) and m ~ U(-1, 1) drawn afresh every step (implemented exactly through gamma and beta), trained for the same steps. Data: {source}.",
            ctx.opts.seed
        ),
        images,
        numbers,
        finding,
        data: serde_json::Value::Object(data_json),
        ..Default::default()
    })
}
