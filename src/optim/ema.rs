//! Exponential moving average of parameters, as diffusion models sample with.
//!
//! `θ̄ ← d θ̄ + (1 - d) θ` after every optimiser step (Ho et al. 2020 use d = 0.9999).

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
