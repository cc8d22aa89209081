//! The variational autoencoder (Kingma & Welling 2013).
//!
//! An encoder `q_φ(z | x) = N(μ_φ(x), diag σ²_φ(x))` and a decoder `p_θ(x | z)`
//! (a Bernoulli per pixel, with logits from the network) are trained together by
//! maximising the evidence lower bound (§2.2, eq. 3):
//!
//! ```text
//! ln p(x) ≥ ELBO = E_{q(z|x)} [ln p_θ(x | z)] - KL(q_φ(z | x) ‖ N(0, I))
//! ```
//!
//! The expectation is estimated with one sample drawn by the reparameterisation
//! trick (§2.4), `z = μ + σ ⊙ ε` with `ε ~ N(0, I)`, so gradients flow into μ
//! and σ. The KL between two Gaussians has a closed form (Appendix B):
//!
//! ```text
//! KL(N(μ, σ²) ‖ N(0, 1)) = -1/2 Σ_j (1 + ln σ_j² - μ_j² - σ_j²)
//! ```
//!
//! The encoder predicts `ln σ²` rather than σ so that the variance is positive
//! without a constraint.

use ndarray::Array4;

use super::vqvae::to_array4;
use crate::data::ImageDataset;
use crate::nn::{visit_child, Conv2d, Forward, Linear, Module};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// Hyper-parameters of a [`Vae`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Image side (divisible by 4).
    pub image_size: usize,
    /// Convolution channels.
    pub hidden: usize,
    /// Latent dimension (2 gives the manifold and scatter plots).
    pub latent_dim: usize,
}

impl VaeConfig {
    /// MNIST with a `latent_dim`-dimensional latent.
    pub fn mnist(latent_dim: usize) -> Self {
        VaeConfig { in_channels: 1, image_size: 28, hidden: 32, latent_dim }
    }
}

/// Convolutional encoder to `(μ, ln σ²)` and decoder from `z` to pixel logits.
pub struct Vae {
    /// 4x4 stride 2: `C -> hidden`, `H -> H/2`.
    pub enc_conv1: Conv2d,
    /// 4x4 stride 2: `hidden -> hidden`, `H/2 -> H/4`.
    pub enc_conv2: Conv2d,
    /// `hidden·(H/4)² -> 2·latent` (μ and ln σ² side by side).
    pub enc_head: Linear,
    /// `latent -> hidden·(H/4)²`.
    pub dec_input: Linear,
    /// After a nearest 2x upsampling: 3x3, `hidden -> hidden`.
    pub dec_conv1: Conv2d,
    /// After a nearest 2x upsampling: 3x3, `hidden -> C` logits.
    pub dec_conv2: Conv2d,
    /// The hyper-parameters.
    pub config: VaeConfig,
}

/// One pass: the posterior, the sample and the two terms of the ELBO.
pub struct VaeOutput {
    /// `μ (B, latent)`.
    pub mu: Tensor,
    /// `ln σ² (B, latent)`.
    pub log_var: Tensor,
    /// Pixel logits of the reconstruction `(B, C, H, W)`.
    pub logits: Tensor,
    /// `-ln p(x | z)` in nats per image, averaged over the batch.
    pub reconstruction: Tensor,
    /// `KL(q(z|x) ‖ N(0, I))` in nats per image, averaged over the batch.
    pub kl: Tensor,
}

impl VaeOutput {
    /// The negative ELBO (nats per image): the loss to minimise.
    pub fn loss(&self) -> Result<Tensor> {
        self.reconstruction.add(&self.kl)
    }
}

// ANCHOR: kl
/// `KL(N(μ, σ²) ‖ N(0, I)) = -1/2 Σ_j (1 + ln σ_j² - μ_j² - σ_j²)` per row of `(B, latent)`: `(B)`.
pub fn gaussian_kl(mu: &Tensor, log_var: &Tensor) -> Result<Tensor> {
    let inner = log_var.add_scalar(1.0).sub(&mu.square())?.sub(&log_var.exp())?; // 1 + ln σ² - μ² - σ²
    Ok(inner.sum_axes(&[-1], false)?.scale(-0.5))
}
// ANCHOR_END: kl

// ANCHOR: reparameterize
/// `z = μ + σ ⊙ ε`, `σ = exp(ln σ² / 2)`, `ε ~ N(0, I)` from `rng`.
pub fn reparameterize(mu: &Tensor, log_var: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    let eps = Tensor::randn(&mu.shape(), rng);
    mu.add(&log_var.scale(0.5).exp().mul(&eps)?)
}
// ANCHOR_END: reparameterize

impl Vae {
    /// A model with random weights. Errors unless the image side is divisible by 4.
    pub fn new(config: VaeConfig, rng: &mut Rng) -> Result<Self> {
        let VaeConfig { in_channels: c, image_size: s, hidden, latent_dim } = config;
        if c == 0 || hidden == 0 || latent_dim == 0 || s == 0 || s % 4 != 0 {
            return Err(Error::Config(format!(
                "vae: in_channels = {c}, hidden = {hidden}, latent_dim = {latent_dim} must be positive and image_size = {s} divisible by 4"
            )));
        }
        let flat = hidden * (s / 4) * (s / 4);
        Ok(Vae {
            enc_conv1: Conv2d::new(c, hidden, 4, 2, 1, true, rng),
            enc_conv2: Conv2d::new(hidden, hidden, 4, 2, 1, true, rng),
            enc_head: Linear::new(flat, 2 * latent_dim, true, rng),
            dec_input: Linear::new(latent_dim, flat, true, rng),
            dec_conv1: Conv2d::new(hidden, hidden, 3, 1, 1, true, rng),
            dec_conv2: Conv2d::new(hidden, c, 3, 1, 1, true, rng),
            config,
        })
    }

