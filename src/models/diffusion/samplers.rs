//! Samplers: small functions over one model interface, [`Denoiser`].
//!
//! - DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): one step back draws
//!   `x_{t-1} ~ N(μ̃_t(x_t, x̂_0), σ_t² I)` with the network's `x̂_0` in the posterior.
//! - DDIM (Song, Meng & Ermon 2021, eq. 12): the same marginals from a
//!   non-Markovian process whose noise `η` ranges from 0 (deterministic) to 1 (DDPM):
//!
//! ```text
//! x_{t'} = √ᾱ_{t'} x̂_0 + √(1 - ᾱ_{t'} - σ²) ε̂ + σ z,   σ = η √((1 - ᾱ_{t'})/(1 - ᾱ_t)) √(1 - ᾱ_t/ᾱ_{t'})
//! ```
//!
//! - The probability-flow ODE (Song et al. 2021, §4.3) in the variables of Karras et
//!   al. 2022 (§2): with `σ = √((1 - ᾱ)/ᾱ)` and `x̃ = x / √ᾱ = x_0 + σ ε`,
//!
//! ```text
//! dx̃/dσ = ε̂(x̃, σ)
//! ```
//!
//!   integrated with Euler steps (which is exactly DDIM with η = 0) or with Heun's
//!   second-order steps (two network evaluations per step, Euler on the last).
//!
//! Every sampler walks a list of timesteps from [`respace`], so each runs with as few
//! steps as asked; the model sees the training schedule's own `t`. Guidance is a
//! [`Denoiser`] too ([`ClassifierFree`]), so it works with every sampler.

use super::objective::Prediction;
use super::schedule::{NoiseSchedule, Variance};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// The one interface every sampler calls: the network's output (ε, `x_0` or `v`, as its
/// [`Prediction`] says) for `x_t (B, C, H, W)` at training-schedule timesteps `t` (one per row).
/// Conditioning (labels, text, image embeddings) lives inside the implementation.
pub trait Denoiser {
    /// The prediction at `x_t`, `t`.
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor>;
}

impl<F: Fn(&Tensor, &[usize]) -> Result<Tensor>> Denoiser for F {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        self(x_t, t)
    }
}

// ANCHOR: guidance
/// Classifier-free guidance (Ho & Salimans 2022, eq. 6): `ε̂ = ε_uncond + s (ε_cond - ε_uncond)`.
/// `s = 1` is the conditional model, `s = 0` the unconditional one. The mix is linear,
/// so it applies to an `x_0` or `v` output just as to ε. It is computed as the same mix
/// written `(1 - s) ε_uncond + s ε_cond`, which returns `ε_cond` (`s = 1`) and `ε_uncond`
/// (`s = 0`) to the bit, where `ε_u + s (ε_c - ε_u)` would be off by a rounding.
pub fn guidance(cond: &Tensor, uncond: &Tensor, scale: f32) -> Result<Tensor> {
    uncond.scale(1.0 - scale).add(&cond.scale(scale)) // (1 - s) ε_u + s ε_c = ε_u + s (ε_c - ε_u)
}

/// A guided denoiser. `model` is asked for `2B` rows at once (both passes in one
/// batch): rows `0..B` with the condition, rows `B..2B` without it.
pub struct ClassifierFree<D> {
    /// Predicts the doubled batch: conditional rows first, then unconditional.
    pub model: D,
    /// The guidance scale `s`.
    pub scale: f32,
}

impl<D: Denoiser> Denoiser for ClassifierFree<D> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let b = x_t.dim(0);
        let both = self.model.predict(&Tensor::concat(&[x_t, x_t], 0)?, &[t, t].concat())?; // (2B, C, H, W)
        guidance(&both.narrow(0, 0, b)?, &both.narrow(0, b, b)?, self.scale)
    }
}
// ANCHOR_END: guidance

/// A noise schedule and what the network predicts: everything a sampler needs besides the network.
#[derive(Debug, Clone)]
pub struct Diffusion {
    /// `β_t`, `ᾱ_t`, ...
    pub schedule: NoiseSchedule,
    /// ε, `x_0` or `v`.
    pub prediction: Prediction,
}

// ANCHOR: respace
/// `steps` timesteps out of `0..T`, descending and evenly spaced, ending at the
/// last ("trailing" spacing: the first is `T - 1`, so sampling starts from pure
/// noise; with `steps = T` it is every step). Errors when `steps` is 0 or above `T`.
pub fn respace(num_train_steps: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > num_train_steps {
        return Err(Error::Config(format!("respacing to {steps} steps: must be between 1 and T = {num_train_steps}")));
    }
    // t_i = round(T - i T/n) - 1, i = 0..n
    Ok((0..steps).map(|i| ((num_train_steps as f64 * (1.0 - i as f64 / steps as f64)).round() as usize).saturating_sub(1)).collect())
}
// ANCHOR_END: respace

