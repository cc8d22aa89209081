//! The denoising U-Net (Ho et al. 2020, Appendix B; the layout of improved-diffusion's `UNetModel`).
//!
//! ```text
//! x_t ─ conv_in ─ [Res (+Attn)]×n ─ Down ─ [Res (+Attn)]×n ─ Down ─ … ─ Res Attn Res (middle)
//!                     │ skip              │ skip                             │
//!  out ─ GN SiLU conv ─ [Res (+Attn)]×(n+1) ─ Up ─ …  each Res takes [h ; skip] concatenated
//! ```
//!
//! Every residual block adds the embedding `emb = MLP(sinusoid(t)) + cond` to its
//! channels, so one network serves all noise levels. Attention runs at the low
//! resolutions, where `H·W` positions are few. The output convolution and every
//! block's last layer start at zero, so the untrained network predicts 0.
//!
//! The conditioning hook, used by the chapters that follow:
//! - `cond (B, C_emb)` is added to the timestep embedding (a class embedding here,
//!   GLIDE's pooled text feature, unCLIP's projected CLIP image embedding);
//! - `context` tokens `(B, S, C_ctx)` are attended to by every attention layer
//!   (GLIDE's text tokens, unCLIP's four image-embedding tokens).

use super::blocks::{timestep_embedding, zero_conv3x3, AttentionBlock, Downsample, ResBlock, Upsample};
use crate::nn::context_attention::Context;
use crate::nn::{visit_child, Conv2d, Forward, GroupNorm, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// Hyper-parameters of a [`UNet`].
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Image channels (in and out).
    pub in_channels: usize,
    /// Image side (square images); halved `channel_mult.len() - 1` times.
    pub image_size: usize,
    /// Channels of the first level; level `i` has `base_channels · channel_mult[i]`.
    pub base_channels: usize,
    /// Width multiplier per resolution level.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level on the way down (`+1` on the way up).
    pub num_res_blocks: usize,
    /// Image sides at which blocks are followed by self-attention (the middle always has it).
    pub attention_resolutions: Vec<usize>,
    /// Attention heads.
    pub heads: usize,
    /// GroupNorm groups (divides every width).
    pub groups: usize,
    /// Width of the context tokens the attention layers attend to, if any.
    pub context_dim: Option<usize>,
}

impl UNetConfig {
    /// The chapter's model for 28x28 MNIST (`weights/ddpm_mnist.safetensors`): 16/32/32
    /// channels at 28/14/7, one residual block per level, attention at 7x7 and in the
    /// middle; 281 k parameters with the class embedding (chosen for a 30-minute run on 2 cores).
    pub fn mnist() -> Self {
        UNetConfig {
            in_channels: 1,
            image_size: 28,
            base_channels: 16,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attention_resolutions: vec![7],
            heads: 4,
            groups: 8,
            context_dim: None,
        }
    }

    /// 32x32 RGB (CIFAR-10): the same network on 3 channels, attention at 8x8.
    pub fn cifar10() -> Self {
        UNetConfig { in_channels: 3, image_size: 32, attention_resolutions: vec![8], ..Self::mnist() }
    }

    /// The width of the timestep embedding (and of `cond`): `4 · base_channels`.
    pub fn emb_dim(&self) -> usize {
        4 * self.base_channels
    }
}

/// One layer of a U-Net stage.
pub enum Layer {
    /// The first 3x3 convolution, image channels to `base_channels`.
    Conv(Conv2d),
    /// A residual block with the embedding.
    Res(ResBlock),
    /// Self-attention over positions (and context tokens).
    Attn(AttentionBlock),
    /// Halve the side.
    Down(Downsample),
    /// Double the side.
    Up(Upsample),
}

impl Layer {
    fn forward(&self, h: &Tensor, emb: &Tensor, context: Option<Context>) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(h),
            Layer::Res(r) => r.forward(h, emb),
            Layer::Attn(a) => a.forward(h, context),
            Layer::Down(d) => d.forward(h),
            Layer::Up(u) => u.forward(h),
        }
    }
}