    /// `x (B, C, H, W)` -> `(μ, ln σ²)`, each `(B, latent)`.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let s = x.shape();
        let VaeConfig { in_channels: c, image_size, latent_dim, .. } = self.config;
        if s.len() != 4 || s[1] != c || s[2] != image_size || s[3] != image_size {
            return Err(Error::shape("vae", format!("input {s:?} must be (B, {c}, {image_size}, {image_size})")));
        }
        let h = self.enc_conv1.forward(x)?.relu(); // (B, hidden, H/2, W/2)
        let h = self.enc_conv2.forward(&h)?.relu(); // (B, hidden, H/4, W/4)
        let stats = self.enc_head.forward(&h.flatten_from(1)?)?; // (B, 2·latent)
        Ok((stats.narrow(-1, 0, latent_dim)?, stats.narrow(-1, latent_dim, latent_dim)?))
    }

    /// `z (B, latent)` -> pixel logits `(B, C, H, W)`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let q = (self.config.image_size / 4) as isize;
        let h = self.dec_input.forward(z)?.relu(); // (B, hidden·(H/4)²)
        let h = h.reshape(&[-1, self.config.hidden as isize, q, q])?; // (B, hidden, H/4, W/4)
        let h = self.dec_conv1.forward(&h.upsample_nearest2d(2)?)?.relu(); // (B, hidden, H/2, W/2)
        self.dec_conv2.forward(&h.upsample_nearest2d(2)?) // (B, C, H, W)
    }

    // ANCHOR: forward
    /// Encode, sample `z` by reparameterisation, decode; the ELBO's two terms.
    pub fn forward(&self, x: &Tensor, rng: &mut Rng) -> Result<VaeOutput> {
        let (mu, log_var) = self.encode(x)?; // (B, latent) each
        let z = reparameterize(&mu, &log_var, rng)?; // z = μ + σ ⊙ ε
        let logits = self.decode(&z)?; // (B, C, H, W)
        let pixels = (x.len() / x.dim(0)) as f32;
        // -ln p(x | z) = Σ_pixels BCE, averaged over the batch
        let reconstruction = logits.bce_with_logits(x)?.scale(pixels);
        let kl = gaussian_kl(&mu, &log_var)?.mean(); // closed form, averaged over the batch
        Ok(VaeOutput { mu, log_var, logits, reconstruction, kl })
    }
    // ANCHOR_END: forward

    /// `n` images decoded from `z ~ N(0, I)`.
    pub fn sample_prior(&self, n: usize, rng: &mut Rng) -> Result<Array4<f32>> {
        let z = Tensor::randn(&[n, self.config.latent_dim], rng);
        to_array4(&no_grad(|| self.decode(&z))?.sigmoid())
    }

    /// Decodes `steps` points on the line from `μ(a)` to `μ(b)` (`a`, `b`: `(1, C, H, W)`).
    pub fn interpolate(&self, a: &Tensor, b: &Tensor, steps: usize) -> Result<Array4<f32>> {
        no_grad(|| {
            let (za, _) = self.encode(a)?;
            let (zb, _) = self.encode(b)?;
            let points = (0..steps)
                .map(|i| {
                    let t = i as f32 / (steps.max(2) - 1) as f32;
                    za.scale(1.0 - t).add(&zb.scale(t)) // (1 - t) z_a + t z_b
                })
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = points.iter().collect();
            to_array4(&self.decode(&Tensor::concat(&refs, 0)?)?.sigmoid())
        })
    }

    /// For a 2-D latent: decodes an `n x n` grid of z over `[-range, range]²`
    /// (rows top to bottom: z₂ decreasing; columns: z₁ increasing).
    pub fn manifold(&self, n: usize, range: f32) -> Result<Array4<f32>> {
        if self.config.latent_dim != 2 {
            return Err(Error::Config(format!("the manifold plot needs a 2-D latent, this model has {}", self.config.latent_dim)));
        }
        let coord = |i: usize| -range + 2.0 * range * i as f32 / (n.max(2) - 1) as f32;
        let values: Vec<f32> = (0..n * n).flat_map(|k| [coord(k % n), -coord(k / n)]).collect();
        let z = Tensor::from_vec(values, &[n * n, 2])?;
        to_array4(&no_grad(|| self.decode(&z))?.sigmoid())
    }

    /// The test-set ELBO terms (nats per image, one sample of z per image): (-ELBO, reconstruction, KL).
    pub fn evaluate(&self, data: &ImageDataset, batch_size: usize, rng: &mut Rng) -> Result<(f64, f64, f64)> {
        let (mut rec, mut kl) = (0.0, 0.0);
        let n = data.len();
        for start in (0..n).step_by(batch_size.max(1)) {
            let idx: Vec<usize> = (start..(start + batch_size.max(1)).min(n)).collect();
            let x = Tensor::new(data.batch(&idx).0.into_dyn());
            let out = no_grad(|| self.forward(&x, rng))?;
            rec += out.reconstruction.item() as f64 * idx.len() as f64;
            kl += out.kl.item() as f64 * idx.len() as f64;
        }
        let (rec, kl) = (rec / n.max(1) as f64, kl / n.max(1) as f64);
        Ok((rec + kl, rec, kl))
    }
}

impl Module for Vae {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("encoder.conv1", &self.enc_conv1, f);
        visit_child("encoder.conv2", &self.enc_conv2, f);
        visit_child("encoder.head", &self.enc_head, f);
        visit_child("decoder.input", &self.dec_input, f);
        visit_child("decoder.conv1", &self.dec_conv1, f);
        visit_child("decoder.conv2", &self.dec_conv2, f);
    }
}
