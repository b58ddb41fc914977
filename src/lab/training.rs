//! The experiments that train the paper's network: `paper-fig1`, `learning-rate`,
//! `initialization`, `regularization` and `placement`, and the run loop they share.

use std::error::Error;

use indicatif::ProgressBar;
use serde_json::json;

use super::plot::{LineChart, Series, SeriesStyle};
use super::report::Section;
use super::stats::{fmt, percentile};
use super::{Ctx, LabError, fail};
use crate::data::Split;
use crate::nn::{ActivationKind, BnPlacement, Init, Layer, LossKind, Network, NetworkSpec, SgdConfig};
use crate::train::{EvalStats, Evaluation, Observer, Outcome, TrainConfig, TrainError, Trainer};

/// One training run's settings.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    pub spec: NetworkSpec,
    pub lr: f64,
    pub batch: usize,
    pub steps: usize,
    pub eval_every: usize,
    pub seed: u64,
    /// Train on the first `n` training examples only.
    pub train_subset: Option<usize>,
    /// Also measure accuracy on (up to 10,000 of) the training examples at each evaluation.
    pub eval_train: bool,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Curve {
    pub steps: Vec<f64>,
    pub test_acc: Vec<f64>,
    pub train_acc: Vec<f64>,
    pub train_loss: Vec<f64>,
    /// The step at which the loss or an activation became non-finite.
    pub diverged_at: Option<usize>,
}

impl Curve {
    pub fn final_test_acc(&self) -> f64 {
        if self.diverged_at.is_some() {
            return f64::NAN;
        }
        self.test_acc.last().copied().unwrap_or(f64::NAN)
    }

    pub fn series(&self, name: &str, train: bool) -> Series {
        let ys = if train { &self.train_acc } else { &self.test_acc };
        Series::new(
            name,
            self.steps.iter().copied().zip(ys.iter().copied()).collect(),
            SeriesStyle::Line,
        )
    }
}

/// Feeds a [`Curve`] and the progress bar from a [`Trainer`] run, and hands each
/// evaluated network (a copy, so that it may run forward passes) to the experiment.
struct CurveObserver<'a, F> {
    curve: Curve,
    eval_train: bool,
    bar: &'a ProgressBar,
    observe: F,
}

impl<F> Observer<f32> for CurveObserver<'_, F>
where
    F: FnMut(usize, &mut Network<f32>) -> Result<(), LabError>,
{
    fn after_step(&mut self, _step: u64, _loss: f64, _network: &Network<f32>) {
        self.bar.inc(1);
    }

    fn on_eval(
        &mut self,
        eval: &Evaluation,
        network: &Network<f32>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        // The evaluation before the first step is not a point of the curves.
        if eval.step == 0 {
            return Ok(());
        }
        let c = &mut self.curve;
        c.steps.push(eval.step as f64);
        c.test_acc.push(eval.test_accuracy);
        c.train_loss.push(eval.train_loss);
        if self.eval_train {
            c.train_acc.push(eval.train_accuracy.unwrap_or(f64::NAN));
        }
        self.bar.set_message(format!("acc {:.3}", eval.test_accuracy));
        (self.observe)(eval.step as usize, &mut network.clone()).map_err(|e| Box::new(e) as _)
    }
}

