//! The frozen CLIP that unCLIP is built around (chapter 03's toy CLIP on captioned MNIST).
//!
//! The decoder and the upsampler never train it; they read three things from it:
//! - the unit-length image embedding `z_i = normalize(I_e(x))`, `(N, E)`, what the decoder
//!   inverts (Ramesh et al. 2022, §2);
//! - the unit-length caption embedding `z_t`, `(N, E)`, used for text diffs and by the
//!   stand-in prior;
//! - the text tower's last hidden states `(N, T, C_text)` with their padding mask: the
//!   decoder's caption tokens. GLIDE trains its own text encoder (chapter 09); here the
//!   frozen CLIP text tower stands in for it.

use ndarray::{Array2, Array3, Array4, ArrayRef4, Axis};

use crate::models::clip::preprocess::normalize_unit;
use crate::models::clip::zero_shot::{image_embeddings, text_embeddings};
use crate::models::clip::ClipModel;
use crate::tensor::no_grad;
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// A frozen CLIP and its tokenizer.
pub struct FrozenClip {
    /// The two towers (never updated here).
    pub model: ClipModel,
    /// The tokenizer its text tower was trained with.
    pub tokenizer: Box<dyn TextTokenizer>,
}

/// Caption token states for the decoder's context: `tokens (N, T, C_text)` and
/// `padding (N, T)`, `true` after each caption's end-of-text token (and on every
/// token of a caption dropped for guidance).
#[derive(Debug, Clone, PartialEq)]
pub struct TextStates {
    /// `(N, T, C_text)`
    pub tokens: Array3<f32>,
    /// `(N, T)`, `true` = not attended to.
    pub padding: Array2<bool>,
}

impl TextStates {
    /// The rows `rows` (in that order).
    pub fn select(&self, rows: &[usize]) -> TextStates {
        TextStates { tokens: self.tokens.select(Axis(0), rows), padding: self.padding.select(Axis(0), rows) }
    }

    /// Number of captions.
    pub fn len(&self) -> usize {
        self.tokens.dim().0
    }

    /// True when there are no captions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors if a caption is empty (or only spaces): a required prompt.
pub fn check_prompts(captions: &[String]) -> Result<()> {
    if captions.is_empty() {
        return Err(Error::Config("no captions given: at least one prompt is required".into()));
    }
    if let Some(i) = captions.iter().position(|c| c.trim().is_empty()) {
        return Err(Error::Config(format!("caption {i} is empty: a prompt is required here (e.g. \"a handwritten 7\")")));
    }
    Ok(())
}

impl FrozenClip {
    /// The toy CLIP of chapter 03 (`weights/clip_mnist.safetensors` with its config and tokenizer beside it).
    #[cfg(feature = "trained-bpe")]
    pub fn load_toy(weights: &std::path::Path) -> Result<Self> {
        let (model, tokenizer) = crate::models::clip::load::load_toy(weights)?;
        Ok(FrozenClip { model, tokenizer: Box::new(tokenizer) })
    }

    /// `E`, the width of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        self.model.config.projection_dim
    }

    /// `C_text`, the width of the text tower's token states.
    pub fn text_dim(&self) -> usize {
        self.model.config.text_config.hidden_size
    }

    /// `(channels, side)` of the images the vision tower takes.
    pub fn image_shape(&self) -> (usize, usize) {
        let v = &self.model.config.vision_config;
        (v.num_channels, v.image_size)
    }

    /// Errors unless `images` is `(N ≥ 1, C, S, S)` for this CLIP's vision tower.
    pub fn check_images(&self, images: &ArrayRef4<f32>) -> Result<()> {
        let (c, s) = self.image_shape();
        let (n, ic, h, w) = images.dim();
        if n == 0 || ic != c || h != s || w != s {
            return Err(Error::shape("clip image", format!("images of shape ({n}, {ic}, {h}, {w}): CLIP expects (N >= 1, {c}, {s}, {s}) with pixels in [0, 1]")));
        }
        Ok(())
    }

    /// `z_i`: unit-length image embeddings `(N, E)` of `images (N, C, S, S)` in `[0, 1]`.
    pub fn image_embeddings(&self, images: &Array4<f32>) -> Result<Array2<f32>> {
        self.check_images(images)?;
        image_embeddings(&self.model, normalize_unit(images).view(), 256)
    }

    /// `z_t`: unit-length caption embeddings `(N, E)`; every caption must be non-empty.
    pub fn text_embeddings(&self, captions: &[String]) -> Result<Array2<f32>> {
        check_prompts(captions)?;
        text_embeddings(&self.model, self.tokenizer.as_ref(), captions, 256)
    }

    /// The text tower's last hidden states and padding mask for `captions` (each non-empty).
    pub fn text_states(&self, captions: &[String]) -> Result<TextStates> {
        check_prompts(captions)?;
        let context = self.model.config.text_config.max_position_embeddings;
        let refs: Vec<&str> = captions.iter().map(|s| s.as_str()).collect();
        let ids = self.tokenizer.encode_batch(&refs, context, true)?; // (N, T)
        let eot = self.model.text_model.eot_positions(&ids)?;
        let states = no_grad(|| self.model.text_model.forward(&ids))?.last_hidden_state; // (N, T, C_text)
        let tokens = states.to_array().into_dimensionality::<ndarray::Ix3>().map_err(|e| Error::Msg(format!("clip text states: {e}")))?;
        let padding = Array2::from_shape_fn(ids.dim(), |(n, t)| t > eot[n]); // after EOT: padding
        Ok(TextStates { tokens, padding })
    }
}
