//! Scaled dot-product attention (Vaswani et al. 2017, eq. 1) and its masks.
//!
//! ```text
//! Attention(Q, K, V) = softmax(Q Kᵀ / √d + M) V
//! ```
//!
//! where `M` is `-∞` at the masked positions (future tokens for a causal
//! model, padding for a batch of unequal texts) and 0 elsewhere.

use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, IxDyn};

// ANCHOR: sdpa
/// `softmax(Q Kᵀ / √d + M) V` for `q (..., T, D)`, `k (..., S, D)`, `v (..., S, Dv)`.
/// `mask` (broadcastable to `(..., T, S)`) is `true` where attention is *not*
/// allowed. Returns the output `(..., T, Dv)` and the attention weights `(..., T, S)`.
/// PyTorch: `F.scaled_dot_product_attention(q, k, v, attn_mask=~mask)`.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&ArrayD<bool>>) -> Result<(Tensor, Tensor)> {
    let d = *q.shape().last().ok_or_else(|| crate::Error::shape("attention", "q is 0-dimensional"))?;
    let scores = q.matmul_t(k)?.scale(1.0 / (d as f32).sqrt()); // (..., T, S) = Q Kᵀ / √d
    let scores = match mask {
        Some(m) => scores.masked_fill(m, f32::NEG_INFINITY)?,
        None => scores,
    };
    let weights = scores.softmax(-1); // (..., T, S)
    let out = weights.matmul(v)?; // (..., T, Dv)
    Ok((out, weights))
}
// ANCHOR_END: sdpa

/// The causal mask for `t` queries that follow `s - t` cached keys: query `i`
/// may see keys `0..=i + (s - t)`. Shape `(t, s)`, `true` above that diagonal.
pub fn causal_mask(t: usize, s: usize) -> ArrayD<bool> {
    let offset = s.saturating_sub(t);
    ArrayD::from_shape_fn(IxDyn(&[t, s]), |ix| ix[1] > ix[0] + offset)
}

/// The padding mask for a batch of key sequences of the given lengths, padded
/// to `s`: shape `(B, 1, 1, s)`, `true` at the padding positions.
pub fn padding_mask(lengths: &[usize], s: usize) -> ArrayD<bool> {
    ArrayD::from_shape_fn(IxDyn(&[lengths.len(), 1, 1, s]), |ix| ix[3] >= lengths[ix[0]])
}

/// `a OR b` of two masks, broadcast together (e.g. causal and padding).
pub fn combine_masks(a: &ArrayD<bool>, b: &ArrayD<bool>) -> Result<ArrayD<bool>> {
    let shape = crate::tensor::broadcast_shapes("combine_masks", a.shape(), b.shape())?;
    let (av, bv) = (a.broadcast(IxDyn(&shape)).expect("checked"), b.broadcast(IxDyn(&shape)).expect("checked"));
    let mut out = ArrayD::from_elem(IxDyn(&shape), false);
    ndarray::Zip::from(&mut out).and(&av).and(&bv).for_each(|o, &x, &y| *o = x || y);
    Ok(out)
}
