//! From embeddings to images, and the edits that unCLIP's latent space allows (Ramesh et al. 2022, §3).
//!
//! - decode: `z_i` (and a caption) -> decoder (guided DDIM) -> 14x14 -> upsampler -> 28x28;
//! - variations (§3.1): `z_i = CLIP(x)`, decoded from new noise `x_T`: what CLIP keeps of `x`
//!   (the digit, its slant and weight) stays, the rest varies;
//! - interpolations (§3.1): `z_θ = slerp(z_1, z_2, θ)`, every `θ` decoded from the same `x_T`
//!   with deterministic DDIM, so only the embedding changes along the row;
//! - text diffs (§3.2): `z_d = normalize(z_t - z_t0)` for a new caption `t` and the current one
//!   `t0`, and `z_θ = slerp(z_i, z_d, θ)`: the image moves towards the new caption.

use ndarray::{concatenate, Array2, Array4, Axis};

use crate::models::prior::clip_features::FrozenClip;
use super::decoder::{DecoderCondition, UnclipDecoder};
use super::slerp::slerp;
use super::upsampler::{bilinear_upsample, gaussian_blur, Upsampler};
use crate::models::diffusion::{respace, to_model, to_pixels, Diffusion, Sampler};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// How the decoder and the upsampler sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// DDIM (η = 0) steps of the decoder.
    pub decoder_steps: usize,
    /// Classifier-free guidance scale of the decoder (1: unguided).
    pub guidance: f32,
    /// DDIM (η = 0) steps of the upsampler.
    pub upsampler_steps: usize,
    /// σ of the blur applied to the upsampler's input (as in training).
    pub blur_sigma: f32,
    /// Images per network batch.
    pub batch: usize,
}

/// Images in `[0, 1]` at the decoder's resolution and after upsampling.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The decoder's samples, `(N, C, h, h)`.
    pub low: Array4<f32>,
    /// The upsampler's samples `(N, C, H, H)` (bilinear interpolation when there is no upsampler).
    pub high: Array4<f32>,
}

/// The frozen CLIP, the decoder and (optionally) the upsampler, with their sampling settings.
pub struct Unclip<'a> {
    /// Image and caption embeddings.
    pub clip: &'a FrozenClip,
    /// `z_i` (+ caption) -> low-resolution image.
    pub decoder: &'a UnclipDecoder,
    /// Low -> full resolution; `None`: bilinear interpolation.
    pub upsampler: Option<&'a Upsampler>,
    /// The training schedule (shared by both models) and their ε prediction.
    pub diffusion: &'a Diffusion,
    /// Steps, guidance, blur.
    pub sampling: Sampling,
}

fn stack(parts: &[Array4<f32>]) -> Result<Array4<f32>> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("stack: {e}")))
}

fn check_noise(noise: Option<&Tensor>, shape: &[usize]) -> Result<()> {
    match noise {
        Some(z) if z.shape() != shape => Err(Error::shape("unclip noise", format!("x_T {:?}: expected {shape:?}", z.shape()))),
        _ => Ok(()),
    }
}

