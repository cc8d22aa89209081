//! The U-Net's pieces (Ho et al. 2020, Appendix B; Dhariwal & Nichol 2021, §3):
//! the timestep embedding, the residual block that takes it, the attention
//! block that may also see context tokens, and the 2x down- and up-samplers.

use crate::nn::context_attention::{Context, ContextAttention};
use crate::nn::{init, visit_child, Conv2d, Forward, GroupNorm, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

// ANCHOR: timestep_embedding
/// The sinusoidal embedding of (integer or continuous) timesteps, `(B)` -> `(B, dim)`,
/// as in the Transformer's position encoding (improved-diffusion's `timestep_embedding`):
///
/// ```text
/// f_i = 10000^{-i / (dim/2)},   emb(t) = [cos(t f_0) .. cos(t f_{dim/2-1}), sin(t f_0) .. sin(t f_{dim/2-1})]
/// ```
/// Errors when `dim` is odd.
pub fn timestep_embedding(t: &[f32], dim: usize) -> Result<Tensor> {
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(Error::Config(format!("timestep embedding: width {dim} must be even and positive")));
    }
    let half = dim / 2;
    let mut values = Vec::with_capacity(t.len() * dim);
    for &step in t {
        let angle = |i: usize| step as f64 * (-(10000f64.ln()) * i as f64 / half as f64).exp(); // t · f_i
        values.extend((0..half).map(|i| angle(i).cos() as f32));
        values.extend((0..half).map(|i| angle(i).sin() as f32));
    }
    Tensor::from_vec(values, &[t.len(), dim])
}
// ANCHOR_END: timestep_embedding

/// A zero-initialised 3x3 convolution: the block it ends starts as the identity
/// (improved-diffusion's `zero_module`), which keeps a deep U-Net trainable.
pub fn zero_conv3x3(in_channels: usize, out_channels: usize) -> Conv2d {
    Conv2d { weight: init::zeros(&[out_channels, in_channels, 3, 3]), bias: Some(init::zeros(&[out_channels])), stride: 1, padding: 1 }
}

/// A residual block with the timestep embedding added in the middle. Parameter names:
/// `norm1`, `conv1`, `emb_proj`, `norm2`, `conv2` and, when the width changes, `skip` (1x1).
pub struct ResBlock {
    /// GroupNorm before the first convolution.
    pub norm1: GroupNorm,
    /// 3x3, `C_in -> C_out`.
    pub conv1: Conv2d,
    /// `Linear(C_emb, C_out)`: the embedding as a per-channel shift.
    pub emb_proj: Linear,
    /// GroupNorm before the second convolution.
    pub norm2: GroupNorm,
    /// 3x3, `C_out -> C_out`, zero-initialised.
    pub conv2: Conv2d,
    /// 1x1 `C_in -> C_out` on the residual path when the widths differ.
    pub skip: Option<Conv2d>,
}

impl ResBlock {
    /// `C_in -> C_out` with an embedding of width `emb_dim`; `groups` GroupNorm groups.
    pub fn new(in_channels: usize, out_channels: usize, emb_dim: usize, groups: usize, rng: &mut Rng) -> Result<Self> {
        Ok(ResBlock {
            norm1: GroupNorm::new(groups, in_channels)?,
            conv1: Conv2d::new(in_channels, out_channels, 3, 1, 1, true, rng),
            emb_proj: Linear::new(emb_dim, out_channels, true, rng),
            norm2: GroupNorm::new(groups, out_channels)?,
            conv2: zero_conv3x3(out_channels, out_channels),
            skip: (in_channels != out_channels).then(|| Conv2d::new(in_channels, out_channels, 1, 1, 0, true, rng)),
        })
    }

    // ANCHOR: res_block
    /// `x (B, C_in, H, W)`, `emb (B, C_emb)` -> `(B, C_out, H, W)`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?; // (B, C_out, H, W), SiLU(GroupNorm(x)) as one op
        let shift = self.emb_proj.forward(&emb.silu())?.unsqueeze(-1).unsqueeze(-1); // (B, C_out, 1, 1)
        let h = h.add(&shift)?; // every position of a channel moves with t
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?; // (B, C_out, H, W)
        let residual = match &self.skip {
            Some(skip) => skip.forward(x)?,
            None => x.clone(),
        };
        residual.add(&h)
    }
    // ANCHOR_END: res_block
}

