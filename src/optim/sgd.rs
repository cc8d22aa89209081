//! Stochastic gradient descent with momentum.
//!
//! `v ← μ v + g`, `θ ← θ - η v` (PyTorch's form; `μ = 0` is plain SGD),
//! with weight decay `g ← g + λ θ` added first.

use super::{grad_or_zeros, take_state, Optimizer};
use crate::tensor::Tensor;
use ndarray::{ArrayD, Zip};

/// SGD with momentum. PyTorch: `torch.optim.SGD(params, lr, momentum, weight_decay=λ)`.
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    velocity: Vec<ArrayD<f32>>,
    /// Learning rate η.
    pub lr: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// L2 weight decay λ.
    pub weight_decay: f32,
}

impl Sgd {
    /// SGD over `params` (from [`crate::nn::Module::named_parameters`]).
    pub fn new(params: Vec<(String, Tensor)>, lr: f32, momentum: f32) -> Self {
        let velocity = params.iter().map(|(_, p)| ArrayD::zeros(p.data().raw_dim())).collect();
        Sgd { params, velocity, lr, momentum, weight_decay: 0.0 }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) {
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        for ((_, p), v) in self.params.iter().zip(self.velocity.iter_mut()) {
            let g = grad_or_zeros(p);
            p.update(|theta| {
                Zip::from(theta).and(v).and(&g).for_each(|t, v, &g| {
                    let g = g + wd * *t;
                    *v = mu * *v + g; // v ← μ v + g
                    *t -= lr * *v; // θ ← θ - η v
                });
            });
        }
    }
    fn zero_grad(&self) {
        self.params.iter().for_each(|(_, p)| p.zero_grad());
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn state(&self) -> Vec<(String, ArrayD<f32>)> {
        self.params.iter().zip(&self.velocity).map(|((n, _), v)| (format!("velocity.{n}"), v.clone())).collect()
    }
    fn load_state(&mut self, state: &std::collections::HashMap<String, ArrayD<f32>>) -> crate::Result<()> {
        for ((n, p), v) in self.params.iter().zip(self.velocity.iter_mut()) {
            *v = take_state(state, &format!("velocity.{n}"), &p.shape())?;
        }
        Ok(())
    }
}