/// Trains `cfg` on `data` with the project's [`Trainer`] (plain SGD, random mini-batches
/// drawn as the paper does), evaluating every `eval_every` steps; `observe(step, net)`
/// runs after each evaluation. A non-finite loss or activation ends the run as diverged.
pub(crate) fn train_run(
    experiment: &'static str,
    cfg: &RunConfig,
    data: &Split,
    bar: &ProgressBar,
    observe: impl FnMut(usize, &mut Network<f32>) -> Result<(), LabError>,
) -> Result<Curve, LabError> {
    let err = fail(experiment);
    let subset;
    let data = match cfg.train_subset {
        Some(n) if n < data.train.len() => {
            subset = Split {
                train: data.train.prefix(n),
                test: data.test.clone(),
            };
            &subset
        }
        _ => data,
    };
    let config = TrainConfig {
        steps: cfg.steps as u64,
        batch_size: cfg.batch,
        sgd: SgdConfig {
            lr: cfg.lr,
            ..SgdConfig::default()
        },
        seed: cfg.seed,
        eval_every: cfg.eval_every as u64,
        train_eval_size: if cfg.eval_train { 10_000 } else { 0 },
        // The experiments measure the network as training leaves it, PyTorch's way.
        eval_stats: EvalStats::Running,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::<f32>::new(&cfg.spec, config).map_err(|e| err(&e))?;
    let mut watch = CurveObserver {
        curve: Curve::default(),
        eval_train: cfg.eval_train,
        bar,
        observe,
    };
    let summary = match trainer.run(data, &mut watch) {
        Ok(summary) => summary,
        // The experiment's own error, passed through the trainer.
        Err(TrainError::Observer(e)) => {
            return Err(match e.downcast::<LabError>() {
                Ok(e) => *e,
                Err(e) => err(&e),
            });
        }
        Err(e) => return Err(err(&e)),
    };
    let mut curve = watch.curve;
    if let Outcome::Diverged { step, .. } = summary.outcome {
        curve.diverged_at = Some(step as usize);
        bar.inc(cfg.steps.saturating_sub(step as usize - 1) as u64);
    }
    Ok(curve)
}

/// The paper's network (784-100-100-100-10, sigmoid) with the given placement.
pub(crate) fn paper_spec(dim: usize, bn: BnPlacement) -> NetworkSpec {
    NetworkSpec {
        inputs: dim,
        bn,
        ..NetworkSpec::default()
    }
}

fn label(bn: BnPlacement) -> &'static str {
    match bn {
        BnPlacement::None => "without BN",
        BnPlacement::Before => "with BN",
        BnPlacement::After => "BN after activation",
    }
}

fn accuracy_chart(title: &str, series: Vec<Series>) -> LineChart {
    LineChart {
        title: title.into(),
        x_label: "training step".into(),
        y_label: "test accuracy".into(),
        series,
        ..Default::default()
    }
}

