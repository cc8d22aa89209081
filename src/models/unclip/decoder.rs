//! unCLIP's decoder (Ramesh et al. 2022, §2.1): a diffusion model that inverts CLIP's image encoder.
//!
//! GLIDE's U-Net (chapter 09) conditioned on the caption, plus the CLIP image embedding
//! `z_i (B, E)` through both of chapter 08's conditioning hooks:
//!
//! ```text
//! emb      = MLP(sinusoid(t)) + W_emb z_i                      added to every residual block
//! context  = [reshape(W_tok z_i, 4 tokens) ; W_txt h_text]     attended to by every attention layer
//! ```
//!
//! `h_text (B, T, C_text)` are the caption's token states. GLIDE's text encoder is chapter 09's;
//! this chapter uses the frozen toy CLIP's text tower instead (its last hidden states,
//! padding masked), so the decoder trains nothing but the U-Net and the three projections.
//!
//! Classifier-free guidance (§2.1): during training the image embedding is set to zero
//! for 10% of the examples and the caption dropped (every token masked) for 50%, so the
//! same network also predicts `ε(x_t, t, ∅)`; sampling mixes the two with
//! [`guidance`](crate::models::diffusion::guidance).

use ndarray::{concatenate, Array2, Axis};

use crate::models::prior::clip_features::TextStates;
use crate::models::diffusion::{ClassifierFree, Denoiser, UNet, UNetConfig};
use crate::nn::context_attention::Context;
use crate::nn::{visit_child, Forward, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// Hyper-parameters of an [`UnclipDecoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// The U-Net; `context_dim` must be set (the width of the context tokens).
    pub unet: UNetConfig,
    /// `E`, the CLIP embedding width.
    pub clip_dim: usize,
    /// `C_text`, the width of the caption token states.
    pub text_dim: usize,
    /// How many context tokens the image embedding is projected into (the paper: 4).
    pub image_tokens: usize,
}

impl DecoderConfig {
    /// The chapter's decoder for 14x14 MNIST (the upsampler makes 28x28): 16/32 channels
    /// at 14/7, attention at 7x7 and in the middle, 64-wide context tokens, the toy CLIP's
    /// `E = 32` and `C_text = 64`.
    pub fn mnist() -> Self {
        DecoderConfig {
            unet: UNetConfig {
                in_channels: 1,
                image_size: 14,
                base_channels: 16,
                channel_mult: vec![1, 2],
                num_res_blocks: 2,
                attention_resolutions: vec![7],
                heads: 4,
                groups: 8,
                context_dim: Some(64),
            },
            clip_dim: 32,
            text_dim: 64,
            image_tokens: 4,
        }
    }

    // ANCHOR: shapes_config
    /// The decoder for 16x16 Shapes (the upsampler makes the 32x32 images): MNIST's 16/32
    /// channels at 16/8, three colour channels, attention at 8x8 and in the middle. The
    /// Shapes CLIP has the same `E = 32` and `C_text = 64` as MNIST's.
    pub fn shapes() -> Self {
        let mnist = DecoderConfig::mnist();
        DecoderConfig {
            unet: UNetConfig { in_channels: 3, image_size: 16, attention_resolutions: vec![8], ..mnist.unet },
            ..mnist
        }
    }
    // ANCHOR_END: shapes_config
}

/// What the decoder is conditioned on, one row per image: `image_embeds (B, E)` (a zero
/// row = dropped) and optionally the captions' token states.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderCondition {
    /// `z_i`, `(B, E)`.
    pub image_embeds: Array2<f32>,
    /// Caption tokens, `(B, T, C_text)` with their padding mask; `None`: no caption.
    pub text: Option<TextStates>,
}