impl Module for Layer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        match self {
            Layer::Conv(c) => c.visit(f),
            Layer::Res(r) => r.visit(f),
            Layer::Attn(a) => a.visit(f),
            Layer::Down(d) => d.visit(f),
            Layer::Up(u) => u.visit(f),
        }
    }
}

/// A stage: layers applied in turn (improved-diffusion's `TimestepEmbedSequential`).
pub struct Stage(pub Vec<Layer>);

impl Stage {
    fn forward(&self, x: &Tensor, emb: &Tensor, context: Option<Context>) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.0 {
            h = layer.forward(&h, emb, context)?;
        }
        Ok(h)
    }
}

impl Module for Stage {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, layer) in self.0.iter().enumerate() {
            visit_child(&i.to_string(), layer, f);
        }
    }
}

/// The denoising U-Net.
pub struct UNet {
    /// `Linear(base, 4·base)` of the timestep MLP.
    pub time_fc1: Linear,
    /// `Linear(4·base, 4·base)` of the timestep MLP (after a SiLU).
    pub time_fc2: Linear,
    /// The way down; each stage's output is kept as a skip connection.
    pub input_blocks: Vec<Stage>,
    /// Res, Attn, Res at the lowest resolution.
    pub middle: Stage,
    /// The way up; each stage first concatenates the last unused skip.
    pub output_blocks: Vec<Stage>,
    /// GroupNorm before the output convolution.
    pub out_norm: GroupNorm,
    /// 3x3 to image channels, zero-initialised.
    pub out_conv: Conv2d,
    /// The hyper-parameters.
    pub config: UNetConfig,
}

impl UNet {
    /// A U-Net with random weights. Errors name the value that does not fit: an image side
    /// that cannot be halved `levels - 1` times, widths that GroupNorm or the heads do not divide.
    pub fn new(config: UNetConfig, rng: &mut Rng) -> Result<Self> {
        let UNetConfig { in_channels, image_size, base_channels: base, ref channel_mult, num_res_blocks, heads, groups, context_dim, .. } = config;
        let levels = channel_mult.len();
        if in_channels == 0 || base == 0 || levels == 0 || num_res_blocks == 0 || channel_mult.contains(&0) {
            return Err(Error::Config(format!("unet: in_channels = {in_channels}, base_channels = {base}, channel_mult = {channel_mult:?}, num_res_blocks = {num_res_blocks} must be positive")));
        }
        let factor = 1usize << (levels - 1);
        if image_size == 0 || !image_size.is_multiple_of(factor) {
            return Err(Error::Config(format!(
                "unet: image size {image_size} cannot be halved {} times ({levels} levels need a side divisible by {factor})",
                levels - 1
            )));
        }
        let emb_dim = config.emb_dim();
        let attn_at = |res: usize, ch: usize, rng: &mut Rng| -> Result<Option<Layer>> {
            Ok(if config.attention_resolutions.contains(&res) { Some(Layer::Attn(AttentionBlock::new(ch, heads, groups, context_dim, rng)?)) } else { None })
        };
        let mut ch = base;
        let mut skip_channels = vec![ch];
        let mut input_blocks = vec![Stage(vec![Layer::Conv(Conv2d::new(in_channels, ch, 3, 1, 1, true, rng))])];
        let mut res = image_size;
        for (level, &mult) in channel_mult.iter().enumerate() {
            for _ in 0..num_res_blocks {
                let mut layers = vec![Layer::Res(ResBlock::new(ch, mult * base, emb_dim, groups, rng)?)];
                ch = mult * base;
                layers.extend(attn_at(res, ch, rng)?);
                input_blocks.push(Stage(layers));
                skip_channels.push(ch);
            }
            if level + 1 < levels {
                input_blocks.push(Stage(vec![Layer::Down(Downsample::new(ch, rng))]));
                skip_channels.push(ch);
                res /= 2;
            }
        }
        let middle = Stage(vec![
            Layer::Res(ResBlock::new(ch, ch, emb_dim, groups, rng)?),
            Layer::Attn(AttentionBlock::new(ch, heads, groups, context_dim, rng)?),
            Layer::Res(ResBlock::new(ch, ch, emb_dim, groups, rng)?),
        ]);
        let mut output_blocks = Vec::new();
        for (level, &mult) in channel_mult.iter().enumerate().rev() {
            for i in 0..=num_res_blocks {
                let skip = skip_channels.pop().expect("one skip per input stage");
                let mut layers = vec![Layer::Res(ResBlock::new(ch + skip, mult * base, emb_dim, groups, rng)?)];
                ch = mult * base;
                layers.extend(attn_at(res, ch, rng)?);
                if level > 0 && i == num_res_blocks {
                    layers.push(Layer::Up(Upsample::new(ch, rng)));
                    res *= 2;
                }
                output_blocks.push(Stage(layers));
            }
        }
        Ok(UNet {
            time_fc1: Linear::new(base, emb_dim, true, rng),
            time_fc2: Linear::new(emb_dim, emb_dim, true, rng),
            input_blocks,
            middle,
            output_blocks,
            out_norm: GroupNorm::new(groups, ch)?,
            out_conv: zero_conv3x3(ch, in_channels),
            config,
        })
    }

