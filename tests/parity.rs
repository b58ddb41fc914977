//! PyTorch parity: every `*.safetensors` reference file in a folder is replayed through
//! [`BatchNorm`] and every output compared with PyTorch's float64 result.
//!
//! The folder is `tests/vectors` (copied from the project's shared reference vectors), or
//! the one named by the environment variable `BATCHNORM_VECTORS`:
//!
//! ```text
//! BATCHNORM_VECTORS=/path/to/vectors cargo test --release --test parity -- --nocapture
//! ```
//!
//! The format of the files is described in `tests/vectors/README.md`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use batchnorm::bn::{BatchNorm, BatchNormConfig, Float, Layout, Momentum};
use safetensors::{Dtype, SafeTensors};

fn vectors_dir() -> PathBuf {
    std::env::var_os("BATCHNORM_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"))
}

/// One reference case, with every tensor widened to f64.
struct Case {
    meta: HashMap<String, String>,
    tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
}

impl Case {
    fn load(path: &Path) -> Result<Case, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| format!("bad header: {e}"))?;
        let meta = header.metadata().clone().ok_or("no __metadata__")?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("bad file: {e}"))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.iter() {
            let data: Vec<f64> = match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                    .collect(),
                Dtype::F64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                other => return Err(format!("tensor {name}: unsupported dtype {other:?}")),
            };
            tensors.insert(name.to_string(), (view.shape().to_vec(), data));
        }
        Ok(Case { meta, tensors })
    }

    fn meta(&self, key: &str) -> Result<&str, String> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("metadata key {key} missing"))
    }

    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.meta(key)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(format!("metadata {key} = {v} is not true/false")),
        }
    }

    fn number<N: std::str::FromStr>(&self, key: &str) -> Result<N, String> {
        let v = self.meta(key)?;
        v.parse()
            .map_err(|_| format!("metadata {key} = {v} is not a number"))
    }

    fn tensor(&self, name: &str) -> Result<&[f64], String> {
        self.tensors
            .get(name)
            .map(|(_, d)| &d[..])
            .ok_or_else(|| format!("tensor {name} missing"))
    }
}

fn cast<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn widen<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Replays one case in precision `T`; returns the list of mismatches.
fn check_case<T: Float>(case: &Case, tol: f64) -> Result<Vec<String>, String> {
    let affine = case.flag("affine")?;
    let track = case.flag("track_running_stats")?;
    let layout = match case.meta("layout")? {
        "channels_first" => Layout::ChannelsFirst,
        "channels_last" => Layout::ChannelsLast,
        v => return Err(format!("unknown layout {v}")),
    };
    let momentum = match case.meta("momentum")? {
        "none" => Momentum::Cumulative,
        _ => Momentum::Exponential(case.number("momentum")?),
    };
    let training = match case.meta("mode")? {
        "train" => true,
        "eval" => false,
        v => return Err(format!("unknown mode {v}")),
    };
    let shape = case.tensors.get("x").ok_or("tensor x missing")?.0.clone();
    let channels = shape[layout.channel_axis(shape.len())];
    let mut bn = BatchNorm::<T>::new(BatchNormConfig {
        num_features: channels,
        eps: case.number("eps")?,
        momentum,
        affine,
        track_running_stats: track,
    })
    .map_err(|e| e.to_string())?;
    if affine {
        bn.set_affine(&cast(case.tensor("weight")?), &cast(case.tensor("bias")?))
            .map_err(|e| e.to_string())?;
    }
    if track {
        bn.set_running_stats(
            &cast(case.tensor("running_mean")?),
            &cast(case.tensor("running_var")?),
            case.number("num_batches_tracked")?,
        )
        .map_err(|e| e.to_string())?;
    }
    bn.set_training(training);

    let x: Vec<T> = cast(case.tensor("x")?);
    let dy: Vec<T> = cast(case.tensor("dy")?);
    let mut y = vec![T::default(); x.len()];
    let mut dx = vec![T::default(); x.len()];
    bn.forward(&x, &shape, layout, &mut y)
        .map_err(|e| e.to_string())?;
    bn.backward(&x, &dy, &mut dx).map_err(|e| e.to_string())?;

    let mut got: Vec<(&str, Vec<f64>)> = vec![("y", widen(&y)), ("dx", widen(&dx))];
    if affine {
        got.push(("dweight", widen(bn.grad_weight().unwrap())));
        got.push(("dbias", widen(bn.grad_bias().unwrap())));
    }
    if track {
        got.push(("running_mean_out", widen(bn.running_mean().unwrap())));
        got.push(("running_var_out", widen(bn.running_var().unwrap())));
    }
    let mut failures = Vec::new();
    for (name, values) in &got {
        let err = common::max_scaled_error(values, case.tensor(name)?);
        if err > tol {
            failures.push(format!("{name}: scaled error {err:.3e} > {tol:.0e}"));
        }
    }
    let counter_out: u64 = case.number("num_batches_tracked_out")?;
    if bn.num_batches_tracked() != counter_out {
        failures.push(format!(
            "num_batches_tracked: got {}, expected {counter_out}",
            bn.num_batches_tracked()
        ));
    }
    Ok(failures)
}

#[test]
fn pytorch_parity() {
    let dir = vectors_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read vector folder {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = Case::load(path).and_then(|case| match case.meta("dtype")? {
            "f32" => check_case::<f32>(&case, 1e-5),
            "f64" => check_case::<f64>(&case, 1e-10),
            v => Err(format!("unknown dtype {v}")),
        });
        match result {
            Ok(f) if f.is_empty() => println!("ok   {name}"),
            Ok(f) => failures.push(format!("{name}: {}", f.join("; "))),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    println!("checked {} vector files in {}", files.len(), dir.display());
    assert!(!files.is_empty(), "no *.safetensors files in {}", dir.display());
    assert!(failures.is_empty(), "parity failures:\n{}", failures.join("\n"));
}
