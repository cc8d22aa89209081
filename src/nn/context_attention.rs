//! Self-attention that also attends to extra context tokens (GLIDE §2.3, unCLIP §2.1).
//!
//! GLIDE's U-Net lets every attention layer see the text encoder's tokens:
//! each token gets its own key and value projection, and those keys and values
//! are put in front of the image positions' own, so a query at an image
//! position attends over `S` context tokens and `T` image positions at once:
//!
//! ```text
//! K = [c W_K^ctx ; x W_K],   V = [c W_V^ctx ; x W_V],   Q = x W_Q
//! out = softmax(Q Kᵀ / √d + M) V W_O
//! ```
//!
//! `M` is `-∞` at padding context tokens (a batch of captions of unequal
//! length). Without context tokens this is exactly [`MultiHeadAttention`]. The
//! heads are split, attended and merged by one op, [`Tensor::multi_head_attention`],
//! which reads them in place (chapter 01 splits them with `reshape` and `transpose`).

use super::layers::Linear;
use super::mha::MultiHeadAttention;
use super::module::{visit_child, Forward, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};

/// Extra tokens for [`ContextAttention`]: `tokens (B, S, C_ctx)` and an optional
/// padding mask `(B, S)`, `true` at tokens that must not be attended to.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// `(B, S, C_ctx)`
    pub tokens: &'a Tensor,
    /// `(B, S)`, `true` = padding.
    pub padding: Option<&'a ArrayD<bool>>,
}

/// [`MultiHeadAttention`] plus a key/value projection of context tokens.
/// Parameter names: `attn.qkv.*`, `attn.proj.*`, and `context_kv.*` (`Linear(C_ctx, 2C)`,
/// rows `[0, C)` keys, `[C, 2C)` values) when built with a context width.
pub struct ContextAttention {
    /// The self-attention: fused QKV of the image positions and `W_O`.
    pub attn: MultiHeadAttention,
    /// `W_K^ctx, W_V^ctx` stacked, if this layer takes context tokens.
    pub context_kv: Option<Linear>,
}

impl ContextAttention {
    /// `dim = C` split into `n_head` heads; `context_dim = Some(C_ctx)` adds the context projection.
    pub fn new(dim: usize, n_head: usize, context_dim: Option<usize>, rng: &mut Rng) -> Result<Self> {
        let attn = MultiHeadAttention::new(dim, n_head, true, rng)?;
        let context_kv = context_dim.map(|c| Linear::new(c, 2 * dim, true, rng));
        Ok(ContextAttention { attn, context_kv })
    }

    // ANCHOR: forward
    /// `x (B, T, C)` -> `(B, T, C)`. With `context`, every query also attends to
    /// the `S` context tokens (their keys first, then the image positions').
    pub fn forward(&self, x: &Tensor, context: Option<Context>) -> Result<Tensor> {
        let Some(ctx) = context else {
            return Ok(self.attn.forward(x, None)?.0); // plain self-attention
        };
        // Q, K, V (B, T, C), head h in channels h·D..(h+1)·D; one op splits the heads,
        // attends and merges them (chapter 01's split, attention and merge, fused)
        let qkv = self.attn.project_qkv_channels(x)?;
        let h = self.attn.n_head;
        let proj = self.context_kv.as_ref().ok_or_else(|| Error::Config("context_attention: context tokens given to a layer built without a context width".into()))?;
        let s = ctx.tokens.shape();
        let (b, t) = (x.dim(0), x.dim(1));
        if s.len() != 3 || s[0] != b || s[2] != proj.in_features() {
            return Err(Error::shape("context_attention", format!("context {s:?} is not (B = {b}, S, C_ctx = {})", proj.in_features())));
        }
        let kv = proj.forward(ctx.tokens)?.chunk(2, -1)?; // 2 x (B, S, C)
        let k = Tensor::concat(&[&kv[0], &qkv[1]], 1)?; // (B, S + T, C)
        let v = Tensor::concat(&[&kv[1], &qkv[2]], 1)?; // (B, S + T, C)
        let mask = match ctx.padding {
            Some(m) => {
                if m.shape() != [b, s[1]] {
                    return Err(Error::shape("context_attention", format!("padding mask {:?} is not (B = {b}, S = {})", m.shape(), s[1])));
                }
                // (B, 1, 1, S + T): padding context tokens hidden, image positions always visible
                Some(ArrayD::from_shape_fn(IxDyn(&[b, 1, 1, s[1] + t]), |ix| ix[3] < s[1] && m[[ix[0], ix[3]]]))
            }
            None => None,
        };
        let y = Tensor::multi_head_attention(&qkv[0], &k, &v, h, mask.as_ref())?; // (B, T, C)
        self.attn.proj.forward(&y)
    }
    // ANCHOR_END: forward
}

impl Module for ContextAttention {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("attn", &self.attn, f);
        if let Some(p) = &self.context_kv {
            visit_child("context_kv", p, f);
        }
    }
}