pub(crate) fn paper_fig1(ctx: &Ctx) -> Result<Section, LabError> {
    const NAME: &str = "paper-fig1";
    let (data, source) = ctx.data()?;
    let steps = ctx.pick(50_000, 1_500);
    let eval_every = ctx.pick(1_000, 250);
    let bar = ctx.progress(NAME, 2 * steps as u64);
    let mut fixed = vec![0.0f32; 600 * data.test.dim()];
    data.test.copy_examples(0..600, &mut fixed);
    let mut curves = Vec::new();
    let mut sigmoid_inputs = Vec::new();
    // (step, test accuracy) of the run with BN evaluated with population statistics.
    let mut population = Vec::new();
    for bn in [BnPlacement::None, BnPlacement::Before] {
        let cfg = RunConfig {
            spec: paper_spec(data.train.dim(), bn),
            lr: 0.5,
            batch: 60,
            steps,
            eval_every,
            seed: ctx.opts.seed,
            train_subset: None,
            eval_train: false,
        };
        let mut pct: Vec<[f64; 4]> = Vec::new();
        let curve = train_run(NAME, &cfg, data, &bar, |step, net| {
            let values = sigmoid_input(net, &fixed, 0).map_err(|e| fail(NAME)(&e))?;
            pct.push([
                step as f64,
                percentile(&values, 15.0),
                percentile(&values, 50.0),
                percentile(&values, 85.0),
            ]);
            if net.has_running_stats() {
                // `net` is a copy: the run's running averages are untouched.
                let batches = data.train.len() / cfg.batch;
                let evaluated = net
                    .estimate_population_stats(&data.train, cfg.batch, batches)
                    .and_then(|()| net.evaluate(&data.test, data.test.len(), LossKind::CrossEntropy));
                let accuracy = match evaluated {
                    Ok(result) => result.accuracy,
                    // Non-finite activations: a diverged network has no statistics.
                    Err(crate::nn::NnError::BatchNorm { .. }) => f64::NAN,
                    Err(e) => return Err(fail(NAME)(&e)),
                };
                population.push((step as f64, accuracy));
            }
            Ok(())
        })?;
        curves.push((bn, curve));
        sigmoid_inputs.push((bn, pct));
    }
    bar.finish_and_clear();
    let mut images = vec![
        accuracy_chart(
            "Test accuracy during training (784-100-100-100-10 sigmoid, batch 60)",
            curves
                .iter()
                .map(|(bn, c)| c.series(label(*bn), false))
                .chain([Series::new(
                    "with BN, population statistics",
                    population.clone(),
                    SeriesStyle::Line,
                )])
                .collect(),
        )
        .render(&ctx.plots, "paper-fig1-accuracy")?,
    ];
    for (bn, pct) in &sigmoid_inputs {
        let names = ["15th percentile", "50th percentile", "85th percentile"];
        let series = names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                Series::new(
                    *n,
                    pct.iter().map(|p| (p[0], p[k + 1])).collect(),
                    SeriesStyle::Line,
                )
            })
            .collect();
        images.push(
            LineChart {
                title: format!("Input to one sigmoid of the last hidden layer, {}", label(*bn)),
                x_label: "training step".into(),
                y_label: "sigmoid input (fixed batch of 600 test images)".into(),
                series,
                ..Default::default()
            }
            .render(&ctx.plots, &format!("paper-fig1-sigmoid-{}", bn))?,
        );
    }
    let acc = |i: usize| curves[i].1.final_test_acc();
    // How far the 15th-85th band of the sigmoid input moved over training.
    let drift = |pct: &[[f64; 4]]| -> f64 {
        let (first, last) = (
            pct.first().copied().unwrap_or_default(),
            pct.last().copied().unwrap_or_default(),
        );
        (1..4).map(|k| (last[k] - first[k]).abs()).fold(0.0, f64::max)
    };
    let first_reach = |c: &super::training::Curve, target: f64| {
        c.steps
            .iter()
            .zip(&c.test_acc)
            .find(|(_, a)| **a >= target)
            .map_or(f64::NAN, |(s, _)| *s)
    };
    let target = acc(0).min(acc(1)) - 0.01;
    let mut numbers = vec![
        ("final test accuracy without BN".to_string(), fmt(acc(0))),
        ("final test accuracy with BN".to_string(), fmt(acc(1))),
        (
            format!("first step reaching {} without BN", fmt(target)),
            fmt(first_reach(&curves[0].1, target)),
        ),
        (
            format!("first step reaching {} with BN", fmt(target)),
            fmt(first_reach(&curves[1].1, target)),
        ),
        (
            "largest move of a sigmoid-input percentile without BN".to_string(),
            fmt(drift(&sigmoid_inputs[0].1)),
        ),
        (
            "largest move of a sigmoid-input percentile with BN".to_string(),
            fmt(drift(&sigmoid_inputs[1].1)),
        ),
    ];
    let population_acc: Vec<f64> = population.iter().map(|p| p.1).collect();
    let final_population = match curves[1].1.diverged_at {
        Some(_) => f64::NAN,
        None => population_acc.last().copied().unwrap_or(f64::NAN),
    };
    let (fall_running, fall_population) = (
        largest_late_fall(&curves[1].1.test_acc),
        largest_late_fall(&population_acc),
    );
    numbers.extend([
        (
            "final test accuracy with BN, population statistics".to_string(),
            fmt(final_population),
        ),
        (
            "largest fall between evaluations, second half, with BN (running averages)".to_string(),
            fmt(fall_running),
        ),
        (
            "largest fall between evaluations, second half, with BN (population statistics)".to_string(),
            fmt(fall_population),
        ),
    ]);
    numbers.push(("steps".into(), steps.to_string()));
    let finding = format!(
        "final test accuracy {} with BN vs {} without; first reaching {}: step {} with BN vs {} without; the sigmoid input's percentiles moved by up to {} without BN and {} with. With population statistics (Algorithm 2) instead of the running averages, the BN network ends at {}, and its test accuracy falls by at most {} from one evaluation to the next over the second half, against {} with the running averages",
        fmt(acc(1)),
        fmt(acc(0)),
        fmt(target),
        fmt(first_reach(&curves[1].1, target)),
        fmt(first_reach(&curves[0].1, target)),
        fmt(drift(&sigmoid_inputs[0].1)),
        fmt(drift(&sigmoid_inputs[1].1)),
        fmt(final_population),
        fmt(fall_population),
        fmt(fall_running),
    );
    let data_json = json!({
        "data": source,
        "curves": curves.iter().map(|(bn, c)| json!({"bn": bn.to_string(), "steps": c.steps, "test_accuracy": c.test_acc, "train_loss": c.train_loss})).collect::<Vec<_>>(),
        "population_statistics": {"steps": population.iter().map(|p| p.0).collect::<Vec<_>>(), "test_accuracy": population_acc},
        "sigmoid_input_percentiles": sigmoid_inputs.iter().map(|(bn, p)| json!({"bn": bn.to_string(), "step_p15_p50_p85": p})).collect::<Vec<_>>(),
    });
    Ok(Section {
        name: NAME.into(),
        title: "The paper's MNIST experiment (Figure 1)".into(),
        claim: "With BatchNorm the network trains faster and reaches higher test accuracy, and the distribution of the input to a sigmoid stays stable over training, while without BN it shifts (internal covariate shift).".into(),
        source: "Ioffe & Szegedy (2015), section 4.1 and Figure 1; seed text 001".into(),
        setup: format!(
            "784-100-100-100-10 network, sigmoid hidden units, BN before each sigmoid (or none), LeCun normal init, softmax cross-entropy, plain SGD with learning rate 0.5, {steps} steps of 60 random training examples, seed {}. Test accuracy every {eval_every} steps on the full test set, BN with the running averages (momentum 0.1) and, on a copy of the network, with the population statistics of the paper's Algorithm 2 (means of the batch means and unbiased batch variances over the training set's batches of 60, in order). The sigmoid input is that of unit 0 of the last hidden layer, on a fixed batch of 600 test images, in evaluation mode. Data: {source}.",
            ctx.opts.seed
        ),
        images,
        numbers,
        finding,
        data: data_json,
        ..Default::default()
    })
}

