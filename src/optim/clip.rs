//! Gradient clipping by global norm.

use crate::tensor::Tensor;

/// Scale all gradients so that their global L2 norm `√(Σ‖g‖²)` is at most
/// `max_norm`; returns the norm before clipping.
/// PyTorch: `torch.nn.utils.clip_grad_norm_(params, max_norm)`.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f32) -> f32 {
    let total: f64 = params
        .iter()
        .filter_map(|p| p.grad())
        .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
        .sum();
    let norm = total.sqrt() as f32;
    let scale = max_norm / (norm + 1e-6); // PyTorch adds 1e-6 as well
    if scale < 1.0 {
        for p in params {
            if let Some(g) = p.grad() {
                p.set_grad(Some(g * scale));
            }
        }
    }
    norm
}
