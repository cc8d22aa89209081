//! Multi-head self-attention (Vaswani et al. 2017, §3.2.2) and its key/value cache.
//!
//! ```text
//! MultiHead(X) = Concat(head_1, ..., head_H) W_O
//! head_h       = Attention(X W_Q^h, X W_K^h, X W_V^h)
//! ```
//!
//! The three projections are one fused linear layer `qkv: Linear(C, 3C)`
//! (GPT-2 and CLIP do the same); its output is cut into Q, K, V along the last
//! axis and each of them into `H` heads of `D = C / H` channels:
//! `(B, T, C) -> (B, H, T, D)`. Every head attends independently, the heads
//! are put back side by side and `proj: Linear(C, C)` is `W_O`.
//!
//! When a model generates one token at a time, the keys and values of the
//! earlier positions do not change: a [`KvCache`] keeps them, so step `t`
//! computes the projections of the new token only and attends to all `t + 1`
//! cached positions.

use super::attention::{causal_mask, scaled_dot_product_attention};
use super::layers::Linear;
use super::module::{visit_child, Forward, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};
use ndarray::ArrayD;

/// Multi-head self-attention with a fused QKV projection. PyTorch names:
/// `qkv.weight (3C, C)`, `qkv.bias (3C)`, `proj.weight (C, C)`, `proj.bias (C)`.
pub struct MultiHeadAttention {
    /// `W_Q, W_K, W_V` stacked: `Linear(C, 3C)`, rows `[0, C)` give Q, `[C, 2C)` K, `[2C, 3C)` V.
    pub qkv: Linear,
    /// `W_O`: `Linear(C, C)`.
    pub proj: Linear,
    /// The number of heads `H`.
    pub n_head: usize,
}

impl MultiHeadAttention {
    /// `dim = C` channels split into `n_head` heads; errors when `n_head` does not divide `C`.
    pub fn new(dim: usize, n_head: usize, bias: bool, rng: &mut Rng) -> Result<Self> {
        if n_head == 0 || !dim.is_multiple_of(n_head) {
            return Err(Error::Config(format!("attention: width {dim} is not divisible by {n_head} heads")));
        }
        Ok(MultiHeadAttention { qkv: Linear::new(dim, 3 * dim, bias, rng), proj: Linear::new(dim, dim, bias, rng), n_head })
    }

    /// The width `C`.
    pub fn dim(&self) -> usize {
        self.proj.out_features()
    }

