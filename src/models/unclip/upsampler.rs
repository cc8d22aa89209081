//! The diffusion upsampler (Ramesh et al. 2022, §2.1; Saharia et al. 2021, SR3): a diffusion
//! model of the high-resolution image conditioned on the low-resolution one.
//!
//! The low-resolution image `y (B, C, H/f, W/f)` is upsampled (nearest) to full size and
//! concatenated to `x_t` as extra input channels, so the U-Net sees
//! `[x_t ; up(y)] (B, 2C, H, W)`; it predicts ε for `x_t`. Chapter 08's U-Net has as many
//! output channels as input channels: the first `C` are ε̂, the rest are unused.
//!
//! unCLIP's upsamplers are trained on a corrupted `y`, so that they forgive the decoder's
//! flaws: Gaussian blur for the first stage. Here `y` is blurred with a 3x3 Gaussian of
//! σ drawn from `[0.4, 0.6]` low-resolution pixels in training (our choice: the paper
//! gives no σ), and with the middle σ = 0.5 at sampling time.

use ndarray::Array4;

use crate::models::diffusion::{Denoiser, UNet, UNetConfig};
use crate::nn::{visit_child, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// The blur σ range of training, in low-resolution pixels.
pub const TRAIN_BLUR_SIGMA: (f32, f32) = (0.4, 0.6);
/// The blur σ applied to the low-resolution input at sampling time.
pub const SAMPLE_BLUR_SIGMA: f32 = 0.5;

/// A U-Net over `[x_t ; up(y)]`.
pub struct Upsampler {
    /// `in_channels = 2C` (ε̂ is the first `C` output channels).
    pub unet: UNet,
    /// The resolution factor `f` (2: 14x14 -> 28x28).
    pub factor: usize,
}

impl Upsampler {
    /// The chapter's 14x14 -> 28x28 upsampler: 16/32/32 channels at 28/14/7, attention only in the middle.
    pub fn mnist_config() -> UNetConfig {
        UNetConfig {
            in_channels: 2,
            image_size: 28,
            base_channels: 16,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attention_resolutions: vec![],
            heads: 4,
            groups: 8,
            context_dim: None,
        }
    }

    /// The 16x16 -> 32x32 upsampler for Shapes: MNIST's U-Net at 32/16/8 over `[x_t ; up(y)]`, 3 + 3 channels.
    pub fn shapes_config() -> UNetConfig {
        UNetConfig { in_channels: 6, image_size: 32, ..Upsampler::mnist_config() }
    }

    /// An upsampler by `factor` with random weights; `config.in_channels` must be even (`2C`).
    pub fn new(config: UNetConfig, factor: usize, rng: &mut Rng) -> Result<Self> {
        if !config.in_channels.is_multiple_of(2) || factor < 2 || !config.image_size.is_multiple_of(factor) {
            return Err(Error::Config(format!(
                "upsampler: in_channels = {} must be 2C (image and low-resolution channels), factor = {factor} at least 2 and dividing image_size = {}",
                config.in_channels, config.image_size
            )));
        }
        Ok(Upsampler { unet: UNet::new(config, rng)?, factor })
    }

    /// `C`, the image channels.
    pub fn channels(&self) -> usize {
        self.unet.config.in_channels / 2
    }

    /// The low-resolution side, `H / f`.
    pub fn low_size(&self) -> usize {
        self.unet.config.image_size / self.factor
    }

    // ANCHOR: forward
    /// `x_t (B, C, H, W)` at timesteps `t`, conditioned on `low (B, C, H/f, W/f)` -> ε̂ `(B, C, H, W)`.
    pub fn forward(&self, x: &Tensor, t: &[usize], low: &Tensor) -> Result<Tensor> {
        let (c, l) = (self.channels(), self.low_size());
        if low.shape() != [x.dim(0), c, l, l] {
            return Err(Error::shape("upsampler", format!("low-resolution input {:?}: expected (B = {}, {c}, {l}, {l})", low.shape(), x.dim(0))));
        }
        let up = low.upsample_nearest2d(self.factor)?; // (B, C, H, W)
        let input = Tensor::concat(&[x, &up], 1)?; // [x_t ; up(y)]: (B, 2C, H, W)
        let t: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        self.unet.forward(&input, &t, None, None)?.narrow(1, 0, c) // ε̂: the first C channels
    }
    // ANCHOR_END: forward

    /// A [`Denoiser`] conditioned on `low` (in the model's `[-1, 1]`).
    pub fn with_low(&self, low: Tensor) -> UpsamplerDenoiser<'_> {
        UpsamplerDenoiser { model: self, low }
    }
}

