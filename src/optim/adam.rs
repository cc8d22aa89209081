//! Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019).
//!
//! ```text
//! m ← β₁ m + (1 - β₁) g                 first moment
//! v ← β₂ v + (1 - β₂) g²                second moment
//! m̂ = m / (1 - β₁ᵗ),  v̂ = v / (1 - β₂ᵗ)   bias correction
//! θ ← θ - η m̂ / (√v̂ + ε)
//! ```
//!
//! Adam adds weight decay to the gradient (`g ← g + λθ`); AdamW decays the
//! weights directly (`θ ← θ - ηλθ`), which is what transformers train with.

use super::{grad_or_zeros, take_state, Optimizer};
use crate::tensor::Tensor;
use ndarray::{ArrayD, Zip};

/// Adam or AdamW. PyTorch: `torch.optim.Adam` / `torch.optim.AdamW`.
pub struct Adam {
    params: Vec<(String, Tensor)>,
    m: Vec<ArrayD<f32>>,
    v: Vec<ArrayD<f32>>,
    t: u64,
    /// Learning rate η.
    pub lr: f32,
    /// β₁, β₂.
    pub betas: (f32, f32),
    /// ε in the denominator.
    pub eps: f32,
    /// Weight decay λ.
    pub weight_decay: f32,
    /// `true` for AdamW (decoupled weight decay).
    pub decoupled: bool,
    /// The moments of parameters stepped on the GPU (there instead of in `m`, `v`).
    #[cfg(feature = "wgpu")]
    gpu_moments: Vec<Option<(crate::tensor::DeviceValue, crate::tensor::DeviceValue)>>,
}

impl Adam {
    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(params: Vec<(String, Tensor)>, lr: f32) -> Self {
        let zeros = || params.iter().map(|(_, p)| ArrayD::zeros(p.data().raw_dim())).collect::<Vec<_>>();
        let (m, v) = (zeros(), zeros());
        #[cfg(feature = "wgpu")]
        let gpu_moments = vec![None; params.len()];
        Adam {
            params,
            m,
            v,
            t: 0,
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            #[cfg(feature = "wgpu")]
            gpu_moments,
        }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01 unless given).
    pub fn adamw(params: Vec<(String, Tensor)>, lr: f32, weight_decay: f32) -> Self {
        Adam { weight_decay, decoupled: true, ..Adam::new(params, lr) }
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }
}

impl Optimizer for Adam {
    fn step(&mut self) {
        self.t += 1;
        let (b1, b2) = self.betas;
        let (lr, eps, wd, decoupled) = (self.lr, self.eps, self.weight_decay, self.decoupled);
        let bc1 = 1.0 - b1.powi(self.t as i32); // 1 - β₁ᵗ
        let bc2 = 1.0 - b2.powi(self.t as i32); // 1 - β₂ᵗ
        #[cfg(feature = "wgpu")]
        let hyper = crate::backend::wgpu::array_ops::AdamHyper {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay: wd,
            decoupled,
            bias_correction1: bc1,
            bias_correction2: bc2,
        };
        for (i, (((_, p), m), v)) in self.params.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()).enumerate() {
            #[cfg(feature = "wgpu")]
            {
                if crate::ops::on_gpu::adam_step(p, &mut self.gpu_moments[i], &hyper).is_some() {
                    continue;
                }
                // the CPU step goes on from the moments the GPU kept
                if let Some((gm, gv)) = self.gpu_moments[i].take() {
                    (*m, *v) = (moment_to_host(&gm), moment_to_host(&gv));
                }
            }
            #[cfg(not(feature = "wgpu"))]
            let _ = i;
            let g = grad_or_zeros(p);
            p.update(|theta| {
                Zip::from(theta).and(m).and(v).and(&g).for_each(|t, m, v, &g| {
                    let g = if decoupled { g } else { g + wd * *t };
                    if decoupled {
                        *t -= lr * wd * *t; // θ ← θ - ηλθ
                    }
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let m_hat = *m / bc1;
                    let v_hat = *v / bc2;
                    *t -= lr * m_hat / (v_hat.sqrt() + eps);
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
        let mut out = vec![("step".to_string(), ArrayD::from_elem(ndarray::IxDyn(&[1]), self.t as f32))];
        for (i, (((n, _), m), v)) in self.params.iter().zip(&self.m).zip(&self.v).enumerate() {
            #[cfg(feature = "wgpu")]
            if let Some((gm, gv)) = &self.gpu_moments[i] {
                out.push((format!("m.{n}"), moment_to_host(gm)));
                out.push((format!("v.{n}"), moment_to_host(gv)));
                continue;
            }
            #[cfg(not(feature = "wgpu"))]
            let _ = i;
            out.push((format!("m.{n}"), m.clone()));
            out.push((format!("v.{n}"), v.clone()));
        }
        out
    }
    fn load_state(&mut self, state: &std::collections::HashMap<String, ArrayD<f32>>) -> crate::Result<()> {
        let step = take_state(state, "step", &[1])?;
        for (((n, p), m), v) in self.params.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            *m = take_state(state, &format!("m.{n}"), &p.shape())?;
            *v = take_state(state, &format!("v.{n}"), &p.shape())?;
        }
        self.t = step[[0]] as u64;
        #[cfg(feature = "wgpu")]
        self.gpu_moments.iter_mut().for_each(|g| *g = None);
        Ok(())
    }
}

/// A moment kept on the GPU, read back.
///
/// # Panics
/// When the read-back fails: the GPU held the only copy and was lost.
#[cfg(feature = "wgpu")]
fn moment_to_host(d: &crate::tensor::DeviceValue) -> ArrayD<f32> {
    d.to_host().unwrap_or_else(|e| panic!("reading Adam's moments back from the GPU: {e}"))
}
