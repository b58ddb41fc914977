//! `deep-activations`: in a 20-layer ReLU network, activations and gradients collapse
//! without BN and stay healthy with it (seed text 000).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde_json::json;

use super::plot::{BinRange, HistogramGrid, HistogramPanel, LineChart, Series, SeriesStyle};
use super::report::Section;
use super::stats::{fmt, frac_zero, mean, std};
use super::{Ctx, LabError, fail};
use crate::bn::{BatchNorm, BatchNormConfig, Layout};
use crate::nn::gemm::{matmul, matmul_a_bt, matmul_at_b};

const NAME: &str = "deep-activations";
const LAYERS: usize = 20;
const UNITS: usize = 100;
const EXAMPLES: usize = 100;
const INPUT_DIM: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Bn {
    None,
    Before,
    After,
}

struct Variant {
    label: &'static str,
    bn: Bn,
    /// `None`: Glorot normal, `Some(s)`: N(0, s^2).
    std: Option<f64>,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        label: "no BN, Glorot init",
        bn: Bn::None,
        std: None,
    },
    Variant {
        label: "no BN, N(0, 0.01) init",
        bn: Bn::None,
        std: Some(0.01),
    },
    Variant {
        label: "BN after ReLU, N(0, 0.01)",
        bn: Bn::After,
        std: Some(0.01),
    },
    Variant {
        label: "BN before ReLU, N(0, 0.01)",
        bn: Bn::Before,
        std: Some(0.01),
    },
];

/// Per-layer measurements of one variant.
struct Measured {
    act: Vec<Vec<f64>>,
    act_grad: Vec<Vec<f64>>,
    weight_grad_std: Vec<f64>,
}

fn relu(v: &mut [f64]) {
    for x in v {
        *x = x.max(0.0);
    }
}

/// Forward through the 20 layers, then backward from a random upstream gradient.
fn measure(v: &Variant, x: &[f64], upstream: &[f64], seed: u64) -> Result<Measured, LabError> {
    let err = fail(NAME);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = Vec::new();
    let mut fan_in = INPUT_DIM;
    for _ in 0..LAYERS {
        let s = v.std.unwrap_or_else(|| (2.0 / (fan_in + UNITS) as f64).sqrt());
        let normal = Normal::new(0.0, s).map_err(|e| err(&e))?;
        weights.push((
            normal
                .sample_iter(&mut rng)
                .take(UNITS * fan_in)
                .collect::<Vec<f64>>(),
            fan_in,
        ));
        fan_in = UNITS;
    }
    let mut bns: Vec<BatchNorm<f64>> = (0..LAYERS)
        .map(|_| BatchNorm::new(BatchNormConfig::new(UNITS)))
        .collect::<Result<_, _>>()
        .map_err(|e| err(&e))?;
    let shape = [EXAMPLES, UNITS];
    // inputs[l]: input of layer l; pre[l]: what BN sees (z before ReLU, or ReLU(z));
    // outs[l]: output of layer l.
    let mut inputs = vec![x.to_vec()];
    let mut pre = Vec::new();
    let mut outs: Vec<Vec<f64>> = Vec::new();
    for (l, (w, fan_in)) in weights.iter().enumerate() {
        let mut z = vec![0.0; EXAMPLES * UNITS];
        matmul_a_bt(EXAMPLES, *fan_in, UNITS, &inputs[l], w, &mut z, false);
        let mut h = vec![0.0; z.len()];
        match v.bn {
            Bn::None => {
                h.copy_from_slice(&z);
                relu(&mut h);
                pre.push(z);
            }
            Bn::Before => {
                bns[l]
                    .forward(&z, &shape, Layout::ChannelsFirst, &mut h)
                    .map_err(|e| err(&e))?;
                relu(&mut h);
                pre.push(z);
            }
            Bn::After => {
                relu(&mut z);
                bns[l]
                    .forward(&z, &shape, Layout::ChannelsFirst, &mut h)
                    .map_err(|e| err(&e))?;
                pre.push(z);
            }
        }
        inputs.push(h.clone());
        outs.push(h);
    }
    let mut act_grad = vec![Vec::new(); LAYERS];
    let mut weight_grad_std = vec![0.0; LAYERS];
    let mut dh = upstream.to_vec();
    for l in (0..LAYERS).rev() {
        act_grad[l] = dh.clone();
        let mut dz = vec![0.0; dh.len()];
        match v.bn {
            Bn::None => {
                for ((d, g), z) in dz.iter_mut().zip(&dh).zip(&pre[l]) {
                    *d = if *z > 0.0 { *g } else { 0.0 };
                }
            }
            Bn::Before => {
                let masked: Vec<f64> = dh
                    .iter()
                    .zip(&outs[l])
                    .map(|(g, h)| if *h > 0.0 { *g } else { 0.0 })
                    .collect();
                bns[l].backward(&pre[l], &masked, &mut dz).map_err(|e| err(&e))?;
            }
            Bn::After => {
                let mut d_relu = vec![0.0; dh.len()];
                bns[l].backward(&pre[l], &dh, &mut d_relu).map_err(|e| err(&e))?;
                for ((d, g), r) in dz.iter_mut().zip(&d_relu).zip(&pre[l]) {
                    *d = if *r > 0.0 { *g } else { 0.0 };
                }
            }
        }
        let (w, fan_in) = &weights[l];
        let mut dw = vec![0.0; UNITS * fan_in];
        matmul_at_b(UNITS, EXAMPLES, *fan_in, &dz, &inputs[l], &mut dw, false);
        weight_grad_std[l] = std(&dw);
        let mut dx = vec![0.0; EXAMPLES * fan_in];
        matmul(EXAMPLES, UNITS, *fan_in, &dz, w, &mut dx, false);
        dh = dx;
    }
    Ok(Measured {
        act: outs,
        act_grad,
        weight_grad_std,
    })
}