/// The largest drop of `acc` from one evaluation to the next over the second half of
/// the evaluations (0 when it never falls there).
fn largest_late_fall(acc: &[f64]) -> f64 {
    acc[acc.len() / 2..]
        .windows(2)
        .map(|w| w[0] - w[1])
        .fold(0.0, f64::max)
}

/// The inputs of sigmoid `unit` of the last hidden layer on `images`, in evaluation mode.
pub(crate) fn sigmoid_input(
    net: &mut Network<f32>,
    images: &[f32],
    unit: usize,
) -> Result<Vec<f64>, crate::nn::NnError> {
    let dim = net.width(0);
    let batch = images.len() / dim;
    let was_training = net.is_training();
    net.set_training(false);
    let result = net.forward(images, batch).map(|_| ());
    net.set_training(was_training);
    result?;
    let last_act = net
        .layers()
        .iter()
        .rposition(|l| matches!(l, Layer::Activation(_)))
        .expect("the network has a hidden activation");
    let input = net.layer_input(last_act);
    let width = input.len() / batch;
    Ok(input.chunks_exact(width).map(|r| f64::from(r[unit])).collect())
}

/// A sweep: one short run per (value, BN) pair; returns final accuracies.
fn sweep(
    ctx: &Ctx,
    name: &'static str,
    values: &[f64],
    make: impl Fn(f64, BnPlacement) -> RunConfig,
) -> Result<Vec<(BnPlacement, Vec<Curve>)>, LabError> {
    let (data, _) = ctx.data()?;
    let per_run = make(values[0], BnPlacement::None).steps as u64;
    let bar = ctx.progress(name, per_run * values.len() as u64 * 2);
    let mut out = Vec::new();
    for bn in [BnPlacement::None, BnPlacement::Before] {
        let mut curves = Vec::new();
        for &v in values {
            curves.push(train_run(name, &make(v, bn), data, &bar, |_, _| Ok(()))?);
        }
        out.push((bn, curves));
    }
    bar.finish_and_clear();
    Ok(out)
}

fn sweep_chart(
    title: &str,
    x_label: &str,
    values: &[f64],
    results: &[(BnPlacement, Vec<Curve>)],
) -> LineChart {
    LineChart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: "final test accuracy (x: diverged)".into(),
        log_x: true,
        mark_non_finite: true,
        series: results
            .iter()
            .map(|(bn, curves)| {
                let pts = values
                    .iter()
                    .zip(curves)
                    .map(|(v, c)| (*v, c.final_test_acc()))
                    .collect();
                Series::new(label(*bn), pts, SeriesStyle::LineAndPoints)
            })
            .collect(),
        ..Default::default()
    }
}

