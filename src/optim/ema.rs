//! Exponential moving average of parameters, as diffusion models sample with.
//!
//! `θ̄ ← d θ̄ + (1 - d) θ` after every optimiser step (Ho et al. 2020 use d = 0.9999).
//!
//! With a decay that close to 1 the average remembers the random initialisation
//! for tens of thousands of steps, so short runs warm the decay up:
//! `d_n = min(d, (1 + n) / (10 + n))` at step `n` (the warm-up of `diffusers`'
//! `EMAModel` and of TensorFlow's `ExponentialMovingAverage` with `num_updates`).

use crate::tensor::Tensor;
use ndarray::Zip;

/// A shadow copy of the parameters, updated as their moving average.
pub struct Ema {
    /// The decay `d`.
    pub decay: f32,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Start the average at the current values of `params`.
    pub fn new(params: &[(String, Tensor)], decay: f32) -> Self {
        Ema { decay, shadow: params.iter().map(|(n, p)| (n.clone(), Tensor::new(p.to_array()))).collect() }
    }

    /// `θ̄ ← d θ̄ + (1 - d) θ`.
    pub fn update(&mut self, params: &[(String, Tensor)]) {
        let d = self.decay;
        for ((_, s), (_, p)) in self.shadow.iter().zip(params) {
            let cur = p.data();
            s.update(|avg| Zip::from(avg).and(&*cur).for_each(|a, &x| *a = d * *a + (1.0 - d) * x));
        }
    }

    /// The decay used at optimiser step `step` (counted from 0): `min(d, (1 + n) / (10 + n))`.
    pub fn warmup_decay(&self, step: usize) -> f32 {
        self.decay.min((1.0 + step as f32) / (10.0 + step as f32))
    }

    /// `θ̄ ← d_n θ̄ + (1 - d_n) θ` with the warmed-up decay of step `step`.
    pub fn update_at(&mut self, step: usize, params: &[(String, Tensor)]) {
        let full = self.decay;
        self.decay = self.warmup_decay(step);
        self.update(params);
        self.decay = full;
    }

    /// The averaged parameters, named as the originals.
    pub fn shadow(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Copy the averages into `params` (e.g. before sampling).
    pub fn copy_to(&self, params: &[(String, Tensor)]) {
        for ((_, s), (_, p)) in self.shadow.iter().zip(params) {
            let avg = s.to_array();
            p.update(|d| d.assign(&avg));
        }
    }
}
