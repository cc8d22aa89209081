//! The whole of unCLIP in one call: captions -> prior -> `z_i` -> decoder -> upsampler.
//!
//! The prior is anything that turns captions into CLIP image embeddings, [`ImagePrior`]:
//! chapter 10's diffusion prior ([`UnclipPrior`], through [`DiffusionImagePrior`]), or a
//! baseline the paper compares it with (§5.1), feeding the CLIP *text* embedding to the
//! decoder in place of an image embedding, [`TextEmbeddingPrior`].

use ndarray::Array2;

use crate::models::prior::clip_features::{check_prompts, FrozenClip};
use super::edits::{Decoded, Unclip};
use crate::models::prior::{PriorSampling, UnclipPrior};
use crate::tensor::Rng;
use crate::{Error, Result};

/// Captions -> CLIP image embeddings `(N, E)`, one row per caption.
pub trait ImagePrior {
    /// `E`, the width of the embeddings it makes.
    fn embed_dim(&self) -> usize;
    /// One image embedding per caption (each unit length), drawn with `rng`.
    fn image_embeddings(&self, captions: &[String], rng: &mut Rng) -> Result<Array2<f32>>;
}

/// The stand-in prior: the caption's own CLIP text embedding `z_t`, used as if it were `z_i`.
pub struct TextEmbeddingPrior<'a> {
    /// The frozen CLIP.
    pub clip: &'a FrozenClip,
}

impl ImagePrior for TextEmbeddingPrior<'_> {
    fn embed_dim(&self) -> usize {
        self.clip.embed_dim()
    }

    fn image_embeddings(&self, captions: &[String], _rng: &mut Rng) -> Result<Array2<f32>> {
        self.clip.text_embeddings(captions) // z_t in place of z_i
    }
}

/// Chapter 10's diffusion prior with its sampling settings.
pub struct DiffusionImagePrior<'a> {
    /// The prior and the CLIP it was trained on.
    pub prior: &'a UnclipPrior,
    /// Steps, guidance and candidates per caption.
    pub sampling: PriorSampling,
}

impl ImagePrior for DiffusionImagePrior<'_> {
    fn embed_dim(&self) -> usize {
        self.prior.clip.embed_dim()
    }

    fn image_embeddings(&self, captions: &[String], rng: &mut Rng) -> Result<Array2<f32>> {
        self.prior.sample(captions, &self.sampling, rng) // z_i ~ P(z_i | y)
    }
}

// ANCHOR: generate
/// Text to image: `z_i ~ prior(caption)`, then the decoder (guided by `z_i` and the
/// caption) and the upsampler. Errors: no caption or an empty one, or a prior whose
/// embedding width is not the decoder's.
pub fn generate(unclip: &Unclip, prior: &dyn ImagePrior, captions: &[String], rng: &mut Rng) -> Result<Decoded> {
    check_prompts(captions)?;
    let e = unclip.decoder.config.clip_dim;
    if prior.embed_dim() != e {
        return Err(Error::Config(format!("the prior makes embeddings of width {}, but the decoder takes CLIP embeddings of width E = {e}", prior.embed_dim())));
    }
    let z = prior.image_embeddings(captions, rng)?; // (N, E)
    let cond = unclip.condition(z, Some(captions))?;
    unclip.decode(&cond, None, rng)
}
// ANCHOR_END: generate
