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
    save_with(path, model, optimizer, &[], metadata)
}

/// [`save`] with `extra` named arrays besides (an EMA's averages, ...).
///
/// Refuses to write a parameter or optimiser state that holds a NaN or an
/// infinity ([`Error::NonFinite`], naming the first such tensor): a checkpoint
/// from a diverged run would only spread the damage.
pub fn save_with(
    path: &Path,
    model: &dyn Module,
    optimizer: Option<&dyn Optimizer>,
    extra: &[(String, ArrayD<f32>)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut tensors: Vec<(String, ArrayD<f32>)> = model.named_parameters().into_iter().map(|(n, t)| (n, t.to_array())).collect();
    if let Some(opt) = optimizer {
        tensors.extend(opt.state().into_iter().map(|(n, a)| (format!("optim.{n}"), a)));
    }
    tensors.extend(extra.iter().cloned());
    if let Some((name, _)) = tensors.iter().find(|(_, a)| a.iter().any(|v| !v.is_finite())) {
        return Err(Error::NonFinite(format!("{}: not written, tensor `{name}` holds a NaN or an infinity", path.display())));
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
        Dtype::I64 => {
            let ints: Vec<i64> = d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            // Only integers of at most 24 significant bits survive the cast to f32 unchanged.
            if let Some(bad) = ints.iter().find(|&&i| (i as f32) as i64 != i || i == i64::MAX) {
                return Err(Error::Checkpoint(format!(
                    "{}: tensor `{name}` is I64 and holds {bad}, which f32 cannot represent exactly",
                    path.display()
                )));
            }
            ints.into_iter().map(|i| i as f32).collect()
        }
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
///
/// The header is checked against the file's length before any tensor is read
/// ([`read_header`]); problems are said in words (header too large for the
/// file, offsets past the end...), not as the library's variant names.
pub fn load(path: &Path) -> Result<Checkpoint> {
    // The file, then its tensors as f32 (at most twice its size, from F16 or BF16).
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    crate::io::limits::check_alloc(&path.display(), &[len as usize, 2], 1)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let header = parse_header(path, &bytes)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, describe_safetensors_error(&e)))?;
    let metadata = header.metadata;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        tensors.insert(name.clone(), to_f32(path, &name, &view)?);
    }
    Ok(Checkpoint { path: path.to_path_buf(), tensors, metadata })
}

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The dtype as written, e.g. `"F32"`.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Where its bytes lie, relative to the end of the header.
    pub offsets: (usize, usize),
}

/// A safetensors header: every tensor's entry and the metadata strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Tensor entries by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The `__metadata__` strings.
    pub metadata: HashMap<String, String>,
}

/// The largest header this reader accepts (safetensors' own limit is 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads only the header of the safetensors file at `path` (8 + header bytes):
/// names, dtypes, shapes and offsets, checked against the file's length, so a
/// model can be sized from it before anything large is read or allocated.
pub fn read_header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| Error::format(path, format!("not a safetensors file: {file_len} bytes, shorter than the 8-byte header length")))?;
    let n = header_len(path, u64::from_le_bytes(len_bytes), file_len)?;
    let mut bytes = len_bytes.to_vec();
    bytes.resize(8 + n, 0);
    file.read_exact(&mut bytes[8..]).map_err(|e| Error::io(path, e))?;
    let (header, data_len) = parse_header_json(path, &bytes[8..])?;
    check_data_len(path, data_len, file_len - 8 - n as u64)?;
    Ok(header)
}

fn header_len(path: &Path, n: u64, file_len: u64) -> Result<usize> {
    if n > MAX_HEADER_BYTES {
        return Err(Error::format(path, format!("safetensors header length {n} is over the {MAX_HEADER_BYTES}-byte limit")));
    }
    if n > file_len.saturating_sub(8) {
        return Err(Error::format(
            path,
            format!("safetensors header says it is {n} bytes long, but the file has only {} bytes after the length", file_len.saturating_sub(8)),
        ));
    }
    Ok(n as usize)
}

