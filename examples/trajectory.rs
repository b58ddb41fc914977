//! Trains the BN paper's network from PyTorch's initial weights and mini-batches and
//! compares the loss of every step with PyTorch's: the two training stacks are the same
//! computation when the losses agree to `f32` rounding.
//!
//! ```sh
//! python3 scripts/pytorch_reference.py trajectory --steps 50000 [--bn without]
//! cargo run --release --example trajectory -- target/trajectory
//! ```
//!
//! The folder holds `meta.json` (steps, batch size, whether BN is used, learning rate,
//! data folder, PyTorch's final test accuracy with BN's running averages and, with BN,
//! with population statistics), `init.f32` (every parameter of
//! `named_parameters()` in order, PyTorch's layout, little-endian `f32`), `batches.u32`
//! (the training indices of each step) and `losses.f64` (PyTorch's loss at each step).

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use batchnorm::data::load_dir;
use batchnorm::nn::{BnPlacement, LossKind, Network, NetworkSpec, Sgd, SgdConfig};

/// Largest relative difference of the first steps' losses that rounding explains: float
/// rounding differences start near `1e-7` and grow only over thousands of steps.
const FIRST_STEPS: usize = 100;
const FIRST_STEPS_TOLERANCE: f64 = 1e-5;

fn read_values<const N: usize, V>(path: &Path, from: fn([u8; N]) -> V) -> Result<Vec<V>, Box<dyn Error>> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() % N != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of {N}-byte values",
            path.display(),
            bytes.len()
        )
        .into());
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|b| from(b.try_into().expect("chunks of N bytes")))
        .collect())
}

fn run(dir: &Path) -> Result<bool, Box<dyn Error>> {
    let meta_path = dir.join("meta.json");
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?,
    )?;
    let field = |name: &str| meta.get(name).ok_or_else(|| format!("meta.json: no `{name}`"));
    let steps = field("steps")?
        .as_u64()
        .ok_or("meta.json: `steps` is not a count")? as usize;
    let batch = field("batch")?
        .as_u64()
        .ok_or("meta.json: `batch` is not a count")? as usize;
    let bn = field("bn")?.as_bool().ok_or("meta.json: `bn` is not a boolean")?;
    let lr = field("lr")?.as_f64().ok_or("meta.json: `lr` is not a number")?;
    let data = field("data")?.as_str().ok_or("meta.json: `data` is not a path")?;

    let torch_accuracy = field("test_accuracy")?
        .as_f64()
        .ok_or("meta.json: `test_accuracy` is not a number")?;
    let split = load_dir(Path::new(data))?;
    let (train, test) = (split.train, split.test);
    let init = read_values(&dir.join("init.f32"), f32::from_le_bytes)?;
    let batches = read_values(&dir.join("batches.u32"), u32::from_le_bytes)?;
    let torch_losses = read_values(&dir.join("losses.f64"), f64::from_le_bytes)?;
    if batches.len() != steps * batch || torch_losses.len() != steps {
        return Err(
            format!("{steps} steps of {batch}: batches.u32 or losses.f64 has the wrong length").into(),
        );
    }
    if let Some(bad) = batches.iter().find(|&&i| i as usize >= train.len()) {
        return Err(format!(
            "batches.u32: index {bad} past the {} training examples",
            train.len()
        )
        .into());
    }

    let spec = NetworkSpec {
        inputs: train.dim(),
        bn: if bn {
            BnPlacement::Before
        } else {
            BnPlacement::None
        },
        ..NetworkSpec::default()
    };
    let mut net = Network::<f32>::new(&spec, batch, 0)?;
    let mut at = 0;
    let mut short = false;
    net.for_each_param_mut(|info, stored, _| {
        let n: usize = info.shape().iter().product();
        match init.get(at..at + n) {
            Some(values) => info.from_torch_order(values, stored),
            None => short = true,
        }
        at += n;
    });
    if short || at != init.len() {
        return Err(format!(
            "init.f32 holds {} values; this network has {at} parameters",
            init.len()
        )
        .into());
    }

    let mut sgd = Sgd::new(
        SgdConfig {
            lr,
            ..SgdConfig::default()
        },
        &net,
    )?;
    let mut x = vec![0.0f32; batch * train.dim()];
    let mut labels = vec![0u8; batch];
    let mut picks = vec![0usize; batch];
    let (mut worst_first, mut worst, mut worst_step) = (0.0f64, 0.0f64, 0);
    println!(
        "{:>8} {:>16} {:>16} {:>12}",
        "step", "PyTorch loss", "our loss", "rel. diff"
    );
    for (step, (draw, &theirs)) in batches.chunks_exact(batch).zip(&torch_losses).enumerate() {
        for ((p, l), &i) in picks.iter_mut().zip(&mut labels).zip(draw) {
            *p = i as usize;
            *l = train.labels()[i as usize];
        }
        train.gather(&picks, &mut x);
        let ours = net.forward_backward(&x, &labels, LossKind::CrossEntropy)?;
        sgd.step(&mut net);
        let diff = (ours - theirs).abs() / theirs.abs().max(f64::MIN_POSITIVE);
        if step < FIRST_STEPS {
            worst_first = worst_first.max(diff);
        }
        if diff > worst {
            (worst, worst_step) = (diff, step + 1);
        }
        if step == 0 || (step + 1) % (steps / 10).max(1) == 0 {
            println!("{:>8} {theirs:>16.9} {ours:>16.9} {diff:>12.2e}", step + 1);
        }
    }
    println!(
        "largest relative difference: {worst_first:.2e} over the first {} steps, {worst:.2e} over all {steps} (step {worst_step})",
        FIRST_STEPS.min(steps)
    );
    let ours = net.evaluate(&test, test.len(), LossKind::CrossEntropy)?;
    println!(
        "test accuracy after {steps} steps, BN's running averages: PyTorch {torch_accuracy:.4}, ours {:.4}",
        ours.accuracy
    );
    if let Some(torch_population) = meta.get("test_accuracy_population").and_then(|v| v.as_f64()) {
        net.estimate_population_stats(&train, batch, train.len() / batch)?;
        let ours = net.evaluate(&test, test.len(), LossKind::CrossEntropy)?;
        println!(
            "test accuracy after {steps} steps, population statistics: PyTorch {torch_population:.4}, ours {:.4}",
            ours.accuracy
        );
    }
    Ok(worst_first <= FIRST_STEPS_TOLERANCE)
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!(
            "usage: cargo run --release --example trajectory -- DIR (written by scripts/pytorch_reference.py trajectory)"
        );
        return ExitCode::from(2);
    };
    match run(&dir) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "the first steps differ by more than {FIRST_STEPS_TOLERANCE:e}: not the same computation"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