/// Errors unless `steps` is strictly decreasing within `[0, T)`.
fn check_steps(schedule: &NoiseSchedule, steps: &[usize]) -> Result<()> {
    schedule.check_timesteps(steps)?;
    if steps.is_empty() || steps.windows(2).any(|w| w[1] >= w[0]) {
        return Err(Error::Config(format!("sampler timesteps {steps:?} must be non-empty and strictly decreasing")));
    }
    Ok(())
}

impl Diffusion {
    /// Ho et al.'s setting, which chapters 08, 09 and 11 train with: `T = 1000` steps of the
    /// linear β schedule, the network predicting ε.
    pub fn linear_epsilon() -> Result<Self> {
        Ok(Diffusion { schedule: super::schedule::NoiseSchedule::new(super::schedule::BetaSchedule::linear(1000), 1000)?, prediction: super::objective::Prediction::Epsilon })
    }

    /// `(x̂_0, ε̂)` from the network at `x_t`, `t` (the same `t` for every row);
    /// with `clip`, `x̂_0` is clamped to the data range `[-1, 1]` and ε̂ recomputed from it.
    pub fn predict_x0_eps(&self, model: &dyn Denoiser, x_t: &Tensor, t: usize, clip: bool) -> Result<(Tensor, Tensor)> {
        let b = x_t.dim(0);
        let output = model.predict(x_t, &vec![t; b])?;
        self.split_output(&output, x_t, t, clip)
    }

    /// `(x̂_0, ε̂)` from a given network `output` at `x_t`, `t` (see [`Diffusion::predict_x0_eps`]).
    pub fn split_output(&self, output: &Tensor, x_t: &Tensor, t: usize, clip: bool) -> Result<(Tensor, Tensor)> {
        let b = x_t.dim(0);
        let ab = self.schedule.alpha_bar(&[t])?[0];
        let (x0, eps) = self.prediction.to_x0_eps(output, x_t, &vec![ab; b])?;
        if !clip {
            return Ok((x0, eps));
        }
        let x0 = x0.clamp(-1.0, 1.0);
        let eps = x_t.sub(&x0.scale(ab.sqrt()))?.scale(1.0 / (1.0 - ab).sqrt()); // ε = (x_t - √ᾱ x_0) / √(1 - ᾱ)
        Ok((x0, eps))
    }

    /// `ᾱ` at `t_prev`, or 1 after the last step.
    fn alpha_bar_prev(&self, t_prev: Option<usize>) -> Result<f64> {
        Ok(match t_prev {
            Some(p) => self.schedule.alpha_bar(&[p])?[0] as f64,
            None => 1.0,
        })
    }

    // ANCHOR: ddpm_step
    /// One ancestral step from `x_t` to `x_{t'}` (`t' = t_prev`, `None` after the last step)
    /// given the network's `output` at `x_t`. With respacing, `β' = 1 - ᾱ_t/ᾱ_{t'}` is the
    /// step's own beta (improved-diffusion §4; `diffusers`' `DDPMScheduler.step`).
    /// `noise` is `z ~ N(0, I)`; no noise is added on the last step.
    #[allow(clippy::too_many_arguments)]
    pub fn ddpm_step(&self, output: &Tensor, x_t: &Tensor, t: usize, t_prev: Option<usize>, noise: &Tensor, variance: Variance, clip: bool) -> Result<Tensor> {
        let (x0, _) = self.split_output(output, x_t, t, clip)?;
        let ab = self.schedule.alpha_bar(&[t])?[0] as f64;
        let ab_prev = self.alpha_bar_prev(t_prev)?;
        let beta = 1.0 - ab / ab_prev; // β' = 1 - ᾱ_t / ᾱ_{t'}
        let c0 = ab_prev.sqrt() * beta / (1.0 - ab); // √ᾱ_{t'} β' / (1 - ᾱ_t)
        let ct = (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab); // √α' (1 - ᾱ_{t'}) / (1 - ᾱ_t)
        let mean = x0.scale(c0 as f32).add(&x_t.scale(ct as f32))?; // μ̃(x_t, x̂_0)
        if t_prev.is_none() {
            return Ok(mean);
        }
        let var = match variance {
            Variance::Small => ((1.0 - ab_prev) / (1.0 - ab) * beta).max(1e-20), // β̃' = (1 - ᾱ_{t'})/(1 - ᾱ_t) β'
            Variance::Large => beta,
        };
        mean.add(&noise.scale(var.sqrt() as f32)) // x_{t'} = μ̃ + σ z
    }
    // ANCHOR_END: ddpm_step

