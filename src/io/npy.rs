//! NumPy `.npy` files of `float32`, readable with `numpy.load`.
//!
//! Format v1.0: the magic `\x93NUMPY`, version bytes `1 0`, a little-endian
//! `u16` header length, then an ASCII Python dict
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (N, C, H, W), }`
//! padded with spaces and ended by `\n` so the data starts on a multiple of
//! 64 bytes; then the values, little-endian, in C order.

use std::path::Path;

use ndarray::{ArrayD, ArrayRef, Dimension, IxDyn};

use super::atomic::write_atomic;
use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The bytes of a v1.0 `.npy` file holding `array` as `<f4` in C order.
pub fn npy_bytes<D: Dimension>(array: &ArrayRef<f32, D>) -> Vec<u8> {
    let shape = match array.shape() {
        [n] => format!("({n},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // 6 magic + 2 version + 2 length bytes + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');

    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * array.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    // `iter()` walks in logical C order whatever the memory layout.
    for v in array.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// Writes `array` to `path` as a float32 `.npy` file (atomically).
pub fn write_npy<D: Dimension>(path: impl AsRef<Path>, array: &ArrayRef<f32, D>) -> Result<()> {
    write_atomic(path, &npy_bytes(array))
}

/// Reads a float32 little-endian C-order `.npy` file (versions 1, 2 and 3).
pub fn read_npy(path: impl AsRef<Path>) -> Result<ArrayD<f32>> {
    let path = path.as_ref();
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    crate::io::limits::check_alloc(&path.display(), &[len as usize], 1)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(path, &bytes)
}

/// Parses the bytes of a `.npy` file; `path` is only used in error messages.
pub fn parse_npy(path: &Path, bytes: &[u8]) -> Result<ArrayD<f32>> {
    let err = |what: String| Error::format(path, what);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("not a .npy file: the magic \\x93NUMPY is missing".into()));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() < 12 => return Err(err(format!("truncated: {} bytes, shorter than a version {} header's 12", bytes.len(), bytes[6]))),
        2 | 3 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(err(format!(".npy version {v} is not supported: expected 1, 2 or 3"))),
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or_else(|| err(format!("truncated: header length {header_len} runs past the end of the file")))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text".into()))?;

    let descr = dict_value(header, "descr").ok_or_else(|| err(format!("header has no 'descr': {}", crate::error::quote(header))))?;
    if descr.trim_matches(|c| c == '\'' || c == '"') != "<f4" {
        return Err(err(format!("dtype {} is not supported: expected '<f4' (little-endian float32)", crate::error::quote(descr))));
    }
    if dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(err("fortran_order is True: only C order is supported".into()));
    }
    let shape_text = dict_value(header, "shape").ok_or_else(|| err(format!("header has no 'shape': {}", crate::error::quote(header))))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| err(format!("shape {} is not a tuple", crate::error::quote(shape_text))))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| err(format!("shape entry {} is not a number", crate::error::quote(s)))))
        .collect::<Result<Vec<usize>>>()?;

    let data = &bytes[start + header_len..];
    let expected = shape.iter().try_fold(4usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(err(format!(
            "shape {shape:?} needs {} bytes of float32 data, the file has {} after the header",
            expected.map_or("more than usize::MAX".to_string(), |e| e.to_string()),
            data.len()
        )));
    }
    let values = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| err(e.to_string()))
}

/// The value after `'key':` in a Python dict literal: a quoted string (quotes
/// kept), a tuple `(...)`, or a bare word such as `False`.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = match rest.chars().next()? {
        q @ ('\'' | '"') => rest[1..].find(q)? + 2,
        '(' => rest.find(')')? + 1,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(rest[..end].trim_end())
}