impl Module for Upsampler {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("unet", &self.unet, f);
    }
}

/// The upsampler with its low-resolution input fixed.
pub struct UpsamplerDenoiser<'a> {
    model: &'a Upsampler,
    low: Tensor,
}

impl Denoiser for UpsamplerDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.model.forward(x_t, t, &self.low)
    }
}

// ANCHOR: corrupt
/// `images (N, C, H, W)` blurred by a 3x3 Gaussian of standard deviation `sigma` pixels,
/// `k(d) ∝ exp(-d² / 2σ²)` normalised to sum 1, borders clamped (replicated).
pub fn gaussian_blur(images: &Array4<f32>, sigma: f32) -> Array4<f32> {
    let w = [(-1.0 / (2.0 * sigma * sigma)).exp(), 1.0, (-1.0 / (2.0 * sigma * sigma)).exp()];
    let sum: f32 = w.iter().sum();
    let k = w.map(|v| v / sum); // separable: the 2-D kernel is k kᵀ
    let (_, _, h, wd) = images.dim();
    let pass = |src: &Array4<f32>, horizontal: bool| {
        Array4::from_shape_fn(src.dim(), |(n, c, y, x)| {
            (0..3)
                .map(|i| {
                    let (yy, xx) = if horizontal { (y, (x + i).saturating_sub(1).min(wd - 1)) } else { ((y + i).saturating_sub(1).min(h - 1), x) };
                    k[i] * src[[n, c, yy, xx]]
                })
                .sum()
        })
    };
    pass(&pass(images, true), false)
}
// ANCHOR_END: corrupt

/// `images (N, C, H, W)` averaged over `f x f` blocks: `(N, C, H/f, W/f)`.
pub fn downsample(images: &Array4<f32>, factor: usize) -> Array4<f32> {
    let (n, c, h, w) = images.dim();
    let area = (factor * factor) as f32;
    Array4::from_shape_fn((n, c, h / factor, w / factor), |(i, ch, y, x)| {
        let mut s = 0.0;
        for dy in 0..factor {
            for dx in 0..factor {
                s += images[[i, ch, y * factor + dy, x * factor + dx]];
            }
        }
        s / area
    })
}

/// Bilinear upsampling by an integer `factor` (half-pixel centres, PyTorch's
/// `F.interpolate(mode="bilinear", align_corners=False)`): the interpolation baseline.
pub fn bilinear_upsample(images: &Array4<f32>, factor: usize) -> Array4<f32> {
    let (n, c, h, w) = images.dim();
    // source coordinate of output pixel o: (o + 0.5)/f - 0.5, clamped to the image
    let coord = |o: usize, len: usize| -> (usize, usize, f32) {
        let s = ((o as f32 + 0.5) / factor as f32 - 0.5).clamp(0.0, (len - 1) as f32);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(len - 1), s - i0 as f32)
    };
    Array4::from_shape_fn((n, c, h * factor, w * factor), |(i, ch, y, x)| {
        let (y0, y1, fy) = coord(y, h);
        let (x0, x1, fx) = coord(x, w);
        let top = images[[i, ch, y0, x0]] * (1.0 - fx) + images[[i, ch, y0, x1]] * fx;
        let bottom = images[[i, ch, y1, x0]] * (1.0 - fx) + images[[i, ch, y1, x1]] * fx;
        top * (1.0 - fy) + bottom * fy
    })
}