impl DecoderCondition {
    /// Rows.
    pub fn len(&self) -> usize {
        self.image_embeds.dim().0
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same condition with row `i`'s image embedding zeroed where `drop_image[i]`
    /// and its caption wholly masked where `drop_text[i]` (classifier-free training).
    pub fn dropped(&self, drop_image: &[bool], drop_text: &[bool]) -> DecoderCondition {
        let mut image_embeds = self.image_embeds.clone();
        for (mut row, _) in image_embeds.rows_mut().into_iter().zip(drop_image).filter(|(_, &d)| d) {
            row.fill(0.0); // the paper's "setting the CLIP embeddings to zero"
        }
        let text = self.text.as_ref().map(|ts| {
            let mut padding = ts.padding.clone();
            for (mut row, _) in padding.rows_mut().into_iter().zip(drop_text).filter(|(_, &d)| d) {
                row.fill(true);
            }
            TextStates { tokens: ts.tokens.clone(), padding }
        });
        DecoderCondition { image_embeds, text }
    }

    /// Classifier-free training's condition: each row's image embedding dropped with
    /// probability `p_image`, its caption with probability `p_text`, independently.
    pub fn drop_at_random(&self, p_image: f32, p_text: f32, rng: &mut Rng) -> DecoderCondition {
        let (image, text): (Vec<bool>, Vec<bool>) = (0..self.len()).map(|_| (rng.uniform() < p_image, rng.uniform() < p_text)).unzip();
        self.dropped(&image, &text)
    }

    /// `2B` rows for [`ClassifierFree`]: these rows, then the same rows with everything dropped.
    pub fn with_unconditional(&self) -> DecoderCondition {
        let all = vec![true; self.len()];
        let null = self.dropped(&all, &all);
        let image_embeds = concatenate(Axis(0), &[self.image_embeds.view(), null.image_embeds.view()]).expect("same width");
        let text = self.text.as_ref().zip(null.text.as_ref()).map(|(a, b)| TextStates {
            tokens: concatenate(Axis(0), &[a.tokens.view(), b.tokens.view()]).expect("same shape"),
            padding: concatenate(Axis(0), &[a.padding.view(), b.padding.view()]).expect("same shape"),
        });
        DecoderCondition { image_embeds, text }
    }
}

/// The decoder: a U-Net with context tokens and three projections of the conditioning.
pub struct UnclipDecoder {
    /// The denoiser (`context_dim = Some(C_ctx)`).
    pub unet: UNet,
    /// `Linear(E, C_emb)`: `z_i` added to the timestep embedding.
    pub clip_to_emb: Linear,
    /// `Linear(E, 4·C_ctx)`: `z_i` as four context tokens.
    pub clip_to_tokens: Linear,
    /// `Linear(C_text, C_ctx)`: the caption's token states as context tokens.
    pub text_to_tokens: Linear,
    /// The hyper-parameters.
    pub config: DecoderConfig,
}

impl UnclipDecoder {
    /// A decoder with random weights; errors name a width that does not fit.
    pub fn new(config: DecoderConfig, rng: &mut Rng) -> Result<Self> {
        let ctx = config.unet.context_dim.ok_or_else(|| Error::Config("unclip decoder: the U-Net needs context_dim (the width of the context tokens)".into()))?;
        if config.clip_dim == 0 || config.text_dim == 0 || config.image_tokens == 0 {
            return Err(Error::Config(format!(
                "unclip decoder: clip_dim = {}, text_dim = {}, image_tokens = {} must be positive",
                config.clip_dim, config.text_dim, config.image_tokens
            )));
        }
        let emb = config.unet.emb_dim();
        Ok(UnclipDecoder {
            unet: UNet::new(config.unet.clone(), rng)?,
            clip_to_emb: Linear::new(config.clip_dim, emb, true, rng),
            clip_to_tokens: Linear::new(config.clip_dim, config.image_tokens * ctx, true, rng),
            text_to_tokens: Linear::new(config.text_dim, ctx, true, rng),
            config,
        })
    }

