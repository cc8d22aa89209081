//! CLIP (Radford et al. 2021): two towers, one embedding space, a contrastive loss.
//!
//! ```text
//! I_e = normalize(visual_projection(vision(image)))     (N, E)
//! T_e = normalize(text_projection(text(ids)))           (N, E)
//! logits = exp(t) · I_e T_eᵀ                            (N, N), t = logit_scale, exp(t) ≤ 100
//! loss = ½ (CE(logits, diag) + CE(logitsᵀ, diag))
//! ```
//!
//! The `i`-th image and the `i`-th caption are a pair; the other `N - 1`
//! captions in the batch are negatives for the image and vice versa. The
//! temperature is learned as `t = log(1/τ)` and clipped so that the logits are
//! scaled by at most 100 (section 2.5 of the paper). Hugging Face: `CLIPModel`.

use ndarray::{Array2, ArrayD, IxDyn};

use super::config::ClipConfig;
use super::layers::normal_linear;
use super::text::ClipTextTransformer;
use super::vision::ClipVisionTransformer;
use crate::nn::{visit_child, Forward, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::Result;

/// `ln 100`: the largest logit scale the paper allows.
pub const MAX_LOGIT_SCALE: f32 = 4.605_170_2;

/// What [`ClipModel::forward`] returns (Hugging Face's `CLIPOutput`).
pub struct ClipOutput {
    /// Unit-length image embeddings, `(N_img, E)`.
    pub image_embeds: Tensor,
    /// Unit-length text embeddings, `(N_txt, E)`.
    pub text_embeds: Tensor,
    /// `exp(t) · I_e T_eᵀ`, `(N_img, N_txt)`.
    pub logits_per_image: Tensor,
    /// Its transpose, `(N_txt, N_img)`.
    pub logits_per_text: Tensor,
    /// The text tower's pooled output before projection, `(N_txt, C_text)`.
    pub text_pooled: Tensor,
    /// The text tower's every token state, `(N_txt, T, C_text)`.
    pub text_tokens: Tensor,
    /// The image tower's every token state, `(N_img, 1 + patches, C_vision)`.
    pub image_tokens: Tensor,
}

/// The two towers, their projections and the temperature. HF: `CLIPModel`.
pub struct ClipModel {
    /// The text transformer (`text_model.*`).
    pub text_model: ClipTextTransformer,
    /// The ViT (`vision_model.*`).
    pub vision_model: ClipVisionTransformer,
    /// `(E, C_vision)`, no bias.
    pub visual_projection: Linear,
    /// `(E, C_text)`, no bias.
    pub text_projection: Linear,
    /// `t = log(1/τ)`, a 0-d parameter.
    pub logit_scale: Tensor,
    /// The hyper-parameters.
    pub config: ClipConfig,
}

fn projection(input: usize, output: usize, rng: &mut Rng) -> Linear {
    let mut l = normal_linear(input, output, (input as f32).powf(-0.5), rng);
    l.bias = None;
    l
}

impl ClipModel {
    /// A randomly initialised CLIP (validates the config first).
    pub fn new(config: &ClipConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let (ct, cv, e) = (config.text_config.hidden_size, config.vision_config.hidden_size, config.projection_dim);
        Ok(ClipModel {
            text_model: ClipTextTransformer::new(&config.text_config, rng)?,
            vision_model: ClipVisionTransformer::new(&config.vision_config, rng)?,
            visual_projection: projection(cv, e, rng),
            text_projection: projection(ct, e, rng),
            logit_scale: Tensor::param(ArrayD::from_elem(IxDyn(&[]), config.logit_scale_init_value as f32)),
            config: config.clone(),
        })
    }

    /// Unnormalised image embeddings `(B, E)`: `visual_projection(pooled)`. HF: `get_image_features`.
    pub fn get_image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.visual_projection.forward(&self.vision_model.forward(pixel_values)?.pooled_output)
    }

    /// Unnormalised text embeddings `(B, E)`: `text_projection(pooled)`. HF: `get_text_features`.
    pub fn get_text_features(&self, input_ids: &Array2<u32>) -> Result<Tensor> {
        self.text_projection.forward(&self.text_model.forward(input_ids)?.pooled_output)
    }

    /// `exp(min(t, ln 100))`, the inverse temperature.
    pub fn logit_scale_exp(&self) -> Tensor {
        self.logit_scale.clamp(f32::NEG_INFINITY, MAX_LOGIT_SCALE).exp()
    }

    /// `exp(t) · a bᵀ` for unit-length `a (N, E)`, `b (M, E)`: `(N, M)`.
    pub fn logits(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.matmul_t(b)?.mul(&self.logit_scale_exp())
    }

    // ANCHOR: forward
    /// Both towers on a batch: embeddings, the similarity logits, the token states.
    pub fn forward(&self, pixel_values: &Tensor, input_ids: &Array2<u32>) -> Result<ClipOutput> {
        let vision = self.vision_model.forward(pixel_values)?;
        let text = self.text_model.forward(input_ids)?;
        let image_embeds = self.visual_projection.forward(&vision.pooled_output)?.l2_normalize(-1, 1e-12)?; // (N, E)
        let text_embeds = self.text_projection.forward(&text.pooled_output)?.l2_normalize(-1, 1e-12)?; // (M, E)
        let logits_per_text = self.logits(&text_embeds, &image_embeds)?; // (M, N)
        let logits_per_image = logits_per_text.t().contiguous(); // (N, M)
        Ok(ClipOutput {
            image_embeds,
            text_embeds,
            logits_per_image,
            logits_per_text,
            text_pooled: text.pooled_output,
            text_tokens: text.last_hidden_state,
            image_tokens: vision.last_hidden_state,
        })
    }
    // ANCHOR_END: forward
}

// ANCHOR: contrastive
/// The symmetric contrastive loss of a square `logits (N, N)` whose diagonal
/// holds the matching pairs: `½ (CE over rows + CE over columns)`.
/// HF: `clip_loss(logits_per_text)`.
pub fn contrastive_loss(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0);
    if logits.shape() != [n, n] {
        return Err(crate::Error::shape("contrastive_loss", format!("logits {:?} are not square", logits.shape())));
    }
    let diag: Vec<usize> = (0..n).collect();
    let rows = logits.cross_entropy(&diag)?; // text i should pick image i
    let cols = logits.t().contiguous().cross_entropy(&diag)?; // image i should pick text i
    Ok(rows.add(&cols)?.scale(0.5))
}
// ANCHOR_END: contrastive

impl Module for ClipModel {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("text_model", &self.text_model, f);
        visit_child("vision_model", &self.vision_model, f);
        visit_child("visual_projection", &self.visual_projection, f);
        visit_child("text_projection", &self.text_projection, f);
        f("logit_scale", &self.logit_scale);
    }
}