impl Module for ResBlock {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("norm1", &self.norm1, f);
        visit_child("conv1", &self.conv1, f);
        visit_child("emb_proj", &self.emb_proj, f);
        visit_child("norm2", &self.norm2, f);
        visit_child("conv2", &self.conv2, f);
        if let Some(s) = &self.skip {
            visit_child("skip", s, f);
        }
    }
}

/// Self-attention over the `H·W` positions of a feature map (plus context tokens),
/// as a residual: `x + W_O attention(GroupNorm(x))`, `W_O` zero-initialised.
pub struct AttentionBlock {
    /// GroupNorm over the input.
    pub norm: GroupNorm,
    /// The attention, with a context projection when the U-Net takes context tokens.
    pub attention: ContextAttention,
}

impl AttentionBlock {
    /// `channels` split into `heads`; `context_dim` is the width of the context tokens, if any.
    pub fn new(channels: usize, heads: usize, groups: usize, context_dim: Option<usize>, rng: &mut Rng) -> Result<Self> {
        let attention = ContextAttention::new(channels, heads, context_dim, rng)?;
        // zero W_O: the block starts as the identity
        attention.attn.proj.weight.assign(init::zeros(&[channels, channels]).to_array())?;
        if let Some(b) = &attention.attn.proj.bias {
            b.assign(init::zeros(&[channels]).to_array())?;
        }
        Ok(AttentionBlock { norm: GroupNorm::new(groups, channels)?, attention })
    }

    // ANCHOR: attention_block
    /// `x (B, C, H, W)` -> `(B, C, H, W)`; with `context`, every position also attends to its tokens.
    pub fn forward(&self, x: &Tensor, context: Option<Context>) -> Result<Tensor> {
        let s = x.shape();
        let (b, c, hw) = (s[0] as isize, s[1] as isize, (s[2] * s[3]) as isize);
        let h = self.norm.forward(x)?.reshape(&[b, c, hw])?.transpose(1, 2); // (B, HW, C): one token per position
        let h = self.attention.forward(&h.contiguous(), context)?; // (B, HW, C)
        let h = h.transpose(1, 2).contiguous().reshape(&[b, c, s[2] as isize, s[3] as isize])?; // (B, C, H, W)
        x.add(&h)
    }
    // ANCHOR_END: attention_block
}

impl Module for AttentionBlock {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("norm", &self.norm, f);
        visit_child("attention", &self.attention, f);
    }
}

/// Halves the side with a 3x3 stride-2 convolution: `(B, C, H, W) -> (B, C, H/2, W/2)`.
pub struct Downsample {
    /// 3x3, stride 2, padding 1.
    pub conv: Conv2d,
}

impl Downsample {
    /// A downsampler of `channels`.
    pub fn new(channels: usize, rng: &mut Rng) -> Self {
        Downsample { conv: Conv2d::new(channels, channels, 3, 2, 1, true, rng) }
    }

    /// `(B, C, H, W) -> (B, C, H/2, W/2)` (H, W even).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

impl Module for Downsample {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("conv", &self.conv, f);
    }
}

/// Doubles the side: nearest-neighbour 2x, then a 3x3 convolution.
pub struct Upsample {
    /// 3x3, stride 1, padding 1.
    pub conv: Conv2d,
}

impl Upsample {
    /// An upsampler of `channels`.
    pub fn new(channels: usize, rng: &mut Rng) -> Self {
        Upsample { conv: Conv2d::new(channels, channels, 3, 1, 1, true, rng) }
    }

    /// `(B, C, H, W) -> (B, C, 2H, 2W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&x.upsample_nearest2d(2)?)
    }
}

impl Module for Upsample {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("conv", &self.conv, f);
    }
}
