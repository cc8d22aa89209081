//! The image tower: a Vision Transformer (Dosovitskiy et al. 2021) as CLIP uses it.
//!
//! ```text
//! patches = Conv2d_{p×p, stride p, no bias}(image)          (B, C, H/p, W/p) -> (B, N, C)
//! x₀ = [class_embedding; patches] + position_embedding      (B, N+1, C)
//! x  = Encoder(pre_layrnorm(x₀))                             (B, N+1, C)
//! pooled = post_layernorm(x[:, 0])                           (B, C)
//! ```
//!
//! CLIP adds a layer norm *before* the encoder (`pre_layrnorm`, Hugging Face's
//! spelling, kept so the checkpoint names match), which the original ViT lacks.
//! Hugging Face: `CLIPVisionTransformer`.

use super::config::ClipVisionConfig;
use super::layers::{layer_norm, ClipEncoder, EncoderSpec};
use crate::nn::{visit_child, Conv2d, Embedding, Forward, LayerNorm, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// Patch, class and position embeddings. HF: `CLIPVisionEmbeddings`.
pub struct ClipVisionEmbeddings {
    /// The learned class token, `(C)`.
    pub class_embedding: Tensor,
    /// `(C, channels, p, p)`, stride `p`, no bias.
    pub patch_embedding: Conv2d,
    /// `(N + 1, C)`
    pub position_embedding: Embedding,
}

impl Module for ClipVisionEmbeddings {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("class_embedding", &self.class_embedding);
        visit_child("patch_embedding", &self.patch_embedding, f);
        visit_child("position_embedding", &self.position_embedding, f);
    }
}

/// The image tower's outputs.
pub struct VisionOutput {
    /// Every token's final state (class token first), `(B, N + 1, C)`, before `post_layernorm`.
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the class token, `(B, C)`.
    pub pooled_output: Tensor,
}

/// The ViT. HF: `CLIPVisionTransformer` (names `embeddings.*`, `pre_layrnorm.*`, `encoder.*`, `post_layernorm.*`).
pub struct ClipVisionTransformer {
    /// Patch + class + position embeddings.
    pub embeddings: ClipVisionEmbeddings,
    /// LN before the encoder.
    pub pre_layrnorm: LayerNorm,
    /// The (non-causal) encoder.
    pub encoder: ClipEncoder,
    /// LN on the class token.
    pub post_layernorm: LayerNorm,
    /// The hyper-parameters.
    pub config: ClipVisionConfig,
}

impl ClipVisionTransformer {
    /// Random init as CLIP's: class and position embeddings `N(0, (C^-½)²)`.
    pub fn new(config: &ClipVisionConfig, rng: &mut Rng) -> Result<Self> {
        let c = config.hidden_size;
        let scale = (c as f32).powf(-0.5);
        let spec = EncoderSpec {
            width: c,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            act: config.hidden_act,
            eps: config.layer_norm_eps as f32,
        };
        let p = config.patch_size;
        Ok(ClipVisionTransformer {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Tensor::param(rng.normal_array(&[c]).mapv(|v| v * scale)),
                patch_embedding: Conv2d::new(config.num_channels, c, p, p, 0, false, rng),
                position_embedding: Embedding::new(config.num_positions(), c, scale, rng),
            },
            pre_layrnorm: layer_norm(c, spec.eps),
            encoder: ClipEncoder::new(&spec, rng)?,
            post_layernorm: layer_norm(c, spec.eps),
            config: config.clone(),
        })
    }

    /// `pixel_values (B, channels, S, S)` (already normalised) -> states and pooled class token.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<VisionOutput> {
        let s = pixel_values.shape();
        let cfg = &self.config;
        if s.len() != 4 || s[1] != cfg.num_channels || s[2] != cfg.image_size || s[3] != cfg.image_size {
            return Err(Error::shape(
                "clip vision",
                format!(
                    "pixel_values {s:?}, expected (B, {}, {}, {}) (num_channels, image_size, image_size)",
                    cfg.num_channels, cfg.image_size, cfg.image_size
                ),
            ));
        }
        let (b, c, n) = (s[0] as isize, cfg.hidden_size as isize, (cfg.grid() * cfg.grid()) as isize);
        let patches = self.embeddings.patch_embedding.forward(pixel_values)?; // (B, C, S/p, S/p)
        let patches = patches.reshape(&[b, c, n])?.transpose(1, 2); // (B, N, C)
        let cls = self.embeddings.class_embedding.reshape(&[1, 1, c])?.broadcast_to(&[b as usize, 1, c as usize])?; // (B, 1, C)
        let x = Tensor::concat(&[&cls, &patches], 1)?; // (B, N+1, C)
        let x = x.add(&self.embeddings.position_embedding.weight)?; // (B, N+1, C)
        let x = self.pre_layrnorm.forward(&x)?;
        let h = self.encoder.forward(&x, None)?; // (B, N+1, C)
        let cls_out = h.narrow(1, 0, 1)?.reshape(&[b, c])?; // (B, C)
        let pooled = self.post_layernorm.forward(&cls_out)?;
        Ok(VisionOutput { last_hidden_state: h, pooled_output: pooled })
    }
}

impl Module for ClipVisionTransformer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("embeddings", &self.embeddings, f);
        visit_child("pre_layrnorm", &self.pre_layrnorm, f);
        visit_child("encoder", &self.encoder, f);
        visit_child("post_layernorm", &self.post_layernorm, f);
    }
}
