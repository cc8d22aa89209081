//! Optimisers, gradient clipping, learning-rate schedules and the EMA of parameters.
//!
//! An optimiser holds the named parameters it updates; `step()` reads each
//! parameter's accumulated gradient and changes its data in place
//! ([`crate::Tensor::update`]), outside any graph.

mod adam;
mod clip;
mod ema;
mod schedule;
mod sgd;

pub use adam::Adam;
pub use clip::clip_grad_norm;
pub use ema::Ema;
pub use schedule::WarmupCosine;
pub use sgd::Sgd;

use crate::tensor::Tensor;
use ndarray::ArrayD;

/// What every optimiser does.
pub trait Optimizer {
    /// Update every parameter from its gradient.
    fn step(&mut self);
    /// Forget every parameter's gradient.
    fn zero_grad(&self);
    /// The current learning rate.
    fn lr(&self) -> f32;
    /// Change the learning rate (schedules).
    fn set_lr(&mut self, lr: f32);
    /// The optimiser's state as named arrays, for checkpoints (`"m.<param>"`, ...).
    fn state(&self) -> Vec<(String, ArrayD<f32>)>;
    /// Restore the state written by [`Optimizer::state`]; errors name what is missing or mis-shaped.
    fn load_state(&mut self, state: &std::collections::HashMap<String, ArrayD<f32>>) -> crate::Result<()>;
}

/// The gradient of `p`, or zeros when it received none this step.
pub(crate) fn grad_or_zeros(p: &Tensor) -> ArrayD<f32> {
    p.grad().unwrap_or_else(|| ArrayD::zeros(p.data().raw_dim()))
}

/// Look up `key` in a saved state with the expected shape.
pub(crate) fn take_state(state: &std::collections::HashMap<String, ArrayD<f32>>, key: &str, shape: &[usize]) -> crate::Result<ArrayD<f32>> {
    let a = state.get(key).ok_or_else(|| crate::Error::Checkpoint(format!("optimiser state `{key}` is missing")))?;
    if a.shape() != shape {
        return Err(crate::Error::Checkpoint(format!("optimiser state `{key}` has shape {:?}, expected {shape:?}", a.shape())));
    }
    Ok(a.clone())
}