impl Unclip<'_> {
    /// The decoder's condition for `image_embeds (N, E)` and, if given, one caption per row.
    pub fn condition(&self, image_embeds: Array2<f32>, captions: Option<&[String]>) -> Result<DecoderCondition> {
        let text = match captions {
            Some(c) if c.len() != image_embeds.dim().0 => {
                return Err(Error::shape("unclip", format!("{} captions for {} image embeddings", c.len(), image_embeds.dim().0)));
            }
            Some(c) => Some(self.clip.text_states(c)?),
            None => None,
        };
        let cond = DecoderCondition { image_embeds, text };
        self.decoder.check_condition(&cond, cond.len())?;
        Ok(cond)
    }

    // ANCHOR: decode
    /// Samples images for `cond` (guided DDIM), then upsamples them. `noise`, if given, is
    /// the decoder's `x_T (N, C, h, h)` (the interpolation keeps it fixed); the upsampler's
    /// noise is drawn from `rng`.
    pub fn decode(&self, cond: &DecoderCondition, noise: Option<&Tensor>, rng: &mut Rng) -> Result<Decoded> {
        let low = self.decode_low(cond, noise, rng)?;
        let high = self.upsample(&low, rng)?;
        Ok(Decoded { low, high })
    }
    // ANCHOR_END: decode

    /// The decoder's samples alone, `(N, C, h, h)` in `[0, 1]` (see [`Unclip::decode`]).
    pub fn decode_low(&self, cond: &DecoderCondition, noise: Option<&Tensor>, rng: &mut Rng) -> Result<Array4<f32>> {
        let c = &self.decoder.config.unet;
        let n = cond.len();
        let shape = [n, c.in_channels, c.image_size, c.image_size];
        check_noise(noise, &shape)?;
        self.decoder.check_condition(cond, n)?;
        let timesteps = respace(self.diffusion.schedule.len(), self.sampling.decoder_steps)?;
        let x_t = match noise {
            Some(z) => z.clone(),
            None => Tensor::randn(&shape, rng), // x_T ~ N(0, I)
        };
        let mut lows = Vec::new();
        for start in (0..n).step_by(self.sampling.batch.max(1)) {
            let rows: Vec<usize> = (start..(start + self.sampling.batch.max(1)).min(n)).collect();
            let part = DecoderCondition { image_embeds: cond.image_embeds.select(Axis(0), &rows), text: cond.text.as_ref().map(|t| t.select(&rows)) };
            let x = x_t.index_select(0, &rows)?; // (b, C, h, h)
            let guided = self.decoder.guided(&part, self.sampling.guidance);
            lows.push(to_pixels(&Sampler::Ddim(0.0).sample(&guided, self.diffusion, x, &timesteps, rng, &mut |_, _| {})?)?);
        }
        stack(&lows)
    }

    /// `low (N, C, h, h)` in `[0, 1]` to full resolution: blurred by `σ = blur_sigma` as in
    /// training, then the upsampler (DDIM); bilinear interpolation when there is no upsampler.
    pub fn upsample(&self, low: &Array4<f32>, rng: &mut Rng) -> Result<Array4<f32>> {
        let Some(up) = self.upsampler else { return Ok(bilinear_upsample(low, 2)) };
        let (n, ch, h, w) = low.dim();
        let (c, l) = (up.channels(), up.low_size());
        if (ch, h, w) != (c, l, l) {
            return Err(Error::shape("upsampler", format!("low-resolution images ({n}, {ch}, {h}, {w}): expected (N, {c}, {l}, {l})")));
        }
        let side = up.unet.config.image_size;
        let timesteps = respace(self.diffusion.schedule.len(), self.sampling.upsampler_steps)?;
        let mut highs = Vec::new();
        for start in (0..n).step_by(self.sampling.batch.max(1)) {
            let end = (start + self.sampling.batch.max(1)).min(n);
            let y = to_model(&gaussian_blur(&low.slice(ndarray::s![start..end, .., .., ..]).to_owned(), self.sampling.blur_sigma)); // (b, C, h, h)
            let x_t = Tensor::randn(&[end - start, c, side, side], rng);
            highs.push(to_pixels(&Sampler::Ddim(0.0).sample(&up.with_low(y), self.diffusion, x_t, &timesteps, rng, &mut |_, _| {})?)?);
        }
        stack(&highs)
    }

    // ANCHOR: variations
    /// `per_image` variations of each of `images (N, C, H, W)` in `[0, 1]`: CLIP's image
    /// embedding decoded from new noise, no caption. Rows: image 0's variations, then image 1's...
    pub fn variations(&self, images: &Array4<f32>, per_image: usize, rng: &mut Rng) -> Result<Decoded> {
        let z = self.clip.image_embeddings(images)?; // (N, E): z_i = CLIP(x)
        let rows: Vec<usize> = (0..z.dim().0).flat_map(|i| std::iter::repeat_n(i, per_image)).collect();
        let cond = self.condition(z.select(Axis(0), &rows), None)?;
        self.decode(&cond, None, rng) // a new x_T for every row
    }
    // ANCHOR_END: variations

    // ANCHOR: interpolate
    /// `steps ≥ 2` images from `a` to `b` (each `(1, C, H, W)` in `[0, 1]`): their CLIP
    /// embeddings slerped at `θ = 0 .. 1` and decoded from one shared `x_T`.
    pub fn interpolate(&self, a: &Array4<f32>, b: &Array4<f32>, steps: usize, rng: &mut Rng) -> Result<Decoded> {
        if steps < 2 || a.dim().0 != 1 || b.dim().0 != 1 {
            return Err(Error::Config(format!("interpolate: one image at each end ({} and {} given) and at least 2 steps ({steps})", a.dim().0, b.dim().0)));
        }
        let (za, zb) = (self.clip.image_embeddings(a)?, self.clip.image_embeddings(b)?); // (1, E) each
        let path: Vec<_> = (0..steps).map(|i| slerp(za.row(0), zb.row(0), i as f32 / (steps - 1) as f32)).collect::<Result<_>>()?;
        let z = ndarray::stack(Axis(0), &path.iter().map(|v| v.view()).collect::<Vec<_>>()).map_err(|e| Error::Msg(e.to_string()))?; // (steps, E)
        self.decode_shared_noise(z, rng)
    }
    // ANCHOR_END: interpolate

    // ANCHOR: text_diff
    /// Text diffs: `image (1, C, H, W)` captioned `from` moved towards caption `to`:
    /// `z_d = normalize(z_to - z_from)`, `z_θ = slerp(z_i, z_d, θ)` for each `θ` in `thetas`,
    /// decoded from one shared `x_T` without a caption.
    pub fn text_diff(&self, image: &Array4<f32>, from: &str, to: &str, thetas: &[f32], rng: &mut Rng) -> Result<Decoded> {
        if image.dim().0 != 1 || thetas.is_empty() {
            return Err(Error::Config(format!("text_diff: one image ({} given) and at least one θ", image.dim().0)));
        }
        let zi = self.clip.image_embeddings(image)?; // (1, E)
        let zt = self.clip.text_embeddings(&[from.to_string(), to.to_string()])?; // (2, E)
        let diff = &zt.row(1) - &zt.row(0); // z_to - z_from (slerp normalises it)
        let path: Vec<_> = thetas.iter().map(|&t| slerp(zi.row(0), diff.view(), t)).collect::<Result<_>>()?;
        let z = ndarray::stack(Axis(0), &path.iter().map(|v| v.view()).collect::<Vec<_>>()).map_err(|e| Error::Msg(e.to_string()))?; // (θs, E)
        self.decode_shared_noise(z, rng)
    }
    // ANCHOR_END: text_diff

    /// Decodes every row of `z (N, E)` from the same `x_T` (and the same upsampler noise).
    fn decode_shared_noise(&self, z: Array2<f32>, rng: &mut Rng) -> Result<Decoded> {
        let n = z.dim().0;
        let c = &self.decoder.config.unet;
        let one = Tensor::randn(&[1, c.in_channels, c.image_size, c.image_size], rng); // the shared x_T
        let noise = one.index_select(0, &vec![0; n])?; // (N, C, h, h)
        let cond = self.condition(z, None)?;
        let seed = rng.below(u32::MAX as usize) as u64;
        let low = self.decode_low(&cond, Some(&noise), rng)?;
        // the upsampler draws its noise per batch: give every row the same one by upsampling them one seed at a time
        let rows: Vec<Array4<f32>> = (0..n).map(|i| self.upsample(&low.slice(ndarray::s![i..i + 1, .., .., ..]).to_owned(), &mut Rng::new(seed))).collect::<Result<_>>()?;
        Ok(Decoded { low, high: stack(&rows)? })
    }
}