    // ANCHOR: ddim_step
    /// One DDIM step from `x_t` to `x_{t'}` (`None`: to `x_0`) given the network's `output`:
    /// `x_{t'} = √ᾱ_{t'} x̂_0 + √(1 - ᾱ_{t'} - σ²) ε̂ + σ z` with
    /// `σ = η √((1 - ᾱ_{t'})/(1 - ᾱ_t)) √(1 - ᾱ_t/ᾱ_{t'})` (Song et al. eq. 12, 16).
    /// `noise` (`z`) is only read when `η > 0`.
    #[allow(clippy::too_many_arguments)]
    pub fn ddim_step(&self, output: &Tensor, x_t: &Tensor, t: usize, t_prev: Option<usize>, eta: f32, noise: Option<&Tensor>, clip: bool) -> Result<Tensor> {
        let (x0, eps) = self.split_output(output, x_t, t, clip)?;
        let ab = self.schedule.alpha_bar(&[t])?[0] as f64;
        let ab_prev = self.alpha_bar_prev(t_prev)?;
        let sigma = eta as f64 * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
        let x = x0.scale(ab_prev.sqrt() as f32).add(&eps.scale((1.0 - ab_prev - sigma * sigma).max(0.0).sqrt() as f32))?;
        match noise {
            Some(z) if sigma > 0.0 => x.add(&z.scale(sigma as f32)),
            None if sigma > 0.0 => Err(Error::Config(format!("ddim_step: η = {eta} needs noise"))),
            _ => Ok(x),
        }
    }
    // ANCHOR_END: ddim_step
}

/// The network evaluations a sampler makes and what it does with them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling with a fixed variance.
    Ddpm(Variance),
    /// DDIM with noise `η` (0: deterministic).
    Ddim(f32),
    /// Euler steps of the probability-flow ODE.
    Euler,
    /// Heun steps of the probability-flow ODE.
    Heun,
}

impl Sampler {
    /// Network evaluations for `steps` timesteps (Heun: two per step but the last).
    pub fn evaluations(self, steps: usize) -> usize {
        match self {
            Sampler::Heun => 2 * steps - 1,
            _ => steps,
        }
    }

    /// A short name for tables and file names.
    pub fn name(self) -> String {
        match self {
            Sampler::Ddpm(_) => "ddpm".into(),
            Sampler::Ddim(eta) if eta == 0.0 => "ddim".into(),
            Sampler::Ddim(eta) => format!("ddim-eta{eta}"),
            Sampler::Euler => "euler".into(),
            Sampler::Heun => "heun".into(),
        }
    }

    /// Run this sampler from `x_T` over `steps` (descending; see [`respace`]); returns `x_0`.
    /// `watch(i, x)` sees the sample after step `i`.
    pub fn sample(self, model: &dyn Denoiser, diffusion: &Diffusion, x_t: Tensor, steps: &[usize], rng: &mut Rng, watch: &mut dyn FnMut(usize, &Tensor)) -> Result<Tensor> {
        match self {
            Sampler::Ddpm(variance) => ddpm_sample(model, diffusion, x_t, steps, variance, rng, watch),
            Sampler::Ddim(eta) => ddim_sample(model, diffusion, x_t, steps, eta, rng, watch),
            Sampler::Euler => ode_sample(model, diffusion, x_t, steps, false, true, watch),
            Sampler::Heun => ode_sample(model, diffusion, x_t, steps, true, true, watch),
        }
    }
}

// ANCHOR: ddpm_sample
/// DDPM ancestral sampling (Ho et al. Algorithm 2) over `steps`, from `x_T`; `x̂_0` clipped to `[-1, 1]`.
pub fn ddpm_sample(model: &dyn Denoiser, d: &Diffusion, x_t: Tensor, steps: &[usize], variance: Variance, rng: &mut Rng, watch: &mut dyn FnMut(usize, &Tensor)) -> Result<Tensor> {
    check_steps(&d.schedule, steps)?;
    no_grad(|| {
        let mut x = x_t;
        for (i, &t) in steps.iter().enumerate() {
            let output = model.predict(&x, &vec![t; x.dim(0)])?;
            let z = Tensor::randn(&x.shape(), rng); // z ~ N(0, I)
            x = d.ddpm_step(&output, &x, t, steps.get(i + 1).copied(), &z, variance, true)?;
            watch(i, &x);
        }
        Ok(x)
    })
}
// ANCHOR_END: ddpm_sample

