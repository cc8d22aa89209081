//! What the prior sees and what it predicts, all from a frozen CLIP (chapter 03).
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
use crate::models::clip::zero_shot::image_embeddings;
use crate::models::clip::ClipModel;
use crate::nn::Forward;
use crate::tensor::no_grad;
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// The frozen CLIP and its tokenizer.
pub struct FrozenClip {
    /// The CLIP model (never trained here).
    pub model: ClipModel,
    /// Its tokenizer.
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

impl FrozenClip {
    /// The toy CLIP of chapter 03 (`weights/clip_mnist.safetensors` and the files beside it).
    #[cfg(feature = "trained-bpe")]
    pub fn load_toy(weights: &Path) -> Result<Self> {
        let (model, tokenizer) = crate::models::clip::load::load_toy(weights)?;
        Ok(FrozenClip { model, tokenizer: Box::new(tokenizer) })
    }

    /// The width `E` of CLIP's embeddings.
    pub fn embed_dim(&self) -> usize {
        self.model.config.projection_dim
    }

    /// The text transformer's width `C_text`.
    pub fn text_width(&self) -> usize {
        self.model.config.text_config.hidden_size
    }

    /// The text context `T`.
    pub fn context_length(&self) -> usize {
        self.model.config.text_config.max_position_embeddings
    }

    /// Encode `captions` (each distinct caption once: captioned MNIST has 50).
    /// Errors on an empty caption, naming its position.
    pub fn encode_captions(&self, captions: &[String]) -> Result<CaptionEncoding> {
        if let Some(i) = captions.iter().position(|c| c.trim().is_empty()) {
            return Err(Error::Config(format!("prior: caption {i} is empty; the prior needs a prompt to condition on")));
        }
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

    /// Unit-length CLIP image embeddings `z_i (N, E)` of images `(N, C, H, W)` in `[0, 1]`.
    /// Errors when the images are not the size CLIP was trained on.
    pub fn image_embeds(&self, images: &ArrayRef4<f32>) -> Result<Array2<f32>> {
        let v = &self.model.config.vision_config;
        let (_, c, h, w) = images.dim();
        if (c, h, w) != (v.num_channels, v.image_size, v.image_size) {
            return Err(Error::shape(
                "prior image embeddings",
                format!("images are {c}x{h}x{w}; this CLIP takes {}x{}x{}", v.num_channels, v.image_size, v.image_size),
            ));
        }
        image_embeddings(&self.model, normalize_unit(images).view(), 500)
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
