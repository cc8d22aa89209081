//! Noise schedules and the forward process (Ho et al. 2020, §2; Nichol & Dhariwal 2021, §3.2).
//!
//! The forward process adds Gaussian noise in `T` small steps,
//! `q(x_t | x_{t-1}) = N(√(1 - β_t) x_{t-1}, β_t I)`, and has a closed form for
//! any `t` (Ho et al. eq. 4):
//!
//! ```text
//! α_t = 1 - β_t,   ᾱ_t = Π_{s ≤ t} α_s
//! q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)   =>   x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε
//! ```
//!
//! Given `x_0`, one step back is Gaussian too (eq. 6-7):
//!
//! ```text
//! q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)
//! μ̃_t = √ᾱ_{t-1} β_t / (1 - ᾱ_t) · x_0 + √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t
//! β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t
//! ```
//!
//! The reverse process uses a fixed variance: `β̃_t` ("small") or `β_t` ("large");
//! Ho et al. §3.2 found both work. Everything is computed in f64 (the products
//! of a thousand factors near 1 lose digits in f32) and stored as f32.
//! Timesteps are 0-based, `t ∈ [0, T)`, as in `diffusers` and improved-diffusion.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// How `β_t` grows with `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// `β_t` evenly spaced from `start` to `end` (Ho et al.: 1e-4 to 0.02 for `T = 1000`).
    Linear {
        /// `β_0`
        start: f64,
        /// `β_{T-1}`
        end: f64,
    },
    /// `ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2)`, `s = 0.008`, `β ≤ 0.999`
    /// (Nichol & Dhariwal eq. 17; `diffusers`' `squaredcos_cap_v2`).
    Cosine,
}

impl BetaSchedule {
    /// Ho et al.'s linear schedule scaled to `T` steps as improved-diffusion does (`1000/T · [1e-4, 0.02]`).
    pub fn linear(num_steps: usize) -> Self {
        let scale = 1000.0 / num_steps.max(1) as f64;
        BetaSchedule::Linear { start: scale * 1e-4, end: scale * 0.02 }
    }

    /// `β_0 .. β_{T-1}` in f64.
    pub fn betas(&self, num_steps: usize) -> Vec<f64> {
        let t = num_steps as f64;
        match *self {
            BetaSchedule::Linear { start, end } => {
                (0..num_steps).map(|i| start + (end - start) * i as f64 / (t - 1.0).max(1.0)).collect()
            }
            BetaSchedule::Cosine => {
                let alpha_bar = |u: f64| ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2); // ᾱ(u), u = t/T
                // β_t = 1 - ᾱ((t+1)/T) / ᾱ(t/T), capped at 0.999 so the last step is not all noise
                (0..num_steps).map(|i| (1.0 - alpha_bar((i + 1) as f64 / t) / alpha_bar(i as f64 / t)).min(0.999)).collect()
            }
        }
    }
}

/// The fixed reverse-process variance `σ_t²`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variance {
    /// `β̃_t`, the posterior's variance (`diffusers`' `fixed_small`).
    Small,
    /// `β_t` (`fixed_large`; improved-diffusion uses `β̃_1` at the last step).
    Large,
}

/// A schedule of `T` steps and everything derived from it, stored as f32.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    /// Which schedule.
    pub kind: BetaSchedule,
    /// `β_t`
    pub betas: Vec<f32>,
    /// `ᾱ_t = Π_{s ≤ t} (1 - β_s)`
    pub alphas_cumprod: Vec<f32>,
    /// `ᾱ_{t-1}` (1 at `t = 0`)
    pub alphas_cumprod_prev: Vec<f32>,
    /// `β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t`
    pub posterior_variance: Vec<f32>,
    /// `√ᾱ_{t-1} β_t / (1 - ᾱ_t)`, the weight of `x_0` in `μ̃_t`
    pub posterior_mean_coef1: Vec<f32>,
    /// `√α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)`, the weight of `x_t` in `μ̃_t`
    pub posterior_mean_coef2: Vec<f32>,
}

