//! The image tokenizer role: images to a grid of discrete tokens and back.
//!
//! DALL-E 1 (chapter 07) models `p(text tokens, image tokens)` with one
//! transformer; the image tokens come from a discrete autoencoder. Both the
//! VQ-VAE (chapter 05) and the dVAE (chapter 06) can play that part.

use ndarray::{Array3, Array4, Axis};

use crate::data::ImageDataset;
use crate::{Error, Result};

/// An autoencoder with a discrete latent: a grid of token ids per image.
pub trait ImageTokenizer {
    /// Images `(B, C, H, W)` in `[0, 1]` -> token ids `(B, h, w)`, each below [`ImageTokenizer::vocab_size`].
    fn encode(&self, images: &Array4<f32>) -> Result<Array3<usize>>;
    /// Token ids `(B, h, w)` -> images `(B, C, H, W)` in `[0, 1]`; errors on an id beyond the vocabulary.
    fn decode(&self, tokens: &Array3<usize>) -> Result<Array4<f32>>;
    /// The number of distinct tokens K.
    fn vocab_size(&self) -> usize;
    /// How many pixels one token spans along each side (`H / h`).
    fn downsampling(&self) -> usize;
    /// The token grid `(h, w)` of an `(height, width)` image.
    fn grid(&self, height: usize, width: usize) -> (usize, usize) {
        (height / self.downsampling(), width / self.downsampling())
    }
}

/// `decode(encode(x))` of every image of `data`, in batches of `batch`: `(N, C, H, W)` in `[0, 1]`.
pub fn reconstruct(tokenizer: &dyn ImageTokenizer, data: &ImageDataset, batch: usize) -> Result<Array4<f32>> {
    let batch = batch.max(1);
    let mut parts = Vec::new();
    for start in (0..data.len()).step_by(batch) {
        let (images, _) = data.batch(&(start..(start + batch).min(data.len())).collect::<Vec<_>>()); // (b, C, H, W)
        parts.push(tokenizer.decode(&tokenizer.encode(&images)?)?);
    }
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("reconstruct {} images: {e}", data.len())))
}

/// Token grids `(B, h, w)` as RGB images `(B, 3, h, w)`: each id gets a fixed
/// colour (golden-ratio hues), so equal ids look equal across images.
pub fn colour_tokens(tokens: &Array3<usize>) -> Array4<f32> {
    let (b, h, w) = tokens.dim();
    Array4::from_shape_fn((b, 3, h, w), |(i, c, y, x)| {
        let hue = (tokens[[i, y, x]] as f32 * 0.618_034).fract();
        let value = 0.55 + 0.45 * ((tokens[[i, y, x]] / 7) % 2) as f32;
        hsv_channel(hue, 0.75, value, c)
    })
}

/// Channel `c` (0 = R, 1 = G, 2 = B) of the colour with hue, saturation and value in `[0, 1]`.
fn hsv_channel(hue: f32, sat: f32, value: f32, c: usize) -> f32 {
    let n = [5.0, 3.0, 1.0][c];
    let k = (n + hue * 6.0) % 6.0;
    value - value * sat * k.min(4.0 - k).clamp(0.0, 1.0)
}