/// DDIM sampling with noise `η` over `steps`, from `x_T`; `x̂_0` clipped to `[-1, 1]`.
pub fn ddim_sample(model: &dyn Denoiser, d: &Diffusion, x_t: Tensor, steps: &[usize], eta: f32, rng: &mut Rng, watch: &mut dyn FnMut(usize, &Tensor)) -> Result<Tensor> {
    check_steps(&d.schedule, steps)?;
    no_grad(|| {
        let mut x = x_t;
        for (i, &t) in steps.iter().enumerate() {
            let output = model.predict(&x, &vec![t; x.dim(0)])?;
            let z = (eta > 0.0).then(|| Tensor::randn(&x.shape(), rng));
            x = d.ddim_step(&output, &x, t, steps.get(i + 1).copied(), eta, z.as_ref(), true)?;
            watch(i, &x);
        }
        Ok(x)
    })
}

// ANCHOR: ode_sample
/// The probability-flow ODE `dx̃/dσ = ε̂` from `x_T` over `steps` (`σ_i = √((1 - ᾱ_{t_i})/ᾱ_{t_i})`,
/// then `σ = 0`), by Euler or, with `heun`, Heun's method (Karras et al. Algorithm 1).
/// With `clip`, ε̂ is the one implied by `x̂_0` clamped to `[-1, 1]`, as DDIM clips (guided
/// predictions overshoot the data range, and an unclipped ODE follows them out of it).
pub fn ode_sample(model: &dyn Denoiser, d: &Diffusion, x_t: Tensor, steps: &[usize], heun: bool, clip: bool, watch: &mut dyn FnMut(usize, &Tensor)) -> Result<Tensor> {
    check_steps(&d.schedule, steps)?;
    let ab = d.schedule.alpha_bar(steps)?;
    let sigma = |i: usize| ab.get(i).map_or(0.0, |a| ((1.0 - a) / a).sqrt()); // σ_i; 0 past the last step
    // ε̂ at x̃ (scaled back to x_t = √ᾱ x̃ for the network)
    let slope = |x_tilde: &Tensor, i: usize| -> Result<Tensor> { Ok(d.predict_x0_eps(model, &x_tilde.scale(ab[i].sqrt()), steps[i], clip)?.1) };
    no_grad(|| {
        let mut x = x_t.scale(1.0 / ab[0].sqrt()); // x̃ = x_T / √ᾱ
        for i in 0..steps.len() {
            let h = sigma(i + 1) - sigma(i); // Δσ < 0
            let d_i = slope(&x, i)?;
            let euler = x.add(&d_i.scale(h))?; // x̃ + Δσ ε̂
            x = if heun && i + 1 < steps.len() {
                let d_next = slope(&euler, i + 1)?;
                x.add(&d_i.add(&d_next)?.scale(h / 2.0))? // x̃ + Δσ (ε̂_i + ε̂_{i+1}) / 2
            } else {
                euler
            };
            watch(i, &x.scale(ab.get(i + 1).map_or(1.0, |a| a.sqrt())));
        }
        Ok(x) // σ = 0: x̃ = x_0
    })
}
// ANCHOR_END: ode_sample

// ANCHOR: ddim_invert
/// DDIM inversion (Song et al. §4.3; Dhariwal & Nichol Appendix F): runs the η = 0
/// update forwards, `x_0 -> x_T`, through `steps` (descending, as for sampling)
/// taken in increasing order. Each step uses `ε̂(x_current, t_next)`, the usual
/// approximation of the `ε̂(x_next, t_next)` that sampling would use, so inverting then
/// sampling returns `x_0` only approximately (exact as the steps become small).
pub fn ddim_invert(model: &dyn Denoiser, d: &Diffusion, x0: &Tensor, steps: &[usize]) -> Result<Tensor> {
    check_steps(&d.schedule, steps)?;
    no_grad(|| {
        let mut x = x0.clone();
        let mut ab_cur = 1.0f64; // ᾱ at x_0
        for &t in steps.iter().rev() {
            let ab_next = d.schedule.alpha_bar(&[t])?[0] as f64;
            let output = model.predict(&x, &vec![t; x.dim(0)])?;
            let (_, eps) = d.prediction.to_x0_eps(&output, &x, &vec![ab_next as f32; x.dim(0)])?;
            let x0_hat = x.sub(&eps.scale((1.0 - ab_cur).sqrt() as f32))?.scale((1.0 / ab_cur.sqrt()) as f32); // (x - √(1-ᾱ) ε̂)/√ᾱ
            x = x0_hat.scale(ab_next.sqrt() as f32).add(&eps.scale((1.0 - ab_next).sqrt() as f32))?; // √ᾱ' x̂_0 + √(1-ᾱ') ε̂
            ab_cur = ab_next;
        }
        Ok(x)
    })
}
// ANCHOR_END: ddim_invert