impl NoiseSchedule {
    // ANCHOR: schedule
    /// The schedule `kind` over `num_steps` steps. Errors when `num_steps` is 0 or a `β` is outside (0, 1).
    pub fn new(kind: BetaSchedule, num_steps: usize) -> Result<Self> {
        if num_steps == 0 {
            return Err(Error::Config("noise schedule: the number of steps T must be positive".into()));
        }
        let betas = kind.betas(num_steps);
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, &b)| !(b > 0.0 && b < 1.0)) {
            return Err(Error::Config(format!("noise schedule {kind:?}: β_{i} = {b} is outside (0, 1)")));
        }
        let mut alphas_cumprod = Vec::with_capacity(num_steps);
        let mut prod = 1.0f64;
        for b in &betas {
            prod *= 1.0 - b; // ᾱ_t = Π_{s ≤ t} α_s
            alphas_cumprod.push(prod);
        }
        let prev: Vec<f64> = std::iter::once(1.0).chain(alphas_cumprod[..num_steps - 1].iter().copied()).collect(); // ᾱ_{t-1}
        let per_step = |f: &dyn Fn(usize) -> f64| (0..num_steps).map(|t| f(t) as f32).collect::<Vec<f32>>();
        Ok(NoiseSchedule {
            kind,
            posterior_variance: per_step(&|t| (1.0 - prev[t]) / (1.0 - alphas_cumprod[t]) * betas[t]), // β̃_t
            posterior_mean_coef1: per_step(&|t| prev[t].sqrt() * betas[t] / (1.0 - alphas_cumprod[t])),
            posterior_mean_coef2: per_step(&|t| (1.0 - betas[t]).sqrt() * (1.0 - prev[t]) / (1.0 - alphas_cumprod[t])),
            betas: per_step(&|t| betas[t]),
            alphas_cumprod: per_step(&|t| alphas_cumprod[t]),
            alphas_cumprod_prev: per_step(&|t| prev[t]),
        })
    }
    // ANCHOR_END: schedule

    /// The number of steps `T`.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Never true: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// Errors unless every `t` is in `[0, T)`.
    pub fn check_timesteps(&self, t: &[usize]) -> Result<()> {
        match t.iter().find(|&&t| t >= self.len()) {
            Some(bad) => Err(Error::Config(format!("timestep {bad} is outside [0, T = {})", self.len()))),
            None => Ok(()),
        }
    }

    /// `ᾱ_t` for each `t`, or an error naming a `t` outside `[0, T)`.
    pub fn alpha_bar(&self, t: &[usize]) -> Result<Vec<f32>> {
        self.check_timesteps(t)?;
        Ok(t.iter().map(|&t| self.alphas_cumprod[t]).collect())
    }

    // ANCHOR: q_sample
    /// `x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε` for `x_0`, `noise (B, ...)` and one `t` per row.
    pub fn q_sample(&self, x0: &Tensor, t: &[usize], noise: &Tensor) -> Result<Tensor> {
        let ab = self.alpha_bar(t)?;
        let signal = per_row(&ab.iter().map(|a| a.sqrt()).collect::<Vec<_>>(), x0)?; // √ᾱ_t, (B, 1, 1, 1)
        let sigma = per_row(&ab.iter().map(|a| (1.0 - a).sqrt()).collect::<Vec<_>>(), x0)?; // √(1 - ᾱ_t)
        x0.mul(&signal)?.add(&noise.mul(&sigma)?)
    }
    // ANCHOR_END: q_sample

    /// The posterior `q(x_{t-1} | x_t, x_0)`: its mean `μ̃_t` (shape of `x_t`) and variance `β̃_t` per row.
    pub fn q_posterior(&self, x0: &Tensor, x_t: &Tensor, t: &[usize]) -> Result<(Tensor, Vec<f32>)> {
        self.check_timesteps(t)?;
        let c1 = per_row(&t.iter().map(|&t| self.posterior_mean_coef1[t]).collect::<Vec<_>>(), x_t)?;
        let c2 = per_row(&t.iter().map(|&t| self.posterior_mean_coef2[t]).collect::<Vec<_>>(), x_t)?;
        let mean = x0.mul(&c1)?.add(&x_t.mul(&c2)?)?; // μ̃_t = c₁ x_0 + c₂ x_t
        Ok((mean, t.iter().map(|&t| self.posterior_variance[t]).collect()))
    }
}

/// One value per row of `like (B, ...)` as a tensor `(B, 1, ..., 1)` that broadcasts against it.
pub fn per_row(values: &[f32], like: &Tensor) -> Result<Tensor> {
    let shape = like.shape();
    if shape.first() != Some(&values.len()) {
        return Err(Error::shape("diffusion", format!("{} per-row values for a batch of shape {shape:?}", values.len())));
    }
    let mut s = vec![values.len()];
    s.extend(std::iter::repeat_n(1, shape.len() - 1));
    Tensor::from_vec(values.to_vec(), &s)
}
