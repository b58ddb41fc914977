//! Checkpoints in safetensors, named as PyTorch names the `state_dict` of the same
//! `nn.Sequential`, so that
//!
//! ```python
//! from safetensors.torch import load_file
//! sd = load_file("ckpt.safetensors")
//! model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("optimizer.")})
//! ```
//!
//! works on the matching PyTorch model. Parameters are `{i}.weight` / `{i}.bias` (`i`
//! the layer index, activations included), BatchNorm layers add `{i}.running_mean`,
//! `{i}.running_var` and the 0-dimensional int64 `{i}.num_batches_tracked`. SGD
//! momentum buffers are stored as `optimizer.momentum_buffer.{name}`; the network
//! specification and any caller metadata (the training loop's step and RNG state) go
//! in the safetensors metadata.
//!
//! Files are written to a temporary file in the same folder, flushed to disk and then
//! renamed over the target, so a crash leaves either the old or the new checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use thiserror::Error;

use crate::bn::BnError;

use super::{Layer, Network, NetworkSpec, Real, Sgd};

/// The value of the `format` metadata key of files written here.
pub const FORMAT: &str = "batchnorm-checkpoint/1";
/// Metadata key holding the network specification as JSON.
pub const SPEC_KEY: &str = "network";
/// Prefix of the names of optimizer tensors (not part of a PyTorch `state_dict`).
pub const OPTIMIZER_PREFIX: &str = "optimizer.momentum_buffer.";

/// Why a checkpoint could not be written or read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The file is not valid safetensors (truncated, bad header, ...).
    #[error("{} is not a valid safetensors file: {source}", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: SafeTensorError,
    },
    /// The file was written for another network.
    #[error(
        "{} holds a different network: it was saved for {found}, but this run builds {expected}",
        .path.display()
    )]
    ArchitectureMismatch {
        /// The file.
        path: PathBuf,
        /// The architecture of the network being loaded into.
        expected: String,
        /// The architecture recorded in the file.
        found: String,
    },
    /// A tensor the network needs is absent.
    #[error("{} has no tensor {name:?} (is it a checkpoint of this architecture?)", .path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// The file has no momentum buffers, but the optimizer resuming from it uses momentum.
    #[error(
        "{} has no optimizer state (tensor {name:?}): it was not written by a training run with momentum",
        .path.display()
    )]
    MissingOptimizerState {
        /// The file.
        path: PathBuf,
        /// The first missing buffer.
        name: String,
    },
    /// The file holds a tensor this network has no place for.
    #[error("{} has a tensor {name:?} that this network does not have (architecture mismatch)", .path.display())]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A tensor has the wrong element type.
    #[error("tensor {name:?} in {} is {found}, expected {expected}", .path.display())]
    WrongDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The type the network needs.
        expected: String,
        /// The type in the file.
        found: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {name:?} in {} has shape {found:?}, expected {expected:?}", .path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A value is out of its range (a negative variance or batch count, ...).
    #[error("tensor {name:?} in {}: {reason}", .path.display())]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A metadata entry could not be understood.
    #[error("metadata {key:?} in {} is invalid: {reason}", .path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn dtype_of<T: Real>() -> Dtype {
    if T::DTYPE == "f64" { Dtype::F64 } else { Dtype::F32 }
}

fn to_bytes<T: Real>(values: &[T]) -> Vec<u8> {
    if T::DTYPE == "f64" {
        values.iter().flat_map(|v| v.to_f64().to_le_bytes()).collect()
    } else {
        // Exact: an f32 widened to f64 and back is unchanged.
        values
            .iter()
            .flat_map(|v| (v.to_f64() as f32).to_le_bytes())
            .collect()
    }
}

fn from_bytes<T: Real>(bytes: &[u8]) -> Vec<T> {
    if T::DTYPE == "f64" {
        bytes
            .chunks_exact(8)
            .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().unwrap_or_default())))
            .collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|c| T::from_f64(f64::from(f32::from_le_bytes(c.try_into().unwrap_or_default()))))
            .collect()
    }
}

