//! The gumbel-softmax (concrete) relaxation of a categorical sample.
//!
//! Jang et al. 2016, Maddison et al. 2016. With `g_k = -ln(-ln u_k)`,
//! `u_k ~ U(0, 1)`, the index `argmax_k (ℓ_k + g_k)` is a sample of
//! `softmax(ℓ)` (the gumbel-max trick). Replacing the argmax by a softmax at
//! temperature τ gives a differentiable sample on the simplex:
//!
//! ```text
//! y_k = exp((ℓ_k + g_k) / τ) / Σ_j exp((ℓ_j + g_j) / τ)
//! ```
//!
//! As τ → 0 the samples become one-hot (and their law that of the argmax); for
//! large τ they become uniform. The *hard* variant returns the one-hot argmax
//! in the forward pass and the soft sample's gradient in the backward pass:
//! `y = one_hot(argmax y_soft) + y_soft - sg[y_soft]`.

use ndarray::{ArrayD, Axis};

use crate::tensor::{normalize_axis, Rng, Tensor};
use crate::{Error, Result};

// ANCHOR: gumbel_softmax
/// `softmax((logits + g) / τ)` along `axis` with the given Gumbel noise `g`
/// (same shape as `logits`); with `hard`, the straight-through one-hot.
pub fn gumbel_softmax_with_noise(logits: &Tensor, noise: &Tensor, tau: f32, hard: bool, axis: isize) -> Result<Tensor> {
    if tau.is_nan() || tau <= 0.0 {
        return Err(Error::Config(format!("gumbel-softmax temperature tau = {tau} must be > 0")));
    }
    if logits.shape() != noise.shape() {
        return Err(Error::shape("gumbel_softmax", format!("noise {:?} must match logits {:?}", noise.shape(), logits.shape())));
    }
    let y_soft = logits.add(noise)?.scale(1.0 / tau).softmax(axis); // softmax((ℓ + g) / τ)
    if !hard {
        return Ok(y_soft);
    }
    let y_hard = Tensor::new(one_hot_argmax(&y_soft.data(), axis));
    y_hard.sub(&y_soft.detach())?.add(&y_soft) // value: one-hot; gradient: y_soft's
}
// ANCHOR_END: gumbel_softmax

/// [`gumbel_softmax_with_noise`] with fresh Gumbel(0, 1) noise from `rng`.
pub fn gumbel_softmax(logits: &Tensor, tau: f32, hard: bool, axis: isize, rng: &mut Rng) -> Result<Tensor> {
    let noise = Tensor::gumbel(&logits.shape(), rng);
    gumbel_softmax_with_noise(logits, &noise, tau, hard, axis)
}

/// 1 at the largest entry along `axis`, 0 elsewhere (the first one on ties).
pub fn one_hot_argmax(x: &ArrayD<f32>, axis: isize) -> ArrayD<f32> {
    let a = normalize_axis(axis, x.ndim());
    let mut out = ArrayD::zeros(x.raw_dim());
    for (lane, mut dst) in x.lanes(Axis(a)).into_iter().zip(out.lanes_mut(Axis(a))) {
        dst[argmax(lane.iter().copied())] = 1.0;
    }
    out
}

/// The index of the largest value (the first one on ties; 0 for an empty input).
pub fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}
