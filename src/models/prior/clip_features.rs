//! What the prior sees and what it predicts, all from a frozen CLIP (chapter 03); the
//! decoder of chapter 11 reads the same [`FrozenClip`] (its caption token states, [`TextStates`]).
//!
//! For a caption `y` and its image `x` (unCLIP §2, Figure 2):
//!
//! ```text
//! tokens(y)  = CLIP text transformer's last hidden states      (T, C_text)   the caption token encodings
//! z_t        = normalize(text_projection(pooled(y)))           (E)           the CLIP text embedding
//! z_i        = normalize(visual_projection(pooled(x)))         (E)           the CLIP image embedding
//! ```
//!
//! The diffusion prior works on `√E · z_i` rather than on the unit vector itself: each
//! coordinate of a unit vector in `E = 32` dimensions has variance about `1/E`, so the
//! noise of `q(x_t | x_0)` would drown the signal from the first steps on; scaled by `√E`
//! the coordinates have unit variance on average, like the images of chapter 08
//! (DALLE2-pytorch's `image_embed_scale`; the paper does not say how it scales).
//! Samples are normalised back to unit length, where CLIP's cosine similarities live.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array2, Array3, ArrayRef4, Axis};

use crate::models::clip::preprocess::normalize_unit;
use crate::models::clip::zero_shot::{image_embeddings, text_embeddings};
use crate::models::clip::ClipModel;
use crate::nn::Forward;
use crate::tensor::no_grad;
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// The frozen CLIP (chapter 03's toy model) and its tokenizer: what the prior (chapter 10)
/// and the decoder (chapter 11) read, never train.
pub struct FrozenClip {
    /// The two towers (never updated here).
    pub model: ClipModel,
    /// The tokenizer its text tower was trained with.
    pub tokenizer: Box<dyn TextTokenizer>,
}

/// The CLIP side of a batch of captions.
pub struct CaptionEncoding {
    /// The captions, as given.
    pub captions: Vec<String>,
    /// Token ids `(B, T)`, padded to CLIP's context `T`.
    pub ids: Array2<u32>,
    /// The text transformer's last hidden states `(B, T, C_text)`: the caption token encodings.
    pub tokens: Array3<f32>,
    /// Unit-length CLIP text embeddings `z_t`, `(B, E)`.
    pub text_embeds: Array2<f32>,
}

impl CaptionEncoding {
    /// Rows `index` of every field, in that order.
    pub fn select(&self, index: &[usize]) -> CaptionEncoding {
        CaptionEncoding {
            captions: index.iter().map(|&i| self.captions[i].clone()).collect(),
            ids: self.ids.select(Axis(0), index),
            tokens: self.tokens.select(Axis(0), index),
            text_embeds: self.text_embeds.select(Axis(0), index),
        }
    }

    /// The number of captions.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// True when there are no captions.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }
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

/// Errors if there is no caption or one is empty (or only spaces), naming its position.
pub fn check_prompts(captions: &[String]) -> Result<()> {
    if captions.is_empty() {
        return Err(Error::Config("no captions given: at least one prompt is required".into()));
    }
    if let Some(i) = captions.iter().position(|c| c.trim().is_empty()) {
        return Err(Error::Config(format!("caption {i} is empty: a prompt is required here (e.g. \"a handwritten 7\" or \"a small red circle\")")));
    }
    Ok(())
}

impl FrozenClip {
    /// A toy CLIP of chapter 03 (`weights/clip_mnist.safetensors` or `weights/clip_shapes.safetensors`,
    /// with its config and tokenizer beside it).
    #[cfg(feature = "trained-bpe")]
    pub fn load_toy(weights: &Path) -> Result<Self> {
        let (model, tokenizer) = crate::models::clip::load::load_toy(weights)?;
        Ok(FrozenClip { model, tokenizer: Box::new(tokenizer) })
    }

    /// `E`, the width of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        self.model.config.projection_dim
    }

    /// `C_text`, the width of the text tower's token states.
    pub fn text_width(&self) -> usize {
        self.model.config.text_config.hidden_size
    }

    /// `T`, the text context (caption tokens per row).
    pub fn context_length(&self) -> usize {
        self.model.config.text_config.max_position_embeddings
    }

    /// `(channels, side)` of the images the vision tower takes.
    pub fn image_shape(&self) -> (usize, usize) {
        let v = &self.model.config.vision_config;
        (v.num_channels, v.image_size)
    }

    /// Errors unless `images` is `(N >= 1, C, S, S)` for this CLIP's vision tower.
    pub fn check_images(&self, images: &ArrayRef4<f32>) -> Result<()> {
        let (c, s) = self.image_shape();
        let (n, ic, h, w) = images.dim();
        if n == 0 || ic != c || h != s || w != s {
            return Err(Error::shape("clip image", format!("images of shape ({n}, {ic}, {h}, {w}), {ic}x{h}x{w}: this CLIP takes (N >= 1, {c}, {s}, {s}), {c}x{s}x{s}, with pixels in [0, 1]")));
        }
        Ok(())
    }

