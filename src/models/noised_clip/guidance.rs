//! CLIP guidance (GLIDE §2.4; Dhariwal & Nichol 2021, §4 and Algorithm 2) as a [`Denoiser`].
//!
//! GLIDE shifts the reverse process's mean along the gradient of the noised CLIP's score
//! of the caption, with `f̂`, `ĝ` the unit image and text embeddings:
//!
//! ```text
//! μ̂_θ(x_t | c) = μ_θ(x_t) + s Σ_θ(x_t) ∇_{x_t} (f̂(x_t, t) · ĝ(c))            (GLIDE eq. 3)
//! ```
//!
//! The same shift written on the noise prediction (Dhariwal & Nichol eq. 14, Algorithm 2,
//! with the classifier's `log p(y | x_t)` replaced by the CLIP score):
//!
//! ```text
//! ε̂'(x_t) = ε̂(x_t) - s √(1 - ᾱ_t) ∇_{x_t} (f̂(x_t, t) · ĝ(c))
//! ```
//!
//! In ε-form the guidance is a [`Denoiser`] like any other, so every chapter 08 sampler
//! (DDPM, DDIM, Euler, Heun) can be CLIP-guided; the wrapped model's `x_0` or `v` output is
//! converted to ε, shifted, and converted back. For one DDPM step, whose mean is
//! `μ = (x_t - β_t/√(1 - ᾱ_t) ε̂)/√α_t`, the ε-form moves the mean by `s β_t/√α_t ∇` and
//! GLIDE's form by `s Σ ∇`: with `Σ = β_t` the two differ by the factor `1/√α_t`, within
//! 1 % of 1 on the linear schedule (`β_t ≤ 0.02`).
//! The gradient is taken inside [`enable_grad`] (the samplers run in `no_grad`) with the
//! CLIP frozen, so it flows to `x_t` only.

use super::model::NoisedClip;
use crate::models::diffusion::{Denoiser, NoiseSchedule, Prediction};
use crate::tensor::{enable_grad, Tensor};
use crate::{Error, Result};

/// A denoiser steered toward captions by a noised CLIP.
pub struct ClipGuided<'a, D> {
    /// The wrapped prediction (e.g. chapter 08's U-Net with the null class).
    pub model: D,
    /// What `model` predicts.
    pub prediction: Prediction,
    /// The schedule `model` was trained with (`ᾱ_t`).
    pub schedule: &'a NoiseSchedule,
    /// The noised CLIP (frozen by [`ClipGuided::new`]).
    pub clip: &'a NoisedClip,
    /// Unit-length caption embeddings `ĝ(c)`, one row per sample `(B, E)`, or one row for all.
    pub text: Tensor,
    /// The guidance scale `s ≥ 0`; 0 returns the wrapped prediction unchanged.
    pub scale: f32,
}

impl<'a, D: Denoiser> ClipGuided<'a, D> {
    /// Guides `model` toward `text` (`(B, E)` or `(1, E)` unit embeddings, e.g. from
    /// [`NoisedClip::caption_embeds`]) with scale `s`. Errors: a negative or non-finite
    /// scale, a CLIP not trained on noised images or on another schedule length, text
    /// embeddings of the wrong width. Freezes `clip`'s parameters.
    pub fn new(model: D, prediction: Prediction, schedule: &'a NoiseSchedule, clip: &'a NoisedClip, text: Tensor, scale: f32) -> Result<Self> {
        if !scale.is_finite() || scale < 0.0 {
            return Err(Error::Config(format!("CLIP guidance scale s = {scale}: must be a finite number ≥ 0 (0 = no guidance)")));
        }
        if !clip.config.trained_on_noised_images {
            return Err(Error::Config(
                "this CLIP was not trained on noised images (its config says trained_on_noised_images = false); \
                 CLIP guidance needs a noised CLIP, whose image encoder sees x_t and t"
                    .into(),
            ));
        }
        if clip.config.num_train_timesteps != schedule.betas.len() {
            return Err(Error::Config(format!(
                "the noised CLIP was trained on a {}-step schedule, the diffusion model uses {} steps",
                clip.config.num_train_timesteps,
                schedule.betas.len()
            )));
        }
        let e = clip.config.clip.projection_dim;
        if text.shape().len() != 2 || text.dim(1) != e {
            return Err(Error::shape("clip guidance", format!("text embeddings {:?}, expected (B, {e})", text.shape())));
        }
        use crate::nn::Module;
        clip.freeze();
        Ok(ClipGuided { model, prediction, schedule, clip, text, scale })
    }

    // ANCHOR: gradient
    /// `∇_{x_t} Σ_b f̂(x_t, t)_b · ĝ_b`, `(B, C, H, W)`: row `b` of the sum depends on row `b`
    /// of `x_t` only, so this is every row's own gradient at once.
    pub fn score_gradient(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let b = x_t.dim(0);
        let text = match self.text.dim(0) {
            1 => self.text.broadcast_to(&[b, self.text.dim(1)])?,
            n if n == b => self.text.clone(),
            n => return Err(Error::shape("clip guidance", format!("{n} caption embeddings for a batch of {b} (give B rows or 1)"))),
        };
        enable_grad(|| {
            let x = Tensor::param(x_t.to_array()); // a leaf: the gradient lands here
            let score = self.clip.image_embeds(&x, t)?.mul(&text)?.sum(); // Σ_b f̂_b · ĝ_b
            score.backward();
            Ok(Tensor::new(x.grad().expect("x_t requires a gradient")))
        })
    }
    // ANCHOR_END: gradient
}

impl<D: Denoiser> Denoiser for ClipGuided<'_, D> {
    // ANCHOR: predict
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let output = self.model.predict(x_t, t)?; // (B, C, H, W)
        if self.scale == 0.0 {
            return Ok(output);
        }
        let alpha_bar = self.schedule.alpha_bar(t)?; // ᾱ_t per row
        let (_, eps) = self.prediction.to_x0_eps(&output, x_t, &alpha_bar)?;
        let grad = self.score_gradient(x_t, t)?; // ∇_{x_t} f̂ · ĝ
        let shift: Vec<f32> = alpha_bar.iter().map(|a| self.scale * (1.0 - a).sqrt()).collect(); // s √(1 - ᾱ_t)
        let shift = Tensor::from_vec(shift, &[t.len(), 1, 1, 1])?; // (B, 1, 1, 1)
        let eps = eps.sub(&grad.mul(&shift)?)?; // ε̂' = ε̂ - s √(1 - ᾱ_t) ∇
        if self.prediction == Prediction::Epsilon {
            return Ok(eps);
        }
        let root = |f: fn(f32) -> f32| Tensor::from_vec(alpha_bar.iter().map(|&a| f(a)).collect(), &[t.len(), 1, 1, 1]);
        let x0 = x_t.sub(&eps.mul(&root(|a| (1.0 - a).sqrt())?)?)?.div(&root(|a| a.sqrt())?)?; // x̂_0 = (x_t - √(1-ᾱ) ε̂') / √ᾱ
        self.prediction.target(&x0, &eps, &alpha_bar)
    }
    // ANCHOR_END: predict
}
