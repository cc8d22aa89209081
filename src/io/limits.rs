//! Resource limits, checked before anything is allocated.
//!
//! A file's header can claim anything: ten billion pixels, a billion layers.
//! Every loader asks [`check_alloc`] before it allocates an array whose size
//! comes from a file or a config, so a 500-byte lie becomes an error naming the
//! file and the size, never an abort ("memory allocation of 240000000000 bytes
//! failed") or a swap storm. The caps are stated here:
//!
//! - one array: at most [`max_bytes`] bytes ([`DEFAULT_MAX_BYTES`], 8 GiB, unless
//!   changed with [`set_max_bytes`], e.g. by a test that runs under a small cap);
//! - one model: at most [`MAX_PARAMETERS`] parameters (checked from a config
//!   before the model is built).
//!
//! Sizes are multiplied in `u128`, so no product of header numbers overflows.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The default cap on one allocation from a loader: 8 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

/// The cap on a model's parameter count built from a config: one billion
/// (4 GB of f32; CLIP ViT-L/14 has 428 million).
pub const MAX_PARAMETERS: u128 = 1_000_000_000;

static MAX_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_BYTES);

/// The current cap on one loader allocation, in bytes.
pub fn max_bytes() -> u64 {
    MAX_BYTES.load(Ordering::Relaxed)
}

/// Changes the cap on one loader allocation (process-wide), returning the old one.
pub fn set_max_bytes(bytes: u64) -> u64 {
    MAX_BYTES.swap(bytes, Ordering::Relaxed)
}

/// The number of elements of `shape`, checked: `Err(Error::Limit)` when
/// `shape` holds `element_bytes`-byte values of more than [`max_bytes`] in all.
/// `what` says what is being allocated and from which file, for the message.
pub fn check_alloc(what: &dyn std::fmt::Display, shape: &[usize], element_bytes: usize) -> Result<usize> {
    let elements: u128 = shape.iter().fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
    let bytes = elements.saturating_mul(element_bytes as u128);
    if bytes > max_bytes() as u128 {
        return Err(Error::Limit(format!(
            "{what}: shape {shape:?} of {element_bytes}-byte values is {bytes} bytes, over the {} byte cap on one array",
            max_bytes()
        )));
    }
    Ok(elements as usize)
}

/// `Ok` when `count` parameters are within [`MAX_PARAMETERS`]; `what` names the config.
pub fn check_parameters(what: &dyn std::fmt::Display, count: u128) -> Result<()> {
    if count > MAX_PARAMETERS {
        return Err(Error::Limit(format!("{what}: the model would have {count} parameters, over the cap of {MAX_PARAMETERS}")));
    }
    Ok(())
}