fn sweep_numbers(what: &str, values: &[f64], results: &[(BnPlacement, Vec<Curve>)]) -> Vec<(String, String)> {
    let mut numbers = Vec::new();
    for (bn, curves) in results {
        for (v, c) in values.iter().zip(curves) {
            let value = match c.diverged_at {
                Some(s) => format!("diverged at step {s}"),
                None => fmt(c.final_test_acc()),
            };
            numbers.push((format!("{} {what} {}", label(*bn), fmt(*v)), value));
        }
    }
    numbers
}

fn sweep_json(values: &[f64], results: &[(BnPlacement, Vec<Curve>)]) -> serde_json::Value {
    json!(
        results
            .iter()
            .map(|(bn, curves)| json!({
                "bn": bn.to_string(),
                "values": values,
                "final_test_accuracy": curves.iter().map(|c| c.final_test_acc()).collect::<Vec<_>>(),
                "diverged_at": curves.iter().map(|c| c.diverged_at).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()
    )
}

/// Best accuracy over a sweep and the number of runs within 2 points of it.
fn spread(curves: &[Curve]) -> (f64, f64, usize) {
    let accs: Vec<f64> = curves.iter().map(Curve::final_test_acc).collect();
    let best = accs
        .iter()
        .copied()
        .filter(|a| a.is_finite())
        .fold(f64::NAN, f64::max);
    let worst = accs
        .iter()
        .map(|a| if a.is_finite() { *a } else { 0.0 })
        .fold(f64::INFINITY, f64::min);
    let good = accs
        .iter()
        .filter(|a| a.is_finite() && **a >= best - 0.02)
        .count();
    (best, worst, good)
}

pub(crate) fn learning_rate(ctx: &Ctx) -> Result<Section, LabError> {
    const NAME: &str = "learning-rate";
    let values = [0.05, 0.2, 0.5, 2.0, 8.0, 30.0];
    let steps = ctx.pick(4_000, 300);
    let dim = ctx.data()?.0.train.dim();
    let seed = ctx.opts.seed;
    let results = sweep(ctx, NAME, &values, |lr, bn| RunConfig {
        spec: paper_spec(dim, bn),
        lr,
        batch: 60,
        steps,
        eval_every: steps,
        seed,
        train_subset: None,
        eval_train: false,
    })?;
    let image = sweep_chart(
        "Final test accuracy against learning rate",
        "learning rate",
        &values,
        &results,
    )
    .render(&ctx.plots, "learning-rate")?;
    let (best_n, _, good_n) = spread(&results[0].1);
    let (best_b, _, good_b) = spread(&results[1].1);
    let diverged = |i: usize| results[i].1.iter().filter(|c| c.diverged_at.is_some()).count();
    let finding = format!(
        "of {} learning rates from {} to {}, {} stay within 2 points of the best with BN (best {}) and {} without (best {}); diverged: {} with BN, {} without",
        values.len(),
        fmt(values[0]),
        fmt(values[values.len() - 1]),
        good_b,
        fmt(best_b),
        good_n,
        fmt(best_n),
        diverged(1),
        diverged(0)
    );
    Ok(Section {
        name: NAME.into(),
        title: "Higher learning rates".into(),
        claim: "BatchNorm allows much higher learning rates without divergence.".into(),
        source: "Ioffe & Szegedy (2015), section 3.3; seed text 002 (advantage 1)".into(),
        setup: format!(
            "The paper's network (sigmoid, LeCun init, BN before the sigmoid or none), plain SGD for {steps} steps of 60 examples at each learning rate, seed {seed}; final test accuracy. A run diverges when its loss or an activation becomes non-finite."
        ),
        images: vec![image],
        numbers: sweep_numbers("lr", &values, &results),
        finding,
        data: json!({"runs": sweep_json(&values, &results)}),
        ..Default::default()
    })
}

pub(crate) fn initialization(ctx: &Ctx) -> Result<Section, LabError> {
    const NAME: &str = "initialization";
    let values = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0];
    let steps = ctx.pick(4_000, 300);
    let dim = ctx.data()?.0.train.dim();
    let seed = ctx.opts.seed;
    let results = sweep(ctx, NAME, &values, |scale, bn| RunConfig {
        spec: NetworkSpec {
            init: Init::Glorot,
            init_scale: scale,
            ..paper_spec(dim, bn)
        },
        lr: 0.5,
        batch: 60,
        steps,
        eval_every: steps,
        seed,
        train_subset: None,
        eval_train: false,
    })?;
    let image = sweep_chart(
        "Final test accuracy against the initial weight scale",
        "weight std / Glorot std",
        &values,
        &results,
    )
    .render(&ctx.plots, "initialization")?;
    let (best_n, worst_n, _) = spread(&results[0].1);
    let (best_b, worst_b, _) = spread(&results[1].1);
    let finding = format!(
        "across init scales 0.01x to 10x Glorot, test accuracy ranges {}..{} with BN (spread {}) and {}..{} without (spread {})",
        fmt(worst_b),
        fmt(best_b),
        fmt(best_b - worst_b),
        fmt(worst_n),
        fmt(best_n),
        fmt(best_n - worst_n)
    );
    Ok(Section {
        name: NAME.into(),
        title: "Less dependence on initialization".into(),
        claim: "BatchNorm reduces the strong dependence of training on the initial weights.".into(),
        source: "Ioffe & Szegedy (2015), section 3.3; seed texts 001 and 002 (advantage 2)".into(),
        setup: format!(
            "The paper's network with Glorot normal weights multiplied by 0.01 to 10, BN before the sigmoid or none, SGD with learning rate 0.5 for {steps} steps of 60 examples, seed {seed}; final test accuracy."
        ),
        images: vec![image],
        numbers: sweep_numbers("init scale", &values, &results),
        finding,
        data: json!({"runs": sweep_json(&values, &results)}),
        ..Default::default()
    })
}

pub(crate) fn regularization(ctx: &Ctx) -> Result<Section, LabError> {
    const NAME: &str = "regularization";
    let (data, source) = ctx.data()?;
    let steps = ctx.pick(8_000, 400);
    let subset = ctx.pick(5_000, 1_000);
    let batches = [16usize, 128];
    let seed = ctx.opts.seed;
    let total: u64 = (steps * 4) as u64;
    let bar = ctx.progress(NAME, total);
    let mut runs = Vec::new();
    for &batch in &batches {
        for bn in [BnPlacement::None, BnPlacement::Before] {
            let cfg = RunConfig {
                spec: paper_spec(data.train.dim(), bn),
                lr: 0.5,
                batch,
                steps,
                eval_every: (steps / 10).max(1),
                seed,
                train_subset: Some(subset),
                eval_train: true,
            };
            runs.push((batch, bn, train_run(NAME, &cfg, data, &bar, |_, _| Ok(()))?));
        }
    }
    bar.finish_and_clear();
    let mut images = Vec::new();
    let mut numbers = Vec::new();
    let mut gaps = Vec::new();
    for &batch in &batches {
        let mut series = Vec::new();
        for (b, bn, c) in runs.iter().filter(|r| r.0 == batch) {
            series.push(c.series(&format!("{}, train", label(*bn)), true));
            series.push(c.series(&format!("{}, test", label(*bn)), false));
            let train = c.train_acc.last().copied().unwrap_or(f64::NAN);
            let test = c.final_test_acc();
            numbers.push((format!("batch {b}, {}: train accuracy", label(*bn)), fmt(train)));
            numbers.push((format!("batch {b}, {}: test accuracy", label(*bn)), fmt(test)));
            numbers.push((format!("batch {b}, {}: gap", label(*bn)), fmt(train - test)));
            gaps.push((batch, *bn, train - test, test));
        }
        images.push(
            LineChart {
                title: format!("Train and test accuracy, batch {batch}, {subset} training examples"),
                x_label: "training step".into(),
                y_label: "accuracy".into(),
                series,
                ..Default::default()
            }
            .render(&ctx.plots, &format!("regularization-batch{batch}"))?,
        );
    }
    let describe = |batch: usize| {
        let g: Vec<_> = gaps.iter().filter(|g| g.0 == batch).collect();
        format!(
            "batch {batch}: gap {} with BN vs {} without",
            fmt(g[1].2),
            fmt(g[0].2)
        )
    };
    let finding = format!(
        "train-test gap {}; {}",
        describe(batches[0]),
        describe(batches[1])
    );
    Ok(Section {
        name: NAME.into(),
        title: "A regularizing effect".into(),
        claim: "Because each example is normalized with statistics of a random mini-batch, BN adds noise that regularizes: the gap between training and test accuracy shrinks, more so with small batches.".into(),
        source: "Ioffe & Szegedy (2015), section 3.4; seed text 002 (advantage 3)".into(),
        setup: format!(
            "The paper's network trained on the first {subset} training examples only (to make overfitting visible), SGD with learning rate 0.5 for {steps} steps at batch sizes 16 and 128, with and without BN, seed {seed}. Train accuracy on those {subset} examples, test accuracy on the test set, both in evaluation mode. Data: {source}."
        ),
        images,
        numbers,
        finding,
        data: json!(gaps.iter().map(|g| json!({"batch": g.0, "bn": g.1.to_string(), "gap": g.2, "test_accuracy": g.3})).collect::<Vec<_>>()),
        ..Default::default()
    })
}

pub(crate) fn placement(ctx: &Ctx) -> Result<Section, LabError> {
    const NAME: &str = "placement";
    let (data, _) = ctx.data()?;
    let steps = ctx.pick(5_000, 300);
    let seed = ctx.opts.seed;
    let kinds = [ActivationKind::Sigmoid, ActivationKind::Relu];
    let placements = [BnPlacement::None, BnPlacement::Before, BnPlacement::After];
    let bar = ctx.progress(NAME, (steps * kinds.len() * placements.len()) as u64);
    let mut images = Vec::new();
    let mut numbers = Vec::new();
    let mut table = Vec::new();
    for act in kinds {
        let mut series = Vec::new();
        for bn in placements {
            let cfg = RunConfig {
                spec: NetworkSpec {
                    activation: act,
                    init: if act == ActivationKind::Relu {
                        Init::He
                    } else {
                        Init::Lecun
                    },
                    ..paper_spec(data.train.dim(), bn)
                },
                lr: if act == ActivationKind::Relu { 0.1 } else { 0.5 },
                batch: 60,
                steps,
                eval_every: (steps / 10).max(1),
                seed,
                train_subset: None,
                eval_train: false,
            };
            let c = train_run(NAME, &cfg, data, &bar, |_, _| Ok(()))?;
            let name = match bn {
                BnPlacement::None => "no BN".to_string(),
                BnPlacement::Before => format!("BN before {act}"),
                BnPlacement::After => format!("BN after {act}"),
            };
            numbers.push((
                format!("{act}: {name}: final test accuracy"),
                fmt(c.final_test_acc()),
            ));
            table.push(json!({"activation": act.name(), "bn": bn.to_string(), "final_test_accuracy": c.final_test_acc(), "steps": c.steps, "test_accuracy": c.test_acc}));
            series.push(c.series(&name, false));
        }
        images.push(
            accuracy_chart(&format!("BN before or after the nonlinearity: {act}"), series)
                .render(&ctx.plots, &format!("placement-{act}"))?,
        );
    }
    bar.finish_and_clear();
    let acc = |act: &str, bn: &str| {
        table
            .iter()
            .find(|r| r["activation"] == act && r["bn"] == bn)
            .and_then(|r| r["final_test_accuracy"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let finding = format!(
        "final test accuracy, before vs after the nonlinearity: sigmoid {} vs {}, ReLU {} vs {} (no BN: {} and {})",
        fmt(acc("sigmoid", "before")),
        fmt(acc("sigmoid", "after")),
        fmt(acc("relu", "before")),
        fmt(acc("relu", "after")),
        fmt(acc("sigmoid", "none")),
        fmt(acc("relu", "none")),
    );
    Ok(Section {
        name: NAME.into(),
        title: "BN before or after the nonlinearity".into(),
        claim: "The paper puts BN before the nonlinearity (FC -> BN -> activation); practitioners often put it after, and the seed text notes the original code may have done so too. Does the placement matter?".into(),
        source: "Seed text 000 (note of 2/22/18) and seed text 002 (\"where to apply\")".into(),
        setup: format!(
            "The paper's 784-100-100-100-10 network with sigmoid (LeCun init, learning rate 0.5) or ReLU (He init, learning rate 0.1) hidden units, no BN, BN before or BN after each activation, plain SGD for {steps} steps of 60 examples, seed {seed}."
        ),
        images,
        numbers,
        finding,
        data: json!(table),
        ..Default::default()
    })
}
