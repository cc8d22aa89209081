//! The non-finite guard: a run whose loss or gradients stop being numbers ends
//! with an error, instead of training on NaN and saving it.
//!
//! One NaN in a loss poisons every parameter at the next optimiser step (Adam's
//! update is `m / (√v + ε)`, and NaN spreads through both moments), so the check
//! sits between `backward()` and `step()`:
//!
//! ```no_run
//! # use dalle::{Result, Tensor};
//! # use dalle::optim::{Adam, Optimizer};
//! # fn run(loss: &Tensor, opt: &mut Adam, params: &[(String, Tensor)], step: usize) -> Result<()> {
//! loss.backward();
//! dalle::train::check_finite(step, loss.item(), None, params)?; // before opt.step()
//! opt.step();
//! # Ok(()) }
//! ```
//!
//! The loss costs nothing to check (it is read for the log anyway). Gradients
//! are read only when the loss is already bad, to name the first parameter whose
//! gradient is not finite; a gradient norm that the step computes anyway (from
//! [`crate::optim::clip_grad_norm`]) is passed in and checked every step.
//! [`crate::io::checkpoint::save`] refuses non-finite parameters too, so no
//! checkpoint is ever written from such a state.

use crate::{Error, Result, Tensor};

/// `Ok` when `loss` (and `grad_norm`, if the step computed one) are finite;
/// else an error naming the step, the loss, the norm, and the first of
/// `params` whose gradient holds a NaN or an infinity.
pub fn check_finite(step: usize, loss: f32, grad_norm: Option<f32>, params: &[(String, Tensor)]) -> Result<()> {
    let norm_ok = grad_norm.is_none_or(f32::is_finite);
    if loss.is_finite() && norm_ok {
        return Ok(());
    }
    let norm = grad_norm.map_or(String::new(), |n| format!(", gradient norm {n}"));
    let culprit = first_non_finite_grad(params)
        .map_or_else(|| "no parameter's gradient is non-finite".to_string(), |name| format!("first non-finite gradient: `{name}`"));
    Err(Error::NonFinite(format!(
        "step {step}: loss {loss}{norm}; {culprit}. Training stopped before the optimiser step; nothing is saved from this state \
         (earlier checkpoints are kept); try a smaller --lr (or check the input data)"
    )))
}

/// The name of the first parameter whose gradient holds a NaN or an infinity.
pub fn first_non_finite_grad(params: &[(String, Tensor)]) -> Option<String> {
    params.iter().find(|(_, p)| p.grad().is_some_and(|g| g.iter().any(|v| !v.is_finite()))).map(|(n, _)| n.clone())
}
