//! The model with its captions fixed, and classifier-free guidance on captions.
//!
//! Training replaces the caption by the empty one, `[SOT, EOT]`, for a fraction of the
//! examples (GLIDE §3: 20%), so the one network learns both `ε(x_t | c)` and `ε(x_t | ∅)`.
//! Sampling mixes them (Ho & Salimans 2022, eq. 6; chapter 08's [`guidance`](crate::models::diffusion::guidance)):
//!
//! ```text
//! ε̂ = ε(x_t | ∅) + s (ε(x_t | c) - ε(x_t | ∅)),    s ≥ 0
//! ```
//!
//! The captions are encoded once, not at every step: the text features do not depend on `x_t`.

use super::model::Glide;
use super::text::TextFeatures;
use crate::models::diffusion::{ClassifierFree, Denoiser};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// The caption that stands for "no caption" (tokenized `[SOT, EOT, PAD, ...]`).
pub const EMPTY_CAPTION: &str = "";

/// A [`Denoiser`]: [`Glide`] with one encoded caption per row of the batch it is given.
pub struct CaptionDenoiser<'a> {
    model: &'a Glide,
    text: TextFeatures,
}

impl CaptionDenoiser<'_> {
    /// The encoded captions, one row per image.
    pub fn text(&self) -> &TextFeatures {
        &self.text
    }
}

impl Denoiser for CaptionDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.model.forward(x_t, t, &self.text)
    }
}

/// Errors unless `scale` is a finite `s ≥ 0`, naming the value.
pub fn check_guidance_scale(scale: f32) -> Result<()> {
    if !scale.is_finite() || scale < 0.0 {
        return Err(Error::Config(format!(
            "guidance scale s = {scale}: must be a finite number >= 0 (0 = the unconditional model, 1 = the conditional one, above 1 = guided)"
        )));
    }
    Ok(())
}

impl Glide {
    /// A [`Denoiser`] for `captions` (one per image of the batches it will be given).
    /// A caption longer than the text context is an error unless `truncate`.
    pub fn with_captions(&self, tokenizer: &dyn TextTokenizer, captions: &[&str], truncate: bool) -> Result<CaptionDenoiser<'_>> {
        let ids = self.text.tokenize(tokenizer, captions, truncate)?; // (B, S)
        let text = no_grad(|| self.text.encode(&ids))?; // constant over the sampling steps
        Ok(CaptionDenoiser { model: self, text })
    }

    // ANCHOR: guided
    /// Classifier-free guidance with scale `scale` for `captions`: the denoiser is asked for
    /// `2B` rows, the captions and then `B` empty captions, in one batch. `scale < 0` is an error.
    pub fn guided(&self, tokenizer: &dyn TextTokenizer, captions: &[&str], scale: f32, truncate: bool) -> Result<ClassifierFree<CaptionDenoiser<'_>>> {
        check_guidance_scale(scale)?;
        let doubled: Vec<&str> = captions.iter().copied().chain(std::iter::repeat_n(EMPTY_CAPTION, captions.len())).collect();
        Ok(ClassifierFree { model: self.with_captions(tokenizer, &doubled, truncate)?, scale })
    }
    // ANCHOR_END: guided
}

/// `captions` with each replaced by [`EMPTY_CAPTION`] with probability `p` (classifier-free training).
pub fn drop_captions(captions: &[String], p: f32, rng: &mut Rng) -> Vec<String> {
    captions.iter().map(|c| if rng.uniform() < p { EMPTY_CAPTION.to_string() } else { c.clone() }).collect()
}