pub(crate) fn run(ctx: &Ctx) -> Result<Section, LabError> {
    let bar = ctx.progress(NAME, VARIANTS.len() as u64);
    let seed = ctx.opts.seed;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = StandardNormal
        .sample_iter(&mut rng)
        .take(EXAMPLES * INPUT_DIM)
        .collect();
    let upstream: Vec<f64> = StandardNormal
        .sample_iter(&mut rng)
        .take(EXAMPLES * UNITS)
        .collect();
    let mut results = Vec::new();
    for (i, v) in VARIANTS.iter().enumerate() {
        results.push(measure(v, &x, &upstream, seed.wrapping_add(100 + i as u64))?);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let layers: Vec<f64> = (1..=LAYERS).map(|l| l as f64).collect();
    let per_layer = |f: &dyn Fn(&Measured, usize) -> f64| -> Vec<Series> {
        VARIANTS
            .iter()
            .zip(&results)
            .map(|(v, m)| {
                let pts = layers.iter().enumerate().map(|(l, &x)| (x, f(m, l))).collect();
                Series::new(v.label, pts, SeriesStyle::LineAndPoints)
            })
            .collect()
    };
    let chart = |title: &str, y: &str, log_y: bool, series: Vec<Series>| LineChart {
        title: title.into(),
        x_label: "layer".into(),
        y_label: y.into(),
        log_y,
        series,
        ..Default::default()
    };
    let mut images = vec![
        chart(
            "Activation standard deviation per layer",
            "std of layer output",
            true,
            per_layer(&|m, l| std(&m.act[l])),
        )
        .render(&ctx.plots, "deep-activations-act-std")?,
        chart(
            "Fraction of zero activations per layer",
            "fraction exactly 0",
            false,
            per_layer(&|m, l| frac_zero(&m.act[l])),
        )
        .render(&ctx.plots, "deep-activations-zeros")?,
        chart(
            "Backpropagated gradient std per layer (random upstream gradient)",
            "std of dL/d(layer output)",
            true,
            per_layer(&|m, l| std(&m.act_grad[l])),
        )
        .render(&ctx.plots, "deep-activations-grad-std")?,
        chart(
            "Weight gradient std per layer",
            "std of dL/dW",
            true,
            per_layer(&|m, l| m.weight_grad_std[l]),
        )
        .render(&ctx.plots, "deep-activations-wgrad-std")?,
    ];
    let shown = [0, LAYERS / 2 - 1, LAYERS - 1];
    for (what, pick, stem) in [
        ("Activations", 0, "deep-activations-hist-act"),
        ("Backpropagated gradients", 1, "deep-activations-hist-grad"),
    ] {
        let mut panels = Vec::new();
        for (v, m) in VARIANTS.iter().zip(&results) {
            for &l in &shown {
                let values = if pick == 0 { &m.act[l] } else { &m.act_grad[l] };
                panels.push(HistogramPanel {
                    title: format!("{}, layer {}", v.label, l + 1),
                    values: values.clone(),
                });
            }
        }
        images.push(
            HistogramGrid {
                title: format!(
                    "{what} at layers 1, {}, {}: one row per variant",
                    LAYERS / 2,
                    LAYERS
                ),
                x_label: "value".into(),
                columns: shown.len(),
                range: BinRange::PerPanel,
                panels,
                ..Default::default()
            }
            .render(&ctx.plots, stem)?,
        );
    }

    let mut numbers = Vec::new();
    let mut data = serde_json::Map::new();
    for (v, m) in VARIANTS.iter().zip(&results) {
        let act_std: Vec<f64> = m.act.iter().map(|a| std(a)).collect();
        let act_mean: Vec<f64> = m.act.iter().map(|a| mean(a)).collect();
        let zeros: Vec<f64> = m.act.iter().map(|a| frac_zero(a)).collect();
        let grad_std: Vec<f64> = m.act_grad.iter().map(|a| std(a)).collect();
        numbers.push((
            format!("{}: layer 20 activation std", v.label),
            fmt(act_std[LAYERS - 1]),
        ));
        numbers.push((
            format!("{}: layer 20 fraction of zeros", v.label),
            fmt(zeros[LAYERS - 1]),
        ));
        numbers.push((format!("{}: layer 1 gradient std", v.label), fmt(grad_std[0])));
        numbers.push((
            format!("{}: layer 1 weight-gradient std", v.label),
            fmt(m.weight_grad_std[0]),
        ));
        data.insert(
            v.label.to_string(),
            json!({
                "activation_mean": act_mean, "activation_std": act_std, "fraction_zero": zeros,
                "gradient_std": grad_std, "weight_gradient_std": m.weight_grad_std,
            }),
        );
    }
    let last = |i: usize| std(&results[i].act[LAYERS - 1]);
    let finding = format!(
        "layer 20 activation std: {} with BN before ReLU, {} with BN after, {} without BN at N(0, 0.01) init, {} without BN at Glorot init; layer-1 weight-gradient std {} with BN before ReLU vs {} without (N(0, 0.01))",
        fmt(last(3)),
        fmt(last(2)),
        fmt(last(1)),
        fmt(last(0)),
        fmt(results[3].weight_grad_std[0]),
        fmt(results[1].weight_grad_std[0]),
    );
    Ok(Section {
        name: NAME.into(),
        title: "Activations and gradients in a 20-layer ReLU network".into(),
        claim: "Without BatchNorm the activations of a deep ReLU network shrink towards zero layer after layer and the gradients vanish as they flow back; with BatchNorm they keep a healthy spread at every layer.".into(),
        source: "Seed text 000 (\"Training very deep networks with Batchnorm\"), after Ioffe & Szegedy (2015)".into(),
        setup: format!(
            "{EXAMPLES} examples of {INPUT_DIM}-dimensional N(0, 1) input through {LAYERS} fully connected layers of {UNITS} ReLU units, no bias. Variants: no BN with Glorot normal init (std sqrt(2 / (fan_in + fan_out))); no BN with N(0, 0.01^2) init; BN (training mode, gamma = 1, beta = 0) after each ReLU with N(0, 0.01^2); BN before each ReLU with N(0, 0.01^2). A random N(0, 1) gradient enters at the last layer and is backpropagated exactly (closed-form BN backward). Activations are layer outputs; weights are redrawn per variant (seed {seed})."
        ),
        images,
        numbers,
        finding,
        data: serde_json::Value::Object(data),
        ..Default::default()
    })
}