/// The architecture part of a specification (what decides the tensors), for comparing
/// a file with a network and for error messages.
fn architecture(spec: &NetworkSpec) -> String {
    format!(
        "{}-{}-{} ({}, bn {}, bias {})",
        spec.inputs,
        spec.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        spec.classes,
        spec.activation,
        spec.bn,
        spec.bias
    )
}

/// Every tensor of `network` (and the momentum buffers of `sgd`) as `(name, dtype,
/// shape, bytes)`, in `state_dict` order.
fn tensors<T: Real>(network: &Network<T>, sgd: Option<&Sgd<T>>) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut params = Vec::new();
    network.for_each_param(|info, p, _| params.push((info, to_bytes(&info.to_torch_order(p)))));
    let mut params = params.into_iter().peekable();
    for (i, layer) in network.layers().iter().enumerate() {
        while let Some((info, bytes)) = params.next_if(|(info, _)| info.layer == i) {
            out.push((info.name(), dtype_of::<T>(), info.shape(), bytes));
        }
        if let Layer::BatchNorm(bn) = layer {
            let bn = bn.inner();
            let c = vec![bn.num_features()];
            if let (Some(m), Some(v)) = (bn.running_mean(), bn.running_var()) {
                out.push((
                    format!("{i}.running_mean"),
                    dtype_of::<T>(),
                    c.clone(),
                    to_bytes(m),
                ));
                out.push((format!("{i}.running_var"), dtype_of::<T>(), c, to_bytes(v)));
                let count = i64::try_from(bn.num_batches_tracked()).unwrap_or(i64::MAX);
                out.push((
                    format!("{i}.num_batches_tracked"),
                    Dtype::I64,
                    vec![],
                    count.to_le_bytes().to_vec(),
                ));
            }
        }
    }
    if let Some(sgd) = sgd {
        let mut buffers = sgd.buffers().iter();
        network.for_each_param(|info, _, _| {
            if let Some(buf) = buffers.next() {
                out.push((
                    format!("{OPTIMIZER_PREFIX}{}", info.name()),
                    dtype_of::<T>(),
                    info.shape(),
                    to_bytes(&info.to_torch_order(buf)),
                ));
            }
        });
    }
    out
}

/// Writes `network` (and the momentum buffers of `sgd`, when given) to `path`
/// atomically, with `metadata` added to the safetensors header.
///
/// # Errors
/// [`CheckpointError::Io`] when the temporary file cannot be written, synced or
/// renamed (the previous file at `path`, if any, is then untouched);
/// [`CheckpointError::Format`] if serialization fails.
pub fn save<T: Real>(
    path: &Path,
    network: &Network<T>,
    sgd: Option<&Sgd<T>>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    let tensors = tensors(network, sgd);
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>, SafeTensorError>>()
        .map_err(|source| CheckpointError::Format {
            path: path.into(),
            source,
        })?;
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("dtype".into(), T::DTYPE.into());
    meta.insert(
        SPEC_KEY.into(),
        serde_json::to_string(network.spec()).unwrap_or_default(),
    );
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|source| CheckpointError::Format {
        path: path.into(),
        source,
    })?;

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })?;
    // Make the rename itself durable; not every platform can open a folder, so this is
    // best effort.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a checkpoint into `network` (and the momentum buffers into `sgd`, when