fn check_data_len(path: &Path, needed: usize, available: u64) -> Result<()> {
    if needed as u64 != available {
        let what = if (needed as u64) > available { "the file is truncated or the offsets point past its end" } else { "bytes follow the last tensor" };
        return Err(Error::format(path, format!("the header's tensors need {needed} data bytes, the file has {available}: {what}")));
    }
    Ok(())
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 8 {
        return Err(Error::format(path, format!("not a safetensors file: {} bytes, shorter than the 8-byte header length", bytes.len())));
    }
    let n = header_len(path, u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")), bytes.len() as u64)?;
    let (header, data_len) = parse_header_json(path, &bytes[8..8 + n])?;
    check_data_len(path, data_len, (bytes.len() - 8 - n) as u64)?;
    Ok(header)
}

/// The header's JSON, with each tensor's offsets checked: in order, without gaps,
/// and of the size its dtype and shape give. Returns the header and the data length.
fn parse_header_json(path: &Path, json: &[u8]) -> Result<(Header, usize)> {
    let bad = |what: String| Error::format(path, format!("safetensors header: {what}"));
    let text = std::str::from_utf8(json).map_err(|_| bad("not UTF-8".into()))?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let object = value.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = HashMap::new();
    for (name, entry) in object {
        let quoted = crate::error::quote(name);
        if name == "__metadata__" {
            let m = entry.as_object().ok_or_else(|| bad("`__metadata__` is not an object".into()))?;
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| bad(format!("metadata {} is not a string", crate::error::quote(k))))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let field = |f: &str| entry.get(f).ok_or_else(|| bad(format!("tensor {quoted} has no `{f}`")));
        let dtype = field("dtype")?.as_str().ok_or_else(|| bad(format!("tensor {quoted}: `dtype` is not a string")))?.to_string();
        let numbers = |f: &str| -> Result<Vec<usize>> {
            field(f)?
                .as_array()
                .ok_or_else(|| bad(format!("tensor {quoted}: `{f}` is not a list")))?
                .iter()
                .map(|v| v.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| bad(format!("tensor {quoted}: `{f}` holds {v}, not a size"))))
                .collect()
        };
        let shape = numbers("shape")?;
        let offsets = numbers("data_offsets")?;
        let [begin, end] = offsets[..] else {
            return Err(bad(format!("tensor {quoted}: `data_offsets` has {} numbers, expected 2", offsets.len())));
        };
        let width = dtype_bytes(&dtype).ok_or_else(|| bad(format!("tensor {quoted}: unknown dtype {}", crate::error::quote(&dtype))))?;
        let bytes = shape
            .iter()
            .try_fold(width, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {quoted}: shape {shape:?} overflows")))?;
        if end < begin || end - begin != bytes {
            return Err(bad(format!(
                "tensor {quoted}: offsets [{begin}, {end}] hold {} bytes, but {dtype} of shape {shape:?} needs {bytes}",
                end.saturating_sub(begin)
            )));
        }
        tensors.insert(name.clone(), TensorInfo { dtype, shape, offsets: (begin, end) });
    }
    // The tensors must tile the data: sorted by offset, each starts where the previous ended.
    let mut spans: Vec<(usize, usize, &String)> = tensors.iter().map(|(n, t)| (t.offsets.0, t.offsets.1, n)).collect();
    spans.sort();
    let mut at = 0;
    for (begin, end, name) in spans {
        if begin != at {
            return Err(bad(format!("tensor {} starts at byte {begin}, expected {at} (overlap or gap)", crate::error::quote(name))));
        }
        at = end;
    }
    Ok((Header { tensors, metadata }, at))
}

/// Bytes per element of a safetensors dtype name.
fn dtype_bytes(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// The safetensors library's error in words.
fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooLarge => "the header length is larger than the file or the 100 MB limit".into(),
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length".into(),
        E::InvalidHeaderLength => "the header length does not fit in the file".into(),
        E::InvalidHeader | E::InvalidHeaderDeserialization => "the header is not valid JSON for safetensors".into(),
        E::InvalidHeaderStart => "the header does not start with `{`".into(),
        E::MetadataIncompleteBuffer => "the tensors' offsets point past the end of the file".into(),
        E::InvalidOffset(name) => format!("tensor {}: its offsets overlap another tensor or leave a gap", crate::error::quote(name)),
        E::TensorInvalidInfo => "a tensor's shape and dtype do not match its byte size".into(),
        E::ValidationOverflow => "a tensor's size overflows".into(),
        other => format!("not a valid safetensors file ({other})"),
    }
}

impl Checkpoint {
    /// Copy the checkpoint's tensors into `model`'s parameters. Every parameter
    /// must be present with its shape; tensors the model lacks are an error
    /// too unless their names start with one of `ignore_prefixes` (e.g. `optim.`).
    /// The error lists every missing, extra and mis-shaped name.
    pub fn load_into(&self, model: &dyn Module, ignore_prefixes: &[&str]) -> Result<()> {
        let params = model.named_parameters();
        // Three lists (each sorted, each capped at a few names): a wholly wrong file
        // would otherwise give a message of thousands of names.
        let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
        for (name, p) in &params {
            match self.tensors.get(name) {
                None => missing.push(format!("missing `{name}` (shape {:?})", p.shape())),
                Some(a) if a.shape() != p.shape().as_slice() => {
                    misshaped.push(format!("`{name}` has shape {:?}, the model expects {:?}", a.shape(), p.shape()))
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()) && !ignore_prefixes.iter().any(|p| k.starts_with(p)))
            .map(|k| format!("unexpected `{k}`"))
            .collect();
        let mut groups = Vec::new();
        for list in [&mut missing, &mut misshaped, &mut extra] {
            list.sort();
            if !list.is_empty() {
                groups.push(crate::error::capped_list(list));
            }
        }
        if !groups.is_empty() {
            return Err(Error::Checkpoint(format!("{}: {}", self.path.display(), groups.join("; "))));
        }
        // Weights that are not numbers would run to the end and report nonsense metrics.
        if let Some((name, _)) = params.iter().find(|(name, _)| self.tensors[name].iter().any(|v| !v.is_finite())) {
            return Err(Error::NonFinite(format!("{}: parameter `{name}` holds a NaN or an infinity", self.path.display())));
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
        optimizer.load_state(&state).map_err(|e| Error::Checkpoint(format!("{}: {}", self.path.display(), e.message())))
    }

    /// The step a run saved this checkpoint at (its `step` metadata); an error
    /// says whether it is missing or not a number.
    pub fn step(&self) -> Result<usize> {
        let text = self.metadata.get(crate::train::resume::STEP_KEY).ok_or_else(|| {
            Error::Checkpoint(format!("{}: no `step` in the metadata (not a checkpoint saved during training?)", self.path.display()))
        })?;
        text.parse().map_err(|_| {
            Error::Checkpoint(format!("{}: `step` is {}, not a whole number of steps", self.path.display(), crate::error::quote(text)))
        })
    }

    /// A tensor by name, or an error naming the file and the tensor.
    pub fn get(&self, name: &str) -> Result<&ArrayD<f32>> {
        self.tensors.get(name).ok_or_else(|| Error::Checkpoint(format!("{}: missing `{name}`", self.path.display())))
    }
}
