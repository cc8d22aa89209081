//! What the network predicts, and the training loss (Ho et al. 2020, §3.2, eq. 14).
//!
//! Since `x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε`, knowing `x_t` and any one of ε, `x_0`
//! or the velocity `v = √ᾱ_t ε - √(1 - ᾱ_t) x_0` (Salimans & Ho 2022, §4) gives
//! the other two. Ho et al. predict ε and train with the "simple" loss
//!
//! ```text
//! L_simple = E_{t, x_0, ε} ‖ε - ε_θ(√ᾱ_t x_0 + √(1 - ᾱ_t) ε, t)‖²
//! ```
//!
//! unCLIP's prior predicts `x_0` instead; the loss is the same MSE on the chosen target.

use super::schedule::{per_row, NoiseSchedule};
use crate::tensor::Tensor;
use crate::Result;

/// The network's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε (Ho et al.).
    Epsilon,
    /// The clean sample `x_0` (unCLIP's prior).
    X0,
    /// `v = √ᾱ ε - √(1 - ᾱ) x_0` (Salimans & Ho).
    V,
}

impl Prediction {
    /// What the network should output for this `x_0`, `ε` and `ᾱ_t` (one per row).
    pub fn target(self, x0: &Tensor, eps: &Tensor, alpha_bar: &[f32]) -> Result<Tensor> {
        match self {
            Prediction::Epsilon => Ok(eps.clone()),
            Prediction::X0 => Ok(x0.clone()),
            Prediction::V => {
                let (s, n) = coefficients(alpha_bar, x0)?; // √ᾱ, √(1 - ᾱ)
                eps.mul(&s)?.sub(&x0.mul(&n)?) // v = √ᾱ ε - √(1 - ᾱ) x_0
            }
        }
    }

    // ANCHOR: split
    /// `(x̂_0, ε̂)` from the network's `output` at `x_t` with `ᾱ_t` (one per row).
    pub fn to_x0_eps(self, output: &Tensor, x_t: &Tensor, alpha_bar: &[f32]) -> Result<(Tensor, Tensor)> {
        let (s, n) = coefficients(alpha_bar, x_t)?; // √ᾱ, √(1 - ᾱ)
        match self {
            Prediction::Epsilon => {
                let x0 = x_t.sub(&output.mul(&n)?)?.div(&s)?; // x_0 = (x_t - √(1-ᾱ) ε) / √ᾱ
                Ok((x0, output.clone()))
            }
            Prediction::X0 => {
                let eps = x_t.sub(&output.mul(&s)?)?.div(&n)?; // ε = (x_t - √ᾱ x_0) / √(1-ᾱ)
                Ok((output.clone(), eps))
            }
            Prediction::V => {
                let x0 = x_t.mul(&s)?.sub(&output.mul(&n)?)?; // x_0 = √ᾱ x_t - √(1-ᾱ) v
                let eps = x_t.mul(&n)?.add(&output.mul(&s)?)?; // ε = √(1-ᾱ) x_t + √ᾱ v
                Ok((x0, eps))
            }
        }
    }
    // ANCHOR_END: split
}

/// `(√ᾱ, √(1 - ᾱ))` per row, shaped to broadcast against `like (B, ...)`.
fn coefficients(alpha_bar: &[f32], like: &Tensor) -> Result<(Tensor, Tensor)> {
    let s: Vec<f32> = alpha_bar.iter().map(|a| a.sqrt()).collect();
    let n: Vec<f32> = alpha_bar.iter().map(|a| (1.0 - a).sqrt()).collect();
    Ok((per_row(&s, like)?, per_row(&n, like)?))
}

// ANCHOR: loss
/// `‖target - output‖²` averaged over every element: `x_0 (B, ...)` is noised to
/// `t` with `noise`, `model(x_t, t)` predicts `prediction`'s target.
pub fn diffusion_loss(
    schedule: &NoiseSchedule,
    prediction: Prediction,
    model: impl FnOnce(&Tensor, &[usize]) -> Result<Tensor>,
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    let x_t = schedule.q_sample(x0, t, noise)?; // x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε
    let output = model(&x_t, t)?; // (B, C, H, W)
    let target = prediction.target(x0, noise, &schedule.alpha_bar(t)?)?;
    output.mse(&target) // L_simple
}
// ANCHOR_END: loss
