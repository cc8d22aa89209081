//! Gradient clipping by global norm.

use crate::tensor::{Tensor, Value};

/// Scale all gradients so that their global L2 norm `√(Σ‖g‖²)` is at most
/// `max_norm`; returns the norm before clipping.
/// PyTorch: `torch.nn.utils.clip_grad_norm_(params, max_norm)`.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f32) -> f32 {
    let grads: Vec<(&Tensor, Value)> = params.iter().filter_map(|p| p.grad_value().map(|g| (p, g))).collect();
    // Σ‖g‖² of the gradients on the host (in f64), then of those on the GPU (summed
    // there, one value read back)
    #[cfg_attr(not(feature = "wgpu"), allow(unused_mut))]
    let mut total: f64 = grads
        .iter()
        .filter_map(|(_, g)| match g {
            Value::Host(g) => Some(g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()),
            Value::Device(_) => None,
        })
        .sum();
    #[cfg(feature = "wgpu")]
    {
        let on_gpu: Vec<&crate::tensor::DeviceValue> = grads.iter().filter_map(|(_, g)| if let Value::Device(d) = g { Some(d) } else { None }).collect();
        if !on_gpu.is_empty() {
            total += crate::ops::on_gpu::squared_norm(&on_gpu).unwrap_or_else(|e| panic!("the gradients' norm on the GPU: {e}"));
        }
    }
    let norm = total.sqrt() as f32;
    let scale = max_norm / (norm + 1e-6); // PyTorch adds 1e-6 as well
    if scale < 1.0 {
        for (p, g) in grads {
            let scaled = match g {
                Value::Host(g) => Value::Host(g * scale),
                #[cfg(feature = "wgpu")]
                Value::Device(d) => crate::ops::on_gpu::scaled(&d, scale).unwrap_or_else(|e| panic!("scaling a gradient on the GPU: {e}")),
                #[cfg(not(feature = "wgpu"))]
                Value::Device(d) => Value::Host(d.to_host().expect("no device values without wgpu") * scale),
            };
            p.set_grad_value(Some(scaled));
        }
    }
    norm
}
