//! Checkpoints: named tensors in the safetensors format, written atomically.
//!
//! A checkpoint is a safetensors file: a JSON header (name → dtype, shape,
//! offsets; plus free-form string metadata) followed by raw little-endian
//! data. It is the format of Hugging Face's `model.safetensors`, so the same
//! reader loads our toy models and the real CLIP.
//!
//! Writes go to a temporary file in the same folder that is then renamed over
//! the target: a crash mid-write never destroys the previous checkpoint.
//! Loading checks every name, shape and dtype against the model and reports
//! *all* that differ in one error.

use super::write_atomic;
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Tensors read from a checkpoint, converted to f32, with the file's metadata.
pub struct Checkpoint {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    /// Every tensor by name.
    pub tensors: HashMap<String, ArrayD<f32>>,
    /// The `__metadata__` strings (config, step, ...).
    pub metadata: HashMap<String, String>,
}

/// Save named f32 arrays (and string metadata) to `path` as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &[(String, ArrayD<f32>)], metadata: &HashMap<String, String>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, a)| (n.clone(), a.iter().flat_map(|v| v.to_le_bytes()).collect(), a.shape().to_vec()))
        .collect();
    let mut views = BTreeMap::new();
    for (n, b, s) in &bytes {
        let v = TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::Checkpoint(format!("{}: tensor `{n}`: {e}", path.display())))?;
        views.insert(n.clone(), v);
    }
    let meta = if metadata.is_empty() { None } else { Some(metadata.clone()) };
    let data = safetensors::serialize(&views, &meta).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    write_atomic(path, &data)
}

/// Save a module's parameters; with an optimiser, its state too (prefixed `optim.`).
pub fn save(path: &Path, model: &dyn Module, optimizer: Option<&dyn Optimizer>, metadata: &HashMap<String, String>) -> Result<()> {
    let mut tensors: Vec<(String, ArrayD<f32>)> = model.named_parameters().into_iter().map(|(n, t)| (n, t.to_array())).collect();
    if let Some(opt) = optimizer {
        tensors.extend(opt.state().into_iter().map(|(n, a)| (format!("optim.{n}"), a)));
    }
    save_tensors(path, &tensors, metadata)
}

fn to_f32(path: &Path, name: &str, v: &TensorView) -> Result<ArrayD<f32>> {
    let d = v.data();
    let values: Vec<f32> = match v.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
        Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        other => {
            return Err(Error::Checkpoint(format!("{}: tensor `{name}` has dtype {other:?}, expected F32, F16, BF16, F64 or I64", path.display())))
        }
    };
    ArrayD::from_shape_vec(IxDyn(v.shape()), values)
        .map_err(|_| Error::Checkpoint(format!("{}: tensor `{name}`: data does not fill shape {:?}", path.display(), v.shape())))
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise the fraction.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 - shift + 1) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Read every tensor of a safetensors file (any float dtype, converted to f32).
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, format!("bad safetensors header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        tensors.insert(name.clone(), to_f32(path, &name, &view)?);
    }
    Ok(Checkpoint { path: path.to_path_buf(), tensors, metadata })
}

impl Checkpoint {
    /// Copy the checkpoint's tensors into `model`'s parameters. Every parameter
    /// must be present with its shape; tensors the model lacks are an error
    /// too unless their names start with one of `ignore_prefixes` (e.g. `optim.`).
    /// The error lists every missing, extra and mis-shaped name.
    pub fn load_into(&self, model: &dyn Module, ignore_prefixes: &[&str]) -> Result<()> {
        let params = model.named_parameters();
        let mut problems = Vec::new();
        for (name, p) in &params {
            match self.tensors.get(name) {
                None => problems.push(format!("missing `{name}` (shape {:?})", p.shape())),
                Some(a) if a.shape() != p.shape().as_slice() => {
                    problems.push(format!("`{name}` has shape {:?}, the model expects {:?}", a.shape(), p.shape()))
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<&String> =
            self.tensors.keys().filter(|k| !known.contains(k.as_str()) && !ignore_prefixes.iter().any(|p| k.starts_with(p))).collect();
        extra.sort();
        problems.extend(extra.into_iter().map(|k| format!("unexpected `{k}`")));
        if !problems.is_empty() {
            problems.sort();
            return Err(Error::Checkpoint(format!("{}: {}", self.path.display(), problems.join("; "))));
        }
        for (name, p) in &params {
            p.assign(self.tensors[name].clone())?;
        }
        Ok(())
    }

    /// Restore an optimiser's state saved by [`save`] (the `optim.` entries).
    pub fn load_optimizer(&self, optimizer: &mut dyn Optimizer) -> Result<()> {
        let state: HashMap<String, ArrayD<f32>> =
            self.tensors.iter().filter_map(|(k, v)| k.strip_prefix("optim.").map(|s| (s.to_string(), v.clone()))).collect();
        optimizer.load_state(&state).map_err(|e| Error::Checkpoint(format!("{}: {e}", self.path.display())))
    }

    /// A tensor by name, or an error naming the file and the tensor.
    pub fn get(&self, name: &str) -> Result<&ArrayD<f32>> {
        self.tensors.get(name).ok_or_else(|| Error::Checkpoint(format!("{}: missing `{name}`", self.path.display())))
    }
}