    /// Errors unless `cond` has `b` rows of width `E` and, if captioned, `C_text`-wide tokens.
    pub fn check_condition(&self, cond: &DecoderCondition, b: usize) -> Result<()> {
        let (rows, width) = cond.image_embeds.dim();
        if width != self.config.clip_dim {
            return Err(Error::shape(
                "unclip decoder",
                format!("image embedding of width {width}: this decoder takes CLIP embeddings of width E = {}", self.config.clip_dim),
            ));
        }
        if rows != b {
            return Err(Error::shape("unclip decoder", format!("{rows} image embeddings for a batch of {b} images")));
        }
        if let Some(ts) = &cond.text {
            let (n, t, c) = ts.tokens.dim();
            if n != b || c != self.config.text_dim || ts.padding.dim() != (n, t) {
                return Err(Error::shape(
                    "unclip decoder",
                    format!("caption tokens {:?} with padding {:?}: expected (B = {b}, T, C_text = {}) and (B, T)", ts.tokens.dim(), ts.padding.dim(), self.config.text_dim),
                ));
            }
        }
        Ok(())
    }

    // ANCHOR: forward
    /// `x_t (B, C, H, W)` at integer timesteps `t` (B) under `cond` -> ε̂ `(B, C, H, W)`.
    pub fn forward(&self, x: &Tensor, t: &[usize], cond: &DecoderCondition) -> Result<Tensor> {
        let b = x.dim(0);
        self.check_condition(cond, b)?;
        let (e, k) = (self.config.clip_dim, self.config.image_tokens);
        let ctx = self.text_to_tokens.out_features();
        // z_i is unit length; × √E gives its coordinates unit scale, as the network's other inputs
        let z = Tensor::new(cond.image_embeds.mapv(|v| v * (e as f32).sqrt()).into_dyn()); // (B, E)
        let emb = self.clip_to_emb.forward(&z)?; // (B, C_emb): added to the timestep embedding
        let image_tokens = self.clip_to_tokens.forward(&z)?.reshape(&[b as isize, k as isize, ctx as isize])?; // (B, 4, C_ctx)
        let (tokens, padding) = match &cond.text {
            Some(ts) => {
                let text = self.text_to_tokens.forward(&Tensor::new(ts.tokens.clone().into_dyn()))?; // (B, T, C_ctx)
                let t_len = ts.padding.dim().1;
                // image tokens always visible, caption tokens masked after EOT or when dropped
                let mask = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[b, k + t_len]), |ix| ix[1] >= k && ts.padding[[ix[0], ix[1] - k]]);
                (Tensor::concat(&[&image_tokens, &text], 1)?, Some(mask)) // (B, 4 + T, C_ctx)
            }
            None => (image_tokens, None),
        };
        let t: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        self.unet.forward(x, &t, Some(&emb), Some(Context { tokens: &tokens, padding: padding.as_ref() })) // (B, C, H, W)
    }
    // ANCHOR_END: forward

    /// A [`Denoiser`] under `cond` (one row per image of the batch it is given).
    pub fn with_condition(&self, cond: DecoderCondition) -> DecoderDenoiser<'_> {
        DecoderDenoiser { model: self, cond }
    }

    /// The guided denoiser `ε̂ = ε(∅) + s (ε(z_i, caption) - ε(∅))` (both passes in one batch).
    pub fn guided(&self, cond: &DecoderCondition, scale: f32) -> ClassifierFree<DecoderDenoiser<'_>> {
        ClassifierFree { model: self.with_condition(cond.with_unconditional()), scale }
    }
}

impl Module for UnclipDecoder {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("unet", &self.unet, f);
        visit_child("clip_to_emb", &self.clip_to_emb, f);
        visit_child("clip_to_tokens", &self.clip_to_tokens, f);
        visit_child("text_to_tokens", &self.text_to_tokens, f);
    }
}

/// The decoder with its condition fixed: what the samplers call.
pub struct DecoderDenoiser<'a> {
    model: &'a UnclipDecoder,
    cond: DecoderCondition,
}

impl Denoiser for DecoderDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.model.forward(x_t, t, &self.cond)
    }
}