/// given), and returns the file's metadata.
///
/// Everything is checked before anything is written, so on error `network` and `sgd`
/// are unchanged.
///
/// # Errors
/// [`CheckpointError::Io`] and [`CheckpointError::Format`] for unreadable files;
/// [`CheckpointError::ArchitectureMismatch`] when the recorded specification differs in
/// architecture; [`CheckpointError::MissingTensor`], [`CheckpointError::UnexpectedTensor`],
/// [`CheckpointError::WrongDtype`], [`CheckpointError::WrongShape`] and
/// [`CheckpointError::InvalidValue`] for tensors that do not fit.
pub fn load<T: Real>(
    path: &Path,
    network: &mut Network<T>,
    sgd: Option<&mut Sgd<T>>,
) -> Result<HashMap<String, String>, CheckpointError> {
    let bytes = fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.into(),
        source,
    })?;
    let format = |source| CheckpointError::Format {
        path: path.into(),
        source,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
    let file = SafeTensors::deserialize(&bytes).map_err(format)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if let Some(json) = metadata.get(SPEC_KEY) {
        let found: NetworkSpec = serde_json::from_str(json).map_err(|e| CheckpointError::BadMetadata {
            path: path.into(),
            key: SPEC_KEY.into(),
            reason: e.to_string(),
        })?;
        let (expected, found) = (architecture(network.spec()), architecture(&found));
        if expected != found {
            return Err(CheckpointError::ArchitectureMismatch {
                path: path.into(),
                expected,
                found,
            });
        }
    }

    let wanted = tensors(network, sgd.as_deref());
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(wanted.len());
    for (name, dtype, shape, _) in &wanted {
        let view = file.tensor(name).map_err(|_| {
            let (path, name) = (path.into(), name.clone());
            if name.starts_with(OPTIMIZER_PREFIX) {
                CheckpointError::MissingOptimizerState { path, name }
            } else {
                CheckpointError::MissingTensor { path, name }
            }
        })?;
        if view.dtype() != *dtype {
            return Err(CheckpointError::WrongDtype {
                path: path.into(),
                name: name.clone(),
                expected: format!("{dtype:?}"),
                found: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != shape.as_slice() {
            return Err(CheckpointError::WrongShape {
                path: path.into(),
                name: name.clone(),
                expected: shape.clone(),
                found: view.shape().to_vec(),
            });
        }
        values.push(view.data().to_vec());
    }
    let known: std::collections::HashSet<&str> = wanted.iter().map(|(n, ..)| n.as_str()).collect();
    if let Some(name) = file
        .names()
        .into_iter()
        .filter(|n| !known.contains(n) && !n.starts_with(OPTIMIZER_PREFIX))
        .min()
    {
        return Err(CheckpointError::UnexpectedTensor {
            path: path.into(),
            name: name.to_string(),
        });
    }

    // Validate the running statistics on a copy, so a bad file changes nothing.
    let by_name: HashMap<&str, &[u8]> = wanted
        .iter()
        .zip(&values)
        .map(|((n, ..), v)| (n.as_str(), &v[..]))
        .collect();
    let mut staged = network.clone();
    for (i, layer) in staged.layers_mut().iter_mut().enumerate() {
        if let Layer::BatchNorm(bn) = layer
            && bn.inner().running_mean().is_some()
        {
            let get = |suffix: &str| {
                by_name
                    .get(format!("{i}.{suffix}").as_str())
                    .copied()
                    .unwrap_or_default()
            };
            let count_bytes: [u8; 8] = get("num_batches_tracked").try_into().unwrap_or_default();
            let count = i64::from_le_bytes(count_bytes);
            let count = u64::try_from(count).map_err(|_| CheckpointError::InvalidValue {
                path: path.into(),
                name: format!("{i}.num_batches_tracked"),
                reason: format!("{count} is negative"),
            })?;
            let mean: Vec<T> = from_bytes(get("running_mean"));
            let var: Vec<T> = from_bytes(get("running_var"));
            bn.inner_mut()
                .set_running_stats(&mean, &var, count)
                .map_err(|e: BnError| CheckpointError::InvalidValue {
                    path: path.into(),
                    name: format!("{i}.running_mean/running_var"),
                    reason: e.to_string(),
                })?;
        }
    }
    staged.for_each_param_mut(|info, p, _| {
        if let Some(bytes) = by_name.get(info.name().as_str()) {
            info.from_torch_order(&from_bytes::<T>(bytes), p);
        }
    });
    if let Some(sgd) = sgd {
        let mut infos = Vec::new();
        staged.for_each_param(|info, _, _| infos.push(info));
        for (buf, info) in sgd.buffers_mut().iter_mut().zip(&infos) {
            let name = format!("{OPTIMIZER_PREFIX}{}", info.name());
            if let Some(bytes) = by_name.get(name.as_str()) {
                info.from_torch_order(&from_bytes::<T>(bytes), buf);
            }
        }
    }
    *network = staged;
    Ok(metadata)
}