    // ANCHOR: forward
    /// `x_t (B, C, H, W)` at timesteps `t` (B, integer or continuous) -> `(B, C, H, W)`.
    /// `cond (B, C_emb)` is added to the timestep embedding; `context` tokens are
    /// attended to by every attention layer.
    pub fn forward(&self, x: &Tensor, t: &[f32], cond: Option<&Tensor>, context: Option<Context>) -> Result<Tensor> {
        let c = &self.config;
        let s = x.shape();
        if s.len() != 4 || s[1] != c.in_channels || s[2] != c.image_size || s[3] != c.image_size || t.len() != s[0] {
            return Err(Error::shape(
                "unet",
                format!("input {s:?} with {} timesteps: expected (B, {}, {}, {}) and B timesteps", t.len(), c.in_channels, c.image_size, c.image_size),
            ));
        }
        let emb = timestep_embedding(t, c.base_channels)?; // (B, base)
        let mut emb = self.time_fc2.forward(&self.time_fc1.forward(&emb)?.silu())?; // (B, C_emb)
        if let Some(cond) = cond {
            if cond.shape() != [s[0], c.emb_dim()] {
                return Err(Error::shape("unet", format!("cond {:?} is not (B = {}, C_emb = {})", cond.shape(), s[0], c.emb_dim())));
            }
            emb = emb.add(cond)?; // the conditioning hook: class / text / CLIP embedding
        }
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.clone();
        for stage in &self.input_blocks {
            h = stage.forward(&h, &emb, context)?; // (B, C_level, H_level, W_level)
            skips.push(h.clone());
        }
        h = self.middle.forward(&h, &emb, context)?;
        for stage in &self.output_blocks {
            let skip = skips.pop().expect("one skip per input stage");
            h = stage.forward(&Tensor::concat(&[&h, &skip], 1)?, &emb, context)?; // [h ; skip] on channels
        }
        self.out_conv.forward(&self.out_norm.forward_silu(&h)?) // (B, C, H, W)
    }
    // ANCHOR_END: forward
}

impl Module for UNet {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("time_embed.fc1", &self.time_fc1, f);
        visit_child("time_embed.fc2", &self.time_fc2, f);
        crate::nn::visit_list("input_blocks", &self.input_blocks, f);
        visit_child("middle", &self.middle, f);
        crate::nn::visit_list("output_blocks", &self.output_blocks, f);
        visit_child("out.norm", &self.out_norm, f);
        visit_child("out.conv", &self.out_conv, f);
    }
}
