//! Position embeddings: attention is blind to order (it treats its keys as a
//! set), so each token vector gets a vector that says where it stands.
//!
//! - learned (GPT-2, CLIP, ViT): a trainable table `W (max_len, C)`, row `p` for position `p`;
//! - sinusoidal (Vaswani et al. 2017, §3.5): a fixed table
//!
//! ```text
//! PE(pos, 2i)     = sin(pos / 10000^{2i/d})
//! PE(pos, 2i + 1) = cos(pos / 10000^{2i/d})
//! ```
//!
//!   whose wavelengths form a geometric progression from 2π to 10000·2π, so
//!   `PE(pos + k)` is a linear function (a rotation per frequency) of `PE(pos)`.

use super::init;
use super::module::Module;
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};

fn check_range(op: &'static str, offset: usize, t: usize, max_len: usize) -> Result<()> {
    if offset + t > max_len {
        return Err(Error::shape(op, format!("positions {offset}..{} exceed the table of {max_len} positions", offset + t)));
    }
    Ok(())
}

/// A learned position embedding `weight (max_len, C)`, initialised `N(0, std²)`.
pub struct LearnedPositionEmbedding {
    /// `(max_len, C)`
    pub weight: Tensor,
}

impl LearnedPositionEmbedding {
    /// A table for `max_len` positions of width `dim`; GPT-2 uses `std = 0.01`–`0.02`.
    pub fn new(max_len: usize, dim: usize, std: f32, rng: &mut Rng) -> Self {
        LearnedPositionEmbedding { weight: init::normal(&[max_len, dim], std, rng) }
    }

    /// Rows `offset..offset + t`: `(t, C)`, broadcast over the batch when added to `(B, t, C)`.
    /// `offset` is the number of positions already decoded (a [`super::KvCache`]'s length).
    pub fn forward(&self, t: usize, offset: usize) -> Result<Tensor> {
        check_range("position_embedding", offset, t, self.weight.shape()[0])?;
        self.weight.narrow(0, offset, t)
    }
}

impl Module for LearnedPositionEmbedding {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("weight", &self.weight);
    }
}

// ANCHOR: sinusoidal
/// The fixed table `PE (max_len, d)` of Vaswani et al. eq. in §3.5, computed in f64.
/// Errors when `d` is odd (sines and cosines come in pairs).
pub fn sinusoidal_table(max_len: usize, d: usize) -> Result<ArrayD<f32>> {
    if d == 0 || !d.is_multiple_of(2) {
        return Err(Error::Config(format!("sinusoidal position embedding: width {d} must be even and positive")));
    }
    Ok(ArrayD::from_shape_fn(IxDyn(&[max_len, d]), |ix| {
        let (pos, j) = (ix[0] as f64, ix[1]);
        let two_i = (j - j % 2) as f64; // 2i for both the sin (j = 2i) and the cos (j = 2i + 1)
        let angle = pos / 10000f64.powf(two_i / d as f64); // pos / 10000^{2i/d}
        (if j % 2 == 0 { angle.sin() } else { angle.cos() }) as f32
    }))
}
// ANCHOR_END: sinusoidal

/// The sinusoidal position embedding as a (parameter-free) module.
pub struct SinusoidalPositionEmbedding {
    table: Tensor,
}

impl SinusoidalPositionEmbedding {
    /// A table for `max_len` positions of even width `dim`.
    pub fn new(max_len: usize, dim: usize) -> Result<Self> {
        Ok(SinusoidalPositionEmbedding { table: Tensor::new(sinusoidal_table(max_len, dim)?) })
    }

    /// Rows `offset..offset + t`: `(t, C)`, a constant.
    pub fn forward(&self, t: usize, offset: usize) -> Result<Tensor> {
        check_range("sinusoidal_position_embedding", offset, t, self.table.shape()[0])?;
        self.table.narrow(0, offset, t)
    }
}

impl Module for SinusoidalPositionEmbedding {
    fn visit(&self, _: &mut dyn FnMut(&str, &Tensor)) {}
}