    // ANCHOR: split_heads
    /// `x (B, T, C)` -> Q, K, V, each `(B, H, T, D)`.
    pub(crate) fn project_qkv(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let shape = x.shape();
        let (b, t, h) = (shape[0] as isize, shape[1] as isize, self.n_head as isize);
        let d = self.dim() as isize / h;
        let heads = |part: &Tensor| -> Result<Tensor> {
            part.reshape(&[b, t, h, d]).map(|p| p.transpose(1, 2)) // (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        };
        let parts = self.project_qkv_channels(x)?; // 3 x (B, T, C)
        Ok([heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?])
    }

    /// `(B, H, T, D)` -> `(B, T, C)`, then `W_O`.
    pub(crate) fn merge_heads(&self, y: &Tensor) -> Result<Tensor> {
        let s = y.shape();
        let merged = y.transpose(1, 2).contiguous().reshape(&[s[0] as isize, s[2] as isize, self.dim() as isize])?; // (B, T, C)
        self.proj.forward(&merged)
    }
    // ANCHOR_END: split_heads

    /// `x (B, T, C)` -> Q, K, V, each `(B, T, C)` with head `h` in channels
    /// `h·D .. (h+1)·D` (the layout [`Tensor::multi_head_attention`] reads in place).
    pub(crate) fn project_qkv_channels(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.project_fused(x)?.chunk(3, -1) // (B, T, 3C) -> 3 x (B, T, C)
    }

    /// `x (B, T, C)` -> the fused projection `(B, T, 3C)`: Q, K, V in channels
    /// `[0, C)`, `[C, 2C)`, `[2C, 3C)`; errors name an input that is not `(B, T, C)`.
    fn project_fused(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.shape();
        let c = self.dim();
        if shape.len() != 3 || shape[2] != c {
            return Err(Error::shape("multi_head_attention", format!("input {shape:?} is not (B, T, C = {c})")));
        }
        self.qkv.forward(x)
    }

    // ANCHOR: forward
    /// The attention of [`MultiHeadAttention::forward`] composed step by step from
    /// the ops, as chapter 01 explains it: split the heads, attend, merge them.
    /// `x (B, T, C)` -> output `(B, T, C)` and attention weights `(B, H, T, T)`.
    pub fn forward_composed(&self, x: &Tensor, mask: Option<&ArrayD<bool>>) -> Result<(Tensor, Tensor)> {
        let [q, k, v] = self.project_qkv(x)?; // each (B, H, T, D)
        let (y, weights) = scaled_dot_product_attention(&q, &k, &v, mask)?; // (B, H, T, D), (B, H, T, T)
        Ok((self.merge_heads(&y)?, weights))
    }
    // ANCHOR_END: forward

    // ANCHOR: forward_fused
    /// `x (B, T, C)` -> output `(B, T, C)` and attention weights `(B, H, T, T)`.
    /// `mask` (broadcastable to `(B, H, T, T)`, `true` = not allowed) is e.g.
    /// [`causal_mask`]`(T, T)` or a padding mask. The same computation as
    /// [`MultiHeadAttention::forward_composed`], run as one op that reads each
    /// head in place from the `(B, T, 3C)` projection and writes it into the
    /// merged `(B, T, C)` output ([`Tensor::multi_head_self_attention`]): no copy
    /// of the activations to split or merge the heads, forward or backward. The
    /// weights it returns are for plots: no gradient flows through them.
    pub fn forward(&self, x: &Tensor, mask: Option<&ArrayD<bool>>) -> Result<(Tensor, Tensor)> {
        let qkv = self.project_fused(x)?; // (B, T, 3C)
        let (y, weights) = Tensor::multi_head_self_attention(&qkv, self.n_head, mask)?; // (B, T, C), (B, H, T, T)
        Ok((self.proj.forward(&y)?, weights))
    }
    // ANCHOR_END: forward_fused

    // ANCHOR: forward_cached
    /// Causal attention for `x_new (B, t, C)`, the next `t` positions after the
    /// `s₀` already in `cache`: their keys and values are appended, and query `i`
    /// sees keys `0..=s₀ + i`. Returns `(B, t, C)` and the weights `(B, H, t, s₀ + t)`.
    /// Decoding `T` tokens one at a time gives what [`MultiHeadAttention::forward`]
    /// with [`causal_mask`]`(T, T)` gives for all of them at once.
    pub fn forward_cached(&self, x_new: &Tensor, cache: &mut LayerKv) -> Result<(Tensor, Tensor)> {
        let [q, k_new, v_new] = self.project_qkv(x_new)?; // each (B, H, t, D)
        let (k, v) = cache.append(k_new, v_new)?; // each (B, H, s₀ + t, D)
        let (t, s) = (q.shape()[2], k.shape()[2]);
        let mask = causal_mask(t, s); // query i sees keys 0..=i + (s - t)
        let (y, weights) = scaled_dot_product_attention(&q, &k, &v, Some(&mask))?;
        Ok((self.merge_heads(&y)?, weights))
    }
    // ANCHOR_END: forward_cached

    /// [`MultiHeadAttention::forward_cached`] with an explicit `mask (t, s₀ + t)`
    /// (`true` = not allowed) instead of the causal one: sparse decoders such as
    /// DALL-E's row, column and convolutional attention pass the mask rows of the new positions.
    pub fn forward_cached_masked(&self, x_new: &Tensor, cache: &mut LayerKv, mask: &ArrayD<bool>) -> Result<(Tensor, Tensor)> {
        let [q, k_new, v_new] = self.project_qkv(x_new)?; // each (B, H, t, D)
        let (k, v) = cache.append(k_new, v_new)?; // each (B, H, s₀ + t, D)
        let (y, weights) = scaled_dot_product_attention(&q, &k, &v, Some(mask))?;
        Ok((self.merge_heads(&y)?, weights))
    }
}

impl Module for MultiHeadAttention {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("qkv", &self.qkv, f);
        visit_child("proj", &self.proj, f);
    }
}

/// The cached keys and values of one attention layer, each `(B, H, S, D)`.
#[derive(Default, Clone)]
pub struct LayerKv {
    keys: Option<Tensor>,
    values: Option<Tensor>,
}

impl LayerKv {
    /// Append `k_new`, `v_new` (`(B, H, t, D)`) along the position axis and
    /// return all keys and values so far. Errors when `B`, `H` or `D` change.
    pub fn append(&mut self, k_new: Tensor, v_new: Tensor) -> Result<(Tensor, Tensor)> {
        let join = |old: &Option<Tensor>, new: Tensor| -> Result<Tensor> {
            match old {
                Some(o) => Tensor::concat(&[o, &new], 2).map_err(|e| Error::shape("kv_cache", format!("cannot append to the cache: {e}"))),
                None => Ok(new),
            }
        };
        let k = join(&self.keys, k_new)?;
        let v = join(&self.values, v_new)?;
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        Ok((k, v))
    }

    /// The number of cached positions `S`.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.shape()[2])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keys and values of every layer of a decoder, for autoregressive sampling:
/// `layers[l]` belongs to block `l`. Use one cache per sequence batch and drop it
/// (or [`KvCache::clear`]) before decoding a new batch.
#[derive(Clone)]
pub struct KvCache {
    /// One entry per attention layer.
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// An empty cache for `n_layers` attention layers.
    pub fn new(n_layers: usize) -> Self {
        KvCache { layers: vec![LayerKv::default(); n_layers] }
    }

    /// The number of positions cached so far (the offset of the next token,
    /// e.g. for its position embedding).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget everything cached.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = LayerKv::default());
    }
}