    /// `z_i`: unit-length image embeddings `(N, E)` of `images (N, C, S, S)` in `[0, 1]`.
    pub fn image_embeddings(&self, images: &ArrayRef4<f32>) -> Result<Array2<f32>> {
        self.check_images(images)?;
        image_embeddings(&self.model, normalize_unit(images).view(), 256)
    }

    /// `z_t`: unit-length caption embeddings `(N, E)`; every caption must be non-empty.
    pub fn text_embeddings(&self, captions: &[String]) -> Result<Array2<f32>> {
        check_prompts(captions)?;
        text_embeddings(&self.model, self.tokenizer.as_ref(), captions, 256)
    }

    /// The prior's view of `captions` (each distinct caption encoded once): token ids, the
    /// text tower's last hidden states and `z_t`. Errors on an empty caption, naming its position.
    pub fn encode_captions(&self, captions: &[String]) -> Result<CaptionEncoding> {
        check_prompts(captions)?;
        let mut distinct: Vec<&str> = Vec::new();
        let mut row_of: HashMap<&str, usize> = HashMap::new();
        for c in captions {
            row_of.entry(c.as_str()).or_insert_with(|| {
                distinct.push(c.as_str());
                distinct.len() - 1
            });
        }
        let context = self.context_length();
        let ids = self.tokenizer.encode_batch(&distinct, context, false)?; // (D, T)
        let (tokens, text_embeds) = no_grad(|| -> Result<(Array3<f32>, Array2<f32>)> {
            let out = self.model.text_model.forward(&ids)?;
            let z = self.model.text_projection.forward(&out.pooled_output)?.l2_normalize(-1, 1e-12)?; // (D, E)
            let tokens = out.last_hidden_state.to_array().into_dimensionality::<ndarray::Ix3>().map_err(|e| Error::Msg(format!("prior: {e}")))?;
            let z = z.to_array().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Msg(format!("prior: {e}")))?;
            Ok((tokens, z))
        })?;
        let index: Vec<usize> = captions.iter().map(|c| row_of[c.as_str()]).collect();
        Ok(CaptionEncoding {
            captions: captions.to_vec(),
            ids: ids.select(Axis(0), &index),
            tokens: tokens.select(Axis(0), &index),
            text_embeds: text_embeds.select(Axis(0), &index),
        })
    }

    /// The decoder's view of `captions` (each non-empty): the text tower's last hidden states
    /// and their padding mask.
    pub fn text_states(&self, captions: &[String]) -> Result<TextStates> {
        check_prompts(captions)?;
        let refs: Vec<&str> = captions.iter().map(|s| s.as_str()).collect();
        let ids = self.tokenizer.encode_batch(&refs, self.context_length(), true)?; // (N, T)
        let eot = self.model.text_model.eot_positions(&ids)?;
        let states = no_grad(|| self.model.text_model.forward(&ids))?.last_hidden_state; // (N, T, C_text)
        let tokens = states.to_array().into_dimensionality::<ndarray::Ix3>().map_err(|e| Error::Msg(format!("clip text states: {e}")))?;
        let padding = Array2::from_shape_fn(ids.dim(), |(n, t)| t > eot[n]); // after EOT: padding
        Ok(TextStates { tokens, padding })
    }
}

/// `√E`: the prior works on `√E · z` (see the module docs).
pub fn embed_scale(embed_dim: usize) -> f32 {
    (embed_dim as f32).sqrt()
}

/// Unit-length rows of `x (N, E)`, `x / ‖x‖` (rows of zeros stay zero).
pub fn normalize_rows(x: &Array2<f32>) -> Array2<f32> {
    let mut out = x.clone();
    for mut row in out.rows_mut() {
        let norm = row.dot(&row).sqrt().max(1e-12);
        row.mapv_inplace(|v| v / norm);
    }
    out
}

/// Mean cosine similarity of the rows of `a` and `b` (both `(N, E)`), and each row's.
pub fn row_cosines(a: &Array2<f32>, b: &Array2<f32>) -> Result<(f64, Vec<f32>)> {
    if a.dim() != b.dim() {
        return Err(Error::shape("row_cosines", format!("{:?} and {:?}", a.dim(), b.dim())));
    }
    let (a, b) = (normalize_rows(a), normalize_rows(b));
    let per_row: Vec<f32> = a.rows().into_iter().zip(b.rows()).map(|(x, y)| x.dot(&y)).collect();
    let mean = per_row.iter().map(|&c| c as f64).sum::<f64>() / per_row.len().max(1) as f64;
    Ok((mean, per_row))
}

/// Errors unless `x` is `(N, expected)`: an image embedding of another width than the prior's.
pub fn check_width(what: &str, x: &Array2<f32>, expected: usize) -> Result<()> {
    if x.ncols() != expected {
        return Err(Error::shape(
            "prior",
            format!("{what} has width {} ({:?}), the prior's CLIP embedding width is {expected}", x.ncols(), x.dim()),
        ));
    }
    Ok(())
}
